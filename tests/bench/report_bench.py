#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""Report benchmark: the module's GET /api/report against the naive query.

Starts its own ClickHouse and two httpd (tests/stack.py): the stack's, with
the event MPM, and a second one with prefork and four children for the
"other process" scope. Loads generated events straight into ClickHouse
with INSERT ... SELECT FROM numbers() (about 100 sites over about 30 days;
every procedure served, about 80 % solved, about 2.7 % of the events sent
twice), then measures the median of --repeat runs after one warm-up of
the module's report and of the naive query below, run directly on
ClickHouse over HTTP, in these scopes (goal of module / naive after the
name; the report is the all-sites one unless said otherwise):

    all sites       GET /api/report, again and again (1.0)
    one site        GET /api/report/site_id='<uuid>' (naive: WHERE
                    site_id) (1.0)
    new filter      a filter never asked before each time, true for every
                    event, over days the two scopes above have cached
                    under their own filters (0.1)
    nothing cached  the first report after a graceful restart that
                    changed IMChallengeReportCache's size (64M, 32M in
                    turn): a cache of another size is a new, empty one.
                    With a module that does not know the directive, a
                    plain graceful restart: new processes, whose caches
                    are empty. Checked: a child of the new generation
                    answered, and /metrics counted no day from the cache
                    (0.3)
    other process   the prefork httpd: the report asked on a kept-alive
                    connection (which then holds its child), then on a
                    new connection, which another child must take; the
                    pids of both, from an access log with %P, are
                    compared and the runs answered by another child
                    counted (0.1)
    after graceful  the report asked, `apache2 -k graceful`, the report
                    again on a new connection (checked: answered by a
                    child of the new generation) (0.1)
    after insert    GET /api/report after one more event on the last day
                    (1.0)

    SELECT toDate(time) AS day, site_id,
           uniqExactIf(correlation_id, type = 'serve'),
           uniqExactIf(correlation_id, type = 'solve')
    FROM imchallenge.events [WHERE ...]
    GROUP BY day, site_id ORDER BY day, site_id

Every run reads the report cache's counters of /metrics before and after
the module's report: the share of (day, site) cells
(imchallenge_report_cells_total) and of days
(imchallenge_report_day_lookups_total) that came from the cache is
printed per scope ("-" when the module has no such counter).

Then the report's other forms (FORM_SCOPES: hour buckets over 7 days,
minute buckets of the last day over all sites, a total over 30 days, per
day over all sites, the solve times' p50 and p90 per site over 30 days),
each asked the first time (an empty cache, by a graceful restart to the
other size, and a filter never asked before), then with another filter
never asked before (new: hours and days come from the cells the first
left, totals from its range's rows of every site; minutes and the solve
times are answers of their own), then the first again (nothing changed:
kept), against the naive exact query for the same numbers (ClickHouse's
toStartOfHour / toStartOfMinute in UTC; for the solve times, each
procedure's earliest serve joined to its first solve within the window,
and the nearest ranks of the sorted times). Goals: first / naive <= 1.0,
new and again / naive <= 0.1.

Then steady ingestion (--ingest-seconds, 60): a thread INSERTs 200 events
a second straight into ClickHouse, in one INSERT a second (100 new
procedures on the last day of the data, each served and solved), while
the all-sites report over the data's 30 days is asked every 2 seconds,
the naive query right after it; inserts wait while the two run, so both
read the same rows. Printed: the median of the reports' ratios module /
naive (goal 0.2), the share of cells and days from the cache over the
phase, and how many reports asked ClickHouse for how many days (a
merge that rewrites a part holding old days makes the module ask for
those days again).

Then the memory of each httpd: the sums of Rss and Pss of
/proc/<pid>/smaps_rollup over the parent and its children (Pss counts a
shared page once, divided among the processes that map it), with the
cache's imchallenge_report_cache_bytes.

Last, at each size, the scope "cluster (asked again)" (goal 0.2) on a
two-shard cluster (tests/cluster_util.py: ZooKeeper and two more
ClickHouse servers, conf/schema-cluster.sql; started once, after the
servers above): the same generated events, each INSERTed straight into
events_local of the shard that the Distributed table's sharding key
(cityHash64(toString(site_id)), two shards of weight 1) gives its site,
merged to a part a day; the counts read through the Distributed table
must be the shards' sum. An httpd (event MPM) whose IMChallengeClickHouse
is the first shard, with IMChallengeCreateSchema Off, reports through
the Distributed table: the all-sites report once (the warm-up), then
asked again, against the naive query above on the first shard, through
the Distributed table (the shards' partial uniqExact states merged
there). Printed like the scopes above: medians, ratio, shares of cells
and days from the cache. It runs when ZooKeeper is installed or
tests/install-deps.sh cluster installs it (else it is left out, and
the results say why); --no-cluster leaves it out, --only cluster runs
it alone (no single server, no other scope).

Then "cold" (--cold-size, 30,000,000 events: 1M a day, a modest captcha
deployment; 0 leaves it out, --only cold runs it alone, with the stack's
httpd only): load() replaces the events with that many, and the httpd
is restarted gracefully without its IMChallengeTimeout line, so the
report runs under the directive's default (DEFAULT_TIMEOUT_S, 10 s: the
module's IMC_DEFAULT_TIMEOUT), as it would where nobody set it. Each run
empties the cache as "nothing cached" does (checked the same way), asks
the all-sites report over the 30 days on a new connection, keeping its
HTTP status and time (504 when ClickHouse ran out of the timeout, 502
when it ended the query otherwise), then runs the naive query above and
the same over the UUID's two UInt64 halves (NAIVE_HALVES_SQL: how the
module counts procedures on ClickHouse before 20,
mod_imchallenge/imc_report_client.c), each with its memory from
system.query_log, beside the module's cap on a report query's
(MODULE_QUERY_MEMORY, 1 GiB); one warm-up run, then the median of
--repeat. Printed and kept under "cold": the module's median and
statuses, both naive medians and their memory, the ratios, the share of
the timeout, and for a run not answered 200 the lines of the httpd's
and ClickHouse's error logs that say why. The goal is met when every
run (the warm-up too) answered 200 and the median is within the
timeout; else the benchmark exits 1 once the results are written (the
servers' files are kept). The cluster's servers are stopped before it.

Every answer of every run (those asked before the timed one included) is
compared with the naive query's (in the cold measurement, every answer
of 200, and the two naive forms with each other); any difference fails
the benchmark. It
prints the tables of the ratios and writes the figures to
tests/bench/results/report-<timestamp>.json.

    /usr/bin/python3 tests/bench/report_bench.py [--sizes 2000000,10000000]
        [--repeat 5] [--ingest-seconds 60] [--only server,cluster,cold]
        [--no-cluster] [--cold-size 30000000] [--module PATH] [--keep]

Run as root (httpd switches its children to www-data).
"""

import argparse
import collections
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
import cluster_util  # noqa: E402
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

LOAD_SQL = """INSERT INTO {db}.{table}
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
    FROM numbers({procedures}){where}
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

# A procedure's correlation id as its two UInt64 halves, as the module
# counts it on ClickHouse before 20 (IMC_REPORT_UUID_HALVES of
# mod_imchallenge/imc_report_client.h): the naive query in that form.
UUID_HALVES = ("reinterpretAsUInt64(reinterpretAsString(correlation_id)), "
               "reinterpretAsUInt64(substring(reinterpretAsString("
               "correlation_id), 9, 8))")
