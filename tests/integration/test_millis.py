# Licensed under the Apache License, Version 2.0.
"""Event times to the millisecond (SPEC section 5: "times count to the
millisecond"): the column time_ms of conf/schema.sql, what the module
writes into it, and the upgrade of a table made before it, on a real
ClickHouse 18.16.

Each test that needs a table of its own uses a database of its own
(IMChallengeDatabase), so that the session's imchallenge.events keeps the
current schema for the other tests.
"""

import json
import re
import time
import uuid
from pathlib import Path

import stack
from ingest_util import (apply_schema, new_id, post, status, utc_epoch,
                         wait_stored)

# Log lines of a server whose ClickHouse is unreachable.
CLICKHOUSE_DOWN = [r"IMC00302: cannot apply the schema",
                   r"IMC00304: delivery of \d+ events to .* failed"]

# The events table as conf/schema.sql made it before time_ms.
OLD_EVENTS = """CREATE TABLE {db}.events
(
    time           DateTime('UTC'),
    type           Enum8('serve' = 1, 'solve' = 2),
    correlation_id UUID,
    site_id        UUID,
    received_at    DateTime('UTC'),
    raw            String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (site_id, time)"""

COLUMNS = ["time", "time_ms", "type", "correlation_id", "site_id",
           "received_at", "raw"]


def closed_port_url():
    """A ClickHouse URL on which nothing listens."""
    return "http://127.0.0.1:%d/" % stack.free_port()


def fresh_db(ch, old_table=False):
    db = "imc_ms_" + uuid.uuid4().hex[:12]
    ch.query("CREATE DATABASE %s" % db)
    if old_table:
        ch.query(OLD_EVENTS.format(db=db))
    return db


def columns(ch, db):
    """[(name, type, default kind, default expression)] of db.events."""
    text = ch.query("SELECT name, type, default_kind, default_expression "
                    "FROM system.columns WHERE database = '%s' AND table = "
                    "'events' FORMAT JSONCompact" % db)
    return [tuple(r) for r in json.loads(text)["data"]]


def parts(ch, db):
    """The active parts of db.events: name, modification time, rows."""
    return ch.query("SELECT name, toUInt32(modification_time), rows FROM "
                    "system.parts WHERE database = '%s' AND table = 'events' "
                    "AND active ORDER BY name FORMAT TabSeparated" % db)


def stored_ms(ch, site, db="imchallenge"):
    """{correlation id: (UTC second, time_ms)} stored for site."""
    text = ch.query("SELECT toString(correlation_id), toUInt32(time), "
                    "time_ms FROM %s.events WHERE site_id = toUUID('%s') "
                    "FORMAT TabSeparated" % (db, site))
    out = {}
    for line in text.splitlines():
        cid, sec, ms = line.split("\t")
        out[cid] = (int(sec), int(ms))
    return out


def ev(site, cid, when):
    return {"time": when, "type": "serve", "correlation_id": cid,
            "site_id": site}


# Written time -> (UTC second, milliseconds), truncated, not rounded.
CASES = [
    ("2026-11-28T12:00:00.5Z", "2026-11-28 12:00:00", 500),
    ("2026-11-28T12:00:01.123Z", "2026-11-28 12:00:01", 123),
    ("2026-11-28T12:00:02.1239Z", "2026-11-28 12:00:02", 123),
    ("2026-11-28T12:00:03Z", "2026-11-28 12:00:03", 0),
    ("2026-11-28T12:00:04.05Z", "2026-11-28 12:00:04", 50),
    ("2026-11-28T23:59:59.9999Z", "2026-11-28 23:59:59", 999),
    ("2026-11-28T12:00:05.999999999Z", "2026-11-28 12:00:05", 999),
    ("2026-11-28T17:30:06.250+05:30", "2026-11-28 12:00:06", 250),
    ("2026-11-28T11:00:07.7-01:00", "2026-11-28 12:00:07", 700),
    ("2026-11-28 12:00:08.001", "2026-11-28 12:00:08", 1),
]


def post_cases(h, site, wait=True):
    """Posts one event per CASES entry; returns {cid: (second, ms)}."""
    want, batch = {}, []
    for written, utc, ms in CASES:
        cid = new_id()
        batch.append(ev(site, cid, written))
        want[cid] = (utc_epoch(utc), ms)
    r = post(h, json.dumps(batch), wait=wait)
    assert r.status_code == (201 if wait else 202), r.text
    return want


def no_quarantine(h):
    assert status(h)["quarantined_batches"] == 0
    failed = h.spool_dir / "failed"
    assert not failed.exists() or not list(failed.iterdir())


def test_events_store_their_milliseconds(httpd, clickhouse):
    apply_schema(clickhouse)
    site = new_id()
    want = post_cases(httpd, site)
    assert stored_ms(clickhouse, site) == want


def test_fresh_schema_has_time_ms(make_httpd, clickhouse):
    db = fresh_db(clickhouse)
    h = make_httpd(directives="IMChallengeDatabase %s" % db)
    site = new_id()
    r = post(h, json.dumps(ev(site, new_id(), "2026-11-28T12:00:00.042Z")),
             wait=True)
    assert r.status_code == 201, r.text
    cols = columns(clickhouse, db)
    assert [c[0] for c in cols] == COLUMNS
    assert cols[1][:3] == ("time_ms", "UInt16", "DEFAULT")
    assert list(stored_ms(clickhouse, site, db).values()) == [
        (utc_epoch("2026-11-28 12:00:00"), 42)]


