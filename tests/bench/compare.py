# Licensed under the Apache License, Version 2.0.
"""The benchmark's table, and the comparison of two results files.

    /usr/bin/python3 tests/bench/compare.py OLD.json NEW.json
"""

import json
import sys
from pathlib import Path

import benchlib as bl

# (label, path in the results, format, goal: (op, value) or None).
FIGURES = [
    ("single: module req/s", "single.module.ok_rps", "{:,.0f}", None),
    ("single: no-op req/s", "single.noop.ok_rps", "{:,.0f}", None),
    ("single: ratio module/no-op", "single.ratio_rps", "{:.3f}",
     (">=", 0.85)),
    ("single: module p50 ms", "single.module.p50_ms", "{:.2f}", None),
    ("single: module p99 ms", "single.module.p99_ms", "{:.2f}", None),
    ("single: no-op p50 ms", "single.noop.p50_ms", "{:.2f}", None),
    ("single: no-op p99 ms", "single.noop.p99_ms", "{:.2f}", None),
    ("single: httpd CPU us/req module", "single.module.httpd_cpu_us_per_req",
     "{:.1f}", None),
    ("single: httpd CPU us/req no-op", "single.noop.httpd_cpu_us_per_req",
     "{:.1f}", None),
    ("single: CPU ratio no-op/module", "single.ratio_cpu", "{:.3f}",
     (">=", 0.85)),
    ("single: ClickHouse CPU us/req module",
     "single.module.clickhouse_cpu_us_per_req", "{:.1f}", None),
    ("h2c: module req/s", "h2.module.ok_rps", "{:,.0f}", None),
    ("h2c: no-op req/s", "h2.noop.ok_rps", "{:,.0f}", None),
    ("h2c: ratio module/no-op", "h2.ratio_rps", "{:.3f}", (">=", 0.85)),
    ("tenant: req/s access + rate limit on", "tenant.on.ok_rps", "{:,.0f}",
     None),
    ("tenant: req/s both off", "tenant.off.ok_rps", "{:,.0f}", None),
    ("tenant: ratio on/off", "tenant.ratio_rps", "{:.3f}", (">=", 0.95)),
    ("tenant: load of a 100,000-line access file s",
     "tenant.access_load_s", "{:.3f}", ("<=", 1.0)),
    ("batch 1k: events/s", "batch.1000.events_per_s", "{:,.0f}",
     (">=", 200000)),
    ("batch 1k: req p50 / p99 ms", ("batch.1000.p50_ms", "batch.1000.p99_ms"),
     "{:.1f}", None),
    ("batch 1k: 503 answers", "batch.1000.non2xx", "{:,.0f}", None),
    ("batch 1k: in ClickHouse after load s", "batch.1000.e2e_after_load_s",
     "{:.2f}", None),
    ("batch 1k: idle end-to-end s", "batch.1000.idle_e2e_s", "{:.2f}", None),
    ("batch 10k: events/s", "batch.10000.events_per_s", "{:,.0f}",
     (">=", 200000)),
    ("batch 10k: req p50 / p99 ms",
     ("batch.10000.p50_ms", "batch.10000.p99_ms"), "{:.1f}", None),
    ("batch 10k: 503 answers", "batch.10000.non2xx", "{:,.0f}", None),
    ("batch 10k: in ClickHouse after load s",
     "batch.10000.e2e_after_load_s", "{:.2f}", None),
    ("batch 10k: idle end-to-end s", "batch.10000.idle_e2e_s", "{:.2f}",
     None),
    ("memory: httpd RSS at start MB", "memory_at_start.total_kb", "mb",
     None),
    ("memory: httpd RSS before MB", "memory.before.total_kb", "mb", None),
    ("memory: httpd RSS after MB", "memory.after.total_kb", "mb", None),
    ("memory: httpd RSS peak MB", "memory.peak_kb", "mb", None),
    ("memory: growth MB", "memory.growth_kb", "mb", ("<=", 64)),
    ("memory: deliverer RSS before / after MB",
     ("memory.deliverer_before_kb", "memory.deliverer_after_kb"), "mb",
     None),
    ("memory: events sent", "memory.events", "{:,.0f}", None),
    ("memory: processes before / after",
     ("memory.before.processes", "memory.after.processes"), "{:.0f}", None),
    ("backlog: events queued, ClickHouse paused", "backlog.events",
     "{:,.0f}", None),
    ("backlog: in ClickHouse after resume s", "backlog.catch_up_s", "{:.1f}",
     None),
    ("backlog: delivered events/s", "backlog.delivered_per_s", "{:,.0f}",
     None),
    ("backlog: deliverer RSS before / peak / after MB",
     ("backlog.deliverer_before_kb", "backlog.deliverer_peak_kb",
      "backlog.deliverer_after_kb"), "mb", None),
    ("backlog: deliverer RSS growth MB", "backlog.deliverer_growth_kb", "mb",
     ("<=", 64)),
    ("spool: bytes/event (batches)", "spool.batch_bytes_per_event", "{:.1f}",
     None),
    ("spool: bytes/event (single)", "spool.single_bytes_per_event", "{:.1f}",
     None),
    ("spool: event JSON bytes", "spool.event_bytes", "{:.0f}", None),
]


def get(data, path):
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fmt(value, spec):
    if value is None:
        return "-"
    if spec == "mb":
        return "{:.1f}".format(value / 1024.0)
    return spec.format(value)


def _value(data, path, spec):
    if isinstance(path, tuple):
        return " / ".join(_fmt(get(data, p), spec) for p in path)
    return _fmt(get(data, path), spec)