NAIVE_HALVES_SQL = NAIVE_SQL.replace("uniqExactIf(correlation_id,",
                                     "uniqExactIf(%s," % UUID_HALVES)

# The cold measurement: a 30-day report at 30M events (1M a day), nothing
# cached, under IMChallengeTimeout's default (IMC_DEFAULT_TIMEOUT of
# mod_imchallenge/imc_config.h, README: 10s), which the httpd then runs
# with (no IMChallengeTimeout line).
COLD_SIZE = 30000000
DEFAULT_TIMEOUT_S = 10
# The memory a report query may take on ClickHouse (max_memory_usage,
# IMC_REPORT_QUERY_MEMORY of mod_imchallenge/imc_report_client.h): the
# naive queries' own, from system.query_log, are printed beside it.
MODULE_QUERY_MEMORY = 1024 * 1024 * 1024


class BenchError(RuntimeError):
    pass


def site_uuid(s):
    """The site_id that SITE gives site number s."""
    return str(uuid.UUID(bytes=hashlib.md5(b"site-%d" % s).digest()))


def procedures_of(size):
    return int(round(size / EVENTS_PER_PROCEDURE))


def load_sql(size, table="events", where=""):
    return LOAD_SQL.format(db=DATABASE, table=table, cid=CID, site=SITE,
                           sites=SITES, days=DAYS, start=START,
                           procedures=procedures_of(size), where=where)


def data_counts(ch, size, loaded):
    """What the events table of ch holds (on a cluster's server: all the
    shards' rows, through the Distributed table)."""
    counts = ch.query("SELECT count(), uniqExact(site_id), "
                      "uniqExact(toDate(time)), "
                      "count() - uniqExact(correlation_id, type) "
                      "FROM %s.events" % DATABASE,
                      timeout=QUERY_TIMEOUT).split()
    return {"target": size, "procedures": procedures_of(size),
            "events": int(counts[0]), "sites": int(counts[1]),
            "days": int(counts[2]), "duplicates": int(counts[3]),
            "load_seconds": round(loaded, 2)}


def load(ch, size):
    """Replace the events with about size generated ones; return counts."""
    ch.query("TRUNCATE TABLE %s.events" % DATABASE)
    t0 = time.monotonic()
    ch.query(load_sql(size), timeout=QUERY_TIMEOUT)
    ch.query("OPTIMIZE TABLE %s.events FINAL" % DATABASE,
             timeout=QUERY_TIMEOUT)
    return data_counts(ch, size, time.monotonic() - t0)


# ---------------------------------------------------------------- the runs

# IMChallengeReportCache sizes, in turn: a graceful restart with another
# size than the running one starts a new, empty cache.
CACHE_SIZES = ("64M", "32M")
# Each httpd logs, besides its access log, the pid that answered each
# request and the request's X-Bench-Tag header.
PID_LOG = "pid.log"
PID_FORMAT = 'LogFormat "%P %{X-Bench-Tag}i %>s \\"%r\\"" imcpid'
TAG_HEADER = "X-Bench-Tag"

# The report cache's figures of /metrics: key, metric name, label.
CACHE_METRICS = (
    ("cells_cache", "imchallenge_report_cells_total", 'source="cache"'),
    ("cells_clickhouse", "imchallenge_report_cells_total",
     'source="clickhouse"'),
    ("days_cache", "imchallenge_report_day_lookups_total", 'source="cache"'),
    ("days_clickhouse", "imchallenge_report_day_lookups_total",
     'source="clickhouse"'),
    ("evictions", "imchallenge_report_cache_evictions_total", None),
    ("cache_bytes", "imchallenge_report_cache_bytes", None),
    ("cache_size_bytes", "imchallenge_report_cache_size_bytes", None),
)
COUNTERS = ("cells_cache", "cells_clickhouse", "days_cache",
            "days_clickhouse", "evictions")


def fresh_get(httpd, path, tag=None, **kw):
    """GET path on a connection of its own, closed after the answer: the
    child that takes it is whichever accepts it."""
    headers = {"Connection": "close"}
    if tag:
        headers[TAG_HEADER] = tag
    s = stack.http_session()
    try:
        return s.get(httpd.url + path, headers=headers, **kw)
    finally:
        s.close()


def module_fetch(httpd, flt, tag=None, fresh=False, session=None):
    """GET the module's report (with filter flt); returns the JSON text.
    On the httpd's kept-alive session, on session, or (fresh) on a new
    connection."""
    path = "api/report"
    if flt:
        path += "/" + quote(flt, safe="")
    if fresh:
        r = fresh_get(httpd, path, tag, timeout=QUERY_TIMEOUT)
    else:
        r = (session or httpd.http).get(
            httpd.url + path, timeout=QUERY_TIMEOUT,
            headers={TAG_HEADER: tag} if tag else {})
    if r.status_code != 200:
        raise BenchError("GET /%s answered %d: %s"
                         % (path, r.status_code, r.text[:300]))
    return r.text


def module_rows(text):
    """The module's rows as sorted (day, site, served, solved) tuples."""
    return sorted((x["day"], x["site_id"], x["served"], x["solved"])
                  for x in json.loads(text)["rows"])


def naive_fetch(ch, where, sql=NAIVE_SQL, **settings):
    """Run the naive query (or sql, NAIVE_HALVES_SQL) on ClickHouse over
    HTTP, with settings; returns the TSV text."""
    return ch.query(sql.format(db=DATABASE, where=where),
                    timeout=QUERY_TIMEOUT, **settings)


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


def check_equal(text, naive, what="the module's report"):
    mod = module_rows(text)
    if mod != naive or not mod:
        raise BenchError("%s differs from the naive query: %d vs %d rows, "
                         "first difference %s"
                         % (what, len(mod), len(naive),
                            first_difference(mod, naive)))
    return mod


def cache_metrics(httpd):
    """{key: value} of CACHE_METRICS as /metrics shows them now (the
    counters are shared by all processes); a figure the module does not
    show is absent."""
    r = fresh_get(httpd, "metrics", timeout=30)
    if r.status_code != 200:
        raise BenchError("GET /metrics answered %d" % r.status_code)
    values = {}
    for line in r.text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        labels = labels.rstrip("}")
        for key, metric, label in CACHE_METRICS:
            if name == metric and (label is None or labels == label):
                v = float(value)
                values[key] = int(v) if v.is_integer() else v
    return values


def metrics_delta(before, after):
    return {k: after[k] - before[k] for k in COUNTERS
            if k in before and k in after}


def add_deltas(total, d):
    for k, v in d.items():
        total[k] = total.get(k, 0) + v


def cache_shares(d):
    """The shares of cells and of days that came from the cache, None
    where the module does not count them or nothing was counted."""
    out = {}
    for what in ("cells", "days"):
        hit, miss = d.get(what + "_cache"), d.get(what + "_clickhouse")
        out[what] = (None if hit is None or miss is None or hit + miss == 0
                     else round(hit / (hit + miss), 4))
    return out


def answering_pid(httpd, tag, timeout=10):
    """The pid that answered the request tagged tag, from the pid log
    (httpd writes the line after the answer: it may come a moment
    later)."""
    path = httpd.logdir / PID_LOG

    def find():
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            f = line.split(" ", 2)
            if len(f) >= 2 and f[1] == tag:
                return int(f[0])
        return None

    return stack.wait_until(find, timeout, interval=0.05,
                            what="the pid log line of %s" % tag)


