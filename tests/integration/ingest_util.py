# Licensed under the Apache License, Version 2.0.
"""Helpers for the event ingestion tests (test_ingest.py).

Events are built as text, not with json.dumps, so that a test controls
every byte the module receives and can compare the stored `raw` column
with exactly what it sent.
"""

import calendar
import json
import re
import time
import uuid
from urllib.parse import quote

import stack
from hostile_util import LEAKS

JSON = "application/json"
NDJSON = "application/x-ndjson"
JSON_UTF8 = "application/json; charset=utf-8"



def apply_schema(ch):
    """Run conf/schema.sql on ch, statement by statement (idempotent), so
    that queries work before any httpd has created the tables."""
    text = "\n".join(line for line in
                     (stack.REPO / "conf" / "schema.sql").read_text()
                     .splitlines() if not line.lstrip().startswith("--"))
    for statement in text.split(";"):
        if statement.strip():
            ch.query(statement)


def new_id():
    return str(uuid.uuid4())


def event(site, cid=None, kind="serve", when="2026-11-28T12:00:00Z",
          extra=""):
    """One event's JSON text; extra is appended inside the object."""
    return ('{"time":"%s","type":"%s","correlation_id":"%s","site_id":"%s"%s}'
            % (when, kind, cid or new_id(), site, extra))


def array(events):
    return "[" + ",".join(events) + "]"


def ndjson(events):
    return "".join(e + "\n" for e in events)


def post(h, body, content_type=JSON, wait=False, session=None, **kw):
    """POST body (text or bytes) to /api/event (?wait=1 with wait)."""
    headers = dict(kw.pop("headers", {}))
    if content_type is not None:
        headers["Content-Type"] = content_type
    if isinstance(body, str):
        body = body.encode("utf-8")
    path = "api/event" + ("?wait=1" if wait else "")
    if session is not None:
        return session.post(h.url + path, data=body, headers=headers,
                            timeout=kw.pop("timeout", 30), **kw)
    return h.post(path, data=body, headers=headers, **kw)


def get_event(h, text, wait=False, session=None, **kw):
    """The GET form: /api/event/<URL-encoded event>."""
    path = "api/event/" + quote(text, safe="") + ("?wait=1" if wait else "")
    if session is not None:
        return session.get(h.url + path, timeout=kw.pop("timeout", 30), **kw)
    return h.get(path, **kw)


def utc_epoch(text):
    """Seconds since the epoch of 'YYYY-MM-DD HH:MM:SS' read as UTC."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def site_rows(ch, site, db="imchallenge"):
    """The stored rows of one site, typed values as text, oldest first."""
    # Aliases differ from the column names: an alias would shadow the
    # column in the expressions after it.
    sql = ("SELECT toString(time) AS utc, toUInt32(time) AS ts, "
           "toString(type) AS kind, toString(correlation_id) AS cid, "
           "toString(site_id) AS site, "
           "toUInt32(received_at) AS received, hex(raw) AS raw_hex "
           "FROM %s.events WHERE site_id = toUUID('%s') "
           "ORDER BY ts, cid FORMAT JSONEachRow" % (db, site.lower()))
    rows = []
    for line in ch.query(sql).splitlines():
        if line.strip():
            row = json.loads(line)
            row["time"] = row.pop("utc")
            row["type"] = row.pop("kind")
            row["raw"] = bytes.fromhex(row.pop("raw_hex")).decode("utf-8")
            row["ts"] = int(row["ts"])
            row["received"] = int(row["received"])
            rows.append(row)
    return rows


def site_ids(ch, site, db="imchallenge"):
    """(rows, distinct correlation ids) stored for one site."""
    text = ch.scalar("SELECT count(), uniqExact(correlation_id) "
                     "FROM %s.events WHERE site_id = toUUID('%s') FORMAT TSV"
                     % (db, site.lower()))
    rows, distinct = text.split("\t")
    return int(rows), int(distinct)


def stored_cids(ch, sites, db="imchallenge"):
    """The set of correlation ids stored for any of the sites."""
    in_list = ",".join("toUUID('%s')" % s for s in sites)
    text = ch.query("SELECT DISTINCT toString(correlation_id) FROM %s.events "
                    "WHERE site_id IN (%s) FORMAT TSV" % (db, in_list))
    return set(text.split())


def wait_stored(ch, sites, expected, timeout=30, db="imchallenge"):
    """Poll until the correlation ids stored for sites are `expected`."""
    if isinstance(sites, str):
        sites = [sites]
    last = [set()]

    def done():
        last[0] = stored_cids(ch, sites, db)
        return last[0] >= expected
    try:
        stack.wait_until(done, timeout, interval=0.2,
                         what="%d events in ClickHouse" % len(expected))
    except stack.StackError as e:
        raise AssertionError("%s: %d of %d stored" % (
            e, len(last[0] & expected), len(expected))) from None
    return last[0]


def status(h):
    r = h.get("api/status", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def wait_queue_empty(h, timeout=30):
    """Poll /api/status until queued_events is 0; return the last status."""
    last = [None]

    def empty():
        last[0] = status(h)
        return last[0]["queued_events"] == 0
    stack.wait_until(empty, timeout, interval=0.2, what="queued_events == 0")
    return last[0]


def assert_error_body(r, status_code):
    """r is a JSON error with status_code that leaks nothing; its JSON."""
    assert r.status_code == status_code, (r.status_code, r.text)
    assert r.headers.get("Content-Type") == JSON_UTF8
    body = r.json()
    assert isinstance(body, dict)
    assert ("error" in body) or ("errors" in body), body
    assert not LEAKS.search(r.text), r.text
    return body


def assert_rejected(r, index, field=None, status_code=400):
    """A 400 (or 413) rejection naming event `index` and `field` (None:
    the whole event, so no field member). Returns the error message."""
    body = assert_error_body(r, status_code)
    assert body["status"] == "rejected", body
    assert isinstance(body["errors"], list) and body["errors"], body
    err = body["errors"][0]
    expected_keys = {"index", "error"} | ({"field"} if field else set())
    assert set(err) == expected_keys, err
    assert err["index"] == index, err
    if field:
        assert err["field"] == field, err
    assert isinstance(err["error"], str) and err["error"].strip(), err
    return err["error"]


def spool_segments(h):
    """Names of the segment files in h's spool directory."""
    return sorted(p.name for p in h.spool_dir.iterdir()
                  if p.name.endswith(".seg"))


def segment_pid(name):
    """The writer pid in a segment name <hex usec>-<pid>-<seq>.seg."""
    return int(name.split("-")[1])
