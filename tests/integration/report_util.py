# Licensed under the Apache License, Version 2.0.
"""Helpers for the report tests (SPEC section 5).

- `Dataset`: captcha events with a known report, on fresh site ids,
  loaded through the module (POST /api/event?wait=1, NDJSON);
- `model()`: an independent reference of the report for a list of events
  (day in a time zone, distinct correlation ids, from/to, a row predicate);
- request helpers, among them `raw_get()` which sends a request target
  byte for byte (requests would re-encode it).
"""

import datetime
import decimal
import http.client
import json
import re
import socket
import uuid
import zoneinfo
from urllib.parse import quote

NDJSON = {"Content-Type": "application/x-ndjson"}
CSV_HEADER = "day,site_id,served,solved,solve_rate"
COLUMNS = ["day", "site_id", "type"]

# Fragments of the SQL the module generates and of ClickHouse's own error
# texts: none of them may ever reach a client.
LEAKS = ("toDate(", "toUUID(", "uniqExact", "GROUP BY", "TabSeparated",
         ".events", "DB::", "Code:", "Exception", "clickhouse", "ClickHouse",
         "SELECT ", "Stack trace")

_RATE = re.compile(r'"solve_rate":(null|-?\d+\.\d+|-?\d+)')


def event(time, type_, cid, site, **extra):
    """One event object."""
    ev = {"time": time, "type": type_, "correlation_id": cid,
          "site_id": site}
    ev.update(extra)
    return ev


def post_events(h, events, wait=True):
    """POST events as NDJSON; assert 201 (wait) or 202; return the answer."""
    body = "".join(json.dumps(e) + "\n" for e in events).encode("utf-8")
    r = h.post("api/event" + ("?wait=1" if wait else ""), data=body,
               headers=NDJSON)
    assert r.status_code == (201 if wait else 202), (r.status_code, r.text)
    assert r.json()["accepted"] == len(events), r.text
    return r


def report_path(flt=None):
    """/api/report or /api/report/<URL-encoded filter>, no leading '/'."""
    if flt is None:
        return "api/report"
    return "api/report/" + quote(flt, safe="")


def get_report(h, flt=None, headers=None, timeout=30, **params):
    """GET the report with an optional filter and query parameters."""
    return h.get(report_path(flt), params=params or None, headers=headers,
                 timeout=timeout)


def raw_get(h, target, headers=None, timeout=10):
    """GET target exactly as given; returns (status, headers, body text)."""
    conn = http.client.HTTPConnection(h.host, h.port, timeout=timeout)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


def raw_request(h, data, timeout=10):
    """Send raw bytes on a new connection; return the status code."""
    with socket.create_connection((h.host, h.port), timeout=timeout) as s:
        s.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    return int(status_line.split()[1])


def rate_values(text):
    """The solve_rate values of a JSON report body, as written."""
    return _RATE.findall(text)


def rate_text(served, solved, none="null"):
    """solve_rate as the report writes it: 4 decimals, or none. APR's
    formatter rounds the shortest decimal of the double half up (13/32 =
    0.40625 is 0.4063), not to even as Python's "%.4f" and round() do."""
    if not served:
        return none
    return str(decimal.Decimal(repr(solved / served)).quantize(
        decimal.Decimal("0.0001"), rounding=decimal.ROUND_HALF_UP))


def rate(served, solved):
    """solve_rate as the JSON answer holds it, once parsed."""
    return float(rate_text(served, solved)) if served else None


def csv_lines(rows):
    """The CSV report of model rows, line by line, header first."""
    lines = [CSV_HEADER]
    for x in rows:
        lines.append("%s,%s,%d,%d,%s" % (
            x["day"], x["site_id"], x["served"], x["solved"],
            rate_text(x["served"], x["solved"], none="")))
    return lines


# ---------------------------------------------------------------- model


def instant(text):
    """The UTC instant of an event's time (no zone means UTC)."""
    t = datetime.datetime.fromisoformat(text.replace(" ", "T"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc)


def day_of(text, tz="UTC"):
    """The calendar day (YYYY-MM-DD) of an event's time in zone tz."""
    return instant(text).astimezone(zoneinfo.ZoneInfo(tz)).date().isoformat()


def model(events, tz="UTC", keep=None, frm=None, to=None):
    """The report the module must answer for events: a list of row dicts.

    keep(day, site, type) selects events (the filter); frm and to bound
    the day (inclusive); days are calendar days in tz.
    """
    groups = {}
    for e in events:
        day = day_of(e["time"], tz)
        site = e["site_id"].lower()
        if keep is not None and not keep(day, site, e["type"]):
            continue
        if (frm and day < frm) or (to and day > to):
            continue
        served, solved = groups.setdefault((day, site), (set(), set()))
        (served if e["type"] == "serve" else solved).add(
            e["correlation_id"].lower())
    rows = []
    for (day, site) in sorted(groups):
        served, solved = groups[(day, site)]
        rows.append(row(day, site, len(served), len(solved)))
    return rows


def row(day, site, served, solved):
    """One report row as the JSON answer holds it."""
    return {"day": day, "site_id": site, "served": served, "solved": solved,
            "solve_rate": rate(served, solved)}


def totals(rows):
    """The totals of rows: sums, and the rate of the sums."""
    served = sum(r["served"] for r in rows)
    solved = sum(r["solved"] for r in rows)
    return {"served": served, "solved": solved,
            "solve_rate": rate(served, solved)}


def expected_answer(rows):
    return {"rows": rows, "totals": totals(rows)}


def assert_report(r, rows):
    """r is a 200 JSON report equal to rows (with their totals), each
    solve_rate written with exactly 4 decimals or as null."""
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), \
        r.headers["Content-Type"]
    assert r.json() == expected_answer(rows)
    want = [rate_text(x["served"], x["solved"]) for x in rows]
    t = totals(rows)
    want.append(rate_text(t["served"], t["solved"]))
    assert rate_values(r.text) == want


