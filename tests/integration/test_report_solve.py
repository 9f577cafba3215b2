# Licensed under the Apache License, Version 2.0.
"""The solve-window metrics of the report: unsolved, solve_time_avg,
solve_time_p50, solve_time_p90 (SPEC section 5, "Intervals, metrics,
comparison"), and IMChallengeSolveWindow.

Fixed cases with times to the millisecond (a solve 1 ms after its serve,
one exactly at the window and one a millisecond past it, a serve sent again
and served twice, a solve without serve, a solve before its serve, two
solves, a procedure across midnight, across a DST change and across two
hours, a solve after `to`, the same correlation id on two sites), worked by
hand and against the model of test_report_intervals.py, on two servers of
one database: the default window (10m) and `IMChallengeSolveWindow 30s`.
Then random rounds of zones, intervals, by, filters, from/to, fill,
compare and metric lists, JSON and CSV against the model.
"""

import datetime
import random
import uuid

import pytest

import stack
from report_util import assert_clean_error, event, get_report, post_events
from test_report_intervals import METRICS, ZONES, ask

UTC = datetime.timezone.utc
HOUR10 = "2026-05-10T10:00:00+00:00"


def at(text):
    return "2026-05-10T%sZ" % text


class Solves:
    """Events of the fixed cases on sites A and B, random ones on C."""

    def __init__(self):
        self.sites = sorted(str(uuid.uuid4()) for _ in range(3))
        A, B, C = self.sites
        self.cid = {}
        ev = []

        def proc(name, site, *pairs):
            cid = self.cid.setdefault(name, str(uuid.uuid4()))
            for kind, t in pairs:
                ev.append(event(t, kind, cid, site))

        # Site A, hour 10 of 2026-05-10 (UTC).
        proc("a", A, ("serve", at("10:00:00.000")),
             ("solve", at("10:00:00.001")))              # 1 ms
        proc("b", A, ("serve", at("10:01:00.250")),
             ("solve", at("10:11:00.250")))              # the window, 10m
        proc("c", A, ("serve", at("10:02:00")),
             ("solve", at("10:12:00.001")))              # 1 ms past it
        proc("d", A, ("serve", at("10:03:00.500")),
             ("serve", at("10:03:10.000")),
             ("serve", at("10:03:00.500")),              # sent again
             ("solve", at("10:03:20.500")))              # 20 s from the first
        proc("e", A, ("solve", at("10:04:00")))          # no serve
        proc("f", A, ("solve", at("10:05:00.000")),
             ("serve", at("10:05:00.001")))              # solve before
        proc("g", A, ("serve", at("10:06:00")),
             ("solve", at("10:05:59.999")),              # before: not it
             ("solve", at("10:06:05.000")),
             ("solve", at("10:06:03.000")))              # the earliest, 3 s
        proc("h", A, ("serve", at("10:07:30")))          # never solved
        proc("i", A, ("serve", at("10:08:00.000")),
             ("solve", at("10:08:30.000")))              # 30 s exactly
        proc("j", A, ("serve", at("10:09:00.000")),
             ("solve", at("10:09:30.001")))              # 30 s and 1 ms
        # Site B: across midnight (UTC), DST (Europe/Berlin springs
        # forward 2026-03-29 01:00Z) and two hours, a solve after 'to',
        # the same correlation id as a (site A) served again here.
        proc("k", B, ("serve", "2026-05-10T23:59:59.900Z"),
             ("solve", "2026-05-11T00:00:00.100Z"))      # 200 ms
        proc("l", B, ("serve", "2026-03-29T00:59:59.500Z"),
             ("solve", "2026-03-29T03:00:01+02:00"))     # 1.5 s
        proc("m", B, ("serve", at("11:59:00")),
             ("solve", at("12:01:00")))                  # next hour, 120 s
        proc("n", B, ("serve", at("12:59:30")), ("serve", at("13:00:10")),
             ("solve", at("13:00:20")))                  # 50 s and 10 s
        proc("o", B, ("serve", "2026-05-31T23:58:00Z"),
             ("solve", "2026-06-01T00:01:00Z"))          # 3 min, or after to
        ev.append(event(at("10:30:00"), "serve", self.cid["a"], B))
        # Site C: random traffic over two days, times to the millisecond.
        rnd = random.Random(20261203)
        t0 = datetime.datetime(2026, 5, 20, tzinfo=UTC)
        for _ in range(240):
            cid = str(uuid.uuid4())
            t = t0 + datetime.timedelta(milliseconds=rnd.randrange(
                2 * 86400 * 1000))
            ev.append(event(stamp(t), "serve", cid, C))
            if rnd.random() < 0.15:  # served again a little later
                ev.append(event(stamp(t + datetime.timedelta(
                    milliseconds=rnd.randrange(90000))), "serve", cid, C))
            for _ in range(rnd.choice([0, 1, 1, 1, 2])):
                dt = rnd.choice([rnd.randrange(-5000, 45000),
                                 rnd.randrange(700000),
                                 rnd.choice([29999, 30000, 30001, 600000,
                                             600001])])
                ev.append(event(stamp(t + datetime.timedelta(
                    milliseconds=dt)), "solve", cid, C))
        ev.append(ev[-1])  # sent again
        self.events = ev


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (
        t.microsecond // 1000)


class Server:
    """What ask() needs: a server, the events, its window."""

    def __init__(self, h, events, window_ms):
        self.h, self.events, self.window_ms = h, events, window_ms


@pytest.fixture(scope="module")
def sv(servers, clickhouse):
    db = "imc_solve_" + uuid.uuid4().hex[:12]
    d = Solves()
    h = servers.httpd(batch_delay="200ms",
                      directives="IMChallengeDatabase %s" % db)
    h30 = servers.httpd(directives="IMChallengeDatabase %s\n"
                        "IMChallengeSolveWindow 30s" % db)
    for x in (h, h30):
        stack.wait_until(lambda: x.get("readyz", timeout=2).status_code ==
                         200, 30, what="readyz")
    for i in range(0, len(d.events), 100):
        post_events(h, d.events[i:i + 100])
    d.default = Server(h, d.events, 600000)
    d.w30 = Server(h30, d.events, 30000)
    yield d
    h.stop()
    h30.stop()
    clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


def site(d, i):
    s = d.sites[i]
    return "site_id='%s'" % s, (lambda day, x, t: x == s)


ALL = ",".join(METRICS)


def hour10(want):
    return [r for r in want["rows"] if r["bucket"] == HOUR10][0]


# ------------------------------------------------------- fixed cases


def test_by_hand_default_window(sv):
    flt, keep = site(sv, 0)
    want = ask(sv.default, flt, keep, interval="hour", metrics=ALL)
    row = hour10(want)
    # served a b c d f g h i j; solved a b c d e f g i j (e: no serve);
    # not in time: c (1 ms past), f (solve before), h; times 1 ms, 600 s,
    # 20 s (d from its first serve), 3 s (g's earliest), 30 s, 30.001 s.
    assert row == {"bucket": HOUR10, "site_id": sv.sites[0], "served": 9,
                   "solved": 9, "solve_rate": 1.0, "unsolved": 3,
                   "solve_time_avg": 113834,  # 683002 / 6, half up
                   "solve_time_p50": 20000,   # rank 3 of 6
                   "solve_time_p90": 600000}  # rank 6 of 6
    r = get_report(sv.default.h, flt, interval="hour", metrics=ALL)
    assert ('"unsolved":3,"solve_time_avg":113.834,"solve_time_p50":20.000,'
            '"solve_time_p90":600.000}' in r.text), r.text


def test_by_hand_window_of_30s(sv):
    flt, keep = site(sv, 0)
    want = ask(sv.w30, flt, keep, interval="hour", metrics=ALL)
    row = hour10(want)
    # in time: a (1 ms), d (20 s), g (3 s), i (30 s exactly); not: b, c,
    # f, h, j (30.001 s).
    assert (row["unsolved"], row["solve_time_avg"], row["solve_time_p50"],
            row["solve_time_p90"]) == (5, 13250, 3000, 30000)
    r = get_report(sv.w30.h, flt, interval="hour", metrics="solve_time_p50",
                   format="csv")
    assert "%s,%s,3.000\r\n" % (HOUR10, sv.sites[0]) in r.text, r.text


def test_across_midnight_dst_and_hours(sv):
    flt, keep = site(sv, 1)
    want = ask(sv.default, flt, keep, interval="day", metrics=ALL,
               frm="2026-05-10", to="2026-05-11", fill=True)
    day10, day11 = want["rows"]
    # the serve of day 10 solved in time on day 11 (k, 200 ms); m 120 s;
    # n 50 s (from its first serve); a's correlation id served on B,
    # solved only on A: unsolved
    assert (day10["served"], day10["unsolved"], day10["solve_time_p50"],
            day10["solve_time_p90"]) == (4, 1, 50000, 120000)
    assert day11 == {"day": "2026-05-11", "site_id": sv.sites[1],
                     "served": 0, "solved": 1, "solve_rate": None,
                     "unsolved": 0, "solve_time_avg": None,
                     "solve_time_p50": None, "solve_time_p90": None}
    hours = ask(sv.default, flt, keep, interval="hour", by="none",
                metrics="served,unsolved,solve_time_avg",
                frm="2026-05-10", to="2026-05-10")
    times = {r["bucket"][11:13]: r["solve_time_avg"] for r in hours["rows"]}
    assert times["11"] == 120000 and times["12"] == 50000
    assert times["13"] == 10000  # served in two hours: in both
    berlin = ask(sv.default, flt, keep, tz="Europe/Berlin", interval="hour",
                 metrics=ALL, frm="2026-03-29", to="2026-03-29")
    assert [(r["bucket"], r["served"], r["solve_time_p90"])
            for r in berlin["rows"]] == [
        ("2026-03-29T01:00:00+01:00", 1, 1500),
        ("2026-03-29T03:00:00+02:00", 0, None)]


def test_solve_after_to_is_not_admitted(sv):
    flt, keep = site(sv, 1)
    cut = ask(sv.default, flt, keep, interval="total", metrics=ALL,
              frm="2026-05-31", to="2026-05-31")
    assert cut["rows"][0]["unsolved"] == 1
    assert cut["rows"][0]["solve_time_avg"] is None
    whole = ask(sv.default, flt, keep, interval="total", metrics=ALL,
                frm="2026-05-31", to="2026-06-01")
    assert whole["rows"][0]["solve_time_avg"] == 180000


def test_a_filter_without_solves_solves_nothing_in_time(sv):
    keep = lambda day, s, t: t == "serve"  # noqa: E731
    want = ask(sv.default, "type='serve'", keep, interval="day",
               metrics=ALL, by="none")
    assert all(r["unsolved"] == r["served"] and r["solve_time_p50"] is None
               for r in want["rows"])


def test_totals_are_over_all_procedures_not_rows(sv):
    flt, keep = site(sv, 2)
    want = ask(sv.default, flt, keep, interval="hour", metrics=ALL,
               frm="2026-05-20", to="2026-05-21", fill=True)
    rows = [r for r in want["rows"] if r["solve_time_p50"] is not None]
    assert len(rows) > 10
    assert want["totals"]["unsolved"] == sum(r["unsolved"]
                                            for r in want["rows"])
    for w in (sv.default, sv.w30):
        ask(w, flt, keep, interval="day", metrics=ALL, frm="2026-05-21",
            to="2026-05-22", compare=True, tz="Asia/Kathmandu")


def test_window_metrics_keep_the_errors(sv):
    h = sv.default.h
    body = assert_clean_error(get_report(h, metrics="solve_time_p99"), 400)
    assert body["metrics"] == METRICS
    body = assert_clean_error(get_report(
        h, metrics="unsolved", compare="previous_period", format="csv",
        **{"from": "2026-05-10", "to": "2026-05-11"}), 400)
    assert "CSV" in body["error"]
    assert_clean_error(get_report(h, metrics="unsolved,unsolved"), 400)
    assert_clean_error(get_report(h, metrics="solve_time_avg", fill="1"),
                       400)


# ------------------------------------------------------ random rounds


def test_random_rounds(sv):
    rnd = random.Random(11)
    filters = [(None, None),
               ("type='serve'", lambda day, s, t: t == "serve"),
               ("day >= '2026-05-21' OR type = 'serve'",
                lambda day, s, t: day >= "2026-05-21" or t == "serve")]
    filters += [site(sv, i) for i in range(3)]
    for i in range(30):
        w = rnd.choice([sv.default, sv.w30])
        interval = rnd.choice(["minute", "hour", "day", "week", "month",
                               "total"])
        flt, keep = rnd.choice(filters)
        ranged = interval == "minute" or rnd.random() < 0.7
        frm = to = None
        if ranged:
            start = rnd.choice([datetime.date(2026, 5, 10),
                                datetime.date(2026, 5, 20),
                                datetime.date(2026, 5, 21),
                                datetime.date(2026, 3, 28)])
            span = 1 if interval == "minute" else rnd.randrange(1, 4)
            frm = start.isoformat()
            to = (start + datetime.timedelta(days=span - 1)).isoformat()
        metrics = rnd.sample(METRICS, rnd.randrange(1, 8))
        if rnd.random() < 0.6 and not any(m in metrics for m in METRICS[3:]):
            metrics.append(rnd.choice(METRICS[3:]))
        ask(w, flt, keep, tz=rnd.choice(ZONES), interval=interval,
            by=rnd.choice(["site", "none", None]), metrics=",".join(metrics),
            frm=frm, to=to, fill=ranged and rnd.random() < 0.5,
            compare=ranged and rnd.random() < 0.3)


@pytest.mark.error_log_allow(r"\[imchallenge:(error|warn)\]")
def test_a_table_without_time_ms_is_a_502_for_these_metrics_only(
        clickhouse, make_httpd):
    db = "imc_old_" + uuid.uuid4().hex[:12]
    clickhouse.query("CREATE DATABASE %s" % db)
    clickhouse.query(
        "CREATE TABLE %s.events (time DateTime('UTC'), type Enum8('serve' "
        "= 1, 'solve' = 2), correlation_id UUID, site_id UUID, received_at "
        "DateTime('UTC'), raw String) ENGINE = MergeTree PARTITION BY "
        "toYYYYMM(time) ORDER BY (site_id, time)" % db)
    try:
        clickhouse.query(
            "INSERT INTO %s.events (time, type, correlation_id, site_id) "
            "VALUES (1747000000, 'serve', '%s', '%s')"
            % (db, uuid.uuid4(), uuid.uuid4()))
        h = make_httpd(directives="IMChallengeDatabase %s\n"
                       "IMChallengeCreateSchema Off" % db)
        r = get_report(h, interval="hour", metrics="served,solved")
        assert r.status_code == 200 and r.json()["totals"]["served"] == 1
        assert_clean_error(get_report(h, interval="hour",
                                      metrics="served,unsolved"), 502)
    finally:
        clickhouse.query("DROP DATABASE IF EXISTS %s" % db)
