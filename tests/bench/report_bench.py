#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""Report benchmark: the module's GET /api/report against the naive query.

Starts its own ClickHouse and httpd (tests/stack.py), loads generated
events straight into ClickHouse with INSERT ... SELECT FROM numbers()
(about 100 sites over about 30 days; every procedure served, about 80 %
solved, about 2.7 % of the events sent twice), then measures the median of
--repeat runs after one warm-up of the module's report and of the naive
query below, run directly on ClickHouse over HTTP, in four scopes:

    all sites     GET /api/report, again and again
    one site      GET /api/report/site_id='<uuid>' (naive: WHERE site_id)
    new filter    a filter never asked before each time, true for every
                  event: nothing in the module's cache helps
    after insert  GET /api/report after one more event on the last day

    SELECT toDate(time) AS day, site_id,
           uniqExactIf(correlation_id, type = 'serve'),
           uniqExactIf(correlation_id, type = 'solve')
    FROM imchallenge.events [WHERE ...]
    GROUP BY day, site_id ORDER BY day, site_id

It checks that the module's rows equal the naive query's in every run,
prints a table with the ratios module / naive (goal: <= 1.0) and writes
the figures to tests/bench/results/report-<timestamp>.json.

Then the report's other forms (FORM_SCOPES: hour buckets over 7 days,
minute buckets of the last day over all sites, a total over 30 days, per
day over all sites, the solve times' p50 and p90 per site over 30 days),
each asked the first time (a filter never asked
before: nothing cached) and again at once (nothing changed: the answer
kept), against the naive exact query for the same numbers (ClickHouse's
toStartOfHour / toStartOfMinute in UTC; for the solve times, each
procedure's earliest serve joined to its first solve within the window,
and the nearest ranks of the sorted times). Goals: first / naive <= 1.0,
again / naive <= 0.1. Both answers of every run are compared with the
naive query's; any difference fails the benchmark.

    /usr/bin/python3 tests/bench/report_bench.py [--sizes 2000000,10000000]
        [--repeat 5] [--module PATH] [--keep]

Run as root (httpd switches its children to www-data).
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
import stack  # noqa: E402

RESULTS = BENCH_DIR / "results"
DATABASE = "imchallenge"
SITES = 100
DAYS = 30
START = 1735689600  # 2025-01-01T00:00:00Z
# Events per procedure: a serve, a solve for 4 in 5, a repeated serve for
# 1 in 33 and a repeated solve for 1 in 50.
EVENTS_PER_PROCEDURE = 1 + 0.8 + 1 / 33 + 1 / 50
QUERY_TIMEOUT = 600

# Identifiers as random as real UUIDs (structured ones would flatter or
# punish hash tables), yet reproducible: the MD5 of a name.
CID = "toUUID(UUIDNumToString(MD5(concat('procedure-', toString(i)))))"
SITE = "toUUID(UUIDNumToString(MD5(concat('site-', toString(s)))))"

LOAD_SQL = """INSERT INTO {db}.events
    (time, type, correlation_id, site_id, received_at, raw)
SELECT toDateTime(t0 + if(k = 2, 30 + i % 60, 0)) AS time,
       CAST(if(k = 2, 'solve', 'serve')
            AS Enum8('serve' = 1, 'solve' = 2)) AS type,
       {cid} AS correlation_id,
       {site} AS site_id,
       toDateTime(t0 + if(k = 2, 31 + i % 60, 1)) AS received_at,
       concat('{{"time":"', replaceOne(toString(time, 'UTC'), ' ', 'T'),
              'Z","type":"', toString(type), '","correlation_id":"',
              toString(correlation_id), '","site_id":"', toString(site_id),
              '"}}') AS raw
FROM
(
    SELECT number AS i, i % {sites} AS s,
           {start} + (intDiv(i, {sites}) % {days}) * 86400
                   + cityHash64(i) % 86400 AS t0
    FROM numbers({procedures})
)
ARRAY JOIN arrayFilter(x -> x != 0, [1, if(i % 5 != 0, 2, 0),
                                     if(i % 33 = 0, 1, 0),
                                     if(i % 50 = 1, 2, 0)]) AS k"""

NAIVE_SQL = """SELECT toDate(time) AS day, site_id,
       uniqExactIf(correlation_id, type = 'serve'),
       uniqExactIf(correlation_id, type = 'solve')
FROM {db}.events{where}
GROUP BY day, site_id ORDER BY day, site_id
FORMAT TabSeparated"""


class BenchError(RuntimeError):
    pass


def site_uuid(s):
    """The site_id that SITE gives site number s."""
    return str(uuid.UUID(bytes=hashlib.md5(b"site-%d" % s).digest()))


