# Licensed under the Apache License, Version 2.0.
"""The report's intervals, grouping, metrics, fill, comparison and row limit
(SPEC section 5, "Intervals, metrics, comparison").

A model computes, from the events sent, every row of every interval, zone,
grouping, fill, comparison and filter with Python's zoneinfo; the module's
answers (JSON and CSV) must equal it: fixed cases (midnight, both DST days
of Europe/Berlin, Asia/Kolkata, Asia/Kathmandu, America/St_Johns, ISO weeks
1 and 53, month ends, Feb 29, from/to cutting a week and a month, a serve
sent again) and random rounds. The events go to a database of their own.
"""

import datetime
import decimal
import json
import random
import uuid
import zoneinfo

import pytest

import stack
from report_util import assert_clean_error, event, get_report, post_events

UTC = datetime.timezone.utc
DAY = 86400
METRICS = ["served", "solved", "solve_rate", "unsolved", "solve_time_avg",
           "solve_time_p50", "solve_time_p90"]
TIMES = METRICS[4:]
WINDOW_MS = 600000  # IMChallengeSolveWindow's default, 10m
ZONES = ["UTC", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu",
         "America/St_Johns", "America/New_York", "Australia/Adelaide",
         "Pacific/Chatham", "Australia/Lord_Howe", "America/Sao_Paulo"]


# ---------------------------------------------------------------- model


def instant(text):
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp())


