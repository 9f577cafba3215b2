# Licensed under the Apache License, Version 2.0.
"""The report's cache shared by all httpd processes (SPEC section 5,
README "How it works", `IMChallengeReportCache`) keeps the day report
exact, and answers from it what any process of any generation asked
before, whatever the filter.

The cache holds, per zone and day, the counts of every site, and the
module evaluates each report's filter on them: a filter never asked
before is answered from days another filter filled, and so is the same
report in another child process or after a graceful restart. Each answer
is compared with report_util.model() over the events the test stored;
random filters come from report_cache_util.random_filter(), which mirrors
the grammar of imc_filter.h and ClickHouse's order of UUIDs.

Where the cache is said to answer, the metrics tell it:
imchallenge_report_day_lookups_total{source="cache"|"clickhouse"} (days),
imchallenge_report_cells_total (rows of day and site),
imchallenge_report_cache_bytes, imchallenge_report_cache_size_bytes and
imchallenge_report_cache_evictions_total. The module keeps no day of a
part written in ClickHouse's current second: tests wait for their parts
to age (Table.settle) before they count on the cache. Background merges
are stopped (the `table` fixture): parts change only when a test says so.

Which child answers: with prefork a child serves one connection at a
time, so a connection held open keeps its child busy and the next one
goes to another; the child holding a connection is read from /proc
(serving_child) and the access log's %P confirms it (PID_LOG).

The cache of a server outlives a test: every test uses days of its own.
"""

import random
import threading
import time
from collections import namedtuple

import pytest

import stack
from faults_util import serving_children
from report_cache_util import (CLOCKS, KATHMANDU, PID_LOG, ZONES, Client,
                               ConnectionLost, GatedRelay, answering_pids, at,
                               cache_metrics, check_case, days, days_metric,
                               delta, new_id, procedures, random_batch,
                               random_case, random_filter, serving_child,
                               server_with_database, uuid_order)
from report_util import assert_report, model, post_events

BATCH_DELAY = "200ms"
SEED = 20261205
NEW_YORK = "America/New_York"
# Several idle prefork children at all times: a busy one is never needed.
PREFORK = ("StartServers 4", "MinSpareServers 4")
# Filters that pass every event: the cells they fill are every site's,
# whatever the module asks ClickHouse for.
EVERYTHING = (None, "", "type IN ('serve','solve')",
              "day >= '1970-01-01'")


@pytest.fixture(scope="module")
def rc(servers, clickhouse):
    """A server with a database of its own."""
    yield from server_with_database(servers, clickhouse, "imc_scache_",
                                    BATCH_DELAY)


def own_httpd(make_httpd, rc, *directives, **options):
    """A server of the test's own (its own shared cache) reporting on rc's
    database."""
    lines = ("IMChallengeDatabase %s" % rc.db,
             "IMChallengeCreateSchema Off") + directives
    return make_httpd(batch_delay=BATCH_DELAY, directives="\n".join(lines),
                      **options)


# What seeded() made: the server, the test's random numbers, its sites,
# days and the events stored on them.
Seeded = namedtuple("Seeded", "h rnd sites D events")


@pytest.fixture
def seeded(make_httpd, rc, table):
    """seeded(seed, n_sites, first_day, n_days, *directives,
    days_a_part=1, settle=True, **options) -> Seeded: a server of the
    test's own (own_httpd with directives and options), n_sites new sites
    and n_days days from first_day of their procedures (mixed_day, from
    random.Random(SEED + seed)) inserted days_a_part days to a part; then
    the parts are let age (Table.settle) unless settle is false."""
    def make(seed, n_sites, first_day, n_days, *directives, days_a_part=1,
             settle=True, **options):
        h = own_httpd(make_httpd, rc, *directives, **options)
        rnd = random.Random(SEED + seed)
        sites = sorted(new_id() for _ in range(n_sites))
        D = days(first_day, n_days)
        events = []
        for i in range(0, len(D), days_a_part):
            part = [e for day in D[i:i + days_a_part]
                    for e in mixed_day(day, sites, rnd)]
            table.insert(part)
            events += part
        if settle:
            table.settle()
        return Seeded(h, rnd, sites, D, events)
    return make


def get_on(h):
    """get(flt, **params) for check_case: each report on a connection of
    its own, answered by whichever child takes it."""
    def get(flt=None, **params):
        with Client(h) as c:
            return c.report(flt, **params)
    return get


def clickhouse_order(ch, sites):
    """sites as ClickHouse sorts them as UUIDs."""
    return ch.query(
        "SELECT toString(s) FROM (SELECT arrayJoin([%s]) AS s) ORDER BY s "
        "FORMAT TabSeparated"
        % ", ".join("toUUID('%s')" % s for s in sites)).split()


