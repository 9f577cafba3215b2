#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""Profiles of the single-event path (`make bench-profile`).

    /usr/bin/python3 tests/bench/profile_bench.py [--requests N] [--seconds S]

For the no-op handler and for POST /api/event, in one run:

  callgrind  httpd -X (prefork, one process) under valgrind
             --tool=callgrind --toggle-collect=ap_run_process_connection:
             instructions per request (deterministic, unlike req/s), the
             module's own functions, and the cost by shared object
  strace     the same single process without valgrind, `strace -c` on its
             request thread: system calls per request
  perf       `perf record -e cpu-clock -g` on the children of an event-MPM
             httpd under wrk (-t2 -c32), when perf can sample here: where
             the CPU goes under load, kernel included

Everything is written to tests/bench/results/profile-<time>/ (summary.txt,
summary.json, the callgrind files, annotations and perf reports).
"""

import argparse
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack  # noqa: E402
import benchlib as bl  # noqa: E402

TARGETS = (("noop", "/noop"), ("module", "/api/event"))
NOOP_CONF = ("LoadModule imchallenge_noop_module %s\n"
             "<Location /noop>\n    SetHandler bench-noop\n"
             "</Location>")


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def make_httpd(work, name, module, noop, ch, mpm="prefork"):
    h = stack.Httpd(work / name, module, clickhouse_url=ch.url, mpm=mpm,
                    batch_delay=None, directives=NOOP_CONF % noop)
    h.write_config()
    return h


def httpd_env(h):
    env = dict(os.environ)
    env.update({"APACHE_RUN_DIR": str(h.rundir),
                "APACHE_LOCK_DIR": str(h.rundir),
                "APACHE_PID_FILE": str(h.pid_file),
                "APACHE_LOG_DIR": str(h.logdir),
                "APACHE_RUN_USER": h.user, "APACHE_RUN_GROUP": h.group})
    return env


def wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise bl.BenchError("httpd -X exited with status %d"
                                % proc.returncode)
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise bl.BenchError("httpd -X did not listen within %d s" % timeout)


def send(port, path, body, count):
    """count POSTs over one keep-alive connection; all must be 202."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    bad = 0
    try:
        for _ in range(count):
            conn.request("POST", path, body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            bad += r.status != 202
    finally:
        conn.close()
    if bad:
        raise bl.BenchError("%d of %d POST %s were not answered 202"
                            % (bad, count, path))


def stop(proc, timeout=60):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- callgrind

def callgrind(h, path, body, count, outdir, name):
    out = outdir / ("callgrind.%s.out" % name)
    # Created here for the children's user: callgrind opens it as root at
    # start and again, as that user, when it writes the profile at exit.
    out.write_bytes(b"")
    os.chown(out, pwd.getpwnam(h.user).pw_uid, -1)
    cmd = ["valgrind", "--tool=callgrind", "--vgdb=no",
           "--callgrind-out-file=%s" % out,
           "--toggle-collect=ap_run_process_connection",
           stack.APACHE_BIN, "-f", str(h.conf_file), "-X"]
    log = open(outdir / ("valgrind.%s.log" % name), "wb")
    proc = subprocess.Popen(cmd, env=httpd_env(h), cwd=str(h.workdir),
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        wait_port(h.port, proc, 180)
        send(h.port, path, body, count)
    finally:
        stop(proc, 120)
    if not out.is_file():
        raise bl.BenchError("callgrind wrote no %s" % out)
    return out


def annotate(cg_file, inclusive):
    p = subprocess.run(["callgrind_annotate", "--threshold=99.9",
                        "--inclusive=%s" % ("yes" if inclusive else "no"),
                        str(cg_file)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=True)
    return p.stdout


_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S+?):(\S+)"
                   r"(?:\s+\[(.*)\])?\s*$")


def parse_annotate(text):
    """Total Ir and [(ir, file, function, object)] of a callgrind_annotate
    listing."""
    total, rows = None, []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?PROGRAM TOTALS",
                     line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = _LINE.match(line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), m.group(2),
                         m.group(3), os.path.basename(m.group(4) or "?")))
    return total, rows


def by_object(rows):
    out = {}
    for ir, _, _, obj in rows:
        out[obj] = out.get(obj, 0) + ir
    return sorted(out.items(), key=lambda kv: -kv[1])


# ---------------------------------------------------------------- strace