def _number(data, path, spec):
    if isinstance(path, tuple):
        return None
    v = get(data, path)
    if v is None:
        return None
    return v / 1024.0 if spec == "mb" else v


def _verdict(value, goal):
    if goal is None or value is None:
        return ""
    op, want = goal
    ok = value >= want if op == ">=" else value <= want
    return "%s %s: %s" % (op, _fmt(want, "{:,g}"), "met" if ok else "NOT met")


# The scopes of tests/bench/report_bench.py, as it names them, and their
# goals (its docstring says what each measures). "new filter" keeps its
# short name, under which earlier results have it.
REPORT_SCOPES = (("all", "all sites", ("<=", 1.0)),
                 ("site", "one site", ("<=", 1.0)),
                 ("new", "new filter", ("<=", 0.1)),
                 ("nothing", "nothing cached (first report)", ("<=", 0.3)),
                 ("other", "other process (prefork)", ("<=", 0.1)),
                 ("graceful", "after graceful restart", ("<=", 0.1)),
                 ("insert", "after insert", ("<=", 1.0)),
                 ("ingest", "steady ingestion, 200 events/s", ("<=", 0.2)),
                 ("cluster", "cluster (asked again)", ("<=", 0.2)))


def report_rows(data):
    """Rows for the figures of report_bench.py (module / naive query)."""
    rep = data.get("report") or {}
    if "skipped" in rep or "failed" in rep:
        return [["report", "-", rep.get("skipped") or rep.get("failed")]]
    rows = []
    for res in rep.get("results", []):
        m, n = res.get("measure", {}), res.get("data", {}).get("events")
        for scope, name, goal in REPORT_SCOPES:
            ratio = m.get("ratio_" + scope)
            if ratio is None:
                continue
            rows.append([
                "report %s events, %s: module / naive ms" % (
                    _fmt(n, "{:,.0f}"), name),
                "%s / %s" % (_fmt(get(m, "module_%s.median_ms" % scope),
                                  "{:.1f}"),
                             _fmt(get(m, "naive_%s.median_ms" % scope),
                                  "{:.1f}")), ""])
            rows.append(["report %s events, %s: ratio" % (
                _fmt(n, "{:,.0f}"), name), _fmt(ratio, "{:.3f}"),
                _verdict(ratio, goal)])
    cold = rep.get("cold")
    if cold:
        m, n = cold["measure"], _fmt(cold["data"]["events"], "{:,.0f}")
        rows.append([
            "report %s events, cold: module (status) / naive / halves ms" % n,
            "%s (%s) / %s / %s" % (
                _fmt(m["module"]["median_ms"], "{:.1f}"),
                ",".join(str(x) for x in m["module"]["statuses"]),
                _fmt(m["naive"]["median_ms"], "{:.1f}"),
                _fmt(m["halves"]["median_ms"], "{:.1f}")),
            "200 within %d s: %s" % (m["timeout_s"],
                                     "met" if m["met"] else "NOT met")])
        rows.append(["report %s events, cold: ratio" % n,
                     _fmt(m["ratio_naive"], "{:.3f}"), ""])
    return rows


def _report_figures(data):
    """{label: ratio} of the report results, for compare()."""
    out = {}
    for row in report_rows(data):
        if row[0].endswith(": ratio"):
            try:
                out[row[0]] = float(row[1])
            except ValueError:
                out[row[0]] = None
    return out


def summary(data):
    rows = []
    for label, path, spec, goal in FIGURES:
        value = _value(data, path, spec)
        if value.strip("- /") == "":
            continue
        rows.append([label, value, _verdict(_number(data, path, spec), goal)])
    rows += report_rows(data)
    for phase in ("single", "h2", "tenant", "batch", "memory", "spool"):
        if isinstance(data.get(phase), dict) and "failed" in data[phase]:
            rows.append([phase, "FAILED", data[phase]["failed"][:60]])
    out = [bl.table(rows, ["figure", "value", "goal"])]
    m = data.get("machine", {})
    out.append("\n%s cores (%s); load average %s at the start, %s at the "
               "end; %s." % (m.get("cores"), m.get("cpu"),
                             _load(m.get("loadavg_start")),
                             _load(m.get("loadavg_end")),
                             data.get("contention", "")))
    for note in data.get("notes", []):
        out.append("note: " + note)
    if data.get("error_log"):
        out.append("httpd error log: %d unexpected line(s), first: %s"
                   % (len(data["error_log"]), data["error_log"][0][:200]))
    return "\n".join(out)


def _load(values):
    return "/".join("%.2f" % v for v in values) if values else "?"


def compare(old, new):
    rows = []
    for label, path, spec, goal in FIGURES:
        a, b = _value(old, path, spec), _value(new, path, spec)
        if a == "-" and b == "-":
            continue
        na, nb = _number(old, path, spec), _number(new, path, spec)
        change = ("{:+.1f}%".format((nb - na) / na * 100.0)
                  if na and nb is not None else "")
        rows.append([label, a, b, change])
    ro, rn = _report_figures(old), _report_figures(new)
    for label in sorted(set(ro) | set(rn)):
        a, b = ro.get(label), rn.get(label)
        change = ("{:+.1f}%".format((b - a) / a * 100.0)
                  if a and b is not None else "")
        rows.append([label, _fmt(a, "{:.3f}"), _fmt(b, "{:.3f}"), change])
    head = "old: %s (%s)\nnew: %s (%s)\n" % (
        old.get("started"), old.get("machine", {}).get("git"),
        new.get("started"), new.get("machine", {}).get("git"))
    return head + bl.table(rows, ["figure", "old", "new", "change"])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: compare.py OLD.json NEW.json")
    print(compare(*(json.loads(Path(p).read_text()) for p in sys.argv[1:])))
