# Licensed under the Apache License, Version 2.0.
"""Helpers for the tests of the report's per-process cache of days.

- `Client`: reports over one kept-alive HTTP connection, so that they all
  reach the same httpd child process, and so the same cache;
- `Table`: the events table of a database, written directly (each INSERT
  makes one part per month), merged, mutated and truncated, with the days
  its parts cover as the module computes them;
- `Reports`: reports over a `Client`, each compared with report_util.model;
- `days_metric()`: imchallenge_report_day_lookups_total by source;
- `CountingRelay`: a TCP relay to ClickHouse counting its connections;
- `SpoilingRelay`: an HTTP relay to ClickHouse that writes an exception
  into the 200 answer of chosen queries, as ClickHouse does when a query
  fails after its first rows went out.
"""

import datetime
import http.client
import json
import re
import socket
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import requests

import stack
from faults_util import HttpProxy
from observe_util import parse_prometheus, sample
from report_util import assert_report, instant, model, report_path

SCHEMA = Path(__file__).resolve().parents[2] / "conf" / "schema.sql"


def events_ddl(db):
    """conf/schema.sql's CREATE TABLE of the events table, for db."""
    text = SCHEMA.read_text()
    start = text.index("CREATE TABLE IF NOT EXISTS imchallenge.events")
    stmt = text[start:text.index(";\n", start)]
    return stmt.replace("imchallenge.events", "%s.events" % db)


class ConnectionLost(AssertionError):
    """The server closed the connection: later reports could reach another
    child process, with another cache."""


class Answer:
    """The parts of an HTTP answer that report_util.assert_report reads."""

    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers  # email.message.Message: case-insensitive
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


class Client:
    """Reports over one kept-alive connection to h: one child process.

    A connection the server closed raises ConnectionLost rather than
    reconnecting (perhaps to another child, with another cache).
    """

    def __init__(self, h, timeout=30):
        self.requests = 0
        self.conn = http.client.HTTPConnection(h.host, h.port,
                                               timeout=timeout)
        self.conn.connect()
        self.conn.auto_open = 0  # never reconnect behind our back

    def report(self, flt=None, **params):
        """GET the report; params as in report_util.get_report ("from")."""
        target = "/" + report_path(flt)
        if params:
            target += "?" + urlencode(params)
        if self.conn.sock is None:
            raise ConnectionLost("closed after %d requests" % self.requests)
        try:
            self.conn.request("GET", target)
            resp = self.conn.getresponse()
            body = resp.read()
        except (http.client.HTTPException, ConnectionError) as e:
            raise ConnectionLost("%s after %d requests"
                                 % (e, self.requests)) from e
        self.requests += 1
        if resp.will_close:
            self.conn.close()
        return Answer(resp.status, resp.msg, body)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def days_metric(h):
    """(cache, clickhouse): imchallenge_report_day_lookups_total by source,
    read on a connection of its own (it does not touch any cache)."""
    r = requests.get(h.url + "metrics", timeout=10,
                     headers={"Connection": "close"},
                     proxies={"http": None, "https": None})
    assert r.status_code == 200, r.text
    fams = parse_prometheus(r.text)
    assert fams["imchallenge_report_day_lookups_total"].type == "counter"
    return tuple(int(sample(fams, "imchallenge_report_day_lookups_total",
                            source=s)) for s in ("cache", "clickhouse"))


def delta(before, after):
    """{"cache": n, "clickhouse": m}: what two days_metric() differ by."""
    return {"cache": after[0] - before[0],
            "clickhouse": after[1] - before[1]}


def _sql_text(text):
    return "'%s'" % text.replace("\\", "\\\\").replace("'", "\\'")


def utc_text(time_text):
    """An event's time as a ClickHouse DateTime('UTC') literal."""
    return instant(time_text).strftime("%Y-%m-%d %H:%M:%S")


def _millis(text):
    """The milliseconds of an event's time as the module stores them: its
    fraction of a second, truncated."""
    m = re.search(r"T[^.]*\.(\d+)", text)
    return int((m.group(1) + "00")[:3]) if m else 0


