# Licensed under the Apache License, Version 2.0.
"""The cache of the report's other forms (interval, by,
metrics, fill, compare) keeps their answers exact whatever happens to the
events table: a late event into a cached day, a merge, a mutation,
TRUNCATE, a table dropped and made again, and from/to and zones of their
own. Forms by hour or day with served, solved and solve_rate add up from
every site's cells of a day (imc_report_buckets_by_cells): any filter,
by, fill, compare and window of them is answered from cells that another
report filled. Weeks, months and totals keep every site's rows of a range
(imc_report_buckets_by_spans): any filter that names no day is answered
from them. The other forms are kept as whole answers (imc_rcache's forms
section).

Every answer is compared byte for byte with the model of
test_report_intervals.py over the events the test stored. The metric
imchallenge_report_form_lookups_total tells answers reused from the cache
from answers ClickHouse computed. As in
test_report_cache.py, reports that must meet one cache go over one
kept-alive connection (one httpd child), events go straight into
ClickHouse with background merges stopped, and a test that counts on the
cache waits for its parts to age (Table.settle).
"""

import datetime
import random
import re
import uuid
from types import SimpleNamespace

import pytest
import requests

from observe_util import parse_prometheus, sample
from report_cache_util import (OneConnection, Table, random_filter,
                               server_with_database)
from report_util import event
from test_report_intervals import csv_text, json_text, model_answer

DEFAULT_METRICS = ["served", "solved", "solve_rate"]
SEED = 20261203


def by_cells(form):
    """Whether the module answers form from cells (by hour or day, no
    metric of the solve window); else from a whole answer."""
    window = {"unsolved", "solve_time_avg", "solve_time_p50",
              "solve_time_p90"}
    metrics = set((form.get("metrics") or "served").split(","))
    return (form.get("interval") or "day") in ("hour", "day") and \
        not metrics & window


@pytest.fixture(scope="module")
def rc(servers, clickhouse):
    """A server with a database of its own."""
    yield from server_with_database(servers, clickhouse, "imc_fcache_",
                                    "200ms")


def new_id():
    return str(uuid.uuid4())


def lookups(h):
    """(cache, clickhouse) of imchallenge_report_form_lookups_total, on a
    connection of its own."""
    r = requests.get(h.url + "metrics", timeout=10,
                     headers={"Connection": "close"},
                     proxies={"http": None, "https": None})
    assert r.status_code == 200, r.text
    fams = parse_prometheus(r.text)
    assert fams["imchallenge_report_form_lookups_total"].type == "counter"
    return tuple(int(sample(fams, "imchallenge_report_form_lookups_total",
                            source=s)) for s in ("cache", "clickhouse"))