def load(ch, size):
    """Replace the events with about size generated ones; return counts."""
    procedures = int(round(size / EVENTS_PER_PROCEDURE))
    ch.query("TRUNCATE TABLE %s.events" % DATABASE)
    t0 = time.monotonic()
    ch.query(LOAD_SQL.format(db=DATABASE, cid=CID, site=SITE, sites=SITES,
                             days=DAYS, start=START, procedures=procedures),
             timeout=QUERY_TIMEOUT)
    ch.query("OPTIMIZE TABLE %s.events FINAL" % DATABASE,
             timeout=QUERY_TIMEOUT)
    loaded = time.monotonic() - t0
    counts = ch.query("SELECT count(), uniqExact(site_id), "
                      "uniqExact(toDate(time)), "
                      "count() - uniqExact(correlation_id, type) "
                      "FROM %s.events" % DATABASE).split()
    return {"target": size, "procedures": procedures,
            "events": int(counts[0]), "sites": int(counts[1]),
            "days": int(counts[2]), "duplicates": int(counts[3]),
            "load_seconds": round(loaded, 2)}


# ---------------------------------------------------------------- the runs


def module_fetch(httpd, flt):
    """GET the module's report (with filter flt); returns the JSON text."""
    path = "api/report"
    if flt:
        path += "/" + quote(flt, safe="")
    r = httpd.get(path, timeout=QUERY_TIMEOUT)
    if r.status_code != 200:
        raise BenchError("GET /%s answered %d: %s"
                         % (path, r.status_code, r.text[:300]))
    return r.text


def module_rows(text):
    """The module's rows as sorted (day, site, served, solved) tuples."""
    return sorted((x["day"], x["site_id"], x["served"], x["solved"])
                  for x in json.loads(text)["rows"])


def naive_fetch(ch, where):
    """Run the naive query on ClickHouse over HTTP; returns the TSV text."""
    return ch.query(NAIVE_SQL.format(db=DATABASE, where=where),
                    timeout=QUERY_TIMEOUT)


def naive_rows(text):
    """The naive query's rows as sorted (day, site, served, solved)."""
    rows = []
    for line in text.splitlines():
        day, s, served, solved = line.split("\t")
        rows.append((day, s, int(served), int(solved)))
    return sorted(rows)


def first_difference(a, b):
    for x, y in zip(a + [None], b + [None]):
        if x != y:
            return x, y
    return None


def one_site(site):
    """The filter and the naive WHERE for one site."""
    return ("site_id='%s'" % site, " WHERE site_id = toUUID('%s')" % site)


def new_filter():
    """A filter no report asked before, true for every event: the module
    has nothing cached for it."""
    other = uuid.uuid4()
    return ("site_id!='%s'" % other, " WHERE site_id != toUUID('%s')" % other)


def insert_one(ch):
    """One more event on the last day, in a part of its own: the module
    asks ClickHouse again for that day only. Returns no filter."""
    t = START + (DAYS - 1) * 86400 + 43200
    ch.query("INSERT INTO %s.events (time, type, correlation_id, site_id, "
             "received_at, raw) VALUES (%d, 'serve', '%s', '%s', %d, '')"
             % (DATABASE, t, uuid.uuid4(), site_uuid(3), t))
    return None, ""


# Scopes of the report benchmark: name, label, and what runs before each
# report: prepare(stack, site) returns its filter and the naive WHERE.
SCOPES = (
    ("all", "all sites", lambda st, site: (None, "")),
    ("site", "one site", lambda st, site: one_site(site)),
    ("new", "new filter", lambda st, site: new_filter()),
    ("insert", "after insert", lambda st, site: insert_one(st.clickhouse)),
)


def timed(fn, *args):
    t0 = time.perf_counter()
    text = fn(*args)
    return time.perf_counter() - t0, text


def measure_scope(st, prepare, repeat):
    """Median ms of the module's report and of the naive query over repeat
    runs after a warm-up; prepare() before each run gives the filter and
    the naive WHERE. Only the HTTP exchanges are timed; the answers of
    every run are compared afterwards."""
    samples = {"module": [], "naive": []}
    for run in range(repeat + 1):
        flt, where = prepare()
        tm, mtext = timed(module_fetch, st.httpd, flt)
        tn, ntext = timed(naive_fetch, st.clickhouse, where)
        mod, naive = module_rows(mtext), naive_rows(ntext)
        if mod != naive or not mod:
            raise BenchError("the module's report differs from the naive "
                             "query: %d vs %d rows, first difference %s"
                             % (len(mod), len(naive),
                                first_difference(mod, naive)))
        if run:  # the first run is the warm-up
            samples["module"].append(tm)
            samples["naive"].append(tn)
    out = {name: {"median_ms": round(statistics.median(s) * 1000, 1),
                  "samples_ms": [round(x * 1000, 1) for x in s]}
           for name, s in samples.items()}
    out["rows"] = len(mod)
    out["ratio"] = round(out["module"]["median_ms"]
                         / out["naive"]["median_ms"], 3)
    return out