class Table:
    """The events table of database db on ClickHouse ch (or another table
    of its columns: a cluster shard's events_local)."""

    def __init__(self, ch, db, table="events"):
        self.ch = ch
        self.db = db
        self.table = table
        self.name = "%s.%s" % (db, table)

    def mine(self):
        """The condition on system.parts (or mutations) for this table."""
        return "database = '%s' AND table = '%s'" % (self.db, self.table)

    def insert(self, events):
        """One INSERT of events (report_util.event dicts), as the module
        would store them; ClickHouse makes one part per month of them."""
        values = []
        for e in events:
            values.append("(%s, %d, %s, toUUID(%s), toUUID(%s), now(), %s)"
                          % (_sql_text(utc_text(e["time"])),
                             _millis(e["time"]), _sql_text(e["type"]),
                             _sql_text(e["correlation_id"]),
                             _sql_text(e["site_id"]),
                             _sql_text(json.dumps(e))))
        self.ch.query("INSERT INTO %s (time, time_ms, type, correlation_id, "
                      "site_id, received_at, raw) VALUES %s"
                      % (self.name, ", ".join(values)))

    def insert_days(self, days, make):
        """One INSERT (one part) per day of make(day)'s events; returns all
        the events inserted."""
        events = []
        for day in days:
            part = make(day)
            self.insert(part)
            events += part
        return events

    def parts(self):
        """[(name, rows, modification time)] of the active parts, times
        as Unix seconds."""
        text = self.ch.query(
            "SELECT name, rows, toUInt32(modification_time) "
            "FROM system.parts WHERE %s AND active ORDER BY name "
            "FORMAT TabSeparated" % self.mine())
        out = []
        for line in text.splitlines():
            name, rows, mtime = line.split("\t")
            out.append((name, int(rows), int(mtime)))
        return out

    def settle(self, timeout=5):
        """Wait until no active part was written in ClickHouse's current
        second: the module keeps no day of such a part (a part of the same
        name, rows and second could replace it unseen), so a report counts
        on the cache only after this."""
        stack.wait_until(
            lambda: self.ch.scalar(
                "SELECT count() FROM system.parts WHERE %s AND active "
                "AND modification_time >= now()" % self.mine()) == "0",
            timeout, interval=0.05, what="parts older than this second")

    def part_ids(self):
        """{partition: id of its part} when each partition has one part."""
        text = self.ch.query(
            "SELECT partition, cityHash64(name, rows, modification_time) "
            "FROM system.parts WHERE %s AND active FORMAT TabSeparated"
            % self.mine())
        ids = dict(line.split("\t") for line in text.splitlines())
        assert len(ids) == len(text.splitlines()), text
        return {k: int(v) for k, v in ids.items()}

    def covered_days(self, tz="UTC", frm=None, to=None):
        """The days (YYYY-MM-DD in tz) some active part covers, between frm
        and to: the days a report through the cache asks about."""
        text = self.ch.query(
            "SELECT toString(toDate(min_time, '%s')), "
            "toString(toDate(max_time, '%s')) "
            "FROM system.parts WHERE %s AND active FORMAT TabSeparated"
            % (tz, tz, self.mine()))
        days = set()
        for line in text.splitlines():
            first, last = line.split("\t")
            days.update(self._days(first, last))
        return sorted(d for d in days
                      if (not frm or d >= frm) and (not to or d <= to))

    @staticmethod
    def _days(first, last):
        day = datetime.date.fromisoformat(first)
        end = datetime.date.fromisoformat(last)
        while day <= end:
            yield day.isoformat()
            day += datetime.timedelta(days=1)

    def stop_merges(self):
        """No background merge: the parts stay as inserted (and so do the
        fingerprints of their days). Mutations wait too."""
        self.ch.query("SYSTEM STOP MERGES %s" % self.name)

    def start_merges(self):
        self.ch.query("SYSTEM START MERGES %s" % self.name)

    def optimize(self, timeout=20):
        """OPTIMIZE ... FINAL until each partition is one part (a merge
        running in the background can make OPTIMIZE do nothing); merges
        run only meanwhile."""
        def merged():
            self.ch.query("OPTIMIZE TABLE %s FINAL" % self.name)
            n = self.ch.scalar(
                "SELECT count() - uniqExact(partition) FROM system.parts "
                "WHERE %s AND active" % self.mine())
            return n == "0"

        self.start_merges()
        try:
            stack.wait_until(merged, timeout, what="one part per partition")
        finally:
            self.stop_merges()

    def delete(self, where, timeout=20):
        """ALTER TABLE ... DELETE WHERE where; wait until it is done.
        Merges (which run mutations) run only meanwhile."""
        self.start_merges()
        try:
            self.ch.query("ALTER TABLE %s DELETE WHERE %s"
                          % (self.name, where))
            stack.wait_until(
                lambda: self.ch.scalar(
                    "SELECT count() FROM system.mutations WHERE %s "
                    "AND is_done = 0" % self.mine())
                == "0", timeout, interval=0.05, what="the mutation")
        finally:
            self.stop_merges()

    def truncate(self):
        self.ch.query("TRUNCATE TABLE %s" % self.name)

    def recreate(self):
        """DROP TABLE and CREATE TABLE again, as conf/schema.sql has it
        (merges stopped, as the tests keep them)."""
        self.ch.query("DROP TABLE %s" % self.name)
        self.ch.query(events_ddl(self.db))
        self.stop_merges()