def instant_ms(text):
    """The event's time in milliseconds, its fraction truncated."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return instant(text) * 1000 + t.microsecond // 1000


def offset(zone, t):
    d = datetime.datetime.fromtimestamp(t, UTC).astimezone(zone)
    return int(d.utcoffset().total_seconds())


def local_date(zone, t):
    return datetime.datetime.fromtimestamp(t, UTC).astimezone(zone).date()


def clock_start(zone, t, unit):
    """The first instant of t's minute or hour bucket: its local unit under
    its offset, cut where that offset began inside the unit."""
    off = offset(zone, t)
    lo = (t + off) // unit * unit - off
    if offset(zone, lo) == off:
        return lo
    hi = t  # offset(lo) != off == offset(hi): the transition is between
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offset(zone, mid) == off:
            hi = mid
        else:
            lo = mid
    return hi


def fmt_offset(off):
    sign = "-" if off < 0 else "+"
    off = abs(off)
    return "%s%02d:%02d" % (sign, off // 3600, off // 60 % 60)


def bucket_of(zone, iv, t):
    """(order, label) of the bucket holding instant t."""
    if iv == "total":
        return (0, "")
    if iv in ("minute", "hour"):
        start = clock_start(zone, t, 60 if iv == "minute" else 3600)
        off = offset(zone, start)
        wall = datetime.datetime.fromtimestamp(start + off, UTC)
        return (start, wall.strftime("%Y-%m-%dT%H:%M:00") + fmt_offset(off))
    d = local_date(zone, t)
    if iv == "week":
        d = d - datetime.timedelta(days=d.weekday())
    elif iv == "month":
        d = d.replace(day=1)
    return (d.toordinal(), d.isoformat())


def day_start(zone, d):
    """The first instant whose local date is d or later."""
    t = int(datetime.datetime(d.year, d.month, d.day, tzinfo=UTC)
            .timestamp()) - 16 * 3600
    while local_date(zone, t) < d:
        t += 900
    while local_date(zone, t - 1) >= d:  # to the second
        t -= 1
    return t


def range_buckets(zone, iv, frm, to):
    """Every bucket (order, label) of the local dates frm..to, in order."""
    f = datetime.date.fromisoformat(frm)
    t = datetime.date.fromisoformat(to)
    if f > t:
        return []
    if iv == "total":
        return [(0, "")]
    if iv in ("day", "week", "month"):
        seen, out, d = set(), [], f
        while d <= t:
            b = bucket_of(zone, iv, day_start(zone, d))
            if b[1] not in seen:
                seen.add(b[1])
                out.append(b)
            d += datetime.timedelta(days=1)
        return out
    step = 60 if iv == "minute" else 900
    r0 = day_start(zone, f)
    r1 = day_start(zone, t + datetime.timedelta(days=1))
    seen, out = set(), []
    for s in range(r0, r1, step):
        b = bucket_of(zone, iv, s)
        if b[1] not in seen:
            seen.add(b[1])
            out.append(b)
    return out


def admitted(events, zone, keep, frm, to):
    """(instant, site, cid, type, milliseconds) of the events the filter
    and from/to admit."""
    out = []
    for e in events:
        t = instant(e["time"])
        day = local_date(zone, t).isoformat()
        site = e["site_id"].lower()
        if keep is not None and not keep(day, site, e["type"]):
            continue
        if (frm and day < frm) or (to and day > to):
            continue
        out.append((t, site, e["correlation_id"].lower(), e["type"],
                    instant_ms(e["time"])))
    return out


def solve_times(times):
    """avg, p50, p90 of solve times (ms), None when there are none: the
    mean rounded half up to the millisecond, nearest ranks ceil(q n)."""
    if not times:
        return None, None, None
    ts, n = sorted(times), len(times)
    avg = (2 * sum(ts) + n) // (2 * n)
    return avg, ts[(5 * n + 9) // 10 - 1], ts[(9 * n + 9) // 10 - 1]


def metric_values(metrics, served, solved, unsolved=0, times=()):
    avg, p50, p90 = solve_times(times)
    out = {}
    for m in metrics:
        out[m] = {"served": served, "solved": solved,
                  "solve_rate": solved / served if served else None,
                  "unsolved": unsolved, "solve_time_avg": avg,
                  "solve_time_p50": p50, "solve_time_p90": p90}[m]
    out["_times"] = list(times)
    return out


def in_time(solves, s, window_ms):
    """The earliest solve V with S <= V <= S + window, or None."""
    ok = [v for v in solves if s <= v <= s + window_ms]
    return min(ok) if ok else None


def model_rows(events, tz="UTC", interval="day", by="site",
               metrics=("served", "solved", "solve_rate"), keep=None,
               frm=None, to=None, fill=False, window_ms=WINDOW_MS):
    """The rows the module must answer, each a dict in the answer's key
    order (and "_times", the solve times of its procedures solved in
    time)."""
    zone = zoneinfo.ZoneInfo(tz)
    groups, first_serve, solves = {}, {}, {}
    for t, site, cid, type_, ms in admitted(events, zone, keep, frm, to):
        order, label = bucket_of(zone, interval, t)
        key = (order, label, site if by == "site" else "")
        served, solved = groups.setdefault(key, (set(), set()))
        proc = cid if by == "site" else (site, cid)
        (served if type_ == "serve" else solved).add(proc)
        if type_ == "serve":
            k = (key, (site, cid))
            first_serve[k] = min(first_serve.get(k, ms), ms)
        else:
            solves.setdefault((site, cid), []).append(ms)
    times = {}
    for (key, pair), s in first_serve.items():
        v = in_time(solves.get(pair, []), s, window_ms)
        if v is not None:
            times.setdefault(key, []).append(v - s)
    if fill:
        sites = sorted({k[2] for k in groups}) if by == "site" else [""]
        for order, label in range_buckets(zone, interval, frm, to):
            for site in sites:
                groups.setdefault((order, label, site), (set(), set()))
    rows = []
    field = {"day": "day", "total": None}.get(interval, "bucket")
    for key in sorted(groups):
        order, label, site = key
        served, solved = groups[key]
        r = {}
        if field:
            r[field] = label
        if by == "site":
            r["site_id"] = site
        t = times.get(key, [])
        r.update(metric_values(metrics, len(served), len(solved),
                               len(served) - len(t), t))
        rows.append(r)
    return rows


def model_answer(events, metrics=("served", "solved", "solve_rate"),
                 compare=False, **kw):
    """The JSON answer as a dict (key order kept)."""
    full = list(dict.fromkeys(list(metrics) + ["served", "solved",
                                                "unsolved"]))
    rows = model_rows(events, metrics=full, **kw)
    answer = {"rows": [strip(r, metrics) for r in rows],
              "totals": totals_of(rows, metrics)}
    if compare:
        f = datetime.date.fromisoformat(kw["frm"])
        t = datetime.date.fromisoformat(kw["to"])
        pt = f - datetime.timedelta(days=1)
        pf = pt - (t - f)
        prev = model_rows(events, metrics=full,
                          **dict(kw, frm=pf.isoformat(), to=pt.isoformat(),
                                 fill=False))
        answer["previous"] = {"from": pf.isoformat(), "to": pt.isoformat(),
                              "totals": totals_of(prev, metrics)}
    return answer


def strip(row, metrics):
    out = {k: v for k, v in row.items()
           if k not in METRICS and not k.startswith("_")}
    for m in metrics:
        out[m] = row[m]
    return out


def totals_of(rows, metrics):
    served = sum(r["served"] for r in rows)
    solved = sum(r["solved"] for r in rows)
    unsolved = sum(r.get("unsolved", 0) for r in rows)
    times = [t for r in rows for t in r["_times"]]
    out = metric_values(metrics, served, solved, unsolved, times)
    out.pop("_times", None)
    return out


def rate4(v):
    """A rate with 4 decimals as the module writes it (APR's formatter:
    the shortest decimal of the double, rounded half up)."""
    return str(decimal.Decimal(repr(v)).quantize(
        decimal.Decimal("0.0001"), rounding=decimal.ROUND_HALF_UP))


def seconds(ms):
    """Milliseconds as the module writes a solve time: seconds, 3
    decimals."""
    return "%d.%03d" % (ms // 1000, ms % 1000)


def json_text(answer, metrics):
    """The answer's exact bytes: compact JSON, rates with 4 decimals."""
    def obj(d):
        parts = []
        for k, v in d.items():
            if k == "solve_rate":
                text = "null" if v is None else rate4(v)
            elif k in TIMES:
                text = "null" if v is None else seconds(v)
            elif isinstance(v, dict):
                text = obj(v)
            elif isinstance(v, list):
                text = "[" + ",".join(obj(x) for x in v) + "]"
            else:
                text = json.dumps(v)
            parts.append('"%s":%s' % (k, text))
        return "{" + ",".join(parts) + "}"
    return obj(answer)