# ------------------------------------------------ the other report forms

# Scopes of the forms (interval, by, metrics) benchmark: name, label, the
# module's query parameters, and the naive exact query's bucket and group
# columns, its counted procedure and its time range (days of the data,
# None: all). In UTC, so the naive query buckets with ClickHouse's own
# toStartOf* functions. The report's range is whole days: "the last hour"
# is asked as the minutes of the last day, over all sites (by=none).
FORM_SCOPES = (
    ("hour7", "hour buckets, 7 days",
     {"interval": "hour", "from": DAYS - 7, "to": DAYS - 1},
     "toUInt32(toStartOfHour(time))", True, (DAYS - 7, DAYS)),
    ("minute1", "minute buckets, last day, by=none",
     {"interval": "minute", "by": "none", "from": DAYS - 1, "to": DAYS - 1},
     "toUInt32(toStartOfMinute(time))", False, (DAYS - 1, DAYS)),
    ("total30", "total, 30 days",
     {"interval": "total", "from": 0, "to": DAYS - 1},
     None, True, (0, DAYS)),
    ("none", "by=none, per day, no from/to",
     {"by": "none"}, "toString(toDate(time))", False, None),
    # The naive query of this one is QUANTILE_NAIVE_SQL: each procedure's
    # earliest serve paired with its first solve within the window.
    ("p50p90", "solve time p50, p90, total 30 days",
     {"interval": "total", "from": 0, "to": DAYS - 1,
      "metrics": "solve_time_p50,solve_time_p90"}, None, True, (0, DAYS)),
)

# The default IMChallengeSolveWindow (10m), in milliseconds.
SOLVE_WINDOW_MS = 600000

# Per site over the range, exact nearest ranks of the solve times in
# milliseconds: the n sorted times, the values at ranks ceil(n/2) and
# ceil(9n/10).
QUANTILE_NAIVE_SQL = """SELECT toString(site_id), length(t) AS n,
       t[intDiv(5 * n + 9, 10)], t[intDiv(9 * n + 9, 10)]
FROM
(
    SELECT site_id, arraySort(groupArray(v - s)) AS t
    FROM
    (
        SELECT site_id, s,
               arrayFirst(x -> x >= s AND x <= s + {window}, vs) AS v
        FROM
        (
            SELECT site_id, correlation_id,
                   min(toUInt64(time) * 1000 + time_ms) AS s
            FROM {db}.events WHERE type = 'serve' AND {where}
            GROUP BY site_id, correlation_id
        )
        ANY INNER JOIN
        (
            SELECT site_id, correlation_id,
                   arraySort(groupArray(toUInt64(time) * 1000 + time_ms)) AS vs
            FROM {db}.events WHERE type = 'solve' AND {where}
            GROUP BY site_id, correlation_id
        ) USING (site_id, correlation_id)
    )
    WHERE v != 0
    GROUP BY site_id
)
FORMAT TabSeparated"""

FORM_NAIVE_SQL = """SELECT {bucket}{site}
       uniqExactIf({proc}, type = 'serve'),
       uniqExactIf({proc}, type = 'solve')
FROM {db}.events
WHERE {where}
{group}FORMAT TabSeparated"""


def day_text(d):
    return time.strftime("%Y-%m-%d", time.gmtime(START + d * 86400))


def form_params(params):
    return {k: day_text(v) if k in ("from", "to") else v
            for k, v in params.items()}


def form_naive_sql(bucket, by_site, span, cond):
    where = [cond or "1"]
    if span:
        where.append("time >= toDateTime(%d) AND time < toDateTime(%d)"
                     % (START + span[0] * 86400, START + span[1] * 86400))
    keys = [k for k, on in (("b", bucket), ("site_id", by_site)) if on]
    return FORM_NAIVE_SQL.format(
        bucket="%s AS b, " % bucket if bucket else "",
        site="toString(site_id), " if by_site else "",
        proc="correlation_id" if by_site else "site_id, correlation_id",
        db=DATABASE, where=" AND ".join(where),
        group="GROUP BY %s\n" % ", ".join(keys) if keys else "")