def server_with_database(servers, clickhouse, prefix, batch_delay):
    """A server delivering to a database of its own (named prefix and a
    random part), its events table made: yields SimpleNamespace(h, db,
    ch) and drops the database afterwards. For module-scoped fixtures."""
    db = prefix + uuid.uuid4().hex[:12]
    h = servers.httpd(batch_delay=batch_delay,
                      directives="IMChallengeDatabase %s" % db)
    stack.wait_until(lambda: h.get("readyz", timeout=2).status_code == 200,
                     30, what="readyz")
    stack.wait_until(lambda: clickhouse.scalar(
        "SELECT count() FROM system.tables WHERE database = '%s' "
        "AND name = 'events'" % db) == "1", 30, what="the events table")
    yield SimpleNamespace(h=h, db=db, ch=clickhouse)
    h.stop()
    clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


class OneConnection:
    """Reports over one connection to h (a Client: one child process);
    a context manager that closes it."""

    def __init__(self, h):
        self.client = Client(h)

    def close(self):
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Reports(OneConnection):
    """Reports over one connection, each checked against
    report_util.model over the events given."""

    def check(self, events, flt=None, keep=None, tz=None, frm=None,
              to=None):
        """The report of events in tz (default UTC), filtered by flt
        (which keep(day, site, type) mirrors), from frm to to. Returns
        the answer."""
        params = {k: v for k, v in (("tz", tz), ("from", frm), ("to", to))
                  if v}
        r = self.client.report(flt, **params)
        assert_report(r, model(events, tz=tz or "UTC", keep=keep, frm=frm,
                               to=to))
        return r


class CountingRelay:
    """A TCP relay to ClickHouse's HTTP port that counts the connections
    made through it (it changes nothing in them)."""

    def __init__(self, upstream_url):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.lock = threading.Lock()
        self.accepted = 0
        self.closing = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((stack.LOCALHOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.url = "http://%s:%d/" % self.sock.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def connections(self):
        with self.lock:
            return self.accepted

    def _accept(self):
        while not self.closing:
            try:
                down, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            up = socket.create_connection(self.upstream, timeout=10)
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closing = True
        self.sock.close()


EXCEPTION = (b"Code: 241. DB::Exception: Memory limit (for query) exceeded: "
             b"would use 9.31 GiB, maximum: 9.31 GiB\n")


def _dechunk(body):
    """The payload of a chunked HTTP body."""
    out, rest = b"", body
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


class SpoilingRelay(HttpProxy):
    """An HTTP relay to ClickHouse (faults_util.HttpProxy) that spoils the
    200 answers of queries whose SQL holds `self.target` (None: none):
    `self.how` "append" adds ClickHouse's exception text after the last
    row, "cut" cuts the last row in the middle first. `self.spoiled`
    counts the answers spoiled."""

    def __init__(self, upstream):
        super().__init__(upstream)
        self.target = None
        self.how = "append"
        self.spoiled = 0

    def _forward(self, req):
        answer = super()._forward(req)
        target = self.target
        if (answer is None or target is None or target not in req.sql
                or not answer.startswith(b"HTTP/1.1 200")):
            return answer
        head, body = answer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if any(x.lower() == b"transfer-encoding: chunked" for x in lines):
            body = _dechunk(body)
        if self.how == "cut":
            assert body.count(b"\n") >= 2, body
            last = body[:-1].rfind(b"\n") + 1
            body = body[:last + (len(body) - last) // 2]
        body += EXCEPTION
        lines = [x for x in lines if not x.lower().startswith(
            (b"transfer-encoding:", b"content-length:"))]
        lines.append(b"Content-Length: %d" % len(body))
        with self.lock:
            self.spoiled += 1
        return b"\r\n".join(lines) + b"\r\n\r\n" + body