def sites_ordered_apart(n):
    """n new site ids, sorted, and one of them such that the sites below it
    as UUIDs are not the sites below it as texts."""
    while True:
        sites = sorted(new_id() for _ in range(n))
        for pivot in sites:
            by_text = {s for s in sites if s < pivot}
            by_uuid = {s for s in sites if uuid_order(s) < uuid_order(pivot)}
            if by_text != by_uuid:
                return sites, pivot


def mixed_day(day, sites, rnd):
    """Procedures of every site on day, at times near midnight in UTC,
    Kathmandu and New York."""
    out = []
    for site in sites:
        served = rnd.randint(1, 3)
        out += procedures(day, site, served, rnd.randint(0, served),
                          rnd.choice(CLOCKS))
    return out


# ---------------------------------------------------------------- filters


def test_random_filters_over_a_cache_warmed_by_other_filters(rc, table):
    print("seed %d" % SEED)
    rnd = random.Random(SEED)
    sites, pivot = sites_ordered_apart(4)
    D = days("2026-02-24", 8)  # across a month: two partitions
    get = get_on(rc.h)
    # The model orders UUIDs as ClickHouse does: site_id < '...' differs
    # from the order of the texts for these sites.
    assert clickhouse_order(rc.ch, sites) == sorted(sites, key=uuid_order)
    events = []
    for day in D:
        part = mixed_day(day, sites, rnd)
        table.insert(part)
        events += part
    check_case(get, events, {"flt": "site_id < '%s'" % pivot,
                             "keep": lambda d, s, t: (uuid_order(s)
                                                      < uuid_order(pivot))})
    misses, from_cache = [], 0
    for n in range(25):
        roll = rnd.random()
        if roll < 0.25:
            batch = random_batch(rnd, sites, D, events)
            post_events(rc.h, batch)
            events += batch
        elif roll < 0.6:
            batch = random_batch(rnd, sites, D, events)
            table.insert(batch)
            events += batch
        elif roll < 0.7:
            table.optimize()
        elif roll < 0.8:
            victim = rnd.choice(events)["correlation_id"]
            table.delete("correlation_id = toUUID('%s')" % victim)
            events = [e for e in events if e["correlation_id"] != victim]
        # At once, over days whose parts just changed.
        check_case(get, events, random_case(rnd, sites, D))
        # A report of every site warms the days of a window in a zone;
        # then a filter over them (most likely one never asked before).
        table.settle()
        case = random_case(rnd, sites, D)
        check_case(get, events, dict(case, flt=rnd.choice(EVERYTHING),
                                     keep=None))
        before = days_metric(rc.h)
        check_case(get, events, case)
        d = delta(before, days_metric(rc.h))
        covered = table.covered_days(case["tz"], case["frm"], case["to"])
        if d["clickhouse"] or d["cache"] > len(covered):
            misses.append((n, case["flt"], case["tz"], case["frm"],
                           case["to"], len(covered), d))
        from_cache += d["cache"]
    # Every answer above was exact; the filters were answered from the
    # days the reports before them had filled.
    assert not misses, "filters that asked ClickHouse for warm days " \
        "(round, filter, tz, from, to, days, lookups):\n%s" % "\n".join(
            map(repr, misses))
    assert from_cache > 0


