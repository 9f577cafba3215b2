#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""The benchmark suite of mod_imchallenge (`make bench`).

    /usr/bin/python3 tests/bench/run.py            # the whole suite
    /usr/bin/python3 tests/bench/run.py --compare A.json B.json

Starts a private ClickHouse and an httpd (event MPM) that loads the module
and the no-op baseline module (tests/bench/mod_noop.c) side by side, then
measures, in one run on one machine:

  single   one event per POST /api/event against the no-op handler
           (wrk -t2 -c32, keep-alive), alternating, median of the rounds
  h2       the same over HTTP/2 in clear text (h2c, mod_http2): h2load -t2
           -c32 -m10, alternating with the no-op handler, median of the
           rounds
  tenant   the same with Basic auth on two virtual hosts of the same
           httpd, one with IMChallengeSiteAccess (100,000 lines) and
           IMChallengeRateLimit (never reached), one without: their
           ratio; and the load time of that access file (apache2 -t with
           and without it)
  batch    NDJSON bodies of 1,000 and 10,000 events: accepted events/s and
           the delay until ClickHouse holds them all
  memory   httpd RSS before and after BENCH_MEM_EVENTS events
  backlog  the same number of events sent while ClickHouse is paused
           (SIGSTOP), then resumed: catch-up time and the delivering
           process's RSS
  spool    spool bytes per event, from the segment files of an httpd whose
           ClickHouse is unreachable (so nothing is delivered meanwhile)
  report   tests/bench/report_bench.py, when present

It prints one table and writes tests/bench/results/bench-<time>.json.
Figures are ratios and rates of this run on this machine; wrk, httpd and
ClickHouse share its cores, so they are noisy where other work runs.