def quantile_naive_sql(span, cond):
    where = "%s AND time >= toDateTime(%d) AND time < toDateTime(%d)" % (
        cond, START + span[0] * 86400, START + span[1] * 86400)
    return QUANTILE_NAIVE_SQL.format(db=DATABASE, where=where,
                                     window=SOLVE_WINDOW_MS)


def quantile_naive_rows(text):
    """(site, p50 ms, p90 ms) of the sites with a procedure solved in
    time."""
    rows = []
    for line in text.splitlines():
        site, n, p50, p90 = line.split("\t")
        if int(n):
            rows.append((site, int(p50), int(p90)))
    return sorted(rows)


def quantile_module_rows(text):
    return sorted((x["site_id"], int(round(x["solve_time_p50"] * 1000)),
                   int(round(x["solve_time_p90"] * 1000)))
                  for x in json.loads(text)["rows"]
                  if x["solve_time_p50"] is not None)


def bucket_label(interval, value):
    """The module's label of a naive bucket value (UTC)."""
    if interval in ("hour", "minute"):
        return time.strftime("%Y-%m-%dT%H:%M:00+00:00",
                             time.gmtime(int(value)))
    return value


def form_module_rows(text):
    rows = json.loads(text)["rows"]
    return sorted((x.get("bucket", x.get("day", "")), x.get("site_id", ""),
                   x["served"], x["solved"]) for x in rows)


def form_naive_rows(text, interval, bucket, by_site):
    rows = []
    for line in text.splitlines():
        f = line.split("\t")
        label = bucket_label(interval, f.pop(0)) if bucket else ""
        site = f.pop(0) if by_site else ""
        if int(f[0]) or int(f[1]):
            rows.append((label, site, int(f[0]), int(f[1])))
    return sorted(rows)


def form_fetch(httpd, params, flt):
    path = "api/report/" + quote(flt, safe="")
    r = httpd.get(path, params=params, timeout=QUERY_TIMEOUT)
    r.encoding = "utf-8"  # as the answer says: no guessing over its text
    if r.status_code != 200:
        raise BenchError("GET /%s %s answered %d: %s"
                         % (path, params, r.status_code, r.text[:300]))
    return r.text


def measure_form(st, scope, repeat):
    """Median ms over repeat runs (after a warm-up) of the form asked the
    first time (a filter never asked before, true for every event: nothing
    cached), the same asked again (nothing changed), and the naive query;
    every answer compared with the naive query's."""
    name, _, params, bucket, by_site, span = scope
    interval = params.get("interval", "day")
    quantiles = "metrics" in params
    params = form_params(params)
    samples = {"first": [], "again": [], "naive": []}
    for run in range(repeat + 1):
        flt, _ = new_filter()
        cond = "site_id != toUUID('%s')" % flt.split("'")[1]
        tf, first = timed(form_fetch, st.httpd, params, flt)
        ta, again = timed(form_fetch, st.httpd, params, flt)
        sql = (quantile_naive_sql(span, cond) if quantiles
               else form_naive_sql(bucket, by_site, span, cond))
        tn, ntext = timed(lambda: st.clickhouse.query(
            sql, timeout=QUERY_TIMEOUT))
        naive = (quantile_naive_rows(ntext) if quantiles
                 else form_naive_rows(ntext, interval, bucket, by_site))
        for label, text in (("first", first), ("again", again)):
            mod = (quantile_module_rows(text) if quantiles
                   else form_module_rows(text))
            if mod != naive or not mod:
                raise BenchError("%s: the module's answer (%s) differs from "
                                 "the naive query: %d vs %d rows, first "
                                 "difference %s"
                                 % (name, label, len(mod), len(naive),
                                    first_difference(mod, naive)))
        if run:
            samples["first"].append(tf)
            samples["again"].append(ta)
            samples["naive"].append(tn)
    out = {k: {"median_ms": round(statistics.median(v) * 1000, 1),
               "samples_ms": [round(x * 1000, 1) for x in v]}
           for k, v in samples.items()}
    out["rows"] = len(naive)
    for k in ("first", "again"):
        out["ratio_" + k] = round(out[k]["median_ms"]
                                  / out["naive"]["median_ms"], 3)
    return out


def measure(st, site, repeat):
    """Each scope in turn: the same report again and again (answered from
    the module's cache after the warm-up), one site's, a new filter each
    time (nothing cached: the parts list plus the whole query), and the
    report after an insert (the parts list plus one day's query)."""
    out = {}
    for name, _, prepare in SCOPES:
        m = measure_scope(st, lambda: prepare(st, site), repeat)
        for key in ("module", "naive", "rows", "ratio"):
            out[key + "_" + name] = m[key]
    # The module keeps no answer that reads a part of ClickHouse's current
    # second: the inserts above age first.
    time.sleep(1.1)
    out["forms"] = {scope[0]: measure_form(st, scope, repeat)
                    for scope in FORM_SCOPES}
    return out