def csv_text(answer, metrics, head=()):
    """The CSV's bytes; head: the time and site columns (of the header
    when there are no rows)."""
    rows = answer["rows"]
    if rows:
        header = list(rows[0].keys())
    else:
        header = list(head) + list(metrics)
    lines = [",".join(header)]
    for r in rows:
        cells = []
        for k in header:
            v = r[k]
            cells.append("" if v is None else
                         rate4(v) if k == "solve_rate" else
                         seconds(v) if k in TIMES else str(v))
        lines.append(",".join(cells))
    return "".join(line + "\r\n" for line in lines)


# -------------------------------------------------------------- dataset


class Intervals:
    """Events on three sites around the calendar's hard places."""

    def __init__(self):
        self.sites = sorted(str(uuid.uuid4()) for _ in range(3))
        A, B, C = self.sites
        times = [
            # midnight UTC, both sides
            "2026-01-14T23:59:59Z", "2026-01-15T00:00:00Z",
            # Europe/Berlin: spring forward 2026-03-29 01:00Z, fall back
            # 2026-10-25 01:00Z (02:00-03:00 local twice)
            "2026-03-28T23:30:00Z", "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z",
            "2026-03-29T22:30:00Z",
            "2026-10-24T22:30:00Z", "2026-10-25T00:15:00Z",
            "2026-10-25T00:45:00Z", "2026-10-25T01:15:00Z",
            "2026-10-25T01:45:00Z", "2026-10-25T22:59:59Z",
            "2026-10-25T23:00:00Z",
            # Asia/Kolkata +05:30 and Asia/Kathmandu +05:45 midnights
            "2026-06-10T18:29:59Z", "2026-06-10T18:30:00Z",
            "2026-06-10T18:14:59Z", "2026-06-10T18:15:00Z",
            # America/St_Johns -03:30/-02:30: 2026-03-08 05:30Z, 11-01 04:30Z
            "2026-03-08T05:29:59Z", "2026-03-08T05:30:00Z",
            "2026-11-01T03:45:00Z", "2026-11-01T04:15:00Z",
            "2026-11-01T04:45:00Z",
            # ISO week 53 of 2026 (Mon 2026-12-28) and week 1 of 2027
            "2026-12-31T12:00:00Z", "2027-01-01T12:00:00Z",
            "2027-01-03T23:00:00Z", "2027-01-04T00:30:00Z",
            # month ends and a leap day
            "2026-01-31T23:30:00Z", "2026-02-01T00:30:00Z",
            "2028-02-28T23:00:00Z", "2028-02-29T12:00:00Z",
            "2028-03-01T00:10:00Z",
            # the first hours after the epoch: 1969-12-31 west of UTC
            "1970-01-01T02:00:00Z", "1970-01-01T06:00:00Z",
            # a week and a month cut by from/to (2026-09-28 is a Monday)
            "2026-09-28T10:00:00Z", "2026-09-30T10:00:00Z",
            "2026-10-01T10:00:00Z", "2026-10-02T10:00:00Z",
        ]
        rnd = random.Random(20261202)
        self.events = []
        for i, t in enumerate(times):
            site = self.sites[i % 3]
            cid = str(uuid.uuid4())
            self.events.append(event(t, "serve", cid, site))
            if i % 3 != 2:
                self.events.append(event(t, "solve", cid, site))
            if i % 4 == 0:  # a procedure on another site too
                self.events.append(event(t, "serve", cid,
                                         self.sites[(i + 1) % 3]))
        # a serve sent twice, and served twice in one hour
        cid = str(uuid.uuid4())
        twice = event("2026-10-25T00:20:00Z", "serve", cid, A)
        self.events += [twice, twice,
                        event("2026-10-25T00:40:00Z", "serve", cid, A),
                        event("2026-10-25T00:50:00Z", "solve", cid.upper(),
                              A.upper())]
        # random traffic over a few days of 2026-10
        for _ in range(150):
            t = datetime.datetime(2026, 10, 20, tzinfo=UTC) + \
                datetime.timedelta(seconds=rnd.randrange(10 * DAY))
            cid = str(uuid.uuid4())
            site = rnd.choice(self.sites)
            self.events.append(event(t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     "serve", cid, site))
            if rnd.random() < 0.6:
                t2 = t + datetime.timedelta(seconds=rnd.randrange(7200))
                self.events.append(event(t2.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                         "solve", cid, site))
        self.events.append(self.events[-1])  # sent again