Environment: BENCH_QUICK=1 (short run), BENCH_DURATION (s per wrk run,
10), BENCH_ROUNDS (5), BENCH_BATCH_SECONDS (10), BENCH_MEM_EVENTS
(1000000), BENCH_BACKLOG_EVENTS (1000000), BENCH_DRAIN_TIMEOUT (s, 60),
BENCH_ONLY (comma list of phases), BENCH_REPORT_SIZES (2000000,10000000),
BENCH_REPORT_REPEAT (5), BENCH_REPORT_CLUSTER=0 (the report without its
cluster scope: report_bench.py --no-cluster), BENCH_REPORT_COLD_SIZE
(events of the report's cold measurement, 30000000; 0 leaves it out, as
BENCH_QUICK=1 does),
BENCH_KEEP=1 (keep the work directory), IMC_MODULE (the module to test),
BENCH_DIRECTIVES (extra httpd.conf lines, "\\n" between them) and
BENCH_HTTPD_ENV ("NAME=value ..." for httpd's environment), to try tunings.
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import signal
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack  # noqa: E402
import benchlib as bl  # noqa: E402
import compare  # noqa: E402

PHASES = ("single", "h2", "tenant", "memory", "backlog", "batch", "spool",
          "report")
GOALS = {"single_ratio": 0.85, "single_ratio_later": 0.95, "h2_ratio": 0.85,
         "batch_events_per_s": 200000, "report_ratio": 1.0,
         "report_ratio_later": 0.3, "memory_growth_mb": 64}
JSON_TYPE = "application/json"
NDJSON_TYPE = "application/x-ndjson"


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def settings():
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")

    def num(name, full, short, kind=int):
        value = os.environ.get(name)
        return kind(value) if value else (short if quick else full)

    only = os.environ.get("BENCH_ONLY", "")
    phases = [p.strip() for p in only.split(",") if p.strip()] or PHASES
    unknown = set(phases) - set(PHASES)
    if unknown:
        sys.exit("BENCH_ONLY: unknown phase(s) %s; known: %s"
                 % (", ".join(sorted(unknown)), ", ".join(PHASES)))
    return {
        "quick": quick,
        "duration": num("BENCH_DURATION", 10, 3, float),
        "rounds": num("BENCH_ROUNDS", 5, 1),
        "batch_seconds": num("BENCH_BATCH_SECONDS", 10, 3, float),
        "mem_events": num("BENCH_MEM_EVENTS", 1000000, 100000),
        "backlog_events": num("BENCH_BACKLOG_EVENTS", 1000000, 200000),
        "drain_timeout": num("BENCH_DRAIN_TIMEOUT", 60, 30, float),
        "report_sizes": os.environ.get("BENCH_REPORT_SIZES")
        or ("200000,1000000" if quick else "2000000,10000000"),
        "report_repeat": num("BENCH_REPORT_REPEAT", 5, 2),
        "report_cold_size": num("BENCH_REPORT_COLD_SIZE", 30000000, 0),
        "report_cluster": os.environ.get("BENCH_REPORT_CLUSTER", "")
        not in ("0",),
        "phases": phases,
        "keep": os.environ.get("BENCH_KEEP", "") not in ("", "0"),
        "directives": os.environ.get("BENCH_DIRECTIVES", "").replace(
            "\\n", "\n"),
        "httpd_env": dict(kv.split("=", 1) for kv in os.environ.get(
            "BENCH_HTTPD_ENV", "").split() if "=" in kv),
    }


class Bench:
    """One run: the servers, the settings and the figures so far."""

    def __init__(self, cfg, workdir, module, noop):
        self.cfg = cfg
        self.workdir = workdir
        self.module = module
        self.noop = noop
        self.ch = stack.ClickHouse(workdir / "clickhouse")
        self.tenant_ports = (stack.free_port(), stack.free_port())
        self.httpd = stack.Httpd(
            workdir / "httpd", module, clickhouse_url=self.ch.url,
            mpm="event", batch_delay=None, env=cfg["httpd_env"],
            modules=("http2",) + TENANT_MODULES,
            directives=("LoadModule imchallenge_noop_module %s\n"
                        "Protocols h2c http/1.1\n"
                        "<Location /noop>\n"
                        "    SetHandler bench-noop\n"
                        "</Location>\n%s\n%s" % (
                            noop, tenant_hosts(workdir, self.tenant_ports),
                            cfg["directives"])))
        self.results = {"notes": []}
        self.quiet = []  # error-log byte ranges with expected warnings

    def error_log_problems(self):
        """Unexpected error-log lines, but for the windows in self.quiet
        (byte ranges of the log written while ClickHouse was paused)."""
        problems = self.httpd.error_log_problems
        bad = problems()
        skip = set()
        for start, end in self.quiet:
            first = len(bad) - len(problems(offset=start))
            last = len(bad) - len(problems(offset=end))
            skip.update(range(first, last))
        return [line for i, line in enumerate(bad) if i not in skip]

    def note(self, text):
        print("  note: " + text, flush=True)
        self.results["notes"].append(text)

    # -- servers

    def start(self):
        self.ch.start()
        self.httpd.start()
        _, took = bl.poll(self._ready, 60, 0.2)
        if took is None:
            raise stack.StackError("GET /readyz never answered 200")
        time.sleep(1)
        self.results["memory_at_start"] = bl.httpd_memory(self.httpd)

    def _ready(self):
        try:
            return self.httpd.get("readyz", timeout=2).status_code == 200
        except Exception:
            return False

    def stop(self):
        try:
            self.httpd.stop()
        finally:
            self.ch.stop()

    def url(self, path):
        return self.httpd.url + path.lstrip("/")

    def count(self, site=None):
        where = " WHERE site_id = toUUID('%s')" % site if site else ""
        return int(self.ch.scalar("SELECT count() FROM imchallenge.events"
                                  + where))

    def drain(self, what, timeout=None):
        """Wait until ClickHouse holds every accepted event: seconds, or
        None after the timeout."""
        timeout = self.cfg["drain_timeout"] if timeout is None else timeout
        want = bl.accepted_total(self.httpd)
        _, took = bl.poll(lambda: self.count() >= want, timeout, 0.1)
        if took is None:
            self.note("%s: ClickHouse holds %d of %d accepted events after "
                      "%.0f s" % (what, self.count(), want, timeout))
        return took

    def pids(self):
        return [self.httpd.pid] + self.httpd.children()

    # -- phases

    def wrk(self, path, body, ctype, threads, conns, duration):
        pids = self.pids()
        cpu0, ch0 = bl.cpu_seconds(pids), bl.cpu_seconds([self.ch.proc.pid])
        res = bl.run_wrk(self.url(path), body, ctype, threads, conns,
                         duration)
        pids = sorted(set(pids) | set(self.pids()))
        res["httpd_cpu_s"] = bl.cpu_seconds(pids) - cpu0
        res["clickhouse_cpu_s"] = bl.cpu_seconds([self.ch.proc.pid]) - ch0
        ok = res["requests"] - res["non2xx"]
        res["httpd_cpu_us_per_req"] = (res["httpd_cpu_s"] * 1e6 / ok
                                       if ok else None)
        res["clickhouse_cpu_us_per_req"] = (res["clickhouse_cpu_s"] * 1e6 / ok
                                            if ok else None)
        return res

    def phase_single(self):
        cfg = self.cfg
        body = bl.write_body(self.workdir / "single.json",
                             bl.event(str(uuid.uuid4()), kind="serve"))
        targets = {"noop": "noop", "module": "api/event"}
        for name in ("noop", "module"):  # warm-up: children, caches
            self.wrk(targets[name], body, JSON_TYPE, 2, 32, 2)
        self.drain("single warm-up")
        runs = {"noop": [], "module": []}
        for rnd in range(cfg["rounds"]):
            order = ("noop", "module") if rnd % 2 == 0 else ("module", "noop")
            for name in order:
                res = self.wrk(targets[name], body, JSON_TYPE, 2, 32,
                               cfg["duration"])
                if name == "module":
                    res["drain_s"] = self.drain("single round %d" % rnd)
                runs[name].append(res)
                print("  single %-6s round %d: %8.0f req/s  p50 %.2f ms  "
                      "p99 %.2f ms  non-2xx %d  httpd cpu %.0f us/req"
                      % (name, rnd + 1, res["rps"], res["p50_ms"] or 0,
                         res["p99_ms"] or 0, res["non2xx"],
                         res["httpd_cpu_us_per_req"] or 0), flush=True)
        out = {"body_bytes": body.stat().st_size, "runs": runs,
               "wrk": "-t2 -c32 -d%gs --latency" % cfg["duration"]}
        for name in runs:
            out[name] = {k: bl.median([r[k] for r in runs[name]])
                         for k in ("rps", "ok_rps", "p50_ms", "p99_ms",
                                   "httpd_cpu_us_per_req",
                                   "clickhouse_cpu_us_per_req")}
            out[name]["non2xx"] = sum(r["non2xx"] for r in runs[name])
        out["ratio_rps"] = bl.ratio(out["module"]["ok_rps"],
                                    out["noop"]["ok_rps"])
        out["ratio_cpu"] = bl.ratio(out["noop"]["httpd_cpu_us_per_req"],
                                    out["module"]["httpd_cpu_us_per_req"])
        self.results["single"] = out

    def phase_h2(self):
        """Single events over h2c: h2load against the module and the no-op
        handler in turns, like phase_single."""
        cfg = self.cfg
        body = bl.write_body(self.workdir / "h2.json",
                             bl.event(str(uuid.uuid4()), kind="serve"))
        targets = {"noop": "noop", "module": "api/event"}
        for name in ("noop", "module"):  # warm-up
            bl.run_h2load(self.url(targets[name]), body, JSON_TYPE, 2)
        self.drain("h2 warm-up")
        runs = {"noop": [], "module": []}
        for rnd in range(cfg["rounds"]):
            order = ("noop", "module") if rnd % 2 == 0 else ("module", "noop")
            for name in order:
                res = bl.run_h2load(self.url(targets[name]), body, JSON_TYPE,
                                    cfg["duration"])
                runs[name].append(res)
                print("  h2 %-6s round %d: %8.0f req/s  failed %d  non-2xx %d"
                      % (name, rnd + 1, res["ok_rps"], res["failed"],
                         res["non2xx"]), flush=True)
            self.drain("h2 round %d" % rnd)
        out = {"runs": runs, "h2load": bl.H2LOAD_ARGS % cfg["duration"]}
        for name in runs:
            out[name] = {"ok_rps": bl.median([r["ok_rps"] for r in runs[name]]),
                         "non2xx": sum(r["non2xx"] for r in runs[name])}
        out["ratio_rps"] = bl.ratio(out["module"]["ok_rps"],
                                    out["noop"]["ok_rps"])
        self.results["h2"] = out

    def phase_tenant(self):
        cfg = self.cfg
        site = TENANT_SITE
        body = bl.write_body(self.workdir / "tenant.json",
                             bl.event(site, kind="serve"))
        auth = "Basic " + base64.b64encode(b"bench:bench").decode()
        urls = {"on": "http://127.0.0.1:%d/api/event" % self.tenant_ports[0],
                "off": "http://127.0.0.1:%d/api/event" % self.tenant_ports[1]}

        def wrk(name, duration):
            pids = self.pids()
            cpu0 = bl.cpu_seconds(pids)
            res = bl.run_wrk(urls[name], body, JSON_TYPE, 2, 32, duration,
                             authorization=auth)
            ok = res["requests"] - res["non2xx"]
            res["httpd_cpu_us_per_req"] = (
                (bl.cpu_seconds(sorted(set(pids) | set(self.pids()))) - cpu0)
                * 1e6 / ok if ok else None)
            return res
        for name in ("on", "off"):
            wrk(name, 2)
        self.drain("tenant warm-up")
        runs = {"on": [], "off": []}
        for rnd in range(cfg["rounds"]):
            for name in (("on", "off") if rnd % 2 == 0 else ("off", "on")):
                res = wrk(name, cfg["duration"])
                self.drain("tenant round %d" % rnd)
                runs[name].append(res)
                print("  tenant %-3s round %d: %8.0f req/s  p50 %.2f ms  "
                      "non-2xx %d  httpd cpu %.0f us/req"
                      % (name, rnd + 1, res["ok_rps"], res["p50_ms"] or 0,
                         res["non2xx"], res["httpd_cpu_us_per_req"] or 0),
                      flush=True)
        out = {"runs": runs, "access_lines": TENANT_LINES}
        for name in runs:
            out[name] = {k: bl.median([r[k] for r in runs[name]])
                         for k in ("ok_rps", "p50_ms", "p99_ms",
                                   "httpd_cpu_us_per_req")}
            out[name]["non2xx"] = sum(r["non2xx"] for r in runs[name])
        out["ratio_rps"] = bl.ratio(out["on"]["ok_rps"], out["off"]["ok_rps"])
        out["access_load_s"] = self.access_load_seconds()
        print("  tenant: ratio on/off %.3f; access file of %d lines loads in "
              "%.3f s" % (out["ratio_rps"] or 0, TENANT_LINES,
                          out["access_load_s"]), flush=True)
        self.results["tenant"] = out

    def access_load_seconds(self):
        """apache2 -t with the access file minus without it: medians."""
        def configtest(extra):
            t0 = time.monotonic()
            rc, out = self.httpd.configtest(extra)
            if rc != 0:
                raise bl.BenchError("apache2 -t failed: %s" % out[-500:])
            return time.monotonic() - t0
        files = self.workdir / "tenant"
        extra = "IMChallengeSiteAccess %s" % (files / "sites.txt")
        base, loaded = [], []
        for _ in range(5):
            base.append(configtest(""))
            loaded.append(configtest(extra))
        return max(0.0, bl.median(loaded) - bl.median(base))

    def batch_once(self, n):
        cfg = self.cfg
        site = str(uuid.uuid4())
        body = bl.write_body(self.workdir / ("batch-%d.ndjson" % n),
                             bl.ndjson(site, n))
        acc0 = bl.accepted_total(self.httpd)
        res = self.wrk("api/event", body, NDJSON_TYPE, 2, 4,
                       cfg["batch_seconds"])
        accepted = bl.accepted_total(self.httpd) - acc0
        res["accepted_events"] = accepted
        res["events_per_s"] = accepted / res["duration_s"]
        got, took = bl.poll(lambda: self.count(site) >= accepted,
                            cfg["drain_timeout"], 0.05)
        res["delivered_events"] = self.count(site)
        res["e2e_after_load_s"] = took
        if took is None:
            self.note("batch %d: ClickHouse holds %d of %d accepted events "
                      "%.0f s after the load"
                      % (n, res["delivered_events"], accepted,
                         cfg["drain_timeout"]))
        res["idle_e2e_s"] = self.idle_e2e(n)
        print("  batch %5d: %9.0f events/s  %6.1f req/s  p50 %.1f ms  "
              "p99 %.1f ms  503s %d  in ClickHouse after %s s  idle e2e %s s"
              % (n, res["events_per_s"], res["ok_rps"], res["p50_ms"] or 0,
                 res["p99_ms"] or 0, res["non2xx"],
                 bl.fmt(took, "{:.2f}"), bl.fmt(res["idle_e2e_s"], "{:.2f}")),
              flush=True)
        return res

    def idle_e2e(self, n):
        """One request of n events into an idle server: seconds until
        ClickHouse holds them (or None)."""
        site = str(uuid.uuid4())
        body = bl.ndjson(site, n)
        t0 = time.monotonic()
        r = self.httpd.post("api/event", data=body,
                            headers={"Content-Type": NDJSON_TYPE}, timeout=60)
        if r.status_code != 202:
            self.note("idle e2e %d: POST answered %d" % (n, r.status_code))
            return None
        _, took = bl.poll(lambda: self.count(site) >= n,
                          self.cfg["drain_timeout"], 0.02)
        return None if took is None else time.monotonic() - t0

    def phase_batch(self):
        self.drain("before batch")
        out = {"wrk": "-t2 -c4 -d%gs" % self.cfg["batch_seconds"]}
        for n in (1000, 10000):
            out[str(n)] = self.batch_once(n)
            self.drain("after batch %d" % n)
        out["best_events_per_s"] = max(out[k]["events_per_s"]
                                       for k in ("1000", "10000"))
        self.results["batch"] = out

    def phase_memory(self):
        cfg = self.cfg
        per_request = 1000
        requests = max(1, cfg["mem_events"] // per_request)
        self.drain("before memory")
        time.sleep(1)
        before = bl.httpd_memory(self.httpd)
        sampler = bl.RssSampler(self.httpd)
        sampler.start()
        site = str(uuid.uuid4())
        try:
            stats = bl.post_many(
                self.httpd.host, self.httpd.port, "/api/event",
                bl.ndjson(site, per_request), NDJSON_TYPE, requests,
                clients=4, deadline=time.monotonic() + 600)
            events = requests * per_request
            _, took = bl.poll(lambda: self.count(site) >= events,
                              max(cfg["drain_timeout"], 120), 0.2)
            time.sleep(1)
        finally:
            sampler.stop()
        after = bl.httpd_memory(self.httpd)
        growth = after["total_kb"] - before["total_kb"]
        deliverer = bl.flock_holder(self.httpd.spool_dir / ".deliver.lock")
        self.results["memory"] = {
            "events": events, "requests": requests,
            "events_per_request": per_request, "post_stats": stats,
            "before": before, "after": after, "peak_kb": sampler.peak_kb,
            "max_processes": sampler.max_processes,
            "growth_kb": growth, "drain_s": took,
            "deliverer_pid": deliverer,
            "deliverer_before_kb": before["children_kb"].get(deliverer),
            "deliverer_after_kb": after["children_kb"].get(deliverer),
            "delivered_events": self.count(site)}
        if took is None:
            self.note("memory: ClickHouse holds %d of %d events"
                      % (self.count(site), events))
        print("  memory: RSS %.1f MB before, %.1f MB after %d events "
              "(peak %.1f MB, %d -> %d processes; the deliverer, pid %s: "
              "%s -> %s MB)"
              % (before["total_kb"] / 1024, after["total_kb"] / 1024, events,
                 sampler.peak_kb / 1024, before["processes"],
                 after["processes"], deliverer,
                 _mb(before["children_kb"].get(deliverer)),
                 _mb(after["children_kb"].get(deliverer))), flush=True)

    def phase_backlog(self):
        """Events queued while ClickHouse is paused, then the catch-up."""
        cfg = self.cfg
        per_request = 1000
        requests = max(1, cfg["backlog_events"] // per_request)
        events = requests * per_request
        self.drain("before backlog")
        lock = self.httpd.spool_dir / ".deliver.lock"
        deliverer = bl.flock_holder(lock)
        before = bl.httpd_memory(self.httpd)
        site = str(uuid.uuid4())
        self.ch.pause()
        try:
            stats = bl.post_many(
                self.httpd.host, self.httpd.port, "/api/event",
                bl.ndjson(site, per_request), NDJSON_TYPE, requests,
                clients=4, deadline=time.monotonic() + 600)
        finally:
            self.ch.resume()
        sampler = bl.RssSampler(self.httpd)
        sampler.start()
        try:
            _, took = bl.poll(lambda: self.count(site) >= events,
                              max(cfg["drain_timeout"], 300), 0.2)
            time.sleep(1)
        finally:
            sampler.stop()
        after = bl.httpd_memory(self.httpd)
        deliverer = bl.flock_holder(lock) or deliverer
        out = {"events": events, "post_stats": stats, "catch_up_s": took,
               "delivered_per_s": events / took if took else None,
               "deliverer_pid": deliverer,
               "deliverer_before_kb": before["children_kb"].get(deliverer),
               "deliverer_peak_kb": sampler.peak_by_pid.get(deliverer),
               "deliverer_after_kb": after["children_kb"].get(deliverer),
               "before": before, "after": after, "peak_kb": sampler.peak_kb}
        if None not in (out["deliverer_before_kb"], out["deliverer_after_kb"]):
            out["deliverer_growth_kb"] = (out["deliverer_after_kb"]
                                          - out["deliverer_before_kb"])
        self.results["backlog"] = out
        if took is None:
            self.note("backlog: ClickHouse holds %d of %d events"
                      % (self.count(site), events))
        print("  backlog: %d events queued in %.1f s with ClickHouse paused; "
              "in ClickHouse %s s after it resumed; the deliverer's RSS "
              "%s -> peak %s -> %s MB"
              % (events, stats["seconds"], bl.fmt(took, "{:.1f}"),
                 _mb(out["deliverer_before_kb"]),
                 _mb(out["deliverer_peak_kb"]),
                 _mb(out["deliverer_after_kb"])), flush=True)

    def phase_spool(self):
        """Bytes per event in the segment files, nothing delivered."""
        dead = "http://127.0.0.1:%d/" % stack.free_port()
        probe = stack.Httpd(self.workdir / "probe", self.module,
                            clickhouse_url=dead, mpm="event",
                            batch_delay=None,
                            directives="IMChallengeCreateSchema Off")
        site = str(uuid.uuid4())
        ev = bl.event(site)
        out = {"event_bytes": len(ev)}
        try:
            probe.start()
            size0 = seg_bytes(probe.spool_dir)
            body = bl.ndjson(site, 1000)
            for _ in range(10):
                r = probe.post("api/event", data=body,
                               headers={"Content-Type": NDJSON_TYPE})
                if r.status_code != 202:
                    raise bl.BenchError("spool probe answered %d"
                                        % r.status_code)
            size1 = seg_bytes(probe.spool_dir)
            for _ in range(1000):
                r = probe.post("api/event", data=ev,
                               headers={"Content-Type": JSON_TYPE})
                if r.status_code != 202:
                    raise bl.BenchError("spool probe answered %d"
                                        % r.status_code)
            size2 = seg_bytes(probe.spool_dir)
        finally:
            probe.stop(graceful=False)
        out["ndjson_event_bytes"] = len(body) / 1000
        out["batch_bytes_per_event"] = (size1 - size0) / 10000
        out["single_bytes_per_event"] = (size2 - size1) / 1000
        out["overhead_ratio"] = out["batch_bytes_per_event"] / len(ev)
        self.results["spool"] = out
        print("  spool: %.1f bytes/event in batches, %.1f single, event "
              "JSON %d bytes" % (out["batch_bytes_per_event"],
                                 out["single_bytes_per_event"], len(ev)),
              flush=True)

    def phase_report(self):
        """tests/bench/report_bench.py (its own servers, loaded straight
        into ClickHouse); its figures go into the results."""
        script = bl.BENCH_DIR / "report_bench.py"
        if not script.is_file():
            self.results["report"] = {"skipped": "tests/bench/report_bench.py "
                                                 "is not there"}
            self.note("report: tests/bench/report_bench.py is not there")
            return
        cfg = self.cfg
        cmd = [sys.executable, str(script), "--module", str(self.module),
               "--sizes", cfg["report_sizes"],
               "--repeat", str(cfg["report_repeat"]),
               "--cold-size", str(cfg["report_cold_size"])]
        if not cfg["report_cluster"]:
            cmd.append("--no-cluster")
        print("  " + " ".join(cmd), flush=True)
        p = subprocess.Popen(cmd, cwd=str(bl.REPO), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        path = None
        for line in p.stdout:
            print("  | " + line.rstrip(), flush=True)
            if line.startswith("results: "):
                path = Path(line.split(None, 1)[1].strip())
        status = p.wait()
        if path is None or not path.is_file():
            self.results["report"] = {"failed": "report_bench.py: exit "
                                                "status %d" % status}
            self.note("report: report_bench.py failed (status %d)" % status)
            return
        data = json.loads(path.read_text())
        data["file"] = str(path.relative_to(bl.REPO))
        if status != 0:  # results written, a goal it checks not met
            data["exit_status"] = status
            self.note("report: report_bench.py exited with status %d "
                      "after writing %s" % (status, data["file"]))
        self.results["report"] = data


TENANT_SITE = "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
TENANT_LINES = 100000
TENANT_MODULES = ("auth_basic", "authn_core", "authn_file", "authz_user")
TENANT_HOST = """Listen 127.0.0.1:%(port)d
<VirtualHost 127.0.0.1:%(port)d>
%(on)s    <Location "/api/event">
        AuthType Basic
        AuthName bench
        AuthBasicProvider file
        AuthUserFile %(files)s/htpasswd
        Require valid-user
    </Location>
</VirtualHost>"""


def tenant_hosts(workdir, ports):
    """Two virtual hosts with Basic auth, the first with a 100,000-line
    access file and a rate limit it never reaches; their files."""
    files = workdir / "tenant"
    files.mkdir(parents=True, exist_ok=True)
    with open(files / "sites.txt", "w") as f:
        for i in range(TENANT_LINES - 1):
            f.write("customer-%d %08x-0000-4000-8000-%012x\n" % (i, i, i))
        f.write("bench %s\n" % TENANT_SITE)
    digest = base64.b64encode(hashlib.sha1(b"bench").digest()).decode()
    (files / "htpasswd").write_text("bench:{SHA}%s\n" % digest)
    for p in (files, files / "sites.txt", files / "htpasswd"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    on = ("    IMChallengeSiteAccess %s/sites.txt\n"
          "    IMChallengeRateLimit 1000000 1000000\n" % files)
    return "\n".join(TENANT_HOST % {"port": port, "files": files, "on": o}
                     for port, o in zip(ports, (on, "")))


def _mb(kb):
    return "-" if kb is None else "%.1f" % (kb / 1024.0)


def seg_bytes(spool_dir):
    return sum(p.stat().st_size for p in Path(spool_dir).glob("*.seg"))


def prepare(cfg):
    """Work directory with copies of both modules (a rebuild during the run
    must not touch the files httpd has mapped)."""
    module = Path(os.environ.get("IMC_MODULE") or stack.DEFAULT_MODULE)
    if not module.is_file():
        sys.exit("module %s not found: run `make` first" % module)
    noop = bl.build_noop()
    bl.ensure_wrk()
    if "h2" in cfg["phases"]:
        bl.ensure_h2load()
    base = Path(tempfile.mkdtemp(prefix="imc-bench-", dir="/tmp"))
    os.chmod(base, 0o755)
    mods = base / "modules"
    mods.mkdir()
    shutil.copy2(module, mods / "mod_imchallenge.so")
    shutil.copy2(noop, mods / "mod_noop.so")
    return base, mods / "mod_imchallenge.so", mods / "mod_noop.so"


def run(cfg):
    base, module, noop = prepare(cfg)
    b = Bench(cfg, base, module, noop)
    b.results.update({
        "version": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {k: v for k, v in cfg.items() if k != "keep"},
        "machine": bl.machine_info(), "module_sha256": bl.sha256(module),
        "goals": GOALS,
        "contention": "wrk, httpd and ClickHouse share this machine's %d "
                      "cores (and whatever else runs on it)"
                      % os.cpu_count()})
    print("benchmark work directory %s" % base, flush=True)
    failed = False
    try:
        b.start()
        for phase in cfg["phases"]:
            print("== %s" % phase, flush=True)
            t0 = time.monotonic()
            offset = b.httpd.error_log_size()
            try:
                getattr(b, "phase_" + phase)()
            except (bl.BenchError, stack.StackError) as e:
                failed = True
                b.results[phase] = {"failed": str(e)[:2000]}
                b.note("%s failed: %s" % (phase, str(e).splitlines()[0]))
                traceback.print_exc()
            b.results.setdefault("phase_seconds", {})[phase] = round(
                time.monotonic() - t0, 1)
            if phase == "backlog":  # ClickHouse was paused on purpose
                b.quiet.append((offset, b.httpd.error_log_size()))
        b.results["error_log"] = b.error_log_problems()[:50]
    finally:
        b.results["machine"]["loadavg_end"] = os.getloadavg()
        b.stop()
        if cfg["keep"] or failed:
            print("work directory kept: %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = bl.dump_json(bl.BENCH_DIR / "results" / ("bench-%s.json" % stamp),
                        b.results)
    print()
    print(compare.summary(b.results))
    print("\nresults: %s" % path)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="compare two results files instead of running")
    args = ap.parse_args()
    if args.compare:
        old, new = (json.loads(Path(p).read_text()) for p in args.compare)
        print(compare.compare(old, new))
        return 0
    if os.geteuid() != 0:
        sys.exit("run as root: httpd switches its children to www-data")
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run(settings())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
