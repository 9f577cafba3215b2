# Licensed under the Apache License, Version 2.0.
"""The report (SPEC section 5): exact rows over a known dataset, the filter
language, from/to/tz, CSV, errors, injection attempts, ClickHouse failures
and freshness.

The dataset is loaded through the module into a database of its own
(IMChallengeDatabase), so the unfiltered report holds exactly its rows.
"""

import json
import re
import time
import uuid

import pytest

import stack
from faults_util import HttpProxy
from report_cache_util import Client
from report_util import (COLUMNS, CSV_HEADER, Dataset, assert_clean_error,
                         assert_report, csv_lines, event, expected_answer,
                         get_report, model, post_events, raw_get,
                         raw_request, report_path)

# The harness' default IMChallengeBatchDelay; stated here for clarity.
BATCH_DELAY = "200ms"
# Room for a 100 KB filter in the request line (the default is 8190).
LONG_LINE = 204800
# A server broken on purpose logs its trouble.
CLICKHOUSE_TROUBLE = [r"\[imchallenge:(error|warn)\]"]


@pytest.fixture(scope="module")
def rs(servers, clickhouse):
    """A server with its own database, loaded with a Dataset."""
    db = "imc_report_" + uuid.uuid4().hex[:12]
    h = servers.httpd(batch_delay=BATCH_DELAY,
                      directives="IMChallengeDatabase %s\n"
                      "LimitRequestLine %d" % (db, LONG_LINE))
    stack.wait_until(lambda: h.get("readyz", timeout=2).status_code == 200,
                     30, what="readyz")
    d = Dataset()
    d.load(h)
    d.h, d.db, d.ch = h, db, clickhouse
    d.stored = int(clickhouse.scalar("SELECT count() FROM %s.events" % db))
    yield d
    h.stop()
    clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


# ---------------------------------------------------------------- rows


def test_rows_totals_and_order_are_exact(rs):
    rows = rs.hand_rows()
    assert model(rs.events) == rows  # the reference agrees with the hand
    r = get_report(rs.h)
    assert_report(r, rows)
    body = r.json()
    assert [(x["day"], x["site_id"]) for x in body["rows"]] == sorted(
        (x["day"], x["site_id"]) for x in body["rows"])
    assert body["totals"] == {"served": 16, "solved": 10,
                              "solve_rate": 0.625}
    assert '"solve_rate":null' in r.text  # site C, day 2: served 0
    assert '"solve_rate":0.0000' in r.text  # site B, day 1
    assert r.headers.get("Cache-Control") == "no-store"


def test_duplicates_are_stored_but_counted_once(rs):
    # Every event sent reached the table, duplicates included ...
    assert rs.stored >= len(rs.events)
    n = rs.ch.scalar("SELECT count() FROM %s.events WHERE site_id = "
                     "toUUID('%s') AND correlation_id = toUUID('%s')"
                     % (rs.db, rs.A, rs.cid["a1"]))
    assert int(n) >= 4  # a1 serve + solve, each sent twice
    # ... and the report counts procedures: a1 once on day 1.
    r = get_report(rs.h, "site_id='%s' AND day='%s'" % (rs.A, rs.D1))
    want = [x for x in rs.hand_rows()
            if (x["day"], x["site_id"]) == (rs.D1, rs.A)]
    assert want and want[0]["served"] == 4
    assert_report(r, want)


def test_head_and_wrong_method(rs):
    r = rs.h.http.head(rs.h.url + "api/report", timeout=10)
    assert r.status_code == 200
    r = rs.h.post("api/report", data=b"x")
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]


# ---------------------------------------------------------------- filter