def assert_clean_error(r, status):
    """r is a JSON error with status and leaks nothing of SQL or ClickHouse."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json"), \
        r.headers.get("Content-Type")
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    for leak in LEAKS:
        assert leak not in r.text, (leak, r.text)
    return body


# ---------------------------------------------------------------- dataset


class Dataset:
    """Events over three sites and three days whose report is known.

    Site A: serves and solves, a solve without a serve, duplicates in the
    same request and in a later one, times with +03:00 offsets that fall
    on the previous UTC day, a fractional time with a space for 'T'.
    Site B: serves without solves, a -02:00 offset that falls on the next
    UTC day, a procedure served just before midnight and solved after it.
    Site C: only solves on one day (served 0: solve_rate null), a rate of
    2/3 (0.6667) on another.
    """

    D1, D2, D3 = "2025-01-10", "2025-01-11", "2025-01-12"

    def __init__(self):
        self.A, self.B, self.C = (str(uuid.uuid4()) for _ in range(3))
        self.cid = {}
        A, B, C, c = self.A, self.B, self.C, self._cid
        self.first = [
            # site A, day 1
            event("2025-01-10T08:00:00Z", "serve", c("a1"), A),
            event("2025-01-10T08:00:05Z", "solve", c("a1"), A),
            event("2025-01-10T09:00:00Z", "serve", c("a2"), A),
            event("2025-01-10T15:00:00+00:00", "serve", c("a2"), A),
            event("2025-01-10T23:30:00Z", "serve", c("a3"), A),
            event("2025-01-11T01:30:00+03:00", "serve", c("a4"), A),
            event("2025-01-11T01:35:00.5+03:00", "solve", c("a4"), A),
            event("2025-01-10T10:00:00", "solve", c("a5"), A.upper()),
            # site A, day 2 (a6's serve twice in this request)
            event("2025-01-11T12:00:00Z", "serve", c("a6"), A),
            event("2025-01-11T12:00:00Z", "serve", c("a6"), A),
            event("2025-01-11T12:01:00Z", "solve", c("a6").upper(), A),
            event("2025-01-11 13:00:00.123456Z", "serve", c("a7"), A,
                  client={"lang": "en"}),
            # site B
            event("2025-01-10T12:00:00Z", "serve", c("b1"), B),
            event("2025-01-10T12:00:00Z", "serve", c("b2"), B),
            event("2025-01-10T16:00:00Z", "serve", c("b3"), B),
            event("2025-01-11T23:59:59Z", "serve", c("b6"), B),
            event("2025-01-12T00:00:01Z", "solve", c("b6"), B),
            event("2025-01-12T00:30:00Z", "serve", c("b4"), B),
            event("2025-01-12T00:40:00-01:00", "solve", c("b4"), B),
            event("2025-01-11T23:30:00-02:00", "serve", c("b5"), B),
            # site C
            event("2025-01-11T05:00:00Z", "solve", c("c1"), C),
            event("2025-01-11T06:00:00Z", "solve", c("c2"), C),
            event("2025-01-12T10:00:00Z", "serve", c("c3"), C),
            event("2025-01-12T10:05:00Z", "solve", c("c3"), C),
            event("2025-01-12T11:00:00Z", "serve", c("c4"), C),
            event("2025-01-12T11:10:00Z", "solve", c("c4"), C),
            event("2025-01-12T11:00:00Z", "serve", c("c5"), C),
            # site A, early on day 2 in UTC: day 1 in New York
            event("2025-01-11T02:00:00Z", "serve", c("a8"), A),
        ]
        # Sent again in a separate request: counted once.
        self.again = [self.first[0], self.first[1], self.first[10],
                      self.first[21]]
        self.events = self.first + self.again

    def _cid(self, name):
        return self.cid.setdefault(name, str(uuid.uuid4()))

    def hand_rows(self):
        """The UTC report, worked out by hand (see the class comment)."""
        D1, D2, D3 = self.D1, self.D2, self.D3
        table = [
            (D1, self.A, 4, 3),  # served a1-a4, solved a1 a4 a5
            (D1, self.B, 3, 0),  # b1-b3
            (D2, self.A, 3, 1),  # a6 a7 a8; a6
            (D2, self.B, 1, 0),  # b6 (solved on D3)
            (D2, self.C, 0, 2),  # c1 c2 only solved
            (D3, self.B, 2, 2),  # b4 b5 (b5 is -02:00); b4 b6
            (D3, self.C, 3, 2),  # c3-c5; c3 c4
        ]
        return [row(*t) for t in sorted(table)]

    def load(self, h):
        """Send the events through the module and wait until stored."""
        post_events(h, self.first[:12])
        post_events(h, self.first[12:])
        post_events(h, self.again)