def test_a_new_filter_over_warm_days_asks_clickhouse_nothing(rc, table):
    rnd = random.Random(SEED + 1)
    sites, pivot = sites_ordered_apart(3)
    A, B, C = sites
    D = days("2026-04-06", 5)
    events = table.insert_days(D, lambda day: mixed_day(day, sites, rnd))
    table.settle()
    get = get_on(rc.h)
    cells = []  # (before, after, rows shown, rows before the filter, cold)
    for tz in ZONES:
        covered = table.covered_days(tz)
        m0 = cache_metrics(rc.h)
        every = check_case(get, events, {"tz": tz})
        m1 = cache_metrics(rc.h)
        assert delta(m0.days, m1.days) == {"cache": 0,
                                           "clickhouse": len(covered)}
        cells.append((m0, m1, len(every), len(every), True))
        # Filters on sites and types: every covered day from the cache.
        for flt, keep in [
                ("site_id = '%s'" % B, lambda d, s, t: s == B),
                ("site_id IN ('%s', '%s') AND type = 'serve'" % (A, C),
                 lambda d, s, t: s in (A, C) and t == "serve"),
                ("NOT site_id < '%s' OR type = 'solve'" % pivot,
                 lambda d, s, t: not uuid_order(s) < uuid_order(pivot)
                 or t == "solve")]:
            for fmt in ("json", "csv"):
                case = {"flt": flt, "keep": keep, "tz": tz, "fmt": fmt}
                m2 = cache_metrics(rc.h)
                rows = check_case(get, events, case)
                m3 = cache_metrics(rc.h)
                assert delta(m2.days, m3.days) == {
                    "cache": len(covered), "clickhouse": 0}, case
                cells.append((m2, m3, len(rows), len(every), False))
        # Random filters, windows of the same days.
        for _ in range(3):
            case = random_case(rnd, sites, D, zones=[tz], filtered=1)
            window = model(events, tz=tz, frm=case["frm"], to=case["to"])
            m2 = cache_metrics(rc.h)
            rows = check_case(get, events, case)
            m3 = cache_metrics(rc.h)
            d = delta(m2.days, m3.days)
            assert d["clickhouse"] == 0, (case, d)
            assert d["cache"] <= len(covered), (case, d)
            cells.append((m2, m3, len(rows), len(window), False))
    # Rows (day and site): the first report of each zone had them all from
    # ClickHouse, the others from the cache, at least the rows they show
    # and at most the rows before their filter.
    for m0, m1, shown, unfiltered, cold in cells:
        d = delta(m0.cells(), m1.cells())
        if cold:
            assert d == {"cache": 0, "clickhouse": shown}
        else:
            assert d["clickhouse"] == 0, d
            assert shown <= d["cache"] <= unfiltered, (d, shown, unfiltered)


# ---------------------------------------------------------------- processes


def test_another_child_answers_from_the_cache(seeded, table):
    h, _, sites, D, events = seeded(2, 3, "2026-05-11", 4, *PREFORK, PID_LOG,
                                    mpm="prefork")
    case = {"tz": KATHMANDU}
    covered = table.covered_days(KATHMANDU)
    flt = "site_id != '%s' AND day > '%s'" % (sites[0], D[0])
    filtered = {"flt": flt, "tz": KATHMANDU, "fmt": "csv",
                "keep": lambda d, s, t: s != sites[0] and d > D[0]}
    with Client(h) as first:
        m0 = cache_metrics(h)
        rows = check_case(first.report, events, case)
        m1 = cache_metrics(h)
        first_pid = serving_child(h, first)
        # first stays open: its child waits for its next request, and the
        # next connection goes to another child.
        with Client(h) as second:
            check_case(second.report, events, case)
            m2 = cache_metrics(h)
            second_pid = serving_child(h, second)
            check_case(second.report, events, filtered)
            m3 = cache_metrics(h)
    assert first_pid != second_pid
    # The access log says the same: two children answered.
    assert answering_pids(h, first.port) == [first_pid]
    assert answering_pids(h, second.port, 2) == [second_pid, second_pid]
    assert delta(m0.days, m1.days) == {"cache": 0,
                                       "clickhouse": len(covered)}
    # The other child found the days the first one had asked for.
    assert delta(m1.days, m2.days) == {"cache": len(covered),
                                       "clickhouse": 0}
    d = delta(m2.days, m3.days)  # a filter never asked before
    assert d["clickhouse"] == 0 and 0 < d["cache"] <= len(covered), d
    assert delta(m0.cells(), m1.cells()) == {"cache": 0,
                                             "clickhouse": len(rows)}
    assert delta(m1.cells(), m2.cells()) == {"cache": len(rows),
                                             "clickhouse": 0}
    assert delta(m2.cells(), m3.cells())["clickhouse"] == 0


def test_graceful_restart_keeps_the_cache(seeded, table):
    h, _, _, _, events = seeded(3, 3, "2026-06-08", 5)
    case = {"tz": NEW_YORK}
    covered = table.covered_days(NEW_YORK)
    m0 = cache_metrics(h)
    with Client(h) as c:
        rows = check_case(c.report, events, case)
    m1 = cache_metrics(h)
    old = set(h.children())
    h.graceful()
    with Client(h) as c:
        check_case(c.report, events, dict(case, fmt="csv"))
        assert serving_child(h, c) not in old  # a child of the new generation
    m2 = cache_metrics(h)
    assert delta(m0.days, m1.days) == {"cache": 0,
                                       "clickhouse": len(covered)}
    assert delta(m1.days, m2.days) == {"cache": len(covered),
                                       "clickhouse": 0}
    assert delta(m1.cells(), m2.cells()) == {"cache": len(rows),
                                             "clickhouse": 0}


# ---------------------------------------------------------------- kill -9