@pytest.fixture(scope="module")
def iv(servers, clickhouse):
    db = "imc_intervals_" + uuid.uuid4().hex[:12]
    h = servers.httpd(batch_delay="200ms",
                      directives="IMChallengeDatabase %s" % db)
    stack.wait_until(lambda: h.get("readyz", timeout=2).status_code == 200,
                     30, what="readyz")
    d = Intervals()
    for i in range(0, len(d.events), 100):
        post_events(h, d.events[i:i + 100])
    d.h, d.db = h, db
    yield d
    h.stop()
    clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


FILTERS = {
    None: None,
    "type='serve'": lambda day, site, t: t == "serve",
    "NOT type='solve' OR day >= '2026-10-25'":
        lambda day, site, t: t != "solve" or day >= "2026-10-25",
}


def site_filter(site):
    return ("site_id='%s'" % site.upper(),
            lambda day, s, t: s == site)


def ask(d, flt=None, keep=None, tz="UTC", interval=None, by=None,
        metrics=None, frm=None, to=None, fill=False, compare=False):
    """Asks the module and compares with the model, JSON (and CSV)."""
    params = {"tz": tz}
    for k, v in (("interval", interval), ("by", by), ("from", frm),
                 ("to", to)):
        if v:
            params[k] = v
    mlist = metrics.split(",") if metrics else ["served", "solved",
                                                "solve_rate"]
    if metrics:
        params["metrics"] = metrics
    if fill:
        params["fill"] = "1"
    if compare:
        params["compare"] = "previous_period"
    want = model_answer(d.events, metrics=mlist, compare=compare, tz=tz,
                        interval=interval or "day", by=by or "site",
                        keep=keep, frm=frm, to=to, fill=fill,
                        window_ms=getattr(d, "window_ms", WINDOW_MS))
    r = get_report(d.h, flt, **params)
    assert r.status_code == 200, (params, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.text == json_text(want, mlist), (params, flt)
    if not compare:
        r = get_report(d.h, flt, format="csv", **params)
        assert r.status_code == 200, (params, r.text)
        assert r.headers["Content-Type"].startswith("text/csv")
        field = {"day": "day", "total": None}.get(interval or "day",
                                                    "bucket")
        head = ([field] if field else []) + (["site_id"] if by != "none"
                                             else [])
        assert r.text == csv_text(want, mlist, head), (params, flt)
    return want


# ------------------------------------------------------- fixed cases


def test_model_agrees_with_hand_worked_berlin_fold(iv):
    # The fall-back night in Berlin, hours of site A: 00:15Z is 02:15+02:00,
    # 01:15Z is 02:15+01:00, two buckets with the same wall clock.
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    assert bucket_of(zone, "hour", instant("2026-10-25T00:15:00Z"))[1] == \
        "2026-10-25T02:00:00+02:00"
    assert bucket_of(zone, "hour", instant("2026-10-25T01:15:00Z"))[1] == \
        "2026-10-25T02:00:00+01:00"
    hours = range_buckets(zone, "hour", "2026-10-25", "2026-10-25")
    assert len(hours) == 25
    assert len(range_buckets(zone, "hour", "2026-03-29", "2026-03-29")) == 23
    assert bucket_of(zoneinfo.ZoneInfo("Asia/Kathmandu"), "minute",
                     instant("2026-06-10T18:15:00Z"))[1] == \
        "2026-06-11T00:00:00+05:45"


@pytest.mark.parametrize("tz,frm,to", [
    ("Europe/Berlin", "2026-10-24", "2026-10-26"),
    ("Europe/Berlin", "2026-03-28", "2026-03-30"),
    ("UTC", "2026-01-14", "2026-01-15"),
    ("Asia/Kolkata", "2026-06-10", "2026-06-11"),
    ("Asia/Kathmandu", "2026-06-10", "2026-06-11"),
    ("America/St_Johns", "2026-03-07", "2026-03-08"),
    ("America/St_Johns", "2026-10-31", "2026-11-01"),
])
@pytest.mark.parametrize("interval", ["hour", "day"])
def test_hours_and_days_around_transitions(iv, tz, frm, to, interval):
    for by in ("site", "none"):
        ask(iv, tz=tz, interval=interval, by=by, frm=frm, to=to)
        ask(iv, tz=tz, interval=interval, by=by, frm=frm, to=to, fill=True)


def test_fold_hours_stay_apart(iv):
    want = ask(iv, tz="Europe/Berlin", interval="hour", by="none",
               frm="2026-10-25", to="2026-10-25", fill=True)
    labels = [r["bucket"] for r in want["rows"]]
    assert len(labels) == 25
    assert labels[2:4] == ["2026-10-25T02:00:00+02:00",
                           "2026-10-25T02:00:00+01:00"]


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "Asia/Kathmandu",
                                "America/St_Johns"])