# (filter with A/B/C/D1/D2/D3 placeholders, predicate(d, day, site, type))
FILTERS = {
    "eq_site": ("site_id='{A}'", lambda d, day, s, t: s == d.A),
    "eq_site_upper_uuid": ("site_id='{A_UP}'", lambda d, day, s, t: s == d.A),
    "ne_site": ("site_id!='{A}'", lambda d, day, s, t: s != d.A),
    "ltgt_site": ("site_id<>'{B}'", lambda d, day, s, t: s != d.B),
    "eq_type": ("type='solve'", lambda d, day, s, t: t == "solve"),
    "eq_day": ("day='{D2}'", lambda d, day, s, t: day == d.D2),
    "lt_day": ("day<'{D2}'", lambda d, day, s, t: day < d.D2),
    "le_day": ("day<='{D2}'", lambda d, day, s, t: day <= d.D2),
    "gt_day": ("day>'{D2}'", lambda d, day, s, t: day > d.D2),
    "ge_day": ("day>='{D2}'", lambda d, day, s, t: day >= d.D2),
    "ne_day": ("day!='{D2}'", lambda d, day, s, t: day != d.D2),
    "alias_time": ("time='{D3}'", lambda d, day, s, t: day == d.D3),
    "alias_date": ("date < '{D2}'", lambda d, day, s, t: day < d.D2),
    "in_sites": ("site_id IN ('{A}', '{C}')",
                 lambda d, day, s, t: s in (d.A, d.C)),
    "in_one_type": ("type IN ('serve')", lambda d, day, s, t: t == "serve"),
    "in_days": ("day IN ('{D1}','{D3}')",
                lambda d, day, s, t: day in (d.D1, d.D3)),
    "and": ("type='serve' AND site_id='{B}'",
            lambda d, day, s, t: t == "serve" and s == d.B),
    "or": ("site_id='{A}' OR site_id='{C}'",
           lambda d, day, s, t: s in (d.A, d.C)),
    "not": ("NOT type='serve'", lambda d, day, s, t: t != "serve"),
    "not_not": ("NOT NOT type='serve'", lambda d, day, s, t: t == "serve"),
    "not_parens": ("NOT (site_id='{A}' OR day='{D1}')",
                   lambda d, day, s, t: not (s == d.A or day == d.D1)),
    "precedence": ("site_id='{A}' OR site_id='{B}' AND type='solve'",
                   lambda d, day, s, t: s == d.A
                   or (s == d.B and t == "solve")),
    "parens": ("(site_id='{A}' OR site_id='{B}') AND type='solve'",
               lambda d, day, s, t: s in (d.A, d.B) and t == "solve"),
    "not_binds_tight": ("NOT site_id='{A}' AND day='{D2}'",
                        lambda d, day, s, t: s != d.A and day == d.D2),
    "nested": ("((day>='{D1}' AND day<='{D2}') AND (NOT (type IN "
               "('solve'))) OR (site_id='{C}' AND day='{D3}'))",
               lambda d, day, s, t: (d.D1 <= day <= d.D2 and t != "solve")
               or (s == d.C and day == d.D3)),
    "case_insensitive": ("sItE_iD iN ('{A}','{B}') aNd nOt TYPE = 'serve' "
                         "Or DaY = '{D3}'",
                         lambda d, day, s, t: (s in (d.A, d.B)
                                               and t != "serve")
                         or day == d.D3),
    "white_space": ("\t site_id\n=\r\n'{B}'  AND(day  >=  '{D2}' )  ",
                    lambda d, day, s, t: s == d.B and day >= d.D2),
    "no_spaces": ("(type='serve')AND(site_id='{C}')OR(day<'{D2}')",
                  lambda d, day, s, t: (t == "serve" and s == d.C)
                  or day < d.D2),
    "matches_nothing": ("site_id='{NOBODY}'", lambda d, day, s, t: False),
    "empty": ("", lambda d, day, s, t: True),
    "blank": ("   ", lambda d, day, s, t: True),
}


def fill(d, text):
    return text.format(A=d.A, B=d.B, C=d.C, A_UP=d.A.upper(), D1=d.D1,
                       D2=d.D2, D3=d.D3, NOBODY="0" * 8 + "-0000" * 3 +
                       "-" + "0" * 12)


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filter(rs, name):
    text, pred = FILTERS[name]
    flt = fill(rs, text)
    want = model(rs.events, keep=lambda day, s, t: pred(rs, day, s, t))
    if name not in ("empty", "blank", "matches_nothing"):
        # Each filter must select something, and not everything.
        assert want and want != model(rs.events), name
    assert_report(get_report(rs.h, flt), want)


