# Licensed under the Apache License, Version 2.0.
"""Helpers for the fault-injection tests (test_faults.py).

LoadGen     client threads that post events (singles, arrays, NDJSON, the
            GET form) with unique correlation ids and record, per event,
            whether it was acknowledged (202/201), rejected (an HTTP error)
            or unknown (connection error or timeout: it may or may not be
            stored).
HttpProxy   a loopback HTTP proxy in front of ClickHouse that misbehaves on
            purpose: forwards an INSERT and drops the answer (an ambiguous
            commit), answers 5xx, hangs, resets, or fakes the answers of a
            newer ClickHouse.  Every request it sees is recorded.
verify()    waits until every acknowledged event is stored, then checks
            acknowledged <= stored <= sent, nothing stored from a rejected
            request, the report totals, and prints the figures.
deliverer_pid(), serving_children()
            which httpd child delivers (holds the spool's lock), which
            ones hold client connections: the children worth killing.
tmpfs()     a tiny tmpfs for the spool, always unmounted.
"""

import contextlib
import json
import random
import re
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from urllib.parse import parse_qs, quote, urlsplit

import stack

JSON = "application/json"
NDJSON = "application/x-ndjson"
DAY = "2026-11-28"


def new_id():
    return str(uuid.uuid4())


# ------------------------------------------------------------------ load


