# Licensed under the Apache License, Version 2.0.
"""Helpers of the benchmark suite: wrk, events, process memory, tables.

Only the Python standard library (and tests/stack.py) is used, so that the
runner works with Debian's /usr/bin/python3 as it comes.
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent.parent
POST_LUA = BENCH_DIR / "post.lua"
NOOP_SOURCE = BENCH_DIR / "mod_noop.c"
NOOP_BUILD = REPO / "build" / "bench"
NOOP_MODULE = NOOP_BUILD / ".libs" / "mod_noop.so"
WARN = ["-Wall", "-Wextra", "-Werror", "-std=gnu11"]


class BenchError(RuntimeError):
    """A benchmark step could not be carried out."""


# ---------------------------------------------------------------- events

# A realistic extra member: the original event is stored verbatim, so its
# size is part of what the module moves.
EXTRA = '"ua":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko Firefox/128.0"'


def event(site_id, correlation_id=None, kind="serve", second=0):
    """One valid event as compact JSON text (about 220 bytes)."""
    return ('{"time":"2026-11-28T12:%02d:%02d.123Z","type":"%s",'
            '"correlation_id":"%s","site_id":"%s",%s}'
            % (second // 60 % 60, second % 60, kind,
               correlation_id or uuid.uuid4(), site_id, EXTRA))


def ndjson(site_id, count):
    """count events, one per line, half serve and half solve."""
    lines = []
    for i in range(count):
        lines.append(event(site_id, kind="serve" if i % 2 == 0 else "solve",
                           second=i % 3600))
    return "\n".join(lines) + "\n"


def write_body(path, text):
    path = Path(path)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- wrk

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise BenchError("cannot read wrk time %r" % text)
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def _ensure(command):
    """command on PATH; tests/install-deps.sh bench installs it when it is
    missing."""
    if not shutil.which(command):
        subprocess.run(["bash", str(Path(__file__).resolve().parent.parent
                                    / "install-deps.sh"), "bench"],
                       check=True)
    return shutil.which(command)


def ensure_wrk():
    return _ensure("wrk")


def ensure_h2load():
    return _ensure("h2load")


# h2load over h2c (prior knowledge: an http:// URL): 2 threads, 32
# connections, 10 streams each, for the given seconds.
H2LOAD_ARGS = "-t2 -c32 -m10 -D%g"


def run_h2load(url, body_file, ctype, duration):
    """One h2load run: successful requests per second and the failures."""
    cmd = (["h2load"] + (H2LOAD_ARGS % duration).split()
           + ["-d", str(body_file), "-H", "content-type: " + ctype, url])
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=duration + 120)
    out = res.stdout
    m = re.search(r"finished in ([\d.]+)(m?s)", out)
    n = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, "
                  r"(\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, "
                      r"(\d+) 5xx", out)
    if res.returncode != 0 or not (m and n and codes):
        raise BenchError("h2load failed (%d): %s" % (res.returncode,
                                                     out[-1000:]))
    seconds = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    ok = int(codes.group(1))
    return {"duration_s": seconds, "requests": int(n.group(2)),
            "failed": int(n.group(4)), "ok_rps": ok / seconds,
            "non2xx": int(n.group(2)) - ok}


def parse_wrk(out):
    """The figures of one wrk --latency run."""
    res = {"non2xx": 0, "socket_errors": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise BenchError("wrk printed no Requests/sec:\n" + out)
    res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    res["requests"] = int(m.group(1))
    res["duration_s"] = _to_ms(m.group(2)) / 1000.0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+%s%%\s+([\d.]+\w+)\s*$" % pct, out, re.M)
        res[key] = _to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    return res


def run_wrk(url, body_file, content_type, threads=2, connections=32,
            duration=10, authorization=None):
    """wrk POSTing body_file to url (with an Authorization header when
    given); returns parse_wrk()'s figures."""
    cmd = ["wrk", "-t%d" % threads, "-c%d" % connections,
           "-d%ds" % max(1, int(round(duration))), "--latency",
           "--timeout", "30s", "-s", str(POST_LUA), url]
    env = dict(os.environ, BENCH_BODY=str(body_file),
               BENCH_CONTENT_TYPE=content_type,
               BENCH_AUTHORIZATION=authorization or "")
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True,
                       timeout=duration + 120)
    if p.returncode != 0:
        raise BenchError("wrk failed (%d):\n%s" % (p.returncode, p.stdout))
    res = parse_wrk(p.stdout)
    res["ok_rps"] = ((res["requests"] - res["non2xx"]) / res["duration_s"]
                     if res["duration_s"] else 0.0)
    return res


# ---------------------------------------------------------------- HTTP

