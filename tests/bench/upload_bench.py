#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""Peak memory of big uploads (`make bench-upload`).

    /usr/bin/python3 tests/bench/upload_bench.py [--module PATH] [--mb 64]
                                                 [--concurrency 1,2]

Starts an httpd (event MPM, one child process, so that concurrent uploads
meet in one process) whose ClickHouse is unreachable, so that no delivery
batch adds to any process, with `LimitRequestBody 0` on /api/event. For
each concurrency N it starts a fresh httpd, posts N bodies of about --mb
MiB at once (JSON arrays of 10,000 events of a few kB: the module's largest
request is 64 MiB and 10,000 events), and prints the child's peak RSS
growth (VmHWM after - VmRSS before), in all and per upload. The body size
is printed as sent.

--module picks another build of the module, e.g. one of an older commit,
for a before/after figure.
"""

import argparse
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stack  # noqa: E402

ONE_CHILD = """StartServers 1
ServerLimit 1
MinSpareThreads 1
MaxSpareThreads 64
MaxRequestWorkers 32
IMChallengeBatchSize 10
<Location "/api/event">
    LimitRequestBody 0
</Location>"""


def vm_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s for pid %d" % (field, pid))


def body_of(mb):
    """A JSON array of 10,000 valid events of about mb MiB in all."""
    n = 10000
    pad = "x" * max(0, (mb << 20) // n - 200)
    site = str(uuid.uuid4())
    return ("[" + ",".join(
        '{"time":"2026-11-28T12:00:00Z","type":"serve","correlation_id":'
        '"%s","site_id":"%s","pad":"%s"}' % (uuid.uuid4(), site, pad)
        for _ in range(n)) + "]").encode()


def run_once(module, body, n, base):
    h = stack.Httpd(base / ("httpd-%d" % n), module,
                    clickhouse_url="http://127.0.0.1:%d/" % stack.free_port(),
                    directives=ONE_CHILD)
    h.start()
    try:
        time.sleep(1)
        (pid,) = h.children()
        before = vm_kb(pid, "VmRSS")
        statuses = []

        def upload():
            r = h.http.post(h.url + "api/event", data=body, timeout=300,
                            headers={"Content-Type": "application/json",
                                     "Connection": "close"})
            statuses.append(r.status_code)
        threads = [threading.Thread(target=upload) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = vm_kb(pid, "VmHWM")
    finally:
        h.stop()
    return before, peak, statuses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--module", default=str(stack.DEFAULT_MODULE))
    ap.add_argument("--mb", type=int, default=63)
    ap.add_argument("--concurrency", default="1,2")
    args = ap.parse_args()
    module = Path(args.module).resolve()
    body = body_of(args.mb)
    base = stack.session_workdir("imc-bench-upload-")
    try:
        print("module %s, bodies of %.1f MiB" % (module, len(body) / 2**20))
        print("%-12s %10s %10s %12s %14s  %s" % (
            "concurrent", "RSS before", "peak", "growth", "per upload",
            "answers"))
        for n in (int(x) for x in args.concurrency.split(",")):
            before, peak, statuses = run_once(module, body, n, base)
            growth = (peak - before) / 1024
            print("%-12d %7.1f MiB %6.1f MiB %8.1f MiB %10.1f MiB  %s" % (
                n, before / 1024, peak / 1024, growth, growth / n,
                ",".join(str(s) for s in sorted(statuses))), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