def test_minutes_of_odd_offsets(iv, tz):
    ask(iv, tz=tz, interval="minute", frm="2026-06-10", to="2026-06-11")
    ask(iv, tz=tz, interval="minute", by="none", frm="2026-11-01",
        to="2026-11-01", fill=True)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Pacific/Chatham"])
def test_iso_weeks_53_and_1(iv, tz):
    want = ask(iv, tz=tz, interval="week", frm="2026-12-20", to="2027-01-10",
               fill=True, by="none")
    assert [r["bucket"] for r in want["rows"]] == [
        "2026-12-14", "2026-12-21", "2026-12-28", "2027-01-04"]


def test_months_month_ends_and_leap_day(iv):
    for tz in ("UTC", "Europe/Berlin", "America/New_York"):
        ask(iv, tz=tz, interval="month")
        ask(iv, tz=tz, interval="day", frm="2028-02-28", to="2028-03-01",
            fill=True)
    want = ask(iv, interval="day", by="none", frm="2028-02-28",
               to="2028-03-01", fill=True)
    assert [r["day"] for r in want["rows"]] == [
        "2028-02-28", "2028-02-29", "2028-03-01"]


def test_from_to_cut_a_week_and_a_month_keep_their_labels(iv):
    # 2026-09-30..2026-10-01: the week of Monday 09-28 and two months.
    want = ask(iv, interval="week", frm="2026-09-30", to="2026-10-01",
               by="none", fill=True)
    assert [r["bucket"] for r in want["rows"]] == ["2026-09-28"]
    inside = {(e["site_id"], e["correlation_id"]) for e in iv.events
              if e["type"] == "serve" and e["time"][:10] in ("2026-09-30",
                                                              "2026-10-01")}
    assert want["rows"][0]["served"] == len(inside)  # not 09-28 nor 10-02
    want = ask(iv, interval="month", frm="2026-09-30", to="2026-10-01",
               by="none", fill=True)
    assert [r["bucket"] for r in want["rows"]] == ["2026-09-01",
                                                    "2026-10-01"]