def one_site(site):
    """The filter and the naive WHERE for one site."""
    return ("site_id='%s'" % site, " WHERE site_id = toUUID('%s')" % site)


def new_filter():
    """A filter no report asked before, true for every event: no answer
    of the module is kept for it."""
    other = uuid.uuid4()
    return ("site_id!='%s'" % other, " WHERE site_id != toUUID('%s')" % other)


def insert_one(ch):
    """One more event on the last day, in a part of its own: the module
    asks ClickHouse again for that day only."""
    t = START + (DAYS - 1) * 86400 + 43200
    ch.query("INSERT INTO %s.events (time, type, correlation_id, site_id, "
             "received_at, raw) VALUES (%d, 'serve', '%s', '%s', %d, '')"
             % (DATABASE, t, uuid.uuid4(), site_uuid(3), t))


class Ask:
    """One run of a scope: the report to time and how to ask it.

    httpd: which (None: the stack's); fresh: on a new connection; texts:
    answers asked before it, untimed, compared with the naive query's too;
    after(tag, delta): checks once the run is over (tag: the timed
    request's, delta: the cache counters' change over it), returns what
    the results keep of the run."""

    def __init__(self, flt=None, where="", httpd=None, fresh=False,
                 texts=(), after=None):
        self.flt, self.where = flt, where
        self.httpd, self.fresh = httpd, fresh
        self.texts = list(texts)
        self.after = after


class Tagged:
    """What measure_scope() asks: the httpd (httpd), the ClickHouse of the
    naive query (ch), and a tag for each request (tag())."""

    _tags = 0

    def tag(self, what):
        self._tags += 1
        return "%s-%d" % (what, self._tags)


class Bench(Tagged):
    """The servers of a run and what the scopes share."""

    def __init__(self, st, prefork, site, base_directives, cache_directive):
        self.st, self.ch, self.httpd = st, st.clickhouse, st.httpd
        self.prefork = prefork
        self.site = site
        self.base_directives = base_directives
        # Whether the module knows IMChallengeReportCache.
        self.cache_directive = cache_directive
        self.cache_size = 0  # index into CACHE_SIZES
        # The kept-alive connection that holds one prefork child.
        self.filler = stack.http_session()
        # The prefork children that answered the report at this size.
        self.answered = set()

    def directives(self):
        return httpd_directives(self.base_directives, self.httpd.logdir,
                                self.cache_directive
                                and CACHE_SIZES[self.cache_size])

    def graceful(self):
        """`-k graceful` of the stack's httpd; its kept-alive connection
        (to a child of the old generation) is dropped."""
        self.httpd.directives = self.directives()
        self.httpd.graceful()
        self.httpd.http.close()

    def empty_cache(self):
        """A graceful restart with the other cache size: a new, empty
        cache (without the directive: new processes, empty caches)."""
        self.cache_size = 1 - self.cache_size
        self.graceful()


def httpd_directives(base, logdir, cache_size):
    lines = [x for x in (base, PID_FORMAT) if x]
    lines.append("CustomLog %s imcpid" % (logdir / PID_LOG))
    if cache_size:
        lines.append("IMChallengeReportCache %s" % cache_size)
    return "\n".join(lines)


def new_child_after(b, old):
    """after() of a report that a child started after old must answer."""
    def after(tag, delta):
        pid = answering_pid(b.httpd, tag)
        if pid in old:
            raise BenchError("%s was answered by pid %d, a child of before "
                             "the restart" % (tag, pid))
        return {"pid": pid}
    return after


def nothing_cached(b):
    """The first report after a graceful restart to an empty cache."""
    old = set(b.httpd.children())
    b.empty_cache()
    check_new = new_child_after(b, old)

    def after(tag, delta):
        out = check_new(tag, delta)
        cached = delta.get("cells_cache", 0) + delta.get("days_cache", 0)
        if cached:
            raise BenchError("nothing cached: yet /metrics counted %s from "
                             "the cache" % delta)
        return out
    return Ask(fresh=True, after=after)


def other_process(b):
    """The report on the kept-alive connection (filling the cache; its
    child then waits on it), then timed on a new connection."""
    fill = b.tag("fill")
    text = module_fetch(b.prefork, None, fill, session=b.filler)

    def after(tag, delta):
        filler, pid = answering_pid(b.prefork, fill), answering_pid(
            b.prefork, tag)
        b.answered.add(filler)
        first = pid not in b.answered
        b.answered.add(pid)
        return {"filler_pid": filler, "pid": pid, "first_on_pid": first}
    return Ask(httpd=b.prefork, fresh=True, texts=[text], after=after)


def after_graceful(b):
    """The report, a graceful restart, the report on a new connection."""
    text = module_fetch(b.httpd, None, b.tag("fill"))
    old = set(b.httpd.children())
    b.graceful()
    return Ask(fresh=True, texts=[text], after=new_child_after(b, old))


def after_insert(b):
    insert_one(b.ch)
    return Ask()


# Scopes of the report benchmark: name, label, goal (module / naive), and
# what runs before each report: prepare(bench) returns its Ask.
SCOPES = (
    ("all", "all sites", 1.0, lambda b: Ask()),
    ("site", "one site", 1.0, lambda b: Ask(*one_site(b.site))),
    ("new", "new filter, days cached by another filter", 0.1,
     lambda b: Ask(*new_filter())),
    ("nothing", "nothing cached (first report)", 0.3, nothing_cached),
    ("other", "other process (prefork)", 0.1, other_process),
    ("graceful", "after graceful restart", 0.1, after_graceful),
    ("insert", "after insert", 1.0, after_insert),
)
# The steady ingestion's row of the table (its ratio: the median of the
# reports' ratios).
INGEST_SCOPE = ("ingest", "steady ingestion, 200 events/s", 0.2)
# The cluster's row: the all-sites report through the Distributed table,
# asked again (measure_cluster()).
CLUSTER_SCOPE = ("cluster", "cluster (asked again)", 0.2)


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    text = fn(*args, **kw)
    return time.perf_counter() - t0, text


def measure_scope(b, prepare, repeat):
    """Median ms of the module's report and of the naive query over repeat
    runs after a warm-up; prepare(b) before each run gives its Ask. Only
    the HTTP exchanges of the report and of the naive query are timed;
    the answers of every run are compared afterwards."""
    samples = {"module": [], "naive": []}
    deltas, runs = {}, []
    for run in range(repeat + 1):
        ask = prepare(b)
        httpd = ask.httpd or b.httpd
        tag = b.tag("report")
        before = cache_metrics(httpd)
        tm, mtext = timed(module_fetch, httpd, ask.flt, tag, ask.fresh)
        after = cache_metrics(httpd)
        tn, ntext = timed(naive_fetch, b.ch, ask.where)
        naive = naive_rows(ntext)
        for n, text in enumerate([mtext] + ask.texts):
            mod = check_equal(text, naive, "the module's report" if n == 0
                              else "the report asked before it")
        delta = metrics_delta(before, after)
        kept = ask.after(tag, delta) if ask.after else None
        if run:  # the first run is the warm-up
            samples["module"].append(tm)
            samples["naive"].append(tn)
            add_deltas(deltas, delta)
            if kept is not None:
                runs.append(kept)
    out = {name: {"median_ms": round(statistics.median(s) * 1000, 1),
                  "samples_ms": [round(x * 1000, 1) for x in s]}
           for name, s in samples.items()}
    out["rows"] = len(mod)
    out["ratio"] = round(out["module"]["median_ms"]
                         / out["naive"]["median_ms"], 3)
    out["cache"] = {"counters": deltas, "shares": cache_shares(deltas)}
    if runs:
        out["runs"] = runs
    return out