def post_many(host, port, path, body, content_type, count, clients=4,
              deadline=None):
    """POST body count times over `clients` keep-alive connections.

    A 503 (spool full) is retried after a short pause until deadline.
    Returns {"status": {code: n}, "retries_503": n, "seconds": s}.
    """
    data = body.encode() if isinstance(body, str) else body
    lock = threading.Lock()
    left = [count]
    stats = {"status": {}, "retries_503": 0}
    errors = []

    def take():
        with lock:
            if left[0] <= 0:
                return False
            left[0] -= 1
            return True

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            while take():
                while True:
                    conn.request("POST", path, body=data, headers={
                        "Content-Type": content_type})
                    r = conn.getresponse()
                    r.read()
                    if r.status == 503 and (deadline is None
                                            or time.monotonic() < deadline):
                        with lock:
                            stats["retries_503"] += 1
                        time.sleep(0.2)
                        continue
                    with lock:
                        stats["status"][r.status] = \
                            stats["status"].get(r.status, 0) + 1
                    break
        except Exception as e:  # reported by the caller
            errors.append(e)
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["seconds"] = time.monotonic() - t0
    if errors:
        raise BenchError("POST %s failed: %r" % (path, errors[0]))
    return stats


def metrics(httpd):
    """The module's Prometheus counters and gauges, as {name: float}."""
    r = httpd.get("metrics", timeout=10)
    if r.status_code != 200:
        raise BenchError("GET /metrics answered %d" % r.status_code)
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def accepted_total(httpd):
    return int(metrics(httpd).get("imchallenge_events_accepted_total", 0))


def poll(predicate, timeout, interval=0.05):
    """(value, seconds) when predicate() returns a true value, or
    (last value, None) when timeout seconds pass first."""
    t0 = time.monotonic()
    value = None
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            return value, None
        time.sleep(interval)


# ---------------------------------------------------------------- processes

def rss_kb(pid):
    """VmRSS of pid in kB (0 when it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def httpd_memory(httpd):
    """RSS of the parent and each child of httpd, in kB."""
    kids = httpd.children()
    per = {pid: rss_kb(pid) for pid in kids}
    return {"parent_kb": rss_kb(httpd.pid), "children_kb": per,
            "total_kb": rss_kb(httpd.pid) + sum(per.values()),
            "processes": 1 + len(kids)}


def flock_holder(path):
    """Pid holding an flock on path (from /proc/locks), or None."""
    try:
        ino = os.stat(path).st_ino
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if ("FLOCK" in fields and len(fields) > 5
                        and fields[5].rsplit(":", 1)[-1] == str(ino)):
                    return int(fields[4])
    except (OSError, ValueError, IndexError):
        pass
    return None


class RssSampler(threading.Thread):
    """Samples the total RSS of httpd every interval seconds; keeps the
    peak."""

    def __init__(self, httpd, interval=0.25):
        super().__init__(daemon=True)
        self.httpd, self.interval = httpd, interval
        self.peak_kb = 0
        self.peak_by_pid = {}
        self.max_processes = 0
        self._stop_evt = threading.Event()

    def run(self):
        while not self._stop_evt.is_set():
            m = httpd_memory(self.httpd)
            self.peak_kb = max(self.peak_kb, m["total_kb"])
            self.max_processes = max(self.max_processes, m["processes"])
            for pid, kb in m["children_kb"].items():
                self.peak_by_pid[pid] = max(kb, self.peak_by_pid.get(pid, 0))
            self._stop_evt.wait(self.interval)

    def stop(self):
        self._stop_evt.set()
        self.join()


def cpu_seconds(pids):
    """utime + stime of pids (and their threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


# ---------------------------------------------------------------- building

def build_noop(force=False):
    """Build tests/bench/mod_noop.c with apxs into build/bench/."""
    if (not force and NOOP_MODULE.is_file()
            and NOOP_MODULE.stat().st_mtime >= NOOP_SOURCE.stat().st_mtime):
        return NOOP_MODULE
    NOOP_BUILD.mkdir(parents=True, exist_ok=True)
    shutil.copy2(NOOP_SOURCE, NOOP_BUILD / "mod_noop.c")
    cmd = ["apxs", "-c", "-o", "mod_noop.la"]
    cmd += ["-Wc,%s" % w for w in WARN] + ["mod_noop.c"]
    p = subprocess.run(cmd, cwd=str(NOOP_BUILD), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0 or not NOOP_MODULE.is_file():
        raise BenchError("building mod_noop failed:\n" + p.stdout)
    return NOOP_MODULE


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def machine_info():
    """What the figures depend on: cores, load, versions."""
    info = {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1) if m else None
    except OSError:
        info["cpu"] = None
    for key, cmd in (("apache", ["/usr/sbin/apache2", "-v"]),
                     ("kernel", ["uname", "-r"]),
                     ("git", ["git", "-C", str(REPO), "describe", "--always",
                              "--dirty"])):
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True,
                                 timeout=10).stdout
            info[key] = out.strip().splitlines()[0] if out.strip() else None
        except (OSError, subprocess.SubprocessError):
            info[key] = None
    return info


# ---------------------------------------------------------------- figures

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, spec="{:,.0f}", none="-"):
    return none if value is None else spec.format(value)


def table(rows, headers):
    """A plain-text table; rows are lists of strings."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, headers))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append("  ".join(
            ("%-*s" if i == 0 else "%*s") % (widths[i], c)
            for i, c in enumerate(row)))
    return "\n".join(out)


def dump_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.rename(path)
    return path