def procs(day, site, n, clock="10:00:00", solved_every=2):
    """n procedures of site on day, 10 minutes apart from clock; every
    solved_every-th solved; the first serve sent twice."""
    out = []
    h, m, s = (int(x) for x in clock.split(":"))
    for i in range(n):
        minute = m + 10 * i
        t = "%sT%02d:%02d:%02dZ" % (day, (h + minute // 60) % 24,
                                    minute % 60, s)
        cid = new_id()
        out.append(event(t, "serve", cid, site))
        if i % solved_every == 0:
            out.append(event(t, "solve", cid, site))
    return out + out[:1]


class Forms(OneConnection):
    """Reports over one connection, each checked against the model and
    its lookup counted: expect is "hit" (answered from the cache), "miss"
    (asked of ClickHouse), "any" (either) or None (the cache not used)."""

    def __init__(self, rc):
        super().__init__(rc.h)
        self.rc = rc

    def ask(self, events, expect, tz="UTC", interval=None, by=None,
            metrics=None, frm=None, to=None, fill=False, compare=False,
            csv=False, flt=None, keep=None):
        params = {"tz": tz}
        for k, v in (("interval", interval), ("by", by), ("from", frm),
                     ("to", to), ("metrics", metrics)):
            if v:
                params[k] = v
        if fill:
            params["fill"] = "1"
        if compare:
            params["compare"] = "previous_period"
        if csv:
            params["format"] = "csv"
        mlist = metrics.split(",") if metrics else DEFAULT_METRICS
        want = model_answer(events, metrics=mlist, compare=compare, tz=tz,
                            interval=interval or "day", by=by or "site",
                            frm=frm, to=to, fill=fill, keep=keep)
        before = lookups(self.rc.h)
        r = self.client.report(flt, **params)
        after = lookups(self.rc.h)
        assert r.status_code == 200, (params, flt, r.text)
        iv = interval or "day"
        head = (() if iv == "total" else ("day",) if iv == "day"
                else ("bucket",)) + (("site_id",) if by != "none" else ())
        text = csv_text(want, mlist, head) if csv else json_text(want, mlist)
        assert r.text == text, (params, flt)
        got = {"cache": after[0] - before[0],
               "clickhouse": after[1] - before[1]}
        if expect == "any":  # one lookup, either way
            assert sum(got.values()) == 1, (params, got)
        else:
            assert got == {"cache": int(expect == "hit"),
                           "clickhouse": int(expect == "miss")}, \
                (params, flt, got)
        return r


def week_of_events(table, first_day="2025-04-07", sites=2, days=7):
    """A part per day of procedures on sites over days from first_day;
    returns (events, days, sites)."""
    d0 = datetime.date.fromisoformat(first_day)
    D = [(d0 + datetime.timedelta(days=i)).isoformat() for i in range(days)]
    S = sorted(new_id() for _ in range(sites))
    events = []
    for i, day in enumerate(D):
        part = []
        for j, site in enumerate(S):
            part += procs(day, site, 2 + (i + j) % 3,
                          clock="%02d:05:00" % (3 * i % 24))
        table.insert(part)
        events += part
    return events, D, S


FORMS = [
    dict(interval="hour"),
    dict(interval="minute", by="none"),
    dict(interval="total"),
    dict(interval="week", by="none"),
    dict(interval="month"),
    dict(by="none", metrics="solve_rate,served"),
    dict(interval="day", fill=True),
    dict(interval="hour", compare=True),
    dict(interval="hour", csv=True),
    dict(interval="day", metrics="served,unsolved,solve_time_p50"),
    dict(interval="total", metrics="solve_time_avg,solve_time_p90",
         compare=True),
]


# ---------------------------------------------------------------- hits


@pytest.mark.parametrize("form", FORMS, ids=lambda f: "-".join(
    "%s=%s" % kv for kv in sorted(f.items())))
def test_forms_are_answered_again_from_the_cache(rc, table, form):
    events, D, _ = week_of_events(table)
    table.settle()
    rng = dict(frm=D[1], to=D[5])
    if form.get("fill") or form.get("compare"):
        form = dict(form, **rng)
    with Forms(rc) as f:
        first = f.ask(events, "miss", **form)
        again = f.ask(events, "hit", **form)
        assert again.text == first.text
        if "frm" not in form:  # the same form over a window: another one,
            # unless its cells are all cached already
            f.ask(events, "hit" if by_cells(form) else "miss",
                  **dict(form, **rng))
            f.ask(events, "hit", **dict(form, **rng))


# ---------------------------------------------------------- exactness


def test_a_late_event_into_a_cached_day(rc, table):
    events, D, S = week_of_events(table)
    table.settle()
    form = dict(interval="hour", frm=D[0], to=D[6])
    with Forms(rc) as f:
        f.ask(events, "miss", **form)
        f.ask(events, "hit", **form)
        late = procs(D[3], S[0], 1, clock="23:59:59")
        table.insert(late)
        events += late
        f.ask(events, "miss", **form)
        # Kept only if that part was not of the database's second then.
        table.settle()
        f.ask(events, "any", **form)
        f.ask(events, "hit", **form)
        # A late solve for a serve of the day before.
        solve = [dict(events[0], type="solve",
                      time=D[0] + "T23:00:00Z")]
        table.insert(solve)
        events += solve
        table.settle()
        f.ask(events, "miss", interval="total", frm=D[0], to=D[6])
        f.ask(events, "hit", interval="total", frm=D[0], to=D[6])


def test_a_late_solve_changes_the_solve_metrics(rc, table):
    # A solve within the window of a serve of a cached day, arriving
    # later, makes the procedure solved in time: the kept answer goes.
    events, D, S = week_of_events(table)
    table.settle()
    form = dict(interval="day", frm=D[1], to=D[5],
                metrics="served,unsolved,solve_time_avg,solve_time_p90")
    unsolved = [e for e in events if e["type"] == "serve" and
                D[2] in e["time"] and not any(
                    x["type"] == "solve" and
                    x["correlation_id"] == e["correlation_id"]
                    for x in events)][0]
    with Forms(rc) as f:
        before = f.ask(events, "miss", **form).json()
        f.ask(events, "hit", **form)
        t = datetime.datetime.fromisoformat(
            unsolved["time"].replace("Z", "+00:00")) + \
            datetime.timedelta(seconds=90, milliseconds=250)
        solve = [dict(unsolved, type="solve",
                      time=t.isoformat().replace("+00:00", "Z"))]
        table.insert(solve)
        events += solve
        table.settle()
        after = f.ask(events, "miss", **form).json()
        assert after["totals"]["unsolved"] == \
            before["totals"]["unsolved"] - 1
        f.ask(events, "hit", **form)


def test_events_outside_the_range_read_keep_the_answer(rc, table):
    events, D, S = week_of_events(table, first_day="2025-06-02")
    table.settle()
    form = dict(interval="week", frm=D[2], to=D[3])
    cells = dict(interval="hour", frm=D[2], to=D[3])
    with Forms(rc) as f:
        f.ask(events, "miss", **form)
        f.ask(events, "miss", **cells)
        # A month later: another partition, a part far from the range.
        far = procs("2025-07-20", S[1], 2)
        table.insert(far)
        events += far
        table.settle()
        f.ask(events, "hit", **form)
        # The day after the range (a zone may read into it): a whole
        # answer is asked again; the cells of the days asked are the same.
        near = procs(D[4], S[1], 1)
        table.insert(near)
        events += near
        table.settle()
        f.ask(events, "miss", **form)
        f.ask(events, "hit", **cells)
        # Without from / to every part counts.
        f.ask(events, "miss", interval="week")
        f.ask(events, "hit", interval="week")
        later = procs("2025-08-01", S[0], 1)
        table.insert(later)
        events += later
        table.settle()
        f.ask(events, "miss", interval="week")
        f.ask(events, "hit", interval="week")


def test_a_merge_a_mutation_and_truncate(rc, table):
    events, D, S = week_of_events(table, first_day="2025-09-01")
    table.settle()
    form = dict(interval="day", by="none", frm=D[0], to=D[6])
    with Forms(rc) as f:
        f.ask(events, "miss", **form)
        table.optimize()
        table.settle()
        f.ask(events, "miss", **form)  # other parts, the same counts
        f.ask(events, "hit", **form)
        gone = events[0]["correlation_id"]
        table.delete("correlation_id = toUUID('%s')" % gone)
        events = [e for e in events if e["correlation_id"] != gone]
        table.settle()
        f.ask(events, "miss", **form)
        f.ask(events, "hit", **form)
        table.truncate()
        # An empty table lists no parts: answered without the cache.
        f.ask([], None, **form)
        new = []
        for day in D[:3]:
            part = procs(day, S[1], 1)
            table.insert(part)
            new += part
        table.settle()
        f.ask(new, "miss", **form)
        f.ask(new, "hit", **form)


def test_a_table_dropped_and_made_again(rc, table):
    day = "2025-11-03"
    site = new_id()
    first = procs(day, site, 3)
    table.insert(first)
    table.settle()
    form = dict(interval="hour", frm=day, to=day)
    with Forms(rc) as f:
        f.ask(first, "miss", **form)
        f.ask(first, "hit", **form)
        table.recreate()
        # The same part name and rows as before, other events.
        second = procs(day, new_id(), 3)
        table.insert(second)
        f.ask(second, "miss", **form)
        table.settle()
        f.ask(second, "any", **form)
        f.ask(second, "hit", **form)


def test_zones_and_windows_have_answers_of_their_own(rc, table):
    events, D, _ = week_of_events(table, first_day="2025-12-01")
    table.settle()
    with Forms(rc) as f:
        for tz in ("UTC", "Asia/Kathmandu", "America/St_Johns",
                   "Pacific/Kiritimati"):
            f.ask(events, "miss", tz=tz, interval="hour", frm=D[1], to=D[4])
        for tz in ("UTC", "Asia/Kathmandu", "America/St_Johns",
                   "Pacific/Kiritimati"):
            f.ask(events, "hit", tz=tz, interval="hour", frm=D[1], to=D[4])
        # Whole answers: a window of their own each.
        f.ask(events, "miss", interval="week", frm=D[1], to=D[4])
        f.ask(events, "miss", interval="week", frm=D[1], to=D[3])
        f.ask(events, "miss", interval="week", frm=D[2], to=D[4])
        f.ask(events, "miss", interval="week", frm=D[2])
        f.ask(events, "miss", interval="week", to=D[2])
        f.ask(events, "hit", interval="week", frm=D[2])
        f.ask(events, "hit", interval="week", to=D[2])
        # Cells: any window inside the days cached, the days outside once.
        f.ask(events, "hit", interval="hour", frm=D[1], to=D[3])
        f.ask(events, "hit", interval="hour", frm=D[2], to=D[4])
        f.ask(events, "miss", interval="hour", frm=D[2])
        f.ask(events, "miss", interval="hour", to=D[2])
        f.ask(events, "hit", interval="hour", frm=D[2])
        f.ask(events, "hit", interval="hour", to=D[2])


# ---------------------------------------------------------------- cells

CELL_FORMS = [
    dict(interval="hour"),
    dict(interval="hour", by="none"),
    dict(interval="hour", metrics="solved,solve_rate", csv=True),
    dict(interval="day", by="none"),
    dict(interval="day", metrics="solve_rate,served"),
    dict(interval="hour", fill=True),
    dict(interval="day", by="none", fill=True),
    dict(interval="hour", by="none", compare=True),
    dict(interval="day", compare=True),
]


def test_random_filters_in_forms_by_hour_and_day_from_cells(rc, table):
    """One report per zone by hour and one by day fill the cells of every
    site; then 30 random filters in random forms by hour or day (by site
    or none, fill, compare, CSV, a window or none) are each exact against
    the model, and none asks ClickHouse."""
    print("seed %d" % SEED)
    rnd = random.Random(SEED)
    events, D, S = week_of_events(table, first_day="2026-03-23", sites=3)
    table.settle()
    zones = ("UTC", "Asia/Kathmandu", "America/New_York")
    with Forms(rc) as f:
        # From the day before the first: New York's first hours after the
        # epoch are of 1969, so its forms from cells need a from (from
        # 1970-01-02 on); and the first day's events begin there.
        eve = "2026-03-22"
        for tz in zones:
            f.ask(events, "miss", tz=tz, interval="hour", frm=eve)
            # The day report's cells (no form: no form lookup).
            f.ask(events, None, tz=tz, interval="day", frm=eve)
        for _ in range(30):
            form = dict(rnd.choice(CELL_FORMS), tz=rnd.choice(zones))
            flt, keep = random_filter(rnd, S, D)
            a, b = sorted(rnd.sample(range(len(D)), 2))
            if form.get("fill") or form.get("compare") or \
                    form["tz"] != "UTC" or rnd.random() < 0.5:
                form.update(frm=D[a], to=D[b])
            f.ask(events, "hit", flt=flt, keep=keep, **form)


def test_a_late_event_asks_for_the_cells_of_its_day_only(rc, table):
    """An event into a day of a warm hour form: the next report (another
    filter) asks ClickHouse for that day's cells alone."""
    events, D, S = week_of_events(table, first_day="2026-04-13")
    table.settle()
    with Forms(rc) as f:
        f.ask(events, "miss", interval="hour")
        late = procs(D[3], S[0], 2, clock="23:59:00")
        table.insert(late)
        events += late
        table.settle()
        before = days_lookups(rc.h)
        flt = "site_id='%s'" % S[0]
        f.ask(events, "miss", interval="hour", by="none", flt=flt,
              keep=lambda d, s, t: s == S[0])
        after = days_lookups(rc.h)
        assert (after[0] - before[0], after[1] - before[1]) == \
            (len(D) - 1, 1)


SPAN_FORMS = [
    dict(interval="week"),
    dict(interval="week", by="none", fill=True),
    dict(interval="month", metrics="solve_rate,solved", csv=True),
    dict(interval="total"),
    dict(interval="total", by="none", compare=True),
    dict(interval="week", compare=True),
]


def test_random_filters_without_a_day_in_weeks_months_totals(rc, table):
    """The rows of every site of a range, kept once per (interval, range):
    30 random filters that name no day, in random forms of weeks, months
    and totals over ranges asked before, are each exact against the model
    and none asks ClickHouse. A filter that names a day is another form's
    answer (asked, then kept)."""
    rnd = random.Random(SEED + 1)
    events, D, S = week_of_events(table, first_day="2026-05-25", days=10,
                                  sites=3)
    table.settle()
    ranges = [(D[1], D[8]), (D[0], D[9]), (None, None)]
    with Forms(rc) as f:
        for form in SPAN_FORMS:
            for frm, to in ranges:
                if frm or not (form.get("fill") or form.get("compare")):
                    f.ask(events, "any", frm=frm, to=to, **form)
        asked = 0
        while asked < 30:
            flt, keep = random_filter(rnd, S, D)
            if re.search(r"day|time|date", flt, re.I):
                continue
            form = rnd.choice(SPAN_FORMS)
            frm, to = rnd.choice(ranges[:2] if form.get("fill") or
                                 form.get("compare") else ranges)
            f.ask(events, "hit", flt=flt, keep=keep, frm=frm, to=to, **form)
            asked += 1
        flt = "day >= '%s' AND type = 'serve'" % D[4]
        keep = lambda d, s, t: d >= D[4] and t == "serve"  # noqa: E731
        f.ask(events, "miss", flt=flt, keep=keep, interval="week")
        f.ask(events, "hit", flt=flt, keep=keep, interval="week")
        # The previous period of a range from 1970-01-01 is before any
        # event: a span of none.
        f.ask(events, "miss", interval="total", compare=True,
              frm="1970-01-01", to="1970-01-03")
        f.ask(events, "hit", interval="total", compare=True,
              frm="1970-01-01", to="1970-01-03")


WINDOW_FORMS = [
    dict(interval="total",
         metrics="served,unsolved,solve_time_p50,solve_time_p90"),
    dict(interval="day", by="none", metrics="solve_time_avg,unsolved,solved"),
    dict(interval="week", metrics="solve_time_p90,served", compare=True),
    dict(interval="hour", by="none", metrics="unsolved,solve_time_p50",
         fill=True),
    dict(interval="total", by="none", metrics="solve_time_p50,solve_time_avg",
         csv=True),
]


def timed_procs(rnd, day, site, n):
    """n procedures of site on day at random times, most solved after 1 to
    900 s (past the 10-minute window now and then), a serve sent twice."""
    out = []
    d0 = datetime.datetime.fromisoformat(day + "T00:00:00+00:00")
    for _ in range(n):
        t = d0 + datetime.timedelta(seconds=rnd.randrange(86400 - 1200))
        cid = new_id()
        out.append(event(t.strftime("%Y-%m-%dT%H:%M:%SZ"), "serve", cid, site))
        if rnd.random() < 0.8:
            v = t + datetime.timedelta(seconds=rnd.choice(
                (rnd.randrange(1, 60), rnd.randrange(60, 900))))
            out.append(event(v.strftime("%Y-%m-%dT%H:%M:%SZ"), "solve", cid,
                             site))
    return out + out[:1]


def test_random_filters_in_solve_time_forms_from_kept_times(rc, table):
    """The solve window's metrics keep every site's solve times of a range:
    after one report per form and range, 20 random filters that name no
    day in random forms (by site or none, hours to totals, fill, compare,
    CSV) are each exact against the model (p50, p90 and the mean over
    several sites' procedures together) and none asks ClickHouse."""
    rnd = random.Random(SEED + 2)
    d0 = datetime.date.fromisoformat("2026-06-15")
    D = [(d0 + datetime.timedelta(days=i)).isoformat() for i in range(5)]
    S = sorted(new_id() for _ in range(3))
    events = []
    for day in D:
        part = [e for site in S for e in timed_procs(rnd, day, site, 6)]
        table.insert(part)
        events += part
    table.settle()
    ranges = [(D[0], D[4]), (D[1], D[3]), (D[2], D[4])]
    with Forms(rc) as f:
        for form in WINDOW_FORMS:
            for frm, to in ranges:
                f.ask(events, "any", frm=frm, to=to, **form)
        asked = 0
        while asked < 20:
            flt, keep = random_filter(rnd, S, D)
            if re.search(r"day|time|date", flt, re.I):
                continue
            frm, to = rnd.choice(ranges)
            f.ask(events, "hit", flt=flt, keep=keep, frm=frm, to=to,
                  **rnd.choice(WINDOW_FORMS))
            asked += 1


def days_lookups(h):
    """(cache, clickhouse) of imchallenge_report_day_lookups_total."""
    r = requests.get(h.url + "metrics", timeout=10,
                     headers={"Connection": "close"},
                     proxies={"http": None, "https": None})
    assert r.status_code == 200, r.text
    fams = parse_prometheus(r.text)
    return tuple(int(sample(fams, "imchallenge_report_day_lookups_total",
                            source=s)) for s in ("cache", "clickhouse"))


# ---------------------------------------------------------------- fail-over


def test_an_answer_failed_over_after_its_listing_is_not_kept(
        clickhouse, make_httpd, error_log_allow):
    """The parts are listed on the first URL, which then hangs; the form's
    query is answered by the second. That answer is of another server than
    the listing's fingerprint: it is right, and it is not kept."""
    from faults_util import HttpProxy
    error_log_allow.extend([r"IMC00302: cannot apply the schema",
                            r"IMC00304: delivery of \d+ events to .* "
                            r"failed"])
    db = "imc_fcfo_" + uuid.uuid4().hex[:10]
    site = new_id()
    listed = []

    def policy(req):
        if listed:
            return "hang"  # past IMChallengeTimeout: the next URL
        if "system.parts" in req.sql:
            listed.append(req)
        return "forward"
    a = HttpProxy(clickhouse, policy)
    b = HttpProxy(clickhouse)
    try:
        h = make_httpd(clickhouse=[a.url, b.url], batch_delay="100ms",
                       directives="IMChallengeDatabase %s\nIMChallengeBatch"
                       "Size 50\nIMChallengeTimeout 2s" % db)
        events = procs("2026-11-27", site, 2) + procs("2026-11-28", site, 1)
        r = h.post("api/event?wait=1", data="".join(
            '{"time":"%s","type":"%s","correlation_id":"%s",'
            '"site_id":"%s"}\n' % (e["time"], e["type"], e["correlation_id"],
                                   e["site_id"]) for e in events),
            headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        Table(clickhouse, db).settle()
        form = dict(interval="hour", frm="2026-11-27", to="2026-11-28")
        with Forms(SimpleNamespace(h=h)) as f:
            f.ask(events, "miss", **form)
            assert listed
            assert [q for q in b.requests if "uniqExactIf" in q.sql]
            # Nothing kept: asked of ClickHouse again, then kept (the
            # second URL lists and answers alike).
            f.ask(events, "miss", **form)
            f.ask(events, "hit", **form)
    finally:
        a.close()
        b.close()
        clickhouse.query("DROP DATABASE IF EXISTS %s" % db)