# ---------------------------------------------------------------- output


def print_table(results):
    head = ("events", "scope", "rows", "module ms", "naive ms",
            "module/naive")
    lines = [head]
    for res in results:
        m = res["measure"]
        for scope, label, _ in SCOPES:
            lines.append(("{:,}".format(res["data"]["events"]), label,
                          str(m["rows_" + scope]),
                          "%.1f" % m["module_" + scope]["median_ms"],
                          "%.1f" % m["naive_" + scope]["median_ms"],
                          "%.2f" % m["ratio_" + scope]))
    print_lines(lines)
    print()
    lines = [("events", "form", "rows", "first ms", "again ms", "naive ms",
              "first/naive", "again/naive")]
    for res in results:
        for name, label, *_ in FORM_SCOPES:
            m = res["measure"]["forms"][name]
            lines.append(("{:,}".format(res["data"]["events"]), label,
                          str(m["rows"]), "%.1f" % m["first"]["median_ms"],
                          "%.1f" % m["again"]["median_ms"],
                          "%.1f" % m["naive"]["median_ms"],
                          "%.2f" % m["ratio_first"],
                          "%.3f" % m["ratio_again"]))
    print_lines(lines)


def print_lines(lines):
    widths = [max(len(line[i]) for line in lines)
              for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine():
    info = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_kb"] = int(f.readline().split()[1])
    except OSError:
        pass
    return info


def wait_for_schema(ch, timeout=60):
    stack.wait_until(
        lambda: ch.scalar("EXISTS TABLE %s.events" % DATABASE) == "1",
        timeout, interval=0.2, what="the events table")


def run(args):
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not sizes or min(sizes) < 1000 or args.repeat < 1:
        raise BenchError("--sizes needs sizes >= 1000, --repeat >= 1")
    work = Path(tempfile.mkdtemp(prefix="imc-bench-report-", dir="/tmp"))
    os.chmod(work, 0o755)
    st = stack.Stack(work, module_path=args.module,
                     directives="IMChallengeTimeout %ds" % QUERY_TIMEOUT)
    results = []
    failed = True
    try:
        st.start()
        st.wait_ready(60)
        wait_for_schema(st.clickhouse)
        version = st.clickhouse.scalar("SELECT version()")
        for size in sizes:
            print("loading about {:,} events ...".format(size), flush=True)
            data = load(st.clickhouse, size)
            print("  {events:,} events, {sites} sites, {days} days, "
                  "{duplicates:,} duplicates, loaded in {load_seconds} s"
                  .format(**data), flush=True)
            m = measure(st, site_uuid(7), args.repeat)
            results.append({"data": data, "measure": m})
            print("  answers equal; module/naive: " + ", ".join(
                "%s %.2f" % (label, m["ratio_" + scope])
                for scope, label, _ in SCOPES), flush=True)
            print("  forms, first/naive and again/naive: " + ", ".join(
                "%s %.2f / %.3f" % (sc[0], m["forms"][sc[0]]["ratio_first"],
                                    m["forms"][sc[0]]["ratio_again"])
                for sc in FORM_SCOPES), flush=True)
        failed = False
    finally:
        st.stop()
        if args.keep or failed:
            print("server files kept in %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("report-%s.json" % stamp)
    out.write_text(json.dumps({
        "benchmark": "report", "timestamp": stamp, "repeat": args.repeat,
        "clickhouse": version, "machine": machine(),
        "naive_query": NAIVE_SQL.format(db=DATABASE, where=""),
        "goal": "module / naive <= 1.0; forms: first <= 1.0, "
                "again <= 0.1", "results": results}, indent=2)
        + "\n")
    print("\nresults: %s" % out)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000000,10000000",
                   help="event counts, comma-separated (2000000,10000000)")
    p.add_argument("--repeat", type=int, default=5,
                   help="measured runs per case, after one warm-up (5)")
    p.add_argument("--module", default=str(stack.DEFAULT_MODULE),
                   help="mod_imchallenge.so to load")
    p.add_argument("--keep", action="store_true",
                   help="keep the servers' files under /tmp")
    args = p.parse_args(argv)
    if not Path(args.module).is_file():
        sys.exit("report_bench.py: module %s not found; build it (make)"
                 % args.module)
    if os.geteuid() != 0:
        sys.exit("report_bench.py: run as root")
    try:
        return run(args)
    except (BenchError, stack.StackError) as e:
        print("report_bench.py: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
