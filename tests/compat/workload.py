#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""The compatibility suite's workload: the module against ClickHouse 18.16,
every statement it sends recorded, for tests/compat/replay.mjs to replay on
the ClickHouse engine of chDB (a current release).

    /usr/bin/python3 tests/compat/workload.py CAPTURE.json

It starts a private ClickHouse 18.16 and httpd with the module
(tests/stack.py), the module's user `imc` with its password, and between
them a recording relay (relay.py).  Then: an events table of before time_ms with rows in it (made through the
relay), the schema and its migration at start-up,
ingestion of events with known answers (tests/integration/report_util's
Dataset: duplicates, several sites and days, offsets east and west of UTC;
plus DST days of Europe/Berlin and America/New_York, events at 1970-01-01
and on 2105-12-31), through `?wait=1` (201), plain 202 inserts delivered
later, a JSON array and the GET form; every report form (no parameters,
from, to, both, epoch and far-future bounds, zones east and west of UTC
with whole and half-hour offsets, filters over every column and operator,
CSV by format= and by Accept; every interval, by, metrics, fill and
compare; the solve window's metrics), and the same reports again after more events
arrived, so that the report's cache lists the parts and queries only the
changed days.  Then a second module, whose relay poses as ClickHouse 26.7
(as_current_release): what the module sends only to current releases
(deduplication token and window, async_insert=0, cancel-on-close, the
report's UUID count, system.time_zones) is captured with its settings,
while 18.16 runs it without the settings it does not know.

Why a relay rather than system.query_log: 18.16's query_log has no
settings column (Settings.Names/Values came in 19.x), so the settings sent
in the URL could not be replayed from it; it keeps neither an INSERT's rows
nor any statement's answer, both of which the comparison needs; and it
would only hold what the server parsed, not what the module sent.  The
relay records exactly what went over the wire, in order: method, path, URL
query string (statement of an INSERT, settings), body, status and answer.

CAPTURE.json holds {"server": {...}, "exchanges": [...], "checks": [...]}:
the server's version and time zone, the relay's records, and statements
of the harness itself (the events table's full contents at the end), whose
18.16 answers the replay compares too.  Exits non-zero when the workload
did not go as planned (an unexpected status, error-log lines).
"""

import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

import stack  # noqa: E402
from relay import RecordingRelay  # noqa: E402
from report_util import (Dataset, assert_report, event,  # noqa: E402
                         get_report, model, post_events)

# The report's metrics (SPEC section 5).
METRICS = ["served", "solved", "solve_rate", "unsolved", "solve_time_avg",
           "solve_time_p50", "solve_time_p90"]

# Zones east and west of UTC, whole and half-hour offsets, +14 and -11.
ZONES = ["UTC", "Europe/Moscow", "Asia/Tokyo", "Pacific/Kiritimati",
         "Asia/Kolkata", "Europe/Berlin", "America/New_York",
         "America/St_Johns", "Pacific/Pago_Pago"]

# The events table as the harness reads it at the end on both engines.
# Times as numbers: 18.16 writes the DateTime 0 (1970-01-01 00:00:00) as
# "0000-00-00 00:00:00", current releases as "1970-01-01 00:00:00" (the
# module's own statements read times as numbers too).  Every column is in
# the ORDER BY: an event sent twice differs only in received_at.
TABLE_SQL = ("SELECT toUInt32(time), time_ms, type, correlation_id, "
             "site_id, toUInt32(received_at), raw "
             "FROM imchallenge.events ORDER BY site_id, time, time_ms, type, "
             "correlation_id, raw, received_at FORMAT TabSeparated")

# The events table as conf/schema.sql made it before time_ms: the module
# adds the column at start-up (a look at system.tables / system.columns,
# then ALTER TABLE ... ADD COLUMN), and the rows already in it read 0.
OLD_SCHEMA = [
    "CREATE DATABASE IF NOT EXISTS imchallenge",
    "CREATE TABLE IF NOT EXISTS imchallenge.events (time DateTime('UTC'), "
    "type Enum8('serve' = 1, 'solve' = 2), correlation_id UUID, "
    "site_id UUID, received_at DateTime('UTC'), raw String) "
    "ENGINE = MergeTree PARTITION BY toYYYYMM(time) "
    "ORDER BY (site_id, time)",
]


# The module as a current release sees it: what it sends only to releases
# newer than 18.16 (the deduplication token and window, async_insert=0,
# cancel-on-close, the UUID-count form of the report, system.time_zones)
# is captured too. A second relay answers the statements by which the
# module learns the release, as 26.7 answers them (the replay compares
# those answers with 26.7's own), and passes everything else on to 18.16
# without the settings 18.16 does not know; the capture keeps what the
# module sent, settings included, for the replay to apply.
CURRENT = "26.7.2.1"
NEWER_ONLY = ("insert_deduplication_token", "async_insert",
              "cancel_http_readonly_queries_on_client_close")


def as_current_release(sql):
    """(status, body) of 26.7 where 18.16 would answer otherwise, or None:
    the statement goes to 18.16."""
    s = sql.strip()
    if s == "SELECT version()":
        return 200, CURRENT + "\n"
    if "FROM system.settings WHERE name IN" in s:
        return 200, "".join(name + "\n" for name in NEWER_ONLY)
    if "non_replicated_deduplication_window" in s:
        if "FROM system.merge_tree_settings" in s:
            return 200, "1\n"
        if "MODIFY SETTING" in s:  # 18.16 has no MODIFY SETTING
            return 200, ""
    if "FROM system.tables" in s and "name = 'time_zones'" in s:
        return 200, "1\n"
    if "FROM system.time_zones" in s:  # only zones both releases know
        return 200, "1\n"
    return None


def old_rows():
    """Rows as a module before time_ms wrote them: a serve and its solve
    of one site on 2024-12-31, fractions in raw only."""
    site, cid = str(uuid.uuid4()), str(uuid.uuid4())
    out = []
    for kind, sec, text in (("serve", 1735689599, "23:59:59.250"),
                            ("solve", 1735689600, "00:00:00.125")):
        day = "2024-12-31" if kind == "serve" else "2025-01-01"
        raw = json.dumps(event("%sT%sZ" % (day, text), kind, cid, site))
        out.append(json.dumps({"time": sec, "type": kind,
                               "correlation_id": cid, "site_id": site,
                               "received_at": sec, "raw": raw}))
    return "\n".join(out) + "\n"


def edge_events():
    """Site D: DST days; site E: the first and last days an event may have.
    Returns (site D, site E, events)."""
    D, E = str(uuid.uuid4()), str(uuid.uuid4())
    c = lambda: str(uuid.uuid4())  # noqa: E731
    d1, d2, d3, d4, d5 = c(), c(), c(), c(), c()
    evs = [
        # Europe/Berlin: spring forward 2025-03-30 01:00Z, back 10-26 01:00Z
        event("2025-03-29T23:30:00Z", "serve", d1, D),
        event("2025-03-30T00:59:59Z", "solve", d1, D),
        event("2025-03-30T01:00:00Z", "serve", d2, D),
        event("2025-03-30T22:30:00Z", "serve", d3, D),
        event("2025-10-26T00:30:00Z", "serve", d4, D),
        event("2025-10-26T01:30:00+00:00", "solve", d4, D),
        event("2025-10-26T22:59:59.999Z", "serve", d5, D),
        # America/New_York: 2025-03-09 07:00Z forward, 11-02 06:00Z back
        event("2025-03-09T06:59:59Z", "serve", c(), D),
        event("2025-03-09T03:00:00-04:00", "serve", c(), D),
        event("2025-11-02T01:30:00-04:00", "serve", d5, D),
        event("2025-11-02T01:30:00-05:00", "solve", d5, D),
        event("2025-11-03T04:59:59Z", "serve", c(), D),
    ]
    e1, e2, e3 = c(), c(), c()
    evs += [
        event("1970-01-01T00:00:00Z", "serve", e1, E),
        event("1970-01-01T00:00:01Z", "solve", e1, E),
        event("1970-01-01T03:00:00+03:00", "serve", e2, E),
        event("1970-01-01T23:59:59.999999999Z", "serve", e3, E),
        event("1970-01-01T20:00:00-05:00", "solve", e3, E),
        event("2105-12-31T00:00:00Z", "serve", c(), E),
        event("2105-12-31T23:59:59Z", "serve", e2, E),
        event("2105-12-31T23:59:59Z", "solve", e2, E),
        event("2105-12-31T22:00:00-01:00", "solve", c(), E),
    ]
    return D, E, evs


def window_events():
    """Site W: procedures around the solve window (10m) to the
    millisecond, on 2025-01-12 and 13 (UTC)."""
    W = str(uuid.uuid4())
    evs = []
    for i, (serve, solves) in enumerate((
            ("10:00:00.000", ["10:00:00.001"]),
            ("10:01:00.250", ["10:11:00.250"]),           # at the window
            ("10:02:00.000", ["10:12:00.001"]),           # 1 ms past it
            ("10:03:00.500", ["10:03:20.500", "10:03:10.000"]),
            ("10:05:00.001", ["10:05:00.000"]),           # before
            ("10:06:00.000", []),
            ("23:59:59.900", ["00:00:00.100"]))):         # next day
        cid = str(uuid.uuid4())
        evs.append(event("2025-01-12T%sZ" % serve, "serve", cid, W))
        if i == 3:
            evs.append(event("2025-01-12T10:03:40.000Z", "serve", cid, W))
        for v in solves:
            day = "13" if v.startswith("00:") else "12"
            evs.append(event("2025-01-%sT%sZ" % (day, v), "solve", cid, W))
    return W, evs


def filters(ds, D, E):
    A, B = ds.A, ds.B
    return [
        None,
        "site_id='%s'" % A,
        "type='serve'",
        "day>='2025-01-11'",
        "site_id IN ('%s','%s') AND NOT type='solve'" % (A, B.upper()),
        "(day='2025-03-30' OR day = '2025-10-26') AND site_id='%s'" % D,
        "day<>'2025-01-10' OR type!='solve'",
        "time < '1970-01-02' OR date > '2105-12-30'",
        "site_id = '%s' AND day <= '2105-12-31'" % E,
    ]


BOUNDS = [{}, {"from": "2025-01-10"}, {"to": "2025-01-11"},
          {"from": "2025-01-10", "to": "2025-01-11"},
          {"from": "1970-01-01"}, {"to": "1970-01-01"},
          {"from": "1970-01-01", "to": "1970-01-02"},
          {"from": "2105-12-31"}, {"from": "2105-12-30", "to": "2105-12-31"},
          {"from": "2025-03-30", "to": "2025-03-30"},
          {"from": "2025-10-26", "to": "2025-11-02"}]


class Workload:
    def __init__(self, base):
        self.ch = stack.ClickHouse(base / "clickhouse")
        self.relay = None
        self.h = None
        self.current_relay = None
        self.reports = 0
        self.base = base

    def start(self):
        self.ch.start()
        self.relay = RecordingRelay(self.ch.url).start()
        self.old_table()
        self.h = self.httpd("httpd", self.relay)

    def httpd(self, name, relay):
        """httpd with the module, as the module's user, through relay."""
        directives = ("IMChallengeClickHouseUser %s\n"
                      "IMChallengeClickHousePasswordFile %s"
                      % (self.ch.imc_user, self.ch.password_file))
        module = os.environ.get("IMC_MODULE") or stack.DEFAULT_MODULE
        h = stack.Httpd(self.base / name, module, clickhouse_url=relay.url,
                        directives=directives)
        h.start()
        stack.wait_until(lambda: h.get("readyz", timeout=2)
                         .status_code == 200, 30, interval=0.2,
                         what="GET /readyz")
        return h

    def old_table(self):
        """The table of before time_ms, with rows, made through the relay
        so that the replay makes it too before the module migrates it."""
        http = stack.http_session()
        for sql in OLD_SCHEMA + ["INSERT INTO imchallenge.events FORMAT "
                                 "JSONEachRow\n" + old_rows()]:
            r = http.post(self.relay.url, data=sql.encode("utf-8"),
                          timeout=30)
            assert r.status_code == 200, (sql[:60], r.status_code, r.text)

    def stop(self):
        for what in (self.h, self.relay, self.current_relay, self.ch):
            if what is not None:
                try:
                    what.stop()
                except Exception as e:  # keep stopping the others
                    print("workload: stopping: %s" % e, file=sys.stderr)

    def report(self, flt=None, headers=None, expect=200, **params):
        r = get_report(self.h, flt, headers=headers, **params)
        self.reports += 1
        if r.status_code != expect:
            raise AssertionError("report %r %r: %d %s" % (
                flt, params, r.status_code, r.text[:300]))
        return r

    def wait_stored(self, site, rows):
        """Wait until ClickHouse holds rows events of site, asking it
        directly: a report asked while a delivery runs would race with its
        INSERT, whose order the replay could not know."""
        sql = ("SELECT count() FROM imchallenge.events WHERE site_id = "
               "toUUID('%s')" % site)
        stack.wait_until(lambda: int(self.ch.scalar(sql)) >= rows, 30,
                         interval=0.2, what="202 events to be delivered")

    def run(self):
        h = self.h
        ds = Dataset()
        ds.load(h)  # three ?wait=1 NDJSON requests, duplicates included
        D, E, edges = edge_events()
        post_events(h, edges)
        post_events(h, edges[:4])  # sent again: stored twice, counted once
        post_events(h, window_events()[1])
        # A JSON array, accepted (202) and delivered in the background.
        late = str(uuid.uuid4())
        # Fractions of a second to the millisecond, truncated beyond.
        arr = [event("2025-01-12T%02d:00:00%sZ" % (i, frac), "serve",
                     str(uuid.uuid4()), late)
               for i, frac in enumerate(("", ".5", ".123", ".1239", ".05"))]
        r = h.post("api/event", data=json.dumps(arr),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 202, (r.status_code, r.text)
        # The prototype's GET form, one event in the path.
        one = event("2025-01-12T06:00:00Z", "solve", str(uuid.uuid4()), late)
        r = h.get("api/event/" + quote(json.dumps(one), safe=""))
        assert r.status_code in (201, 202), (r.status_code, r.text)
        self.wait_stored(late, 6)
        self.report("site_id='%s'" % late)
        self.known_answers(ds, D, E, edges)

        flts = filters(ds, D, E)
        for tz in ZONES:
            for b in BOUNDS:
                self.report(None, tz=tz, **b)
            for f in flts:
                self.report(f, tz=tz)
                self.report(f, tz=tz, **{"from": "1970-01-01",
                                         "to": "2105-12-31"})
            self.report(flts[1], tz=tz, format="csv",
                        **{"from": "2025-01-10"})
            self.report(flts[2], tz=tz, headers={"Accept": "text/csv"})
        self.interval_reports(flts)
        # Refused before ClickHouse is asked: not in the capture.
        self.report(None, tz="Mars/Olympus", expect=400)
        self.report("colour='red'", expect=400)

        # New events on a day already reported: the same reports again let
        # the cache keep the other days and query the changed ones.
        post_events(h, [event("2025-01-11T10:00:00Z", "serve",
                              str(uuid.uuid4()), ds.A),
                        event("2105-12-31T10:00:00Z", "solve",
                              str(uuid.uuid4()), E)])
        for tz in ("UTC", "Asia/Tokyo", "America/New_York"):
            for b in BOUNDS:
                self.report(None, tz=tz, **b)
            for f in flts:
                self.report(f, tz=tz)
        h.check_error_log()

    def known_answers(self, ds, D, E, edges):
        """Reports whose answers are known, checked here on 18.16; the
        replay then holds 26.7 to the same answers. The dataset's UTC
        report as worked out by hand, and in every zone and bound the
        reference model's (report_util.model); the DST days of site D
        in their zones; the first and last days of site E in UTC and
        east of it (west of UTC ClickHouse counts 1969-12-31 on
        1970-01-01, which the model does not)."""
        abc = "site_id IN ('%s','%s','%s')" % (ds.A, ds.B, ds.C)
        assert_report(self.report(abc), ds.hand_rows())
        for tz in ZONES:
            assert_report(self.report(abc, tz=tz), model(ds.events, tz=tz))
            assert_report(
                self.report(abc, tz=tz, **{"from": ds.D2, "to": ds.D3}),
                model(ds.events, tz=tz, frm=ds.D2, to=ds.D3))
        for site, zones in ((D, ("UTC", "Europe/Berlin",
                                 "America/New_York")),
                            (E, ("UTC", "Asia/Tokyo"))):
            evs = [e for e in edges if e["site_id"] == site]
            for tz in zones:
                assert_report(self.report("site_id='%s'" % site, tz=tz),
                              model(evs, tz=tz))

    def interval_reports(self, flts):
        """Every interval, by=site|none, metrics, fill and compare, over
        zones with DST, half and quarter-hour offsets, with and without
        from/to (the transitions then span the events' times)."""
        ranged = [{"from": "2025-01-10", "to": "2025-01-12"},
                  {"from": "2025-03-29", "to": "2025-03-31"},
                  {"from": "2025-10-25", "to": "2025-10-27"}]
        for tz in ("UTC", "Europe/Berlin", "America/St_Johns",
                   "Asia/Kathmandu", "Pacific/Pago_Pago"):
            for iv in ("minute", "hour", "day", "week", "month", "total"):
                for by in ("site", "none"):
                    self.report(None, tz=tz, interval=iv, by=by)
                    for b in ranged:
                        self.report(flts[0], tz=tz, interval=iv, by=by,
                                    fill="1", **b)
            self.report(flts[1], tz=tz, interval="hour",
                        metrics="solve_rate,served", format="csv",
                        **{"from": "1970-01-01", "to": "1970-01-02"})
            self.report(None, tz=tz, interval="week", by="none",
                        compare="previous_period",
                        **{"from": "2025-01-06", "to": "2025-01-19"})
            self.report(None, tz=tz, interval="month",
                        **{"from": "2105-12-01"})
        self.window_reports(flts)

    def window_reports(self, flts):
        """The solve window's metrics: every interval, by, fill, compare,
        filters and bounds, JSON and CSV, over procedures solved 1 ms
        after their serve, at the window and 1 ms past it, twice, before
        their serve and across midnight."""
        every = ",".join(METRICS)
        for tz in ("UTC", "Europe/Berlin", "Asia/Kathmandu",
                   "America/St_Johns"):
            for iv in ("minute", "hour", "day", "week", "month", "total"):
                for by in ("site", "none"):
                    self.report(None, tz=tz, interval=iv, by=by,
                                metrics=every)
                self.report(flts[0], tz=tz, interval=iv, metrics=every,
                            fill="1", **{"from": "2025-01-12",
                                         "to": "2025-01-13"})
            self.report(None, tz=tz, interval="day", by="none",
                        metrics="unsolved,solve_time_p90", format="csv",
                        **{"from": "2025-01-10", "to": "2025-01-13"})
            self.report(None, tz=tz, interval="day", metrics=every,
                        compare="previous_period",
                        **{"from": "2025-01-12", "to": "2025-01-13"})
        for f in flts:
            self.report(f, interval="hour", metrics=every)
        for b in BOUNDS:
            self.report(None, interval="total", by="none",
                        metrics="solve_time_avg,unsolved", **b)

    def current_release_run(self):
        """The module again, told by its relay that ClickHouse is 26.7:
        schema and feature probes, the dedup window's ALTER, ingestion
        with tokens and async_insert=0 (a batch sent twice: two tokens),
        every interval and metric over zones east and west of UTC, the
        epoch and 2105, the cache's listings before and after new events.
        The first module is stopped first, so the two captures do not
        interleave."""
        self.h.stop()
        self.h = None
        self.current_relay = RecordingRelay(
            self.ch.url, pose=as_current_release, strip=NEWER_ONLY).start()
        self.h = self.httpd("httpd-current", self.current_relay)
        h = self.h
        P = str(uuid.uuid4())
        c = lambda: str(uuid.uuid4())  # noqa: E731
        p1, p2, p3, p4 = c(), c(), c(), c()
        evs = [event("2025-02-03T10:00:00Z", "serve", p1, P),
               event("2025-02-03T10:00:04.250Z", "solve", p1, P),
               event("2025-02-03T23:30:00Z", "serve", p2, P),
               event("2025-02-04T00:15:00Z", "solve", p2, P),
               event("2025-03-30T00:30:00Z", "serve", p3, P),
               event("1970-01-01T00:00:02Z", "serve", p4, P),
               event("1970-01-01T00:09:00Z", "solve", p4, P),
               event("2105-12-31T23:00:00Z", "serve", c(), P)]
        post_events(h, evs)
        post_events(h, evs[:3], wait=False)  # again: stored twice
        self.wait_stored(P, len(evs) + 3)
        flt = "site_id='%s'" % P
        every = ",".join(METRICS)
        for tz in ("UTC", "Asia/Tokyo", "Europe/Berlin", "America/New_York",
                   "Asia/Kolkata", "Pacific/Kiritimati"):
            for b in BOUNDS:
                self.report(None, tz=tz, **b)
            self.report(flt, tz=tz)
            self.report(flt, tz=tz, format="csv",
                        **{"from": "1970-01-01", "to": "2105-12-31"})
            for iv in ("minute", "hour", "day", "week", "month", "total"):
                self.report(flt, tz=tz, interval=iv, metrics=every)
                self.report(None, tz=tz, interval=iv, by="none",
                            metrics=every, fill="1",
                            **{"from": "2025-02-01", "to": "2025-02-05"})
            self.report(None, tz=tz, interval="day", metrics=every,
                        compare="previous_period",
                        **{"from": "2025-02-03", "to": "2025-02-04"})
        post_events(h, [event("2025-02-03T12:00:00Z", "serve", c(), P)])
        for tz in ("UTC", "Asia/Tokyo"):
            for b in BOUNDS:
                self.report(None, tz=tz, **b)
            self.report(flt, tz=tz)
        h.check_error_log()

    def capture(self):
        ex = self.relay.snapshot()
        if self.current_relay is not None:
            # After the first relay's exchanges, numbered on.
            for rec in self.current_relay.snapshot():
                ex.append(dict(rec, seq=len(ex) + 1))
        checks = []
        for name, sql in (("stored rows", TABLE_SQL),):
            checks.append({"name": name, "sql": sql,
                           "answer": base64.b64encode(self.ch.query(
                               sql).encode("utf-8")).decode("ascii")})
        return {
            "server": {"version": self.ch.scalar("SELECT version()"),
                       "timezone": self.ch.scalar("SELECT timezone()")},
            "reports": self.reports,
            "exchanges": ex,
            "checks": checks,
        }


def main(argv):
    if len(argv) != 2:
        print("usage: workload.py CAPTURE.json", file=sys.stderr)
        return 2
    base = stack.session_workdir("imc-compat-")
    w = Workload(base)
    failed = True
    try:
        w.start()
        t0 = time.monotonic()
        w.run()
        w.current_release_run()
        cap = w.capture()
        Path(argv[1]).write_text(json.dumps(cap))
        print("workload: ClickHouse %s (%s), %d reports, %d exchanges "
              "recorded in %.1f s" % (cap["server"]["version"],
                                      cap["server"]["timezone"], w.reports,
                                      len(cap["exchanges"]),
                                      time.monotonic() - t0))
        failed = False
    finally:
        w.stop()
        stack.finish_workdir(base, failed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