def test_prototype_example_as_written(rs):
    want = model(rs.events, keep=lambda day, s, t: s == rs.A)
    # The prototype's URL, quotes and all, not encoded ...
    status, headers, text = raw_get(rs.h, "/api/report/site_id='%s'" % rs.A)
    assert status == 200, text
    assert_report(get_report(rs.h, "site_id='%s'" % rs.A), want)
    # ... the same answer as the encoded form and the minimal encoding.
    assert raw_get(rs.h, "/" + report_path("site_id='%s'" % rs.A))[2] == text
    assert raw_get(rs.h, "/api/report/site_id=%%27%s%%27" % rs.A)[2] == text


def test_literal_quote_escapes_are_literals(rs):
    # '' and \' are a quote inside a literal: the literal is then not a
    # valid type, which is reported as such (not as a syntax error).
    for flt in ("type='ser''ve'", "type='ser\\'ve'", "type='serve\\\\'"):
        body = assert_clean_error(get_report(rs.h, flt), 400)
        assert "type" in body["error"] and body["position"] == 5, (flt, body)


# ---------------------------------------------------------------- from, to, tz


@pytest.mark.parametrize("frm,to", [
    ("D2", None), (None, "D2"), ("D2", "D2"), ("D1", "D3"),
    ("2025-01-11", "2025-01-30"), ("2024-12-01", "2025-01-10"),
    ("D3", "D1"), ("2026-01-01", None)])
def test_from_to_inclusive(rs, frm, to):
    frm = getattr(rs, frm, frm) if frm else None
    to = getattr(rs, to, to) if to else None
    params = {k: v for k, v in (("from", frm), ("to", to)) if v}
    want = model(rs.events, frm=frm, to=to)
    assert_report(get_report(rs.h, **params), want)


@pytest.mark.parametrize("tz", ["UTC", "Asia/Tokyo", "America/New_York",
                                "Europe/Moscow", "Asia/Kolkata",
                                "Pacific/Kiritimati", "Etc/GMT+12"])
def test_time_zone_moves_days(rs, tz):
    want = model(rs.events, tz=tz)
    if tz != "UTC":
        assert want != rs.hand_rows(), "the zone must move some events"
    assert_report(get_report(rs.h, tz=tz), want)


@pytest.mark.parametrize("tz,frm,to,flt", [
    ("Asia/Tokyo", "D2", "D2", None),
    ("America/New_York", None, "D1", None),
    ("America/New_York", "D2", None, "type='serve'"),
    ("Asia/Tokyo", None, None, "day='{D2}' AND site_id IN ('{A}','{B}')"),
    ("America/New_York", None, None, "date>='{D2}'"),
])
def test_time_zone_with_from_to_and_filter(rs, tz, frm, to, flt):
    frm = getattr(rs, frm) if frm else None
    to = getattr(rs, to) if to else None
    keep = None
    if flt:
        flt = fill(rs, flt)
        keep = {
            "type='serve'": lambda day, s, t: t == "serve",
            fill(rs, "day='{D2}' AND site_id IN ('{A}','{B}')"):
                lambda day, s, t: day == rs.D2 and s in (rs.A, rs.B),
            fill(rs, "date>='{D2}'"): lambda day, s, t: day >= rs.D2,
        }[flt]
    params = {k: v for k, v in (("from", frm), ("to", to), ("tz", tz)) if v}
    want = model(rs.events, tz=tz, keep=keep, frm=frm, to=to)
    utc = model(rs.events, keep=keep, frm=frm, to=to)
    assert want != utc, "the zone must change this answer"
    assert_report(get_report(rs.h, flt, **params), want)