@pytest.mark.parametrize("held", ["system.parts", "uniqExactIf"])
def test_a_child_killed_while_filling_the_cache(seeded, rc, table, held):
    # The first report waits on ClickHouse (for its list of parts, or for
    # the rows of its days) and its child is killed; a second report of
    # the same days, in another child, waits meanwhile too.
    relay = GatedRelay(rc.ch.url)
    try:
        first_day = "2026-07-06" if held == "system.parts" else "2026-07-13"
        h, rnd, sites, D, events = seeded(4, 3, first_day, 5, *PREFORK,
                                          clickhouse=relay.url, mpm="prefork")
        answers = {}

        def ask(name, client):
            try:
                answers[name] = client.report()
            except ConnectionLost as e:
                answers[name] = e

        relay.hold(held)
        with Client(h) as first, Client(h) as second:
            t1 = threading.Thread(target=ask, args=("first", first))
            t1.start()
            stack.wait_until(lambda: relay.held >= 1, 10,
                             what="the first report at ClickHouse")
            victim = serving_child(h, first)
            t2 = threading.Thread(target=ask, args=("second", second))
            t2.start()
            assert serving_child(h, second) != victim
            try:  # at ClickHouse too, or waiting for the first's days
                stack.wait_until(lambda: relay.held >= 2, 1)
            except stack.StackError:
                pass
            h.kill_child(victim)
            t1.join(10)
            assert isinstance(answers.get("first"), ConnectionLost), answers
            relay.release_held()
            t2.join(30)
            assert not t2.is_alive()
        assert_report(answers["second"], model(events))
        get = get_on(h)
        for case in ({}, {"tz": KATHMANDU, "fmt": "csv"},
                     {"flt": "site_id = '%s'" % sites[1],
                      "keep": lambda d, s, t: s == sites[1]},
                     random_case(rnd, sites, D)):
            check_case(get, events, case)
        # The cache works on: the same report again asks ClickHouse
        # nothing.
        late = [at(D[2], "12:00:00", "serve", new_id(), sites[0])]
        table.insert(late)
        events += late
        table.settle()
        with Client(h) as c:
            check_case(c.report, events, {"tz": NEW_YORK})
            before = days_metric(h)
            check_case(c.report, events, {"tz": NEW_YORK, "fmt": "csv"})
            assert delta(before, days_metric(h)) == {
                "cache": len(table.covered_days(NEW_YORK)), "clickhouse": 0}
    finally:
        relay.close()