# ------------------------------------------------------ steady ingestion

INGEST_PROCEDURES = 100  # a second, each served and solved: 200 events
INGEST_EVERY = 2.0       # seconds between reports


class Ingest(threading.Thread):
    """INSERTs INGEST_PROCEDURES new procedures on the last day of the
    data, served and solved, once a second, until stopped; each INSERT
    holds lock."""

    def __init__(self, ch, lock):
        super().__init__(daemon=True)
        self.ch, self.lock = ch, lock
        self.stopping = threading.Event()
        self.rows = self.inserts = 0
        self.error = None
        self.rng = random.Random(20250130)

    def values(self):
        day = START + (DAYS - 1) * 86400
        out = []
        for _ in range(INGEST_PROCEDURES):
            cid = uuid.UUID(int=self.rng.getrandbits(128), version=4)
            site = site_uuid(self.rng.randrange(SITES))
            t = day + self.rng.randrange(86400 - 120)
            for kind, at in (("serve", t), ("solve", t + 30
                                            + self.rng.randrange(60))):
                out.append("(%d, '%s', '%s', '%s', %d, '')"
                           % (at, kind, cid, site, at + 1))
        return out

    def run(self):
        due = time.monotonic()
        try:
            while not self.stopping.is_set():
                rows = self.values()
                with self.lock:
                    self.ch.query("INSERT INTO %s.events (time, type, "
                                  "correlation_id, site_id, received_at, "
                                  "raw) VALUES %s"
                                  % (DATABASE, ", ".join(rows)))
                self.rows += len(rows)
                self.inserts += 1
                due += 1.0
                self.stopping.wait(max(0.0, due - time.monotonic()))
        except Exception as e:  # reported by measure_ingestion()
            self.error = e

    def stop(self):
        self.stopping.set()
        self.join(QUERY_TIMEOUT)


def measure_ingestion(b, seconds):
    """The all-sites report every INGEST_EVERY seconds, the naive query
    right after it, while Ingest inserts; the inserts wait while the two
    run. The per-report ratios, their median, the cache's shares over the
    phase and how many reports asked ClickHouse for how many days."""
    check_equal(module_fetch(b.httpd, None), naive_rows(naive_fetch(b.ch, "")),
                "the report before the ingestion")
    lock = threading.Lock()
    ingest = Ingest(b.ch, lock)
    reports, deltas = [], {}
    t0 = time.monotonic()
    ingest.start()
    try:
        due = t0 + INGEST_EVERY
        while due <= t0 + seconds and ingest.error is None:
            time.sleep(max(0.0, due - time.monotonic()))
            with lock:
                before = cache_metrics(b.httpd)
                tm, mtext = timed(module_fetch, b.httpd, None)
                after = cache_metrics(b.httpd)
                tn, ntext = timed(naive_fetch, b.ch, "")
            mod = check_equal(mtext, naive_rows(ntext),
                              "the report under ingestion")
            delta = metrics_delta(before, after)
            add_deltas(deltas, delta)
            reports.append({"module_ms": round(tm * 1000, 1),
                            "naive_ms": round(tn * 1000, 1),
                            "ratio": round(tm / tn, 3),
                            "days_asked": delta.get("days_clickhouse"),
                            "cells_asked": delta.get("cells_clickhouse")})
            due += INGEST_EVERY
    finally:
        ingest.stop()
    if ingest.error is not None:
        raise BenchError("ingestion: %s" % ingest.error)
    elapsed = time.monotonic() - t0
    asked = collections.Counter(r["days_asked"] for r in reports
                                if r["days_asked"] is not None)
    return {
        "seconds": round(elapsed, 1), "inserts": ingest.inserts,
        "rows_inserted": ingest.rows,
        "events_per_s": round(ingest.rows / elapsed, 1),
        "reports": reports, "rows": len(mod),
        "module": {"median_ms": statistics.median(
            r["module_ms"] for r in reports)},
        "naive": {"median_ms": statistics.median(
            r["naive_ms"] for r in reports)},
        "ratio": round(statistics.median(r["ratio"] for r in reports), 3),
        "cache": {"counters": deltas, "shares": cache_shares(deltas)},
        "days_asked": {str(k): v for k, v in sorted(asked.items())},
    }


# ------------------------------------------------------------ the cluster

# The sharding key of the Distributed table of conf/schema-cluster.sql,
# over its two shards of weight 1: a row goes to the shard of index
# key % 2 in remote_servers (0: the first).
SHARDING_KEY = "cityHash64(toString(site_id))"
SHARDS = 2


class ClusterBench(Tagged):
    """The cluster scope's servers: the two shards (cluster_util.Cluster),
    and an httpd whose IMChallengeClickHouse is the first shard, that
    reports through its Distributed table."""

    def __init__(self, cluster, httpd):
        self.cluster = cluster
        self.shards = cluster.shards
        self.ch = cluster.shards[0]
        self.httpd = httpd
        # Whether the module knows IMChallengeReportCache.
        self.cache_directive = None

    def stop(self):
        try:
            self.httpd.stop()
        finally:
            self.cluster.stop()


def cluster_available():
    """None when ZooKeeper is installed or could be installed
    (tests/install-deps.sh cluster), else why not."""
    if cluster_util.zookeeper_installed():
        return None
    try:
        cluster_util.ensure_zookeeper()
    except (OSError, subprocess.SubprocessError) as e:
        return "ZooKeeper is not installed, tests/install-deps.sh cluster " \
               "failed: %s" % e
    return None


def check_sharding_key(ch):
    """The Distributed table shards by SHARDING_KEY: what load_cluster()
    splits the events by."""
    create = ch.scalar("SHOW CREATE TABLE %s.events" % DATABASE)
    if "Distributed" not in create or SHARDING_KEY not in create:
        raise BenchError("%s.events is not Distributed by %s: %s"
                         % (DATABASE, SHARDING_KEY, create[:300]))


def replicas_idle(ch):
    """No replication task (merge, fetch) waits on events_local of ch."""
    return ch.scalar(
        "SELECT count() FROM system.replicas WHERE database = '%s' AND "
        "table = 'events_local' AND queue_size = 0" % DATABASE) == "1" and \
        ch.scalar("SELECT count() FROM system.merges WHERE database = '%s'"
                  % DATABASE) == "0"