def test_daylight_saving_days(httpd):
    # Instants around the 2025 changes in Berlin and New York, on the
    # session server (shared database): a fresh site and a site filter.
    site = str(uuid.uuid4())
    times = ["2025-03-29T22:59:59Z", "2025-03-29T23:00:00Z",
             "2025-03-30T00:59:59Z", "2025-03-30T01:00:00Z",
             "2025-03-30T21:59:59Z", "2025-03-30T22:00:00Z",
             "2025-03-09T04:59:59Z", "2025-03-09T05:00:00Z",
             "2025-03-10T03:59:59Z", "2025-03-10T04:00:00Z",
             "2025-10-25T21:59:59Z", "2025-10-25T22:00:00Z",
             "2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z",
             "2025-10-26T22:59:59Z", "2025-10-26T23:00:00Z",
             "2025-11-02T03:59:59Z", "2025-11-02T04:00:00Z",
             "2025-11-03T04:59:59Z", "2025-11-03T05:00:00Z"]
    events = [event(t, ("serve", "solve")[i % 2], str(uuid.uuid4()), site)
              for i, t in enumerate(times)]
    post_events(httpd, events)
    flt = "site_id='%s'" % site
    cases = [("Europe/Berlin", None, None), ("Europe/Berlin", "2025-03-30",
                                              "2025-03-30"),
             ("Europe/Berlin", "2025-10-26", "2025-10-26"),
             ("America/New_York", None, None),
             ("America/New_York", "2025-03-09", "2025-03-09"),
             ("America/New_York", "2025-11-02", "2025-11-02")]
    for tz, frm, to in cases:
        params = {k: v for k, v in (("from", frm), ("to", to), ("tz", tz))
                  if v}
        want = model(events, tz=tz, frm=frm, to=to)
        assert want, (tz, frm, to)
        assert_report(get_report(httpd, flt, **params), want)
    # The same days through the filter instead of from/to.
    want = model(events, tz="Europe/Berlin",
                 keep=lambda day, s, t: day == "2025-10-26")
    assert_report(get_report(httpd, flt + " AND day='2025-10-26'",
                             tz="Europe/Berlin"), want)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "utc+3", "Europe/Paris')",
                                "../../../etc/passwd", "Etc/../../etc/passwd",
                                "leapseconds", "right/UTC", "Asia", "zone.tab",
                                "/etc/localtime", "Europe", "UTC' OR 1=1",
                                "Europe/Paris\\", "A" * 300])
def test_unknown_time_zone_is_400(rs, tz):
    body = assert_clean_error(get_report(rs.h, tz=tz), 400)
    assert "tz" in body["error"]


def zone_requests(relay):
    """(probes, zone questions) the module sent through relay: whether
    system.time_zones exists, and whether it lists a zone (their SQL)."""
    with relay.lock:
        sqls = [x.sql for x in relay.requests]
    probes = [q for q in sqls if "system.tables" in q and "time_zones" in q]
    asks = [q for q in sqls if "system.time_zones" in q]
    return probes, asks


def test_zones_are_those_the_server_lists(rs, make_httpd):
    # A server with system.time_zones (faked by the relay: 18.16 has none)
    # that knows Europe/Paris but not Asia/Tokyo, which this machine's
    # zone database has: Tokyo is a 400, and the server is asked whether
    # system.time_zones exists once, and about a zone it knows once.
    def policy(req):
        if "system.tables" in req.sql and "time_zones" in req.sql:
            return ("answer", 200, "1\n")
        m = re.search(r"system\.time_zones WHERE time_zone = '([^']*)'",
                      req.sql)
        if m:
            return ("answer", 200,
                    "1\n" if m.group(1) == "Europe/Paris" else "0\n")
        return "forward"

    with HttpProxy(rs.ch, policy) as relay:
        h = make_httpd(clickhouse=relay.url, directives=(
            "IMChallengeDatabase %s\nIMChallengeCreateSchema Off" % rs.db))
        with Client(h) as c:  # one connection: one child process
            for _ in range(3):
                assert_report(c.report(tz="Europe/Paris"),
                              model(rs.events, tz="Europe/Paris"))
            assert_report(c.report(), model(rs.events))  # UTC: not asked
            # A 400 ends the connection: the last request on it.
            body = assert_clean_error(c.report(tz="Asia/Tokyo"), 400)
            assert "tz" in body["error"]
        probes, asks = zone_requests(relay)
        assert len(probes) == 1, probes
        assert len(asks) == 2 and "'Europe/Paris'" in asks[0] and \
            "'Asia/Tokyo'" in asks[1], asks
        # A zone the server does not know is asked about each time.
        for n in range(2):
            assert_clean_error(get_report(h, tz="Asia/Tokyo"), 400)
        probes, asks = zone_requests(relay)
        assert 1 <= len(probes) <= len(h.children()), probes
        assert sum("'Europe/Paris'" in q for q in asks) == 1, asks
        assert sum("'Asia/Tokyo'" in q for q in asks) == 3, asks