class LoadGen:
    """Client threads posting events for one site until stopped.

    Every event is a unique (correlation_id, type) pair: a procedure's
    serve, and for about half of them a later solve with the same id.
    Events carry "seq": "<thread>-<n>" so that delivery order can be told.
    """

    KINDS = ("one", "one", "array", "nd", "get")

    def __init__(self, h, site=None, threads=4, max_requests=4000, pause=0.01,
                 timeout=(3, 15), seed=None, pauses=None):
        self.h = h
        self.site = site or new_id()
        self.nthreads = len(pauses) if pauses else threads
        self.max_requests = max_requests
        self.pauses = list(pauses or [pause] * threads)  # per thread
        self.timeout = timeout
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.lock = threading.Lock()
        self.sent = {}  # (cid, type) -> seq
        self.acked = set()
        self.ack_time = {}  # (cid, type) -> monotonic time of the 202
        self.rejected = set()
        self.unknown = set()
        self.statuses = Counter()
        self.errors = Counter()  # exception class names
        self.anomalies = []  # answers that break the contract
        self._stop = threading.Event()
        self._threads = []
        self._count = Counter()  # events made per thread
        self.started_at = self.stopped_at = None

    # -- life cycle

    def start(self):
        self.started_at = time.monotonic()
        for k in range(self.nthreads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True,
                                 name="load-%d" % k)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout=60):
        """Ask the threads to stop and wait for them."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, "load threads still running: %s" % alive
        self.stopped_at = time.monotonic()
        return self

    def wait_requests(self, n, timeout=30):
        """Wait until n requests were answered (any outcome)."""
        stack.wait_until(lambda: self.requests() >= n, timeout, interval=0.02,
                         what="%d load requests" % n)

    def wait_acked(self, n, timeout=30):
        """Wait until n events more than now are acknowledged."""
        base = len(self.acked)
        stack.wait_until(lambda: len(self.acked) >= base + n, timeout,
                         interval=0.02, what="%d more acknowledged events" % n)

    def requests(self):
        with self.lock:
            return sum(self.statuses.values()) + sum(self.errors.values())

    # -- one client

    def _event(self, cid, kind, seq, second):
        return ('{"time":"%sT12:%02d:%02dZ","type":"%s","correlation_id":"%s",'
                '"site_id":"%s","seq":"%s"}'
                % (DAY, second // 60 % 60, second % 60, kind, cid, self.site,
                   seq))

    def _batch(self, rnd, k, n, served):
        """n events: new serves, and solves of earlier procedures."""
        pairs, texts = [], []
        for _ in range(n):
            if served and rnd.random() < 0.4:
                cid, kind = served.pop(rnd.randrange(len(served))), "solve"
            else:
                cid, kind = new_id(), "serve"
                if rnd.random() < 0.5:
                    served.append(cid)
            self._count[k] += 1
            seq = "%d-%d" % (k, self._count[k])
            pairs.append(((cid, kind), seq))
            texts.append(self._event(cid, kind, seq, rnd.randrange(3600)))
        return pairs, texts

    def _send(self, s, kind, texts):
        url = self.h.url + "api/event"
        if kind == "get":
            return s.get(url + "/" + quote(texts[0], safe=""),
                         timeout=self.timeout)
        if kind == "nd":
            body, ctype = "".join(t + "\n" for t in texts), NDJSON
        elif kind == "array":
            body, ctype = "[" + ",".join(texts) + "]", JSON
        else:
            body, ctype = texts[0], JSON
        return s.post(url, data=body.encode(), timeout=self.timeout,
                      headers={"Content-Type": ctype})

    def _record(self, pairs, r, n):
        keys = [p for p, _ in pairs]
        with self.lock:
            for key, seq in pairs:
                self.sent[key] = seq
            if isinstance(r, Exception):
                self.errors[type(r).__name__] += 1
                self.unknown.update(keys)
                return
            self.statuses[r.status_code] += 1
            if r.status_code in (201, 202):
                body = r.json()
                if body.get("accepted") != n:
                    self.anomalies.append((r.status_code, r.text[:200]))
                self.acked.update(keys)
                now = time.monotonic()
                self.ack_time.update((key, now) for key in keys)
                return
            if r.status_code == 503 and not r.headers.get("Retry-After"):
                self.anomalies.append(("503 without Retry-After", r.text[:200]))
            if r.status_code < 400:
                self.anomalies.append((r.status_code, r.text[:200]))
            self.rejected.update(keys)

    def _run(self, k):
        rnd = random.Random(self.seed * 31 + k)
        s = stack.http_session()
        served = []
        try:
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    break
                kind = rnd.choice(self.KINDS)
                n = 1 if kind in ("one", "get") else rnd.randint(2, 5)
                pairs, texts = self._batch(rnd, k, n, served)
                try:
                    r = self._send(s, kind, texts)
                except Exception as e:  # noqa: BLE001 - recorded as unknown
                    r = e
                    s.close()
                    s = stack.http_session()
                self._record(pairs, r, n)
                if self.pauses[k]:
                    time.sleep(self.pauses[k])
        finally:
            s.close()

    # -- figures

    def expected_report(self, pairs=None):
        """(served, solved): distinct procedures among pairs (acked)."""
        pairs = self.acked if pairs is None else pairs
        served = {c for c, t in pairs if t == "serve"}
        solved = {c for c, t in pairs if t == "solve"}
        return len(served), len(solved)

    def summary(self):
        return ("requests %d (%s; errors %s), events sent %d, acknowledged "
                "%d, rejected %d, unknown %d"
                % (self.requests(), dict(sorted(self.statuses.items())),
                   dict(self.errors), len(self.sent), len(self.acked),
                   len(self.rejected), len(self.unknown)))


# ------------------------------------------------------------------ store


def stored_pairs(ch, site, db="imchallenge"):
    """Counter of (correlation_id, type) -> rows stored for site."""
    text = ch.query("SELECT toString(correlation_id), toString(type), count() "
                    "FROM %s.events WHERE site_id = toUUID('%s') "
                    "GROUP BY correlation_id, type FORMAT TSV" % (db, site))
    out = Counter()
    for line in text.splitlines():
        if line:
            cid, kind, n = line.split("\t")
            out[(cid, kind)] = int(n)
    return out


def report_totals(h, site):
    """The report totals for one site (all days)."""
    flt = quote("site_id='%s'" % site, safe="")
    r = h.get("api/report/" + flt, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    t = r.json()["totals"]
    return t["served"], t["solved"]


def status(h):
    r = h.get("api/status", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def metric(h, name, **labels):
    """One sample of /metrics (0 when absent)."""
    r = h.get("metrics", timeout=10)
    assert r.status_code == 200, r.status_code
    want = name
    if labels:
        want += "{" + ",".join('%s="%s"' % kv for kv in
                               sorted(labels.items())) + "}"
    for line in r.text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def poll(what, predicate, timeout=30, interval=0.1):
    return stack.wait_until(predicate, timeout, interval=interval, what=what)


def verify(load, ch, h, name, db="imchallenge", timeout=90, since=None,
           report=True):
    """Drain and check; print the figures. Returns a dict of them.

    Waits until every acknowledged event is stored (the drain time is
    measured from `since`, default now), then asserts acknowledged <=
    stored, stored <= sent, stored and rejected disjoint, and the report
    totals equal the distinct stored procedures (= the acknowledged ones
    when nothing of unknown fate was stored).
    """
    assert not load.anomalies, load.anomalies[:5]
    t0 = since if since is not None else time.monotonic()
    last = [Counter()]

    def drained():
        try:
            last[0] = stored_pairs(ch, load.site, db)
        except stack.StackError:  # e.g. the schema is not there yet
            return False
        return load.acked <= set(last[0])

    try:
        poll("acknowledged events in ClickHouse", drained, timeout, 0.25)
    except stack.StackError:
        missing = load.acked - set(last[0])
        raise AssertionError("%s: %d of %d acknowledged events missing after "
                             "%d s, e.g. %s" % (name, len(missing),
                                                len(load.acked), timeout,
                                                sorted(missing)[:3])) from None
    drain = time.monotonic() - t0
    stored = last[0]
    keys = set(stored)
    rows = sum(stored.values())
    figures = {
        "acknowledged": len(load.acked), "stored": len(keys),
        "missing": len(load.acked - keys), "rows": rows,
        "duplicates": rows - len(keys), "unknown": len(load.unknown),
        "unknown_stored": len(keys & load.unknown),
        "rejected": len(load.rejected), "drain_s": round(drain, 2),
    }
    print("\n[%s] %s\n[%s] acknowledged %d, stored %d, missing %d, "
          "duplicates in the raw table %d, unknown fate %d (stored %d), "
          "rejected %d, drain %.2f s"
          % (name, load.summary(), name, figures["acknowledged"],
             figures["stored"], figures["missing"], figures["duplicates"],
             figures["unknown"], figures["unknown_stored"],
             figures["rejected"], drain))
    assert keys <= set(load.sent), "stored events that were never sent"
    assert not keys & load.rejected, (
        "events of rejected requests were stored: %s"
        % sorted(keys & load.rejected)[:3])
    assert keys - load.acked <= load.unknown
    if report:
        expected = load.expected_report(keys)
        got = report_totals(h, load.site)
        assert got == expected, (got, expected)
        if not keys - load.acked:
            assert got == load.expected_report()
        figures["report"] = got
    return figures


# ------------------------------------------------------------------ proxy


class ProxyRequest:
    """One HTTP request as the proxy saw it."""

    def __init__(self, index, method, target, headers, body):
        self.index = index
        self.method = method
        self.target = target
        self.headers = headers  # list of (name, value)
        self.body = body
        parts = urlsplit(target)
        self.path = parts.path
        self.params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        sql = self.params.get("query", "")
        self.is_insert = sql.upper().startswith("INSERT")
        self.token = self.params.get("insert_deduplication_token")
        self.sql = sql if sql else body.decode("utf-8", "replace")
        self.action = None
        self.when = time.monotonic()

    def rows(self):
        """Non-empty lines of an INSERT body, parsed."""
        return [json.loads(x) for x in self.body.decode().split("\n")
                if x.strip()]

    def __repr__(self):
        return "<%s %s %s insert=%s action=%s>" % (
            self.index, self.method, self.path, self.is_insert, self.action)


def _recv_until(sock, buf, marker, limit=1 << 20):
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > limit:
            return None
    return buf


class HttpProxy:
    """Loopback HTTP proxy for ClickHouse's HTTP interface.

    policy(req) decides, per request, one of
      "forward"   pass it on, relay the answer
      "drop"      pass it on, read ClickHouse's answer, then close the
                  client connection without answering (an ambiguous commit)
      "reset"     close without passing it on
      "hang"      hold the connection open without answering until the
                  proxy is released or closed
      ("answer", status, body)   answer itself, never passing it on
    rewrite(req) may return new (target, body) to send upstream.
    Every answer carries Connection: close, so each request comes on a
    fresh connection (no client-side retry of a reused one).
    """

    def __init__(self, upstream, policy=None, rewrite=None):
        parts = urlsplit(upstream if isinstance(upstream, str)
                         else upstream.url)
        self.upstream = (parts.hostname, parts.port)
        self.policy = policy or (lambda req: "forward")
        self.rewrite = rewrite
        self.lock = threading.Lock()
        self.requests = []
        self._release = threading.Event()
        self._closing = threading.Event()
        self._conns = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((stack.LOCALHOST, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def url(self):
        return "http://%s:%d/" % (stack.LOCALHOST, self.port)

    def inserts(self):
        with self.lock:
            return [r for r in self.requests if r.is_insert]

    def release(self):
        """Let hung connections go (they are closed)."""
        self._release.set()

    def close(self):
        self._closing.set()
        self._release.set()
        self._accepter.join(5)
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals

    def _accept(self):
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _read_request(self, conn):
        buf = _recv_until(conn, b"", b"\r\n\r\n")
        if buf is None:
            return None
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        hmap = {k.lower(): v for k, v in headers}
        length = int(hmap.get("content-length", "0"))
        if hmap.get("expect", "").lower() == "100-continue" and length:
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        with self.lock:
            req = ProxyRequest(len(self.requests), method, target, headers,
                               rest[:length])
            self.requests.append(req)
        return req

    def _forward(self, req):
        """Send req upstream; the whole answer with Connection: close."""
        target, body = req.target, req.body
        if self.rewrite:
            target, body = self.rewrite(req) or (target, body)
        skip = ("connection", "expect", "keep-alive", "content-length")
        head = ["%s %s HTTP/1.1" % (req.method, target)]
        head += ["%s: %s" % (k, v) for k, v in req.headers
                 if k.lower() not in skip]
        head += ["Content-Length: %d" % len(body), "Connection: close"]
        with socket.create_connection(self.upstream, timeout=60) as up:
            up.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
                       + body)
            data = b""
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                data += chunk
        if b"\r\n\r\n" not in data:
            return None
        rhead, rbody = data.split(b"\r\n\r\n", 1)
        lines = [x for x in rhead.decode("latin-1").split("\r\n")
                 if not x.lower().startswith(("connection:", "keep-alive:"))]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + rbody

    def _serve(self, conn):
        try:
            conn.settimeout(60)
            req = self._read_request(conn)
            if req is None:
                return
            action = self.policy(req)
            req.action = action
            if action == "hang":
                while not self._release.wait(0.2):
                    pass
                return
            if action == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            if isinstance(action, tuple):
                _, code, text = action
                body = text.encode()
                conn.sendall(("HTTP/1.1 %d X\r\nContent-Type: text/plain; "
                              "charset=UTF-8\r\nContent-Length: %d\r\n"
                              "Connection: close\r\n\r\n"
                              % (code, len(body))).encode() + body)
                return
            answer = self._forward(req)
            req.answer = answer
            if action == "drop" or answer is None:
                return
            conn.sendall(answer)
        except OSError:
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()


def answered_status(req):
    """HTTP status of the upstream answer the proxy got for req."""
    answer = getattr(req, "answer", None)
    if not answer:
        return None
    m = re.match(rb"HTTP/1\.[01] (\d+)", answer)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------ httpd


def deliverer_pid(h):
    """The pid holding the spool's deliverer lock (an flock), or None."""
    try:
        ino = (h.spool_dir / ".deliver.lock").stat().st_ino
    except OSError:
        return None
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if (fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"]
                    and int(fields[5].rsplit(":", 1)[1]) == ino):
                return int(fields[4])
    return None


def serving_children(h):
    """Children of h holding an established client connection."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            if port == h.port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    return stack.socket_holders(h.children(), inodes)


# ------------------------------------------------------------------ tmpfs


@contextlib.contextmanager
def tmpfs(path, size="1m"):
    """A tmpfs of size mounted on path (created), unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size,
                    "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