def load_cluster(cb, size):
    """The events of load(ch, size), each INSERTed straight into
    events_local of the shard that the Distributed table's sharding key
    gives it (all the events of a site on one shard), then merged to a
    part a day; returns the counts read through the Distributed table."""
    t0 = time.monotonic()
    for i, ch in enumerate(cb.shards):
        ch.query("TRUNCATE TABLE %s.events_local" % DATABASE,
                 timeout=QUERY_TIMEOUT)
        ch.query(load_sql(size, "events_local", " WHERE %s %% %d = %d" % (
            SHARDING_KEY.replace("site_id", SITE), SHARDS, i)),
                 timeout=QUERY_TIMEOUT)
    for ch in cb.shards:
        ch.query("OPTIMIZE TABLE %s.events_local FINAL" % DATABASE,
                 timeout=QUERY_TIMEOUT)
        stack.wait_until(lambda: replicas_idle(ch), QUERY_TIMEOUT,
                         interval=0.2, what="the merges of events_local")
    data = data_counts(cb.ch, size, time.monotonic() - t0)
    data["shards"] = []
    for ch in cb.shards:
        events, sites, parts = ch.query(
            "SELECT (SELECT count() FROM {db}.events_local), "
            "(SELECT uniqExact(site_id) FROM {db}.events_local), "
            "(SELECT count() FROM system.parts WHERE database = '{db}' AND "
            "table = 'events_local' AND active) FORMAT TabSeparated".format(
                db=DATABASE)).split()
        data["shards"].append({"events": int(events), "sites": int(sites),
                               "parts": int(parts)})
    local = sum(x["events"] for x in data["shards"])
    if local != data["events"] or not all(x["events"]
                                          for x in data["shards"]):
        raise BenchError("the shards hold %s events, the Distributed table "
                         "reads %d" % ([x["events"] for x in data["shards"]],
                                       data["events"]))
    return data


def measure_cluster(cb, repeat):
    """The all-sites report through the Distributed table, warmed once and
    then asked again (measure_scope()), against the naive query through
    the Distributed table of the first shard; figures under the keys
    <figure>_cluster."""
    # The module keeps no answer that reads a part of ClickHouse's current
    # second: the parts of the load age first.
    time.sleep(1.1)
    m = measure_scope(cb, lambda _: Ask(), repeat)
    return {key + "_cluster": m[key]
            for key in ("module", "naive", "rows", "ratio", "cache")}


def start_cluster(work, module, base):
    """The two shards, conf/schema-cluster.sql, and the httpd that reports
    through the first shard; returns a ClusterBench whose stop() stops
    them."""
    cl = cluster_util.Cluster(work / "cluster")
    httpd = stack.Httpd(work / "httpd-cluster", module,
                        clickhouse_url=cl.shards[0].url)
    known, _ = httpd.configtest("IMChallengeReportCache %s" % CACHE_SIZES[0])
    httpd.directives = "\n".join((
        httpd_directives(base, httpd.logdir, known == 0 and CACHE_SIZES[0]),
        "IMChallengeCreateSchema Off"))
    cl.start()
    cb = ClusterBench(cl, httpd)
    cb.cache_directive = known == 0
    try:
        check_sharding_key(cl.shards[0])
        httpd.start()
        wait_ready(httpd)
    except BaseException:
        cb.stop()
        raise
    return cb


# ---------------------------------------------------------------- memory


def httpd_memory(httpd):
    """Sums of Rss and Pss (kB) of /proc/<pid>/smaps_rollup over httpd's
    parent and children, and the report cache's gauges."""
    pids = [httpd.pid] + httpd.children()
    rss = pss = counted = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                text = f.read()
        except OSError:
            continue
        counted += 1
        for line in text.splitlines():
            f = line.split()
            if f and f[0] == "Rss:":
                rss += int(f[1])
            elif f and f[0] == "Pss:":
                pss += int(f[1])
    gauges = cache_metrics(httpd)
    return {"mpm": httpd.mpm, "processes": counted, "rss_kb": rss,
            "pss_kb": pss, "cache_bytes": gauges.get("cache_bytes"),
            "cache_size_bytes": gauges.get("cache_size_bytes")}


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


def form_naive(ch, scope, flt):
    """The naive query of the form scope under flt (a new_filter()): its
    time and its rows."""
    _, _, params, bucket, by_site, span = scope
    cond = "site_id != toUUID('%s')" % flt.split("'")[1]
    if "metrics" in params:
        t, text = timed(lambda: ch.query(quantile_naive_sql(span, cond),
                                         timeout=QUERY_TIMEOUT))
        return t, quantile_naive_rows(text)
    t, text = timed(lambda: ch.query(form_naive_sql(bucket, by_site, span,
                                                    cond),
                                     timeout=QUERY_TIMEOUT))
    return t, form_naive_rows(text, params.get("interval", "day"), bucket,
                              by_site)


def check_form(scope, label, text, naive):
    """The module's answer text equals the naive rows; BenchError
    otherwise."""
    mod = (quantile_module_rows(text) if "metrics" in scope[2]
           else form_module_rows(text))
    if mod != naive or not mod:
        raise BenchError("%s: the module's answer (%s) differs from the "
                         "naive query: %d vs %d rows, first difference %s"
                         % (scope[0], label, len(mod), len(naive),
                            first_difference(mod, naive)))


def measure_form(b, scope, repeat):
    """Median ms over repeat runs (after a warm-up) of the form asked the
    first time (an empty cache: b.empty_cache(), and a filter never asked
    before, true for every event), then with another filter never asked
    before (new: what the first one left in the cache may answer it), the
    first again (nothing changed), and the naive query; every answer
    compared with its naive query's."""
    params = form_params(scope[2])
    samples = {"first": [], "new": [], "again": [], "naive": []}
    for run in range(repeat + 1):
        b.empty_cache()
        flt, _ = new_filter()
        other, _ = new_filter()
        tf, first = timed(form_fetch, b.httpd, params, flt)
        tw, new = timed(form_fetch, b.httpd, params, other)
        ta, again = timed(form_fetch, b.httpd, params, flt)
        tn, naive = form_naive(b.ch, scope, flt)
        check_form(scope, "first", first, naive)
        check_form(scope, "again", again, naive)
        check_form(scope, "new", new, form_naive(b.ch, scope, other)[1])
        if run:
            for k, t in (("first", tf), ("new", tw), ("again", ta),
                         ("naive", tn)):
                samples[k].append(t)
    out = {k: {"median_ms": round(statistics.median(v) * 1000, 1),
               "samples_ms": [round(x * 1000, 1) for x in v]}
           for k, v in samples.items()}
    out["rows"] = len(naive)
    for k in ("first", "new", "again"):
        out["ratio_" + k] = round(out[k]["median_ms"]
                                  / out["naive"]["median_ms"], 3)
    return out


def measure(b, repeat, ingest_seconds):
    """Each scope in turn (SCOPES), the other forms, the steady ingestion,
    and the memory of both httpd."""
    out = {}
    b.answered = set()
    # The module keeps no answer that reads a part of ClickHouse's current
    # second: the parts of the load (OPTIMIZE's included) age first.
    time.sleep(1.1)
    for name, _, _, prepare in SCOPES:
        m = measure_scope(b, prepare, repeat)
        for key in ("module", "naive", "rows", "ratio", "cache"):
            out[key + "_" + name] = m[key]
        if "runs" in m:
            out["runs_" + name] = m["runs"]
    runs = out["runs_other"]
    out["other_pid_runs"] = sum(r["pid"] != r["filler_pid"] for r in runs)
    out["other_first_pid_runs"] = sum(r["first_on_pid"] for r in runs)
    # The module keeps no answer that reads a part of ClickHouse's current
    # second: the inserts above age first.
    time.sleep(1.1)
    out["forms"] = {scope[0]: measure_form(b, scope, repeat)
                    for scope in FORM_SCOPES}
    ing = measure_ingestion(b, ingest_seconds)
    for key in ("module", "naive", "rows", "ratio", "cache"):
        out[key + "_ingest"] = ing.pop(key)
    out["ingest"] = ing
    out["memory"] = {"stack": httpd_memory(b.httpd),
                     "prefork": httpd_memory(b.prefork)}
    return out