def test_total_and_none(iv):
    for by in ("site", "none"):
        want = ask(iv, interval="total", by=by)
        ask(iv, interval="total", by=by, frm="2026-10-20", to="2026-10-29",
            fill=True)
        assert all("day" not in r and "bucket" not in r
                   for r in want["rows"])
    # an empty range: no rows, with by=none and fill one zero row
    ask(iv, interval="total", by="none", frm="2030-01-01", to="2030-01-02")
    want = ask(iv, interval="total", by="none", frm="2030-01-01",
               to="2030-01-02", fill=True)
    assert want["rows"] == [{"served": 0, "solved": 0, "solve_rate": None}]


def test_first_hours_after_the_epoch_west_of_utc(iv):
    tz = "America/New_York"
    want = ask(iv, tz=tz, interval="month", by="none")
    assert want["rows"][0]["bucket"] == "1969-12-01"
    want = ask(iv, tz=tz, interval="week", by="none")
    assert want["rows"][0]["bucket"] == "1969-12-29"
    want = ask(iv, tz=tz, interval="hour", by="none")
    assert want["rows"][0]["bucket"] == "1969-12-31T21:00:00-05:00"
    ask(iv, tz=tz, interval="day", by="none", frm="1970-01-01",
        to="1970-01-02", fill=True)
    ask(iv, tz="Asia/Kathmandu", interval="hour", frm="1970-01-01",
        to="1970-01-01")


def test_serve_sent_twice_counts_once(iv):
    A = iv.sites[0]
    flt, keep = site_filter(A)
    want = ask(iv, flt, keep, interval="hour", frm="2026-10-25",
               to="2026-10-25")
    row = [r for r in want["rows"]
           if r["bucket"] == "2026-10-25T00:00:00+00:00"][0]
    sent = [e["correlation_id"].lower() for e in iv.events
            if e["type"] == "serve" and e["site_id"].lower() == A and
            e["time"].startswith("2026-10-25T00:")]
    assert len(sent) > len(set(sent))  # sent twice, and served twice
    assert row["served"] == len(set(sent))


def test_procedures_over_all_sites_are_pairs(iv):
    # The same correlation id served on two sites is two procedures.
    want = ask(iv, interval="total", by="none")
    per_site = ask(iv, interval="total", by="site")
    assert want["totals"]["served"] == per_site["totals"]["served"]


@pytest.mark.parametrize("metrics", ["solve_rate", "solved,served",
                                     "solve_rate,served,solved", "served",
                                     "solve_time_p90,unsolved,served",
                                     ",".join(reversed(METRICS))])
def test_metrics_in_the_order_asked(iv, metrics):
    want = ask(iv, interval="week", metrics=metrics, tz="Europe/Berlin")
    assert list(want["totals"].keys()) == metrics.split(",")


