# Licensed under the Apache License, Version 2.0.
"""Helpers for the tests of the report's cache of days.

- `Client`: reports over one kept-alive HTTP connection, so that they all
  reach the same httpd child process (`serving_child()` tells which);
- `Table`: the events table of a database, written directly (each INSERT
  makes one part per partition: a day), merged, mutated and truncated, with the days
  its parts cover as the module computes them;
- events: `new_id()`, `at()`, `procedures()`, `days()`, `random_batch()`;
- `Reports`: reports over a `Client`, each compared with report_util.model;
- `random_filter()`: a random filter of the report's grammar with the
  predicate that mirrors it (for model's keep), `random_case()` a random
  report (filter, zone, from/to, JSON or CSV), `check_case()` its answer
  compared with the model;
- `days_metric()`: imchallenge_report_day_lookups_total by source;
  `cache_metrics()` that and the shared cache's other series;
- `PID_LOG`, `answering_pids()`: an access log of the pid answering each
  request, by client port;
- `CountingRelay`: a TCP relay to ClickHouse counting its connections;
- `SpoilingRelay`: an HTTP relay to ClickHouse that writes an exception
  into the 200 answer of chosen queries, as ClickHouse does when a query
  fails after its first rows went out;
- `GatedRelay`: an HTTP relay to ClickHouse that holds chosen queries until
  told to let them through (a ClickHouse slow on them).
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
from observe_util import connection_owner, parse_prometheus, sample
from report_util import (assert_report, csv_lines, event, instant, model,
                         report_path)

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
        self.port = self.conn.sock.getsockname()[1]  # the server's %{remote}p

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


def serving_child(h, client):
    """The pid of the child of h that holds client's connection (it has
    accepted it: call this once a request of client was answered)."""
    return stack.wait_until(
        lambda: connection_owner(h.port, SimpleNamespace(c=client.conn),
                                 h.children()),
        5, interval=0.02, what="the child holding the connection")


class CacheMetrics:
    """The report cache's series of one GET /metrics.

    `days` is imchallenge_report_day_lookups_total by source, as
    days_metric(); `cells()`, `size()`, `bytes()` and `evictions()` read
    the shared cache's series, failing with their name when /metrics has
    none.
    """

    def __init__(self, fams):
        self.fams = fams
        self.days = self._by_source("imchallenge_report_day_lookups_total")

    def _series(self, name, kind, **labels):
        fam = self.fams.get(name)
        assert fam is not None, "/metrics has no %s" % name
        assert fam.type == kind, (name, fam.type)
        return int(sample(self.fams, name, **labels))

    def _by_source(self, name):
        return tuple(self._series(name, "counter", source=s)
                     for s in ("cache", "clickhouse"))

    def cells(self):
        """(cache, clickhouse): imchallenge_report_cells_total by source."""
        return self._by_source("imchallenge_report_cells_total")

    def size(self):
        return self._series("imchallenge_report_cache_size_bytes", "gauge")

    def bytes(self):
        return self._series("imchallenge_report_cache_bytes", "gauge")

    def evictions(self):
        return self._series("imchallenge_report_cache_evictions_total",
                            "counter")


def cache_metrics(h):
    """CacheMetrics of h, read on a connection of its own (it does not
    touch any cache)."""
    r = requests.get(h.url + "metrics", timeout=10,
                     headers={"Connection": "close"},
                     proxies={"http": None, "https": None})
    assert r.status_code == 200, r.text
    return CacheMetrics(parse_prometheus(r.text))


def days_metric(h):
    """(cache, clickhouse): imchallenge_report_day_lookups_total by source,
    read on a connection of its own (it does not touch any cache)."""
    return cache_metrics(h).days


def delta(before, after):
    """{"cache": n, "clickhouse": m}: what two days_metric() (or
    CacheMetrics.cells()) differ by."""
    return {"cache": after[0] - before[0],
            "clickhouse": after[1] - before[1]}


# An access log (logs/pid.log, under the server's root) of the pid that
# answered each request and the client's port: which child answered whom.
PID_LOG = ('LogFormat "%P %{remote}p %>s \\"%r\\"" imcpid\n'
           "CustomLog logs/pid.log imcpid")


def answering_pids(h, port, requests_=1, timeout=5):
    """The pids that answered the requests of the client on port (its
    Client.port), from PID_LOG; waits until requests_ lines are there (a
    line is written once its answer went out)."""
    path = h.workdir / "logs" / "pid.log"

    def lines():
        try:
            text = path.read_text()
        except OSError:
            return None
        found = [line.split() for line in text.splitlines()]
        found = [f for f in found if len(f) > 1 and f[1] == str(port)]
        return found if len(found) >= requests_ else None

    found = stack.wait_until(lines, timeout, interval=0.02,
                             what="%d lines of port %d in %s"
                             % (requests_, port, path))
    return [int(f[0]) for f in found]


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


def new_id():
    return str(uuid.uuid4())


def at(day, clock, type_, cid, site):
    return event("%sT%sZ" % (day, clock), type_, cid, site)


def procedures(day, site, served, solved, clock="10:00:00"):
    """served procedures of site on day, solved of them solved, and the
    first serve sent twice."""
    out = []
    for i in range(served):
        cid = new_id()
        out.append(at(day, clock, "serve", cid, site))
        if i < solved:
            out.append(at(day, clock, "solve", cid, site))
    return out + out[:1]


def days(first, n):
    """n consecutive days (YYYY-MM-DD) from first."""
    d = datetime.date.fromisoformat(first)
    return [(d + datetime.timedelta(days=i)).isoformat() for i in range(n)]


KATHMANDU = "Asia/Kathmandu"  # UTC+05:45
ZONES = ["UTC", KATHMANDU, "America/New_York"]
# Times near midnight in UTC, in Kathmandu (18:15 UTC) and in New York
# (05:00 UTC in winter).
CLOCKS = ["00:00:00", "00:00:01", "00:30:00", "04:59:59", "05:00:00",
          "05:00:01", "12:00:00", "18:14:59", "18:15:00", "18:15:01",
          "23:00:00", "23:59:59"]


def random_batch(rnd, sites, D, events):
    """1 to 6 events: new procedures, solves of earlier serves (late or
    not), solves without serves, exact duplicates of earlier events."""
    out = []
    for _ in range(rnd.randint(1, 6)):
        roll = rnd.random()
        if events and roll < 0.2:
            out.append(dict(rnd.choice(events)))
            continue
        day, clock = rnd.choice(D), rnd.choice(CLOCKS)
        if events and roll < 0.5:
            old = rnd.choice(events)
            out.append(at(day, clock, "solve", old["correlation_id"],
                          old["site_id"]))
        else:
            out.append(at(day, clock, rnd.choice(["serve", "serve", "solve"]),
                          new_id(), rnd.choice(sites)))
    return out


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


# ---------------------------------------------------------------- filters


def uuid_order(u):
    """The key ClickHouse orders UUIDs by (site_id < '...'): the last 16
    hex digits first, then the first 16, each as an unsigned number; not
    the order of their texts."""
    h = u.replace("-", "").lower()
    return int(h[16:], 16), int(h[:16], 16)


_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
            "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b}
# `type` is an Enum8 ('serve' = 1, 'solve' = 2): the order of the texts.
_KEY = {"site_id": uuid_order, "type": lambda x: x, "day": lambda x: x}


def _literal(rnd, column, sites, days_):
    if column == "site_id":
        if rnd.random() < 0.75:
            site = rnd.choice(sites)
        else:  # nobody's: splits the sites by order, matches none
            site = new_id()
        return site.upper() if rnd.random() < 0.2 else site
    if column == "type":
        return rnd.choice(("serve", "solve"))
    first = datetime.date.fromisoformat(min(days_))
    last = datetime.date.fromisoformat(max(days_))
    roll = rnd.random()
    if roll < 0.1:
        return (first - datetime.timedelta(days=1)).isoformat()
    if roll < 0.2:
        return (last + datetime.timedelta(days=1)).isoformat()
    return rnd.choice(days_)


def _node(rnd, sites, days_, depth):
    """A random parse tree: ("cmp", column, op, literal), ("in", column,
    [literals]), ("not", node), ("and" | "or", [nodes])."""
    roll = rnd.random()
    if depth <= 0 or roll < 0.4:
        column = rnd.choice(("site_id", "site_id", "type", "day", "day"))
        if rnd.random() < 0.25:
            return ("in", column, [_literal(rnd, column, sites, days_)
                                   for _ in range(rnd.randint(1, 3))])
        return ("cmp", column, rnd.choice(sorted(_COMPARE)),
                _literal(rnd, column, sites, days_))
    if roll < 0.55:
        return ("not", _node(rnd, sites, days_, depth - 1))
    return (rnd.choice(("and", "or")),
            [_node(rnd, sites, days_, depth - 1)
             for _ in range(rnd.randint(2, 3))])


def _holds(node, day, site, type_):
    kind = node[0]
    if kind in ("cmp", "in"):
        column = node[1]
        key = _KEY[column]
        value = key({"day": day, "site_id": site, "type": type_}[column])
        if kind == "in":
            return any(value == key(x.lower()) for x in node[2])
        return _COMPARE[node[2]](value, key(node[3].lower()))
    if kind == "not":
        return not _holds(node[1], day, site, type_)
    parts = (_holds(x, day, site, type_) for x in node[1])
    return all(parts) if kind == "and" else any(parts)


def _keyword(rnd, word):
    return rnd.choice((word, word.lower(), word.capitalize()))


def _render(rnd, node):
    """node as filter text: keywords in any case, free white space, the
    aliases of day, <> for !=; parentheses where precedence needs them
    (NOT over AND over OR), and some more."""
    sp = lambda: rnd.choice(("", " ", " ", "  ", "\t", "\n"))  # noqa: E731
    kind = node[0]
    if kind in ("cmp", "in"):
        column = node[1]
        if column == "day":
            column = rnd.choice(("day", "day", "time", "date"))
        column = _keyword(rnd, column)
        if kind == "in":
            items = ("," + sp()).join("'%s'" % x for x in node[2])
            text = "%s %s%s(%s%s)" % (column, _keyword(rnd, "IN"), sp(),
                                      items, sp())
        else:
            text = "%s%s%s%s'%s'" % (column, sp(), node[2], sp(), node[3])
        return "(%s)" % text if rnd.random() < 0.15 else text
    if kind == "not":
        inner = _render(rnd, node[1])
        if node[1][0] in ("and", "or"):
            inner = "(%s)" % inner
        return "%s %s" % (_keyword(rnd, "NOT"), inner)
    parts = []
    for x in node[1]:
        inner = _render(rnd, x)
        if x[0] == "or" or (x[0] == "and" and (kind == "or"
                                               or rnd.random() < 0.5)):
            inner = "(%s)" % inner
        parts.append(inner)
    return (" %s " % _keyword(rnd, kind.upper())).join(parts)


def random_filter(rnd, sites, days_, depth=3):
    """(text, keep): a random filter of the grammar of imc_filter.h over
    sites (and UUIDs of nobody), types and days_ (and the days next to
    them), and keep(day, site, type) as report_util.model takes it."""
    node = _node(rnd, sites, days_, depth)
    return _render(rnd, node), lambda d, s, ty: _holds(node, d, s, ty)


def random_case(rnd, sites, days_, zones=None, filtered=0.8):
    """A random report: a filter (with probability filtered), a zone of
    zones (default ZONES), perhaps from and to (from after to now and
    then), JSON or CSV; a dict for check_case()."""
    case = {"flt": None, "keep": None, "tz": rnd.choice(zones or ZONES),
            "frm": None, "to": None, "fmt": rnd.choice(("json", "csv"))}
    if rnd.random() < filtered:
        case["flt"], case["keep"] = random_filter(rnd, sites, days_)
    if rnd.random() < 0.5:
        case["frm"] = rnd.choice(days_)
    if rnd.random() < 0.5:
        case["to"] = rnd.choice(days_)
    return case


def case_params(case):
    """The query parameters of a case (a dict as random_case makes)."""
    params = {"tz": case.get("tz"), "from": case.get("frm"),
              "to": case.get("to")}
    if case.get("fmt") == "csv":
        params["format"] = "csv"
    return {k: v for k, v in params.items() if v}


def check_case(get, events, case):
    """get(flt, **params) (Client.report, or report_util.get_report bound
    to a server) answers case exactly as report_util.model counts
    events, as JSON or CSV. Returns the model's rows."""
    rows = model(events, tz=case.get("tz") or "UTC", keep=case.get("keep"),
                 frm=case.get("frm"), to=case.get("to"))
    r = get(case.get("flt"), **case_params(case))
    if case.get("fmt") == "csv":
        assert r.status_code == 200, (r.status_code, r.text, case)
        assert r.headers["Content-Type"].startswith("text/csv"), \
            r.headers["Content-Type"]
        assert r.text.splitlines() == csv_lines(rows), case
    else:
        try:
            assert_report(r, rows)
        except AssertionError as e:
            raise AssertionError("%s\ncase: %r\nanswer: %s\nmodel: %s" % (
                e, case, r.text[:2000], json.dumps(rows)[:2000])) from None
    return rows


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


class GatedRelay(HttpProxy):
    """An HTTP relay to ClickHouse (faults_util.HttpProxy) that holds the
    queries whose SQL holds `target` while hold() is in force, until
    release_held() (then they go on to ClickHouse, late: a ClickHouse slow
    on them). `held` counts the queries held so far."""

    def __init__(self, upstream):
        self.target = None
        self.held = 0
        self.gate = threading.Event()
        self.gate.set()
        super().__init__(upstream, policy=self._policy)

    def hold(self, target):
        self.target = target
        self.gate.clear()

    def release_held(self):
        self.target = None
        self.gate.set()

    def close(self):
        self.release_held()
        super().close()

    def _policy(self, req):
        target = self.target
        if target is not None and target in req.sql:
            with self.lock:
                self.held += 1
            self.gate.wait(60)
        return "forward"