# ------------------------------------------------------ cold at 30M


def log_size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_since(path, offset, keep=4):
    """The last keep lines written to path from offset on that name an
    exception (else the last keep lines), each cut to 300 characters."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = [x[:300] for x in text.splitlines() if x.strip()]
    return ([x for x in lines if "Exception" in x] or lines)[-keep:]


def query_memory(ch, ids, timeout=30):
    """{query id: memory_usage in bytes} of the finished queries ids, from
    system.query_log (written every few seconds); {} when ClickHouse
    keeps no such log."""
    sql = ("SELECT query_id, memory_usage FROM system.query_log WHERE "
           "type = 2 AND query_id IN (%s) FORMAT TabSeparated"
           % ", ".join("'%s'" % x for x in ids))
    found = {}

    def read():
        try:
            text = ch.query(sql)
        except stack.StackError:  # no query_log table yet
            return False
        for line in text.splitlines():
            qid, mem = line.split("\t")
            found[qid] = int(mem)
        return len(found) == len(ids)

    try:
        stack.wait_until(read, timeout, interval=1, what="system.query_log")
    except stack.StackError:
        pass
    return found


def measure_cold(b, repeat, timeout_s):
    """The cold measurement, on the events loaded (COLD_SIZE): the httpd
    runs with the default IMChallengeTimeout (no directive); each run
    empties the cache as the nothing-cached scope does (a graceful restart
    with the other IMChallengeReportCache size; checked: a new child
    answered, nothing counted from the cache), asks the all-sites report
    on a new connection, keeping its status, then the naive query and the
    naive query over the UUID's halves. One warm-up run, then repeat
    timed ones. Every answer of 200 must equal the naive query's, and the
    two naive forms each other's. Met: every run (the warm-up too)
    answered 200, the median within the timeout."""
    base, b.base_directives = b.base_directives, ""
    try:
        runs = []
        deltas = {}
        for run in range(repeat + 1):
            ask = nothing_cached(b)
            tag = b.tag("cold")
            logs = (b.httpd.error_log_file, b.ch.err_file)
            offsets = [log_size(x) for x in logs]
            before = cache_metrics(b.httpd)
            t0 = time.perf_counter()
            r = fresh_get(b.httpd, "api/report", tag, timeout=QUERY_TIMEOUT)
            tm = time.perf_counter() - t0
            after = cache_metrics(b.httpd)
            ids = {k: "cold-%s-%s" % (k, uuid.uuid4()) for k in
                   ("naive", "halves")}
            tn, ntext = timed(naive_fetch, b.ch, "", log_queries=1,
                              query_id=ids["naive"])
            th, htext = timed(naive_fetch, b.ch, "", NAIVE_HALVES_SQL,
                              log_queries=1, query_id=ids["halves"])
            naive = naive_rows(ntext)
            if naive_rows(htext) != naive:
                raise BenchError("cold: the naive query over the UUID's "
                                 "halves differs from the naive query, "
                                 "first difference %s" % (first_difference(
                                     naive_rows(htext), naive),))
            if r.status_code == 200:
                check_equal(r.text, naive, "cold: the module's report")
            delta = metrics_delta(before, after)
            kept = ask.after(tag, delta)
            runs.append({"warmup": run == 0, "status": r.status_code,
                         "module_ms": round(tm * 1000, 1),
                         "naive_ms": round(tn * 1000, 1),
                         "halves_ms": round(th * 1000, 1),
                         "query_ids": ids,
                         "pid": kept["pid"],
                         "error": None if r.status_code == 200 else {
                             "answer": r.text[:300],
                             "httpd_log": log_since(logs[0], offsets[0]),
                             "clickhouse_log": log_since(logs[1],
                                                         offsets[1])}})
            if run:
                add_deltas(deltas, delta)
    finally:
        b.base_directives = base
    memory = query_memory(b.ch, [x for r in runs
                                 for x in r["query_ids"].values()])
    for r in runs:
        for k, qid in r.pop("query_ids").items():
            r[k + "_memory_bytes"] = memory.get(qid)
    timed_runs = [x for x in runs if not x["warmup"]]
    out = {"timeout_s": timeout_s,
           "module_memory_cap_bytes": MODULE_QUERY_MEMORY,
           "timeout_directive": "none (the default)",
           "rows": len(naive), "runs": runs}
    for key in ("module", "naive", "halves"):
        samples = [x[key + "_ms"] for x in timed_runs]
        out[key] = {"median_ms": round(statistics.median(samples), 1),
                    "samples_ms": samples}
        if key != "module":
            mem = [x[key + "_memory_bytes"] for x in timed_runs
                   if x[key + "_memory_bytes"] is not None]
            out[key]["median_memory_bytes"] = (
                int(statistics.median(mem)) if mem else None)
    out["module"]["statuses"] = [x["status"] for x in timed_runs]
    module_ms = out["module"]["median_ms"]
    out["ratio_naive"] = round(module_ms / out["naive"]["median_ms"], 3)
    out["ratio_halves"] = round(module_ms / out["halves"]["median_ms"], 3)
    out["share_of_timeout"] = round(module_ms / (timeout_s * 1000), 3)
    out["met"] = (all(x["status"] == 200 for x in runs)
                  and module_ms <= timeout_s * 1000)
    out["cache"] = {"counters": deltas, "shares": cache_shares(deltas)}
    return out


def measure_cold_size(b, size, repeat):
    """Loads about size events (load()), then measure_cold(); returns
    {"data": ..., "measure": ...}, printing as it goes."""
    print("cold: loading about {:,} events ...".format(size), flush=True)
    data = load(b.ch, size)
    print("  {events:,} events, {sites} sites, {days} days, "
          "{duplicates:,} duplicates, loaded in {load_seconds} s"
          .format(**data), flush=True)
    # The module keeps no answer that reads a part of ClickHouse's current
    # second: the parts of the load age first.
    time.sleep(1.1)
    m = measure_cold(b, repeat, DEFAULT_TIMEOUT_S)
    print("  answers of 200 equal the naive query's; cold (nothing "
          "cached, 30 days): module %.1f ms (status %s; %.1f %% of "
          "IMChallengeTimeout %d s), naive %.1f ms (%s MiB), over the "
          "UUID's halves %.1f ms (%s MiB; the module's cap %s MiB); "
          "module/naive %.3f, module/halves %.3f" % (
              m["module"]["median_ms"],
              ",".join(str(x) for x in m["module"]["statuses"]),
              m["share_of_timeout"] * 100, m["timeout_s"],
              m["naive"]["median_ms"],
              mib_text(m["naive"]["median_memory_bytes"]),
              m["halves"]["median_ms"],
              mib_text(m["halves"]["median_memory_bytes"]),
              mib_text(m["module_memory_cap_bytes"]),
              m["ratio_naive"], m["ratio_halves"]), flush=True)
    for n, run in enumerate(m["runs"]):
        if run["error"]:
            print("  run %d%s answered %d: %s; httpd: %s; ClickHouse: %s" % (
                n, " (warm-up)" if run["warmup"] else "", run["status"],
                run["error"]["answer"],
                " | ".join(run["error"]["httpd_log"][-1:]) or "-",
                " | ".join(run["error"]["clickhouse_log"][-1:]) or "-"),
                flush=True)
    return {"data": data, "measure": m}


def cold_lines(cold):
    """The cold measurement's table."""
    m, data = cold["measure"], cold["data"]
    lines = [("events", "scope", "rows", "module ms", "status",
              "naive ms", "halves ms", "naive MiB", "halves MiB",
              "module/naive", "module/halves", "timeout", "goal")]
    lines.append(("{:,}".format(data["events"]),
                  "cold (nothing cached, 30 days)", str(m["rows"]),
                  "%.1f" % m["module"]["median_ms"],
                  ",".join(str(x) for x in m["module"]["statuses"]),
                  "%.1f" % m["naive"]["median_ms"],
                  "%.1f" % m["halves"]["median_ms"],
                  mib_text(m["naive"]["median_memory_bytes"]),
                  mib_text(m["halves"]["median_memory_bytes"]),
                  "%.3f" % m["ratio_naive"], "%.3f" % m["ratio_halves"],
                  "%d s (%.1f %%)" % (m["timeout_s"],
                                      m["share_of_timeout"] * 100),
                  "200 within it: %s" % ("met" if m["met"] else "NOT met")))
    return lines