def test_zones_without_system_time_zones_are_this_machines(rs, make_httpd):
    # ClickHouse 18.16 has no system.time_zones: asked once, then the
    # machine's zone database decides, without asking again.
    with HttpProxy(rs.ch) as relay:
        h = make_httpd(clickhouse=relay.url, directives=(
            "IMChallengeDatabase %s\nIMChallengeCreateSchema Off" % rs.db))
        with Client(h) as c:  # one connection: one child process
            for tz in ["Asia/Tokyo", "America/New_York", "Asia/Tokyo"] * 2:
                assert_report(c.report(tz=tz), model(rs.events, tz=tz))
        probes, asks = zone_requests(relay)
        assert len(probes) == 1 and not asks, (probes, asks)
        for tz in ("Mars/Olympus", "leapseconds", "Europe"):
            assert_clean_error(get_report(h, tz=tz), 400)
        probes, asks = zone_requests(relay)
        assert 1 <= len(probes) <= len(h.children()) and not asks, probes


@pytest.mark.parametrize("params", [
    {"from": "2025-13-01"}, {"to": "2025-02-29"}, {"from": "10.01.2025"},
    {"from": "2025-01-10' OR '1'='1"}, {"to": "2025-01-1"},
    {"format": "xml"}, {"format": "CSV'"}])
def test_bad_query_parameters_are_400(rs, params):
    assert_clean_error(get_report(rs.h, **params), 400)


@pytest.mark.parametrize("query", [
    "format=csv%00x", "from=2025-01-10%00x", "tz=%00x", "to=%00",
    "from=2025-01-10&from=2025-01-11", "tz=UTC&tz=Asia/Tokyo",
    "format=csv&format=csv", "from=2025-01-1%ZZ", "tz=Asia%2", "format=%"])
def test_query_parameter_twice_or_badly_encoded_is_400(rs, query):
    status, headers, text = raw_get(rs.h, "/api/report?" + query)
    assert status == 400, (query, status, text)
    assert headers["Content-Type"].startswith("application/json")


def test_query_parameters_raw_and_encoded(rs):
    want = model(rs.events, tz="Etc/GMT+12", frm=rs.D2)
    # '+' in a zone name, raw or encoded; unknown parameters are ignored.
    for query in ("tz=Etc/GMT+12&from=%s" % rs.D2,
                  "tz=Etc%%2FGMT%%2B12&from=%s&_=1" % rs.D2,
                  "from=%s&tz=Etc/GMT%%2b12&format=json&wait=1" % rs.D2):
        status, headers, text = raw_get(rs.h, "/api/report?" + query)
        assert status == 200, (query, text)
        assert json.loads(text) == expected_answer(want), query


# ---------------------------------------------------------------- CSV