def strace_counts(h, path, body, count, outdir, name):
    """System calls of the request thread of httpd -X per request."""
    proc = subprocess.Popen([stack.APACHE_BIN, "-f", str(h.conf_file), "-X"],
                            env=httpd_env(h), cwd=str(h.workdir),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    out = outdir / ("strace.%s.txt" % name)
    tracer = None
    try:
        wait_port(h.port, proc, 30)
        send(h.port, path, body, 50)  # warm-up, not traced
        tracer = subprocess.Popen(["strace", "-c", "-o", str(out), "-p",
                                   str(proc.pid)],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(1)
        send(h.port, path, body, count)
    finally:
        if tracer:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        stop(proc)
    calls = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    return {k: v / count for k, v in sorted(calls.items(),
                                            key=lambda kv: -kv[1])}


# ---------------------------------------------------------------- perf

def perf_works():
    if not shutil.which("perf"):
        return False
    p = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o",
                        "/dev/null", "-q", "--", "true"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p.returncode == 0


def perf_profile(work, module, noop, ch, body, seconds, outdir):
    h = stack.Httpd(work / "perf-httpd", module, clickhouse_url=ch.url,
                    mpm="event", batch_delay=None,
                    directives=NOOP_CONF % noop)
    out = {}
    try:
        h.start()
        for name, path in TARGETS:
            bl.run_wrk(h.url + path.lstrip("/"), body, "application/json",
                       2, 32, 2)  # warm-up
            data = outdir / ("perf.%s.data" % name)
            pids = ",".join(str(p) for p in h.children())
            rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock",
                                    "-F", "999", "-g", "-o", str(data),
                                    "-p", pids], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            res = bl.run_wrk(h.url + path.lstrip("/"), body,
                             "application/json", 2, 32, seconds)
            rec.send_signal(signal.SIGINT)
            rec.wait(60)
            out[name] = {"rps": res["rps"], "report": perf_report(data)}
            (outdir / ("perf.%s.txt" % name)).write_text(
                out[name]["report"]["text"])
    finally:
        h.stop()
    return out


def perf_report(data):
    res = {}
    for key, sort in (("dso", "dso"), ("symbols", "dso,sym")):
        p = subprocess.run(["perf", "report", "-i", str(data), "--stdio",
                            "--no-children", "--sort", sort, "-g", "none",
                            "--percent-limit", "0.5"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        rows = []
        for line in p.stdout.splitlines():
            m = re.match(r"^\s+([\d.]+)%\s+(\S+)(?:\s+\[.\]\s+(.*?))?\s*$",
                         line)
            if m:
                rows.append([float(m.group(1)), m.group(2),
                             (m.group(3) or "").strip()])
        res[key] = rows[:40]
    res["text"] = "\n".join(
        "%6.2f%%  %-28s %s" % (pct, dso, sym)
        for pct, dso, sym in res["symbols"])
    return res


# ---------------------------------------------------------------- summary

def summarise(res):
    lines = []
    cg = res.get("callgrind", {})
    if cg:
        n, m = cg.get("noop", {}), cg.get("module", {})
        lines.append("callgrind (httpd -X, prefork, %d requests each, "
                     "toggle-collect=ap_run_process_connection)"
                     % res["requests"])
        lines.append("  instructions/request: no-op %s, module %s, ratio "
                     "no-op/module %s" % (
                         bl.fmt(n.get("ir_per_request")),
                         bl.fmt(m.get("ir_per_request")),
                         bl.fmt(bl.ratio(n.get("ir_per_request"),
                                         m.get("ir_per_request")),
                                "{:.3f}")))
        for name in ("module", "noop"):
            lines.append("  %s: instructions/request by object:" % name)
            for obj, ir in cg.get(name, {}).get("by_object", [])[:8]:
                lines.append("    %10s  %s" % (bl.fmt(ir), obj))
        lines.append("  module: heaviest functions, inclusive "
                     "instructions/request:")
        for ir, fn, obj in m.get("inclusive", [])[:25]:
            lines.append("    %10s  %s [%s]" % (bl.fmt(ir), fn, obj))
        lines.append("  module: heaviest functions, exclusive "
                     "instructions/request:")
        for ir, fn, obj in m.get("exclusive", [])[:25]:
            lines.append("    %10s  %s [%s]" % (bl.fmt(ir), fn, obj))
    st = res.get("strace", {})
    for name in ("noop", "module"):
        if name in st:
            total = sum(st[name].values())
            lines.append("strace: %s: %.2f system calls/request: %s" % (
                name, total, ", ".join("%s %.2f" % kv
                                       for kv in list(st[name].items())[:10])))
    pf = res.get("perf")
    if isinstance(pf, dict) and "module" in pf:
        for name in ("noop", "module"):
            lines.append("perf (cpu-clock, event MPM children under wrk, "
                         "%s, %.0f req/s): share by object:"
                         % (name, pf[name]["rps"]))
            for pct, dso, _ in pf[name]["report"]["dso"][:8]:
                lines.append("    %6.2f%%  %s" % (pct, dso))
        lines.append("perf: module run, top symbols:")
        for pct, dso, sym in pf["module"]["report"]["symbols"][:25]:
            lines.append("    %6.2f%%  %-24s %s" % (pct, dso, sym))
    elif pf:
        lines.append("perf: %s" % pf)
    return "\n".join(lines)


def condense(rows, count, limit=40):
    out = []
    for ir, _, fn, obj in rows[:limit]:
        out.append([round(ir / count), fn, obj])
    return out


def run(args):
    module = Path(os.environ.get("IMC_MODULE") or stack.DEFAULT_MODULE)
    if not module.is_file():
        sys.exit("module %s not found: run `make` first" % module)
    noop = bl.build_noop()
    bl.ensure_wrk()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = bl.BENCH_DIR / "results" / ("profile-" + stamp)
    outdir.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="imc-profile-", dir="/tmp"))
    os.chmod(work, 0o755)
    cgdir = work / "cg"
    cgdir.mkdir()
    os.chown(cgdir, pwd.getpwnam("www-data").pw_uid, -1)
    shutil.copy2(module, work / "mod_imchallenge.so")
    shutil.copy2(noop, work / "mod_noop.so")
    module, noop = work / "mod_imchallenge.so", work / "mod_noop.so"
    body_text = bl.event(str(uuid.uuid4()))
    body_file = bl.write_body(work / "event.json", body_text)
    res = {"requests": args.requests, "module_sha256": bl.sha256(module),
           "machine": bl.machine_info(), "callgrind": {}, "strace": {}}
    ch = stack.ClickHouse(work / "clickhouse")
    try:
        ch.start()
        for name, path in TARGETS if "callgrind" in args.parts else ():
            print("callgrind: %d requests to %s ..." % (args.requests, path),
                  flush=True)
            h = make_httpd(work, "cg-" + name, module, noop, ch)
            f = callgrind(h, path, body_text, args.requests, cgdir, name)
            shutil.copy2(f, outdir / f.name)
            incl, excl = annotate(f, True), annotate(f, False)
            (outdir / ("annotate.%s.inclusive.txt" % name)).write_text(incl)
            (outdir / ("annotate.%s.exclusive.txt" % name)).write_text(excl)
            total, erows = parse_annotate(excl)
            _, irows = parse_annotate(incl)
            res["callgrind"][name] = {
                "ir_total": total, "ir_per_request": total / args.requests,
                "by_object": [[o, round(ir / args.requests)]
                              for o, ir in by_object(erows)],
                "inclusive": condense(irows, args.requests),
                "exclusive": condense(erows, args.requests)}
        if "strace" in args.parts and shutil.which("strace"):
            for name, path in TARGETS:
                print("strace: %d requests to %s ..." % (args.requests, path),
                      flush=True)
                h = make_httpd(work, "st-" + name, module, noop, ch)
                res["strace"][name] = strace_counts(h, path, body_text,
                                                    args.requests, outdir,
                                                    name)
        if "perf" not in args.parts:
            res["perf"] = None
        elif perf_works():
            print("perf: %d s of wrk per handler ..." % args.seconds,
                  flush=True)
            res["perf"] = perf_profile(work, module, noop, ch, body_file,
                                       args.seconds, outdir)
        else:
            res["perf"] = "perf cannot sample cpu-clock here"
    finally:
        ch.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = summarise(res)
    (outdir / "summary.txt").write_text(text + "\n")
    for name in ("noop", "module"):
        if isinstance(res.get("perf"), dict) and name in res["perf"]:
            res["perf"][name]["report"].pop("text", None)
    bl.dump_json(outdir / "summary.json", res)
    print(text)
    print("\nprofile files: %s" % outdir)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int,
                    default=int(os.environ.get("PROFILE_REQUESTS", 3000)))
    ap.add_argument("--seconds", type=int,
                    default=int(os.environ.get("PROFILE_SECONDS", 10)))
    ap.add_argument("--parts", default="callgrind,strace,perf",
                    help="which profiles to take (callgrind,strace,perf)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: httpd switches its children to www-data")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