# ---------------------------------------------------------------- output


def share_text(share):
    return "-" if share is None else "%.1f %%" % (share * 100)


def print_table(results, cold=None):
    head = ("events", "scope", "rows", "module ms", "naive ms",
            "module/naive", "goal", "cells cached", "days cached")
    lines = [head]
    for res in results:
        m = res["measure"]
        for scope, label, goal, *_ in SCOPES + (INGEST_SCOPE, CLUSTER_SCOPE):
            if "ratio_" + scope not in m:
                continue  # a part not run
            shares = m["cache_" + scope]["shares"]
            ratio = m["ratio_" + scope]
            data = res["cluster"] if scope == "cluster" else res["data"]
            lines.append(("{:,}".format(data["events"]), label,
                          str(m["rows_" + scope]),
                          "%.1f" % m["module_" + scope]["median_ms"],
                          "%.1f" % m["naive_" + scope]["median_ms"],
                          "%.3f" % ratio,
                          "<= %g %s" % (goal, "met" if ratio <= goal
                                        else "NOT met"),
                          share_text(shares["cells"]),
                          share_text(shares["days"])))
    if len(lines) > 1:
        print_lines(lines)
        print()
    lines = [("events", "form", "rows", "first ms", "new ms", "again ms",
              "naive ms", "first/naive", "new/naive", "again/naive")]
    for res in results:
        for name, label, *_ in FORM_SCOPES:
            if "forms" not in res["measure"]:
                continue
            m = res["measure"]["forms"][name]
            lines.append(("{:,}".format(res["data"]["events"]), label,
                          str(m["rows"]), "%.1f" % m["first"]["median_ms"],
                          "%.1f" % m["new"]["median_ms"],
                          "%.1f" % m["again"]["median_ms"],
                          "%.1f" % m["naive"]["median_ms"],
                          "%.2f" % m["ratio_first"],
                          "%.3f" % m["ratio_new"],
                          "%.3f" % m["ratio_again"]))
    if len(lines) > 1:
        print_lines(lines)
        print()
    lines = [("events", "httpd", "processes", "RSS MiB", "PSS MiB",
              "cache MiB", "cache size MiB")]
    for res in results:
        for name, mem in sorted(res["measure"].get("memory", {}).items()):
            lines.append(("{:,}".format(res["data"]["events"]),
                          "%s (%s)" % (name, mem["mpm"]),
                          str(mem["processes"]),
                          "%.1f" % (mem["rss_kb"] / 1024),
                          "%.1f" % (mem["pss_kb"] / 1024),
                          mib_text(mem["cache_bytes"]),
                          mib_text(mem["cache_size_bytes"])))
    if len(lines) > 1:
        print_lines(lines)
        print()
    for res in results:
        if "runs_other" in res["measure"]:
            print("\n".join(phase_notes(res)))
    if cold is not None:
        print()
        print_lines(cold_lines(cold))


def mib_text(n):
    return "-" if n is None else "%.1f" % (n / 1048576)


def phase_notes(res):
    """Lines on the other-process and ingestion phases of one size."""
    m, events = res["measure"], "{:,}".format(res["data"]["events"])
    runs = m["runs_other"]
    ing = m["ingest"]
    asked = ", ".join("%s day(s): %d" % (k, v)
                      for k, v in ing["days_asked"].items()) or "-"
    return [
        "%s events, other process: %d of %d runs answered by another pid "
        "than the filler's, %d by a pid that had not answered the report "
        "before (pid after filler's: %s)" % (
            events, m["other_pid_runs"], len(runs),
            m["other_first_pid_runs"],
            ", ".join("%d after %d" % (r["pid"], r["filler_pid"])
                      for r in runs)),
        "%s events, steady ingestion: %d events in %d INSERTs over %.1f s "
        "(%.1f/s), %d reports, median ratio %.3f; days asked of ClickHouse "
        "per report: %s" % (
            events, ing["rows_inserted"], ing["inserts"], ing["seconds"],
            ing["events_per_s"], len(ing["reports"]), m["ratio_ingest"],
            asked)]


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


def wait_ready(httpd, timeout=60):
    stack.wait_until(
        lambda: fresh_get(httpd, "readyz", timeout=2).status_code == 200,
        timeout, interval=0.2, what="GET /readyz of %s" % httpd.url)


PARTS = ("server", "cluster", "cold")


def parts_to_run(args):
    """The parts of the benchmark that args ask for, in PARTS' order."""
    asked = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(asked) - set(PARTS)
    if unknown or not asked:
        raise BenchError("--only takes %s (comma-separated), not %r"
                         % (", ".join(PARTS), args.only))
    for part, off, why in (("cluster", args.no_cluster, "--no-cluster"),
                           ("cold", args.cold_size == 0, "--cold-size 0")):
        if off and part in asked:
            asked.remove(part)
            if not asked:
                raise BenchError("%s leaves nothing of --only %s"
                                 % (why, args.only))
    return [x for x in PARTS if x in asked]