@pytest.mark.parametrize("how", ["format", "accept", "both"])
def test_csv(rs, how):
    params = {"format": "csv"} if how != "accept" else {}
    headers = {"Accept": "text/csv"} if how != "format" else None
    flt = "site_id IN ('%s','%s')" % (rs.B, rs.C)
    want = model(rs.events, keep=lambda day, s, t: s in (rs.B, rs.C))
    r = get_report(rs.h, flt, headers=headers, **params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.text.splitlines() == csv_lines(want)
    assert r.text.endswith("\n")
    assert ",," not in r.text and ",\r\n" in r.text  # C day 2: rate empty


def test_csv_without_rows_has_the_header(rs):
    r = get_report(rs.h, format="csv", **{"from": "2030-01-01"})
    assert r.status_code == 200
    assert r.text.splitlines() == [CSV_HEADER]


def test_format_json_wins_over_accept(rs):
    r = get_report(rs.h, headers={"Accept": "text/csv"}, format="json")
    assert_report(r, rs.hand_rows())
    r = get_report(rs.h, headers={"Accept": "application/json"})
    assert_report(r, rs.hand_rows())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("flt,column", [
    ("x='1'", "x"), ("correlation_id='{A}'", "correlation_id"),
    ("raw='a'", "raw"), ("type='serve' AND Site='{A}'", "Site"),
    ("received_at>'2025-01-01'", "received_at"),
    ("NOT (foo IN ('a'))", "foo")])
def test_unknown_column(rs, flt, column):
    body = assert_clean_error(get_report(rs.h, fill(rs, flt)), 400)
    assert body["error"] == "unknown column '%s'" % column
    assert body["columns"] == COLUMNS


@pytest.mark.parametrize("flt,position", [
    ("site_id =", 9),
    ("type == 'serve'", 6),
    ("type='serve' AND", 16),
    ("(type='serve'", 13),
    ("type='serve')", 12),
    ("type 'serve'", 5),
    ("type='serve' XOR type='solve'", 13),
    ("site_id IN 'x'", 11),
    ("type IN ('serve' 'solve')", 17),
    ("type IN ()", 9),
    ("type='serve", 5),
    ("day=2025-01-10", 4),
    ('type="serve"', 5),
    ("type='serve' AND ;", 17),
    ("AND type='serve'", 0),
    ("   )", 3),
    ("NOT", 3),
    ("type='serve' AND (day>='2025-01-10' OR )", 39),
    ("type ! 'serve'", 5),
    ("type='serve' AND type='solve' \\", 30),
    ("type='se\\rve'", 8),
    ("type IN ('serve',", 17),
    ("(((type='serve'))", 17),
    ("type='serve' site_id='x'", 13),
])
def test_syntax_error_position(rs, flt, position):
    body = assert_clean_error(get_report(rs.h, flt), 400)
    assert body["position"] == position, body
    assert "columns" not in body


@pytest.mark.parametrize("flt,column,position", [
    ("site_id='nope'", "site_id", 8),
    ("site_id='0faf8b64-a33d-4db8-aaee-aa165d13cff'", "site_id", 8),
    ("site_id='{{0faf8b64-a33d-4db8-aaee-aa165d13cff6}}'", "site_id", 8),
    ("site_id IN ('{A}', 'bad')", "site_id", 12 + 36 + 4),
    ("type='Serve'", "type", 5),
    ("type = 'click'", "type", 7),
    ("type IN ('serve','')", "type", 17),
    ("day='2025-02-29'", "day", 4),
    ("day='2024-02-30'", "day", 4),
    ("day='1969-12-31'", "day", 4),
    ("day='2106-01-01'", "day", 4),
    ("day='2025-1-1'", "day", 4),
    ("day>'20250110'", "day", 4),
    ("date='yesterday'", "date", 5),
    ("time<'2025-01-10 00:00:00'", "time", 5),
])
def test_bad_literal_names_its_column(rs, flt, column, position):
    body = assert_clean_error(get_report(rs.h, fill(rs, flt)), 400)
    assert body["error"].startswith(column + " expects "), body
    assert body["position"] == position, body


def test_leap_day_is_a_valid_literal(rs):
    r = get_report(rs.h, "day='2024-02-29' OR site_id='%s'" % rs.C)
    assert_report(r, model(rs.events, keep=lambda day, s, t: s == rs.C))


# ---------------------------------------------------------------- injection

INJECTIONS = [
    "site_id='x' OR 1=1",
    "site_id='{A}' OR 1=1",
    "site_id='{A}' OR '1'='1'",
    "type='serve' -- comment",
    "type='serve' --",
    "type='serve' /* comment */",
    "type='serve'/**/OR/**/1=1",
    "/* */ type='serve'",
    "type='serve'; DROP TABLE events",
    "type='serve';",
    "; SELECT 1",
    "type='serve'' OR ''1''=''1'",
    "type='serve\\' OR 1=1 --'",
    "type='serve\\\\' OR 1=1 --",
    "type='serve\\'",
    "site_id='\\'",
    "type='serve' \\",
    "type='\\x27'",
    "site_id IN (SELECT site_id FROM events)",
    "site_id=(SELECT any(site_id) FROM imchallenge.events)",
    "type='serve' UNION SELECT * FROM system.tables",
    "type='serve') UNION ALL SELECT 1,2,3,4 --",
    "1) UNION ALL SELECT name, '', 1, 1 FROM system.tables --",
    "site_id=file('/etc/passwd')",
    "type IN (url('http://127.0.0.1:1/', CSV, 'a String'))",
    "site_id=remote('127.0.0.1', system.one)",
    "day=today()",
    "day='{D1}' OR sleep(3)",
    "type='serve' FORMAT JSON",
    "type='serve' SETTINGS max_threads=1",
    "type='serve' INTO OUTFILE '/tmp/x'",
    "type=\u2019serve\u2019",
    "type=\uff07serve\uff07",
    "type='serve\u2019 OR 1=1 --'",
    "site_id=\u2018{A}\u2019",
    "type=`serve`",
    'type="serve"',
    "type='serve'\r\nX-Injected: 1",
    "type='serve' \x01",
    "type='serve' OR type=$$solve$$",
    "type='serve' OR toString(site_id)!=''",
    "site_id=toUUID('{A}')",
    "type=0x27",
    "type='serve' AND 1",
    "{A}",
    "'",
    "''",
    "(",
    ")",
    "NOT NOT",
    "type IN (''" + ",''" * 1000 + ")",
    "(" * 40 + "type='serve'" + ")" * 40,
    "NOT " * 40 + "type='serve'",
    "type='serve' AND " * 200,
]


@pytest.mark.parametrize("i", range(len(INJECTIONS)))
def test_injection_attempt_is_400(rs, i):
    flt = fill(rs, INJECTIONS[i])
    r = get_report(rs.h, flt)
    assert_clean_error(r, 400)
    assert_intact(rs)


def assert_intact(rs):
    """The events table holds what was loaded; the report still answers."""
    n = int(rs.ch.scalar("SELECT count() FROM %s.events" % rs.db))
    assert n == rs.stored
    assert_report(get_report(rs.h), rs.hand_rows())


# Request targets sent byte for byte: encodings of quotes and operators.
RAW_TARGETS = [
    "/api/report/type%3D%27serve%27%20OR%201%3D1",
    "/api/report/type='serve'%20--",
    "/api/report/type='serve'%3B",
    "/api/report/type=%E2%80%99serve%E2%80%99",  # U+2019
    "/api/report/type=%EF%BC%87serve%EF%BC%87",  # U+FF07
    "/api/report/type=%C0%A7serve%C0%A7",  # overlong UTF-8 quote
    "/api/report/type=%ff%fe",
    "/api/report/type='serve'%2F*x*%2F",
    "/api/report/type='serve'%5C",
    "/api/report/type='ser%5C%27ve'",
    "/api/report/%27%20OR%20%271%27%3D%271",
    "/api/report/type=%27serve%27%0D%0AX:1",
]


@pytest.mark.parametrize("target", RAW_TARGETS)
def test_encoded_injection_attempt_is_400(rs, target):
    status, headers, text = raw_get(rs.h, target)
    assert status == 400, (target, status, text)
    assert headers["Content-Type"].startswith("application/json")
    assert "toDate(" not in text and "DB::" not in text


@pytest.mark.parametrize("target", [
    "/api/report/type%253D%2527serve%2527",
    "/api/report/type=%2527serve%2527",
    "/api/report/type='serve'%2520OR%25201=1",
])
def test_filter_is_url_decoded_once(rs, target):
    # A doubly encoded filter is not a filter: "%27" stays "%27".
    status, headers, text = raw_get(rs.h, target)
    assert status == 400, (target, status, text)
    assert '"position"' in text
    assert_intact(rs)


def test_encoded_slash_in_filter_is_a_syntax_error(rs):
    status, headers, text = raw_get(rs.h, "/api/report/type='serve'%2F")
    assert status == 400 and '"position":12' in text, text
    status, headers, text = raw_get(rs.h, "/api/report/type='ser%2Fve'")
    assert status == 400 and text.startswith('{"error":"type expects'), text


def test_nul_bytes_never_reach_a_query(rs):
    # An encoded NUL anywhere in a path is refused by httpd itself (404)
    # before any handler runs; a raw NUL in the request line is a 400.
    for target in ("/api/report/type='serve%00'",
                   "/api/report/type='serve'%00",
                   "/api/report/%00"):
        status, headers, text = raw_get(rs.h, target)
        assert 400 <= status < 500, (target, status)
        assert "toDate(" not in text
    status = raw_request(rs.h, b"GET /api/report/type='serve\x00' HTTP/1.1"
                         b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert 400 <= status < 500
    assert_intact(rs)


def test_filter_of_100_kb_on_default_request_line_limit(httpd):
    # httpd's LimitRequestLine (8190) answers before the module.
    r = get_report(httpd, "type='serve' OR " * 6400 + "type='solve'")
    assert r.status_code == 414


def test_filter_of_100_kb_is_400(rs):
    flt = "type='serve' OR " * 6400 + "type='solve'"
    assert len(flt) > 100000
    body = assert_clean_error(get_report(rs.h, flt), 400)
    assert "longer" in body["error"]
    assert_intact(rs)


def test_longest_valid_filter_works(rs):
    site = str(uuid.uuid4())
    flt = "site_id IN (%s)" % ",".join(["'%s'" % site] * 101)
    flt += " " * (4096 - len(flt))
    assert len(flt) == 4096
    r = get_report(rs.h, flt)
    assert r.status_code == 200, r.status_code
    assert r.json()["rows"] == []


def test_filter_over_the_length_limit_is_400(rs):
    flt = "type='serve'" + " " * 4085
    assert len(flt) == 4097
    body = assert_clean_error(get_report(rs.h, flt), 400)
    assert "4096" in body["error"]


@pytest.mark.parametrize("flt,words", [
    ("type IN (''" + ",''" * 1000 + ")", "1000 literals"),
    ("(" * 33 + "type='serve'" + ")" * 33, "32 deep"),
    ("NOT " * 33 + "type='serve'", "32 deep"),
])
def test_filter_limits_are_400(rs, flt, words):
    body = assert_clean_error(get_report(rs.h, flt), 400)
    assert words in body["error"], body


# ---------------------------------------------------------------- ClickHouse


@pytest.mark.error_log_allow(*CLICKHOUSE_TROUBLE)
def test_clickhouse_unreachable_is_503(make_httpd):
    h = make_httpd(clickhouse="http://127.0.0.1:%d/" % stack.free_port())
    for fmt in ("json", "csv"):
        body = assert_clean_error(
            get_report(h, "type='serve'", format=fmt), 503)
        assert "SELECT" not in body["error"]


@pytest.mark.error_log_allow(*CLICKHOUSE_TROUBLE)
def test_clickhouse_hung_is_504(make_clickhouse, make_httpd):
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, directives="IMChallengeTimeout 1s")
    stack.wait_until(lambda: h.get("readyz", timeout=2).status_code == 200,
                     30, what="readyz")
    # A first report, before the pause: on a loaded machine (ASan) a new
    # server's first answer may take longer than the 1 s timeout.
    stack.wait_until(lambda: get_report(h).status_code == 200, 20,
                     what="a first report")
    ch.pause()
    try:
        t0 = time.monotonic()
        r = get_report(h, "site_id='%s'" % uuid.uuid4(), timeout=20)
        elapsed = time.monotonic() - t0
        assert_clean_error(r, 504)
        assert elapsed < 5, elapsed
    finally:
        ch.resume()
    # Once ClickHouse answers again, so does the report.
    assert stack.wait_until(lambda: get_report(h).status_code == 200, 10,
                            what="the report after resume")


@pytest.mark.error_log_allow(*CLICKHOUSE_TROUBLE)
def test_clickhouse_error_leaks_nothing(make_httpd):
    # No schema: ClickHouse answers the query with an error of its own.
    db = "imc_missing_" + uuid.uuid4().hex[:8]
    h = make_httpd(directives="IMChallengeDatabase %s\n"
                   "IMChallengeCreateSchema Off" % db)
    r = get_report(h)
    assert 500 <= r.status_code < 600
    assert_clean_error(r, r.status_code)
    assert db not in r.text


# ---------------------------------------------------------------- freshness


def test_accepted_event_is_reported_within_the_batch_delay(make_httpd):
    h = make_httpd(batch_delay=BATCH_DELAY)
    stack.wait_until(lambda: h.get("readyz", timeout=2).status_code == 200,
                     30, what="readyz")
    site = str(uuid.uuid4())
    flt = "site_id='%s'" % site
    assert get_report(h, flt).json()["rows"] == []
    now = time.gmtime()
    ev = event(time.strftime("%Y-%m-%dT%H:%M:%SZ", now), "serve",
               str(uuid.uuid4()), site)
    post_events(h, [ev], wait=False)
    t0 = time.monotonic()

    def seen():
        rows = get_report(h, flt, timeout=5).json()["rows"]
        return rows or None

    rows = stack.wait_until(seen, 3, interval=0.02,
                            what="the event in the report")
    elapsed = time.monotonic() - t0
    assert rows == model([ev])
    print("event reported after %.3f s (batch delay %s)"
          % (elapsed, BATCH_DELAY))