def test_compare_previous_period(iv):
    want = ask(iv, interval="day", frm="2026-10-25", to="2026-10-29",
               compare=True, tz="Europe/Berlin")
    assert want["previous"]["from"] == "2026-10-20"
    assert want["previous"]["to"] == "2026-10-24"
    assert want["previous"]["totals"]["served"] > 0
    ask(iv, interval="hour", by="none", frm="2026-10-26", to="2026-10-26",
        compare=True, fill=True, metrics="solve_rate")
    want = ask(iv, interval="month", frm="1970-01-01", to="1970-01-02",
               compare=True)
    assert want["previous"] == {"from": "1969-12-30", "to": "1969-12-31",
                                "totals": {"served": 0, "solved": 0,
                                           "solve_rate": None}}


def test_filters_with_intervals(iv):
    for flt, keep in FILTERS.items():
        ask(iv, flt, keep, interval="hour", tz="Asia/Kolkata",
            frm="2026-10-24", to="2026-10-26")
        ask(iv, flt, keep, interval="month", by="none")
    flt, keep = site_filter(iv.sites[1])
    ask(iv, flt, keep, interval="day", by="none", tz="America/St_Johns")


def test_random_rounds(iv):
    rnd = random.Random(7)
    intervals = ["minute", "hour", "day", "week", "month", "total"]
    for i in range(30):
        interval = rnd.choice(intervals)
        tz = rnd.choice(ZONES)
        by = rnd.choice(["site", "none", None])
        if rnd.random() < 0.5:
            flt = rnd.choice(list(FILTERS))
            keep = FILTERS[flt]
        else:
            flt, keep = site_filter(rnd.choice(iv.sites))
        ranged = interval == "minute" or rnd.random() < 0.7
        frm = to = None
        if ranged:
            start = datetime.date(2026, 10, 18) + datetime.timedelta(
                days=rnd.randrange(14))
            span = {"minute": 1, "hour": 4}.get(interval, 40)
            frm = start.isoformat()
            to = (start + datetime.timedelta(
                days=rnd.randrange(span))).isoformat()
        fill = ranged and rnd.random() < 0.5
        metrics = ",".join(rnd.sample(METRICS, rnd.randrange(1, 8)))
        compare = ranged and rnd.random() < 0.3
        ask(iv, flt, keep, tz=tz, interval=interval, by=by,
            metrics=metrics, frm=frm, to=to, fill=fill, compare=compare)


# ------------------------------------------------ default form, bytes


def default_text(d):
    """The report as it was before intervals: per day and site."""
    rows = model_rows(d.events)
    answer = {"rows": [strip(r, ["served", "solved", "solve_rate"])
                       for r in rows], "totals": totals_of(rows, ["served", "solved",
                                                       "solve_rate"])}
    return answer


@pytest.mark.parametrize("extra", [
    {}, {"interval": "day"}, {"by": "site"},
    {"metrics": "served,solved,solve_rate"}, {"fill": "0"},
    {"interval": "day", "by": "site", "metrics": "served,solved,solve_rate"},
])
def test_explicit_defaults_answer_the_default_bytes(iv, extra):
    want = default_text(iv)
    mlist = ["served", "solved", "solve_rate"]
    plain = get_report(iv.h, tz="UTC")
    assert plain.text == json_text(want, mlist)
    r = get_report(iv.h, tz="UTC", **extra)
    assert r.status_code == 200 and r.text == plain.text, extra
    r = get_report(iv.h, format="csv", **extra)
    assert r.text == csv_text(want, mlist), extra


# ----------------------------------------------------------- errors


@pytest.mark.parametrize("params,words", [
    ({"interval": "year"}, "interval"),
    ({"interval": "Day"}, "interval"),
    ({"interval": ""}, "interval"),
    ({"by": "tenant"}, "by"),
    ({"fill": "2"}, "fill"),
    ({"fill": "1"}, "fill"),
    ({"fill": "1", "from": "2026-10-01"}, "fill"),
    ({"compare": "previous_year", "from": "2026-10-01", "to": "2026-10-02"},
     "compare"),
    ({"compare": "previous_period"}, "compare"),
    ({"compare": "previous_period", "to": "2026-10-02"}, "compare"),
    ({"compare": "previous_period", "from": "2026-10-01",
      "to": "2026-10-02", "format": "csv"}, "CSV"),
    ({"metrics": ""}, "metrics"),
    ({"metrics": "served,"}, "metrics"),
    ({"metrics": "served,served"}, "twice"),
])
def test_bad_parameters_are_400(iv, params, words):
    body = assert_clean_error(get_report(iv.h, **params), 400)
    assert words in body["error"], body