def run(args):
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not sizes or min(sizes) < 1000 or args.repeat < 1:
        raise BenchError("--sizes needs sizes >= 1000, --repeat >= 1")
    if args.ingest_seconds < 2 * INGEST_EVERY:
        raise BenchError("--ingest-seconds needs at least %g"
                         % (2 * INGEST_EVERY))
    if args.cold_size and args.cold_size < 1000:
        raise BenchError("--cold-size needs a size >= 1000 (0: none)")
    parts = parts_to_run(args)
    cluster_skipped = None
    if "cluster" in parts:
        cluster_skipped = cluster_available()
        if cluster_skipped and parts == ["cluster"]:
            raise BenchError("cluster: %s" % cluster_skipped)
        if cluster_skipped:
            print("cluster scope skipped: %s" % cluster_skipped, flush=True)
            parts.remove("cluster")
    elif args.no_cluster:
        cluster_skipped = "--no-cluster"
    work = Path(tempfile.mkdtemp(prefix="imc-bench-report-", dir="/tmp"))
    os.chmod(work, 0o755)
    base = "IMChallengeTimeout %ds" % QUERY_TIMEOUT
    st = prefork = None
    cache_directive = None
    if "server" in parts or "cold" in parts:
        st = stack.Stack(work, module_path=args.module)
        # A module that does not know IMChallengeReportCache refuses it.
        known, _ = st.httpd.configtest("IMChallengeReportCache %s"
                                       % CACHE_SIZES[0])
        cache_directive = known == 0
        st.httpd.directives = httpd_directives(
            base, st.httpd.logdir, cache_directive and CACHE_SIZES[0])
    if "server" in parts:
        prefork = stack.Httpd(work / "httpd-prefork", args.module,
                              mpm="prefork", clickhouse_url=st.clickhouse.url)
        prefork.directives = httpd_directives(
            base, prefork.logdir, cache_directive and CACHE_SIZES[0])
    results = []
    cold = None
    failed = True
    b = cb = None
    version = None
    try:
        if st is not None:
            st.start()
            st.wait_ready(60)
            wait_for_schema(st.clickhouse)
            if prefork is not None:
                prefork.start()
                wait_ready(prefork)
            version = st.clickhouse.scalar("SELECT version()")
            print("IMChallengeReportCache: %s" % (
                "known, nothing cached = a graceful restart with another "
                "size" if cache_directive else "not known to this module, "
                "nothing cached = a plain graceful restart"), flush=True)
            b = Bench(st, prefork, site_uuid(7), base, cache_directive)
        if "cluster" in parts:
            print("starting ZooKeeper and two ClickHouse shards ...",
                  flush=True)
            cb = start_cluster(work, args.module, base)
            version = version or cb.ch.scalar("SELECT version()")
            if cache_directive is None:
                cache_directive = cb.cache_directive
        for size in sizes if {"server", "cluster"} & set(parts) else ():
            res = {}
            if "server" in parts:
                print("loading about {:,} events ...".format(size),
                      flush=True)
                res["data"] = data = load(st.clickhouse, size)
                print("  {events:,} events, {sites} sites, {days} days, "
                      "{duplicates:,} duplicates, loaded in {load_seconds} s"
                      .format(**data), flush=True)
                res["measure"] = m = measure(b, args.repeat,
                                             args.ingest_seconds)
                print("  answers equal; module/naive: " + ", ".join(
                    "%s %.2f" % (label, m["ratio_" + scope])
                    for scope, label, *_ in SCOPES + (INGEST_SCOPE,)),
                    flush=True)
                print("  forms, first / new / again, of naive: " +
                      ", ".join("%s %.2f / %.3f / %.3f" % (
                          sc[0], m["forms"][sc[0]]["ratio_first"],
                          m["forms"][sc[0]]["ratio_new"],
                          m["forms"][sc[0]]["ratio_again"])
                          for sc in FORM_SCOPES), flush=True)
                for line in phase_notes(res):
                    print("  " + line, flush=True)
            if cb is not None:
                print("loading about {:,} events into the cluster's shards "
                      "...".format(size), flush=True)
                data = load_cluster(cb, size)
                res["cluster"] = data
                res.setdefault("data", data)
                print("  {events:,} events, {sites} sites, {days} days, "
                      "{duplicates:,} duplicates, loaded in {load_seconds} s;"
                      .format(**data) + " per shard: " + ", ".join(
                          "{events:,} events of {sites} sites in {parts} "
                          "parts".format(**x) for x in data["shards"]),
                      flush=True)
                m = measure_cluster(cb, args.repeat)
                res.setdefault("measure", {}).update(m)
                shares = m["cache_cluster"]["shares"]
                print("  answers equal; cluster (asked again): module %.1f "
                      "ms, naive %.1f ms, module/naive %.3f; cells cached "
                      "%s, days cached %s" % (
                          m["module_cluster"]["median_ms"],
                          m["naive_cluster"]["median_ms"],
                          m["ratio_cluster"], share_text(shares["cells"]),
                          share_text(shares["days"])), flush=True)
            results.append(res)
        if "cold" in parts:
            if cb is not None:  # the shards' servers leave the machine
                cb.stop()
                cb = None
            cold = measure_cold_size(b, args.cold_size, args.repeat)
        # The servers' logs say why a report failed: kept then.
        failed = cold is not None and not cold["measure"]["met"]
    finally:
        if b is not None:
            b.filler.close()
        try:
            if cb is not None:
                cb.stop()
        finally:
            try:
                if prefork is not None:
                    prefork.stop()
            finally:
                if st is not None:
                    st.stop()
        if args.keep or failed:
            print("server files kept in %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(results, cold)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("report-%s.json" % stamp)
    scopes = [s for s in SCOPES + (INGEST_SCOPE,) if "server" in parts]
    if "cluster" in parts:
        scopes.append(CLUSTER_SCOPE)
    out.write_text(json.dumps({
        "benchmark": "report", "timestamp": stamp, "repeat": args.repeat,
        "parts": parts, "cluster_skipped": cluster_skipped,
        "ingest_seconds": args.ingest_seconds if "server" in parts else None,
        "clickhouse": version, "machine": machine(),
        "report_cache_directive": cache_directive,
        "nothing_cached_by": (
            None if "server" not in parts else
            "graceful restart with IMChallengeReportCache %s / %s in turn"
            % CACHE_SIZES if cache_directive else "graceful restart"),
        "naive_query": NAIVE_SQL.format(db=DATABASE, where=""),
        "cluster_naive_query": (
            "the naive query on the first shard, through the Distributed "
            "table events" if "cluster" in parts else None),
        "goal": "module / naive <= the scope's goal (goals); forms: first "
                "<= 1.0, again <= 0.1",
        "goals": {s[0]: s[2] for s in scopes},
        "cold_goal": None if cold is None else
        "every run answered 200, the median within the default "
        "IMChallengeTimeout (%d s)" % DEFAULT_TIMEOUT_S,
        "cold_naive_queries": None if cold is None else {
            "naive": NAIVE_SQL.format(db=DATABASE, where=""),
            "halves": NAIVE_HALVES_SQL.format(db=DATABASE, where="")},
        "results": results, "cold": cold}, indent=2) + "\n")
    print("\nresults: %s" % out)
    if cold is not None and not cold["measure"]["met"]:
        print("report_bench.py: cold at {:,} events: not every report "
              "answered 200 within {} s".format(cold["data"]["events"],
                                                DEFAULT_TIMEOUT_S),
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000000,10000000",
                   help="event counts, comma-separated (2000000,10000000)")
    p.add_argument("--repeat", type=int, default=5,
                   help="measured runs per case, after one warm-up (5)")
    p.add_argument("--ingest-seconds", type=float, default=60,
                   help="length of the steady ingestion phase (60)")
    p.add_argument("--only", default=",".join(PARTS),
                   help="the parts to run, comma-separated: server (the "
                   "scopes on one ClickHouse), cluster (the two-shard "
                   "cluster), cold (the first report at --cold-size) (%s)"
                   % ",".join(PARTS))
    p.add_argument("--no-cluster", action="store_true",
                   help="leave out the cluster scope (--only server,cold)")
    p.add_argument("--cold-size", type=int, default=COLD_SIZE,
                   help="events of the cold measurement, nothing cached, "
                   "under the default IMChallengeTimeout; 0 leaves it "
                   "out (%d)" % COLD_SIZE)
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