def old_rows(site, months):
    """Rows as the module wrote them before time_ms: one per month."""
    rows, cids = [], []
    for k, month in enumerate(months):
        cid = new_id()
        cids.append(cid)
        sec = utc_epoch("%s-15 10:00:00" % month)
        raw = json.dumps(ev(site, cid, "%s-15T10:00:00.%03dZ" % (month, k)))
        rows.append(json.dumps({"time": sec, "type": "serve",
                                "correlation_id": cid, "site_id": site,
                                "received_at": sec, "raw": raw}))
    return "\n".join(rows) + "\n", cids


def test_old_table_is_migrated_in_place_at_start_up(make_httpd, clickhouse):
    """A table made with the schema of before (rows in three partitions, so
    no merge can change its parts) gains time_ms when the module starts:
    the same parts, modification times and rows as before, old rows read
    0, new events their milliseconds; the columns are a fresh table's."""
    db = fresh_db(clickhouse, old_table=True)
    site = new_id()
    rows, cids = old_rows(site, ["2026-09", "2026-10", "2026-11"])
    clickhouse.query("INSERT INTO %s.events FORMAT JSONEachRow\n%s"
                     % (db, rows))
    before = parts(clickhouse, db)
    assert len(before.splitlines()) == 3
    assert "time_ms" not in [c[0] for c in columns(clickhouse, db)]
    time.sleep(1.1)  # a rewritten part would have a later time
    h = make_httpd(directives="IMChallengeDatabase %s" % db)
    stack.wait_until(lambda: "time_ms" in [c[0] for c in columns(
        clickhouse, db)], 30, interval=0.2, what="time_ms added")
    assert parts(clickhouse, db) == before
    got = stored_ms(clickhouse, site, db)
    assert sorted(got) == sorted(cids)
    assert all(ms == 0 for _, ms in got.values())
    fresh = fresh_db(clickhouse)
    for sql in stack_schema(fresh):
        clickhouse.query(sql)
    assert columns(clickhouse, db) == columns(clickhouse, fresh)
    # New events keep their milliseconds; the old rows are all there.
    want = post_cases(h, site)
    got = stored_ms(clickhouse, site, db)
    assert {c: got[c] for c in want} == want
    assert len(got) == len(want) + len(cids)
    no_quarantine(h)


def stack_schema(db):
    """conf/schema.sql's statements for database db."""
    text = "\n".join(line for line in
                     (stack.REPO / "conf" / "schema.sql").read_text()
                     .splitlines() if not line.lstrip().startswith("--"))
    return [s.replace("imchallenge", db) for s in text.split(";")
            if s.strip()]


def shipped_alter(db):
    """The upgrade statement conf/schema.sql gives for a table made before
    time_ms, for database db."""
    text = (stack.REPO / "conf" / "schema.sql").read_text()
    m = re.search(r"^--\s+(ALTER TABLE imchallenge\.events ADD COLUMN "
                  r"time_ms[^;]*);$", text, re.M)
    assert m, "conf/schema.sql names no upgrade statement"
    return m.group(1).replace("imchallenge.", db + ".")


def test_create_schema_off_unmigrated_table_keeps_delivering(make_httpd,
                                                             clickhouse):
    """With IMChallengeCreateSchema Off the module leaves a table made
    before time_ms alone, and its rows (which carry time_ms) go in without
    it: none rejected or quarantined. Once the statement that
    conf/schema.sql gives is run by hand, milliseconds are stored."""
    db = fresh_db(clickhouse, old_table=True)
    h = make_httpd(directives="IMChallengeDatabase %s\n"
                   "IMChallengeCreateSchema Off" % db)
    site = new_id()
    before = post_cases(h, site)
    late = new_id()
    r = post(h, json.dumps(ev(site, late, "2026-11-28T12:00:00.5Z")))
    assert r.status_code == 202, r.text  # delivered in the background too
    wait_stored(clickhouse, site, set(before) | {late}, db=db)
    assert "time_ms" not in [c[0] for c in columns(clickhouse, db)]
    no_quarantine(h)

    clickhouse.query(shipped_alter(db))
    after = post_cases(h, site)
    got = stored_ms(clickhouse, site, db)
    assert {c: got[c] for c in after} == after
    assert {c: got[c] for c in before} == {c: (s, 0) for c, (s, _) in
                                           before.items()}
    no_quarantine(h)


def test_rows_spooled_before_time_ms_deliver_with_zero(make_httpd, clickhouse,
                                                       error_log_allow):
    """Rows an earlier module spooled (the same rows without time_ms) and
    that a new one delivers are stored, with time_ms 0."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    apply_schema(clickhouse)
    old = make_httpd(clickhouse=closed_port_url())
    site = new_id()
    want = post_cases(old, site, wait=False)
    old.stop()
    segs = sorted(old.spool_dir.glob("*.seg"))
    assert segs
    # Nothing was tried (ClickHouse never answered): no batch is pending
    # at an offset of the longer rows.
    pos = [Path(str(seg) + ".pos") for seg in segs]
    assert [p.read_text() for p in pos] == ["0 0\n"] * len(segs)
    taken = 0
    for seg in segs:
        data, n = re.subn(rb',"time_ms":\d+', b"", seg.read_bytes())
        taken += n
        with open(seg, "r+b") as f:  # in place: owner and mode stay
            f.write(data)
            f.truncate()
    assert taken == len(CASES)
    h = make_httpd(clickhouse=clickhouse, spool_dir=old.spool_dir)
    wait_stored(clickhouse, site, set(want))
    assert stored_ms(clickhouse, site) == {c: (s, 0)
                                           for c, (s, _) in want.items()}
    no_quarantine(h)