@pytest.mark.parametrize("name", ["visits", "SERVED", "solve-rate",
                                  "p99", "served;drop"])
def test_unknown_metric_lists_the_known_ones(iv, name):
    r = get_report(iv.h, metrics="served," + name)
    body = assert_clean_error(r, 400)
    assert body == {"error": "unknown metric '%s'" % name,
                    "metrics": METRICS}


@pytest.mark.parametrize("name", METRICS[3:])
def test_solve_window_metrics_have_values(iv, name):
    want = ask(iv, metrics="served," + name, interval="hour",
               frm="2026-10-20", to="2026-10-29")
    values = [r[name] for r in want["rows"]]
    assert any(v for v in values), (name, values)  # not all zero or null
    if name != "unsolved":
        assert None in values  # hours served nothing solved in time
        assert want["totals"][name] is not None


@pytest.mark.parametrize("query", ["interval=day&interval=hour",
                                   "by=site&by=none", "metrics=served&"
                                   "metrics=solved", "fill=%ZZ",
                                   "compare=previous_period&compare="])
def test_new_parameters_twice_or_badly_encoded_are_400(iv, query):
    r = iv.h.get("api/report?" + query)
    assert_clean_error(r, 400)


# --------------------------------------------------------- row limit


def limit_error(r, limit):
    body = assert_clean_error(r, 400)
    assert body["limit"] == limit and str(limit) in body["error"], body
    assert "IMChallengeMaxReportRows" in body["error"]


@pytest.mark.error_log_allow(r"\[imchallenge:(error|warn)\]")
def test_row_limit_before_clickhouse_is_asked(make_httpd):
    # No ClickHouse listens: a 400 proves it was decided before asking.
    h = make_httpd(clickhouse="http://127.0.0.1:%d/" % stack.free_port(),
                   directives="IMChallengeMaxReportRows 47")
    limit_error(get_report(h, interval="hour",
                           **{"from": "2026-10-24",
                              "to": "2026-10-25"}), 47)
    limit_error(get_report(h, interval="minute", by="none",
                           **{"from": "2026-10-24",
                              "to": "2026-10-24"}), 47)
    limit_error(get_report(h, **{"from": "2026-01-01",
                                 "to": "2026-03-01"}), 47)
    # 48 hours in two days of UTC; in Berlin with the 25-hour day 49
    limit_error(get_report(h, interval="hour", tz="Europe/Berlin",
                           **{"from": "2026-10-25",
                              "to": "2026-10-26"}), 47)
    # 47 hours: the database is asked (and is not there)
    r = get_report(h, interval="hour", tz="Europe/Berlin",
                   **{"from": "2026-03-29", "to": "2026-03-30"})
    assert_clean_error(r, 503)


def test_row_limit_after_the_query(iv, make_httpd):
    h = make_httpd(directives="IMChallengeDatabase %s\n"
                   "IMChallengeMaxReportRows 20" % iv.db)
    stack.wait_until(
        lambda: h.get("readyz", timeout=2).status_code == 200, 30,
        what="readyz")
    # 10 days by site: more than 20 rows only once the sites are known
    frm, to = "2026-10-20", "2026-10-29"
    limit_error(get_report(h, **{"from": frm, "to": to}), 20)
    limit_error(get_report(h, interval="day", by="site", metrics="served",
                           **{"from": frm, "to": to}), 20)
    limit_error(get_report(h, interval="hour", by="none"), 20)
    limit_error(get_report(h, interval="day", fill="1",
                           **{"from": frm, "to": to}), 20)
    r = get_report(h, interval="day", by="none", fill="1",
                   **{"from": frm, "to": to})
    assert r.status_code == 200 and len(r.json()["rows"]) == 10
    r = get_report(h, interval="week", by="site",
                   **{"from": frm, "to": to})
    assert r.status_code == 200, r.text