def test_children_killed_at_random_moments(seeded, table):
    # Rounds of concurrent reports (random filters, zones, windows, on new
    # connections) while a child, one serving a client when there is one,
    # is killed at a random moment: in the middle of a report, of a copy
    # into the cache or of nothing. Every answer that comes is exact; a
    # connection the kill cut is allowed.
    print("seed %d" % (SEED + 5))
    h, rnd, sites, D, events = seeded(5, 4, "2026-08-03", 8, *PREFORK,
                                      settle=False, mpm="prefork")
    exact, cut, failures = [0], [0], []
    lock = threading.Lock()

    def run(evs, seed, stop):
        get, mine = get_on(h), random.Random(seed)
        while not stop.is_set():
            case = random_case(mine, sites, D)
            try:
                check_case(get, evs, case)
            except (ConnectionLost, OSError):
                with lock:
                    cut[0] += 1
            except Exception as e:  # an inexact answer, or another status
                with lock:
                    failures.append("%s: %s" % (type(e).__name__, e))
            else:
                with lock:
                    exact[0] += 1

    rounds = 12
    for n in range(rounds):
        # New parts: days to fill again in this round.
        batch = random_batch(rnd, sites, D, events)
        table.insert(batch)
        events += batch
        if n % 4 == 3:
            table.optimize()
        stop = threading.Event()
        threads = [threading.Thread(target=run, args=(
            list(events), rnd.random(), stop)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(rnd.uniform(0.05, 0.5))
        h.kill_child(rnd.choice(serving_children(h) or h.children()))
        time.sleep(0.2)  # reports go on in the other children
        stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive()
        # The parent replaces the child before the next round.
        stack.wait_until(lambda: len(h.children()) >= 4, 10,
                         what="children replacing the killed one")
    print("exact %d, cut by a kill %d" % (exact[0], cut[0]))
    assert not failures, "\n".join(failures[:20])
    assert exact[0] >= rounds * 4, (exact[0], cut[0])
    assert cut[0] >= 1, "no kill cut a report in flight"
    # And afterwards, on any child, from the cache or not.
    table.settle()
    get = get_on(h)
    for _ in range(8):
        check_case(get, events, random_case(rnd, sites, D))


# ---------------------------------------------------------------- size


def test_a_full_cache_evicts_and_stays_exact(seeded, table):
    # 60 days of 20 sites in three zones do not fit in 64 KiB: reports over
    # moving windows from several threads evict days and stay exact.
    size = 64 * 1024
    h, _, sites, D, events = seeded(6, 20, "2026-09-01", 60,
                                    "IMChallengeReportCache 64K",
                                    days_a_part=10)  # a few parts a month
    m0 = cache_metrics(h)
    get = get_on(h)
    for tz in ZONES:  # every day in every zone: more than the cache holds
        check_case(get, events, {"tz": tz, "frm": D[0], "to": D[-1]})
    failures, gauges, done = [], [], threading.Event()
    rnd_of = [random.Random(SEED + 60 + k) for k in range(3)]

    def worker(k):
        for r in range(10):
            start = (k * 20 + r * 7) % (len(D) - 9)
            case = {"tz": ZONES[(k + r) % len(ZONES)], "frm": D[start],
                    "to": D[start + 9], "fmt": ("json", "csv")[r % 2]}
            if r % 3 == 2:
                case["flt"], case["keep"] = random_filter(rnd_of[k], sites,
                                                          D[start:start + 10])
            try:
                check_case(get, events, case)
            except Exception as e:
                failures.append("%s: %s" % (type(e).__name__, e))

    def watch():
        while not done.is_set():
            try:
                m = cache_metrics(h)
                gauges.append((m.bytes(), m.size()))
            except Exception as e:
                failures.append("metrics: %s: %s" % (type(e).__name__, e))
                return
            done.wait(0.1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(10)
    assert not failures, "\n".join(failures)
    # What fits is still kept: a window of five days, asked twice.
    with Client(h) as c:
        window = {"tz": KATHMANDU, "frm": D[30], "to": D[34]}
        check_case(c.report, events, window)
        before = days_metric(h)
        check_case(c.report, events, dict(window, fmt="csv"))
        assert delta(before, days_metric(h)) == {
            "cache": len(table.covered_days(KATHMANDU, D[30], D[34])),
            "clickhouse": 0}
    m1 = cache_metrics(h)
    assert m1.size() == size
    assert m1.evictions() > m0.evictions()
    gauges.append((m1.bytes(), m1.size()))
    assert all(used <= total == size for used, total in gauges), gauges


def test_no_cache_at_all(seeded):
    h, rnd, sites, D, events = seeded(7, 3, "2026-11-02", 4,
                                      "IMChallengeReportCache 0")
    m0 = cache_metrics(h)
    cases = [{}, {"tz": KATHMANDU}, {"tz": NEW_YORK, "fmt": "csv"}]
    cases += [random_case(rnd, sites, D) for _ in range(5)]
    with Client(h) as c:  # one child: no cache of its own either
        for case in cases:
            for _ in range(2):
                check_case(c.report, events, case)
                assert days_metric(h)[0] == m0.days[0], case
    more = procedures(D[1], sites[2], 2, 1, "23:30:00")
    post_events(h, more)
    events += more
    for case in cases[:3]:
        check_case(get_on(h), events, case)
    m1 = cache_metrics(h)
    assert m1.days[0] == m0.days[0]
    assert m1.cells()[0] == m0.cells()[0]
    assert (m1.size(), m1.bytes(), m1.evictions()) == (0, 0, 0)


# ---------------------------------------------------------------- directive


@pytest.mark.parametrize("value", ["lots", "-1", "64X", "1.5M", "64 K"])
def test_configtest_rejects_a_bad_report_cache_size(httpd, value):
    rc_, out = httpd.configtest("IMChallengeReportCache %s" % value)
    assert rc_ != 0, out
    assert "IMChallengeReportCache" in out, out
    assert "Invalid command" not in out, out  # the directive is known


@pytest.mark.parametrize("value", ["0", "64K", "512k", "64M", "1G"])
def test_configtest_accepts_report_cache_sizes(httpd, value):
    rc_, out = httpd.configtest("IMChallengeReportCache %s" % value)
    assert (rc_, out.strip()) == (0, "Syntax OK")


def test_report_cache_is_for_the_main_server_only(httpd):
    # One cache for the whole server: a virtual host cannot size its own.
    port = stack.free_port()
    rc_, out = httpd.configtest(
        "Listen 127.0.0.1:%d\n<VirtualHost 127.0.0.1:%d>\n"
        "    IMChallengeReportCache 1M\n</VirtualHost>" % (port, port))
    assert rc_ != 0, out
    assert "IMChallengeReportCache" in out, out
    assert "Invalid command" not in out, out
