# Licensed under the Apache License, Version 2.0.
"""Raw HTTP for the hostile-input tests (test_hostile.py).

requests normalises what it sends (Content-Length, chunking, the path), so
the hostile cases talk to httpd over a plain socket: every byte on the wire
is the test's own.  Each exchange sends `Connection: close` and reads until
the server closes, so one answer belongs to one request.
"""

import json
import re
import socket
import time
import uuid

JSON = "application/json"
NDJSON = "application/x-ndjson"
JSON_UTF8 = "application/json; charset=utf-8"

# Words that betray SQL, ClickHouse's own messages, server internals,
# paths or credentials: what no answer of the module may hold (the ingest
# and hostile suites share it).
LEAKS = re.compile(r"DB::|Code: \d|e\.displayText|clickhouse|\bSELECT\b|"
                   r"\bINSERT\b|(?-i:\bFORMAT\b)|JSONEachRow|/tmp/|/var/|/etc/|"
                   r"\.seg\b|spool/|root:", re.IGNORECASE)


def new_id():
    return str(uuid.uuid4())


def event(site=None, cid=None, kind="serve", when="2026-11-28T12:00:00Z",
          extra=""):
    """One event's JSON text; extra is appended inside the object."""
    return ('{"time":"%s","type":"%s","correlation_id":"%s","site_id":"%s"%s}'
            % (when, kind, cid or new_id(), site or new_id(), extra))


def event_with(**fields):
    """A valid event as a dict, with some members replaced (or removed
    when given the value Ellipsis)."""
    ev = {"time": "2026-11-28T12:00:00Z", "type": "serve",
          "correlation_id": new_id(), "site_id": new_id()}
    for k, v in fields.items():
        if v is Ellipsis:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


class Answer:
    """A parsed HTTP answer; status None when the server sent nothing."""

    def __init__(self, raw):
        self.raw = raw
        self.status = None
        self.headers = {}
        self.body = b""
        head, sep, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0]) if raw else None
        if m and sep:
            self.status = int(m.group(1))
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                self.headers[name.strip().lower().decode("latin-1")] = \
                    value.strip().decode("latin-1")
            self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Answer %s %r>" % (self.status, self.raw[:300])


def _read_all(sock, deadline):
    out = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no complete answer in time; got %r"
                                 % out[:300])
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return out
        if not data:
            return out
        out += data


def exchange(h, data, pieces=(), gap=0.0, half_close=True, timeout=20):
    """Send data (then each of pieces, gap seconds apart) to httpd h and
    read its answer until it closes the connection."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((h.host, h.port), timeout=timeout) as s:
        try:
            s.sendall(data)
            for piece in pieces:
                time.sleep(gap)
                s.sendall(piece)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed; read what it sent
        return Answer(_read_all(s, deadline))


def request(method, path, body=b"", headers=(), content_type=JSON,
            length="auto", version=b"HTTP/1.1"):
    """The bytes of one request.  length: "auto" (the body's), None (no
    Content-Length header) or the header's literal value."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = [method.encode() + b" " + (path.encode() if isinstance(path, str)
                                       else path) + b" " + version,
             b"Host: 127.0.0.1", b"Connection: close"]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type.encode())
    if length == "auto":
        lines.append(b"Content-Length: %d" % len(body))
    elif length is not None:
        lines.append(b"Content-Length: " + length)
    lines += [x if isinstance(x, bytes) else x.encode() for x in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(chunks, last=b"0\r\n\r\n"):
    """A chunked body of the given chunks (bytes), then `last`."""
    out = b""
    for c in chunks:
        out += b"%x\r\n" % len(c) + c + b"\r\n"
    return out + last


def post(h, body, content_type=JSON, path="/api/event", **kw):
    """POST body with an honest Content-Length over a raw socket.  With
    ?wait=1 the socket is not half-closed: the module takes a client that
    closes its side as gone and stops waiting (202, not 201)."""
    if "wait=1" in path:
        kw.setdefault("half_close", False)
    return exchange(h, request("POST", path, body, content_type=content_type),
                    **kw)


def assert_4xx(ans, *statuses):
    """ans is a client error (one of statuses, if given) that leaks
    nothing; its JSON body when it has one."""
    assert ans.status is not None, "no answer: %r" % ans
    assert 400 <= ans.status < 500, ans
    if statuses:
        assert ans.status in statuses, ans
    assert not LEAKS.search(ans.text), ans
    if ans.headers.get("content-type") == JSON_UTF8 and ans.body:
        body = ans.json()
        assert isinstance(body, dict) and ("error" in body
                                           or "errors" in body), body
        return body
    return None


def assert_rejected(ans, field=None, index=0, status=400):
    """A module rejection of event `index` (None: any), naming `field`
    (None: the whole event); returns the error message."""
    body = assert_4xx(ans, status)
    assert body is not None, ans
    assert body["status"] == "rejected", body
    err = body["errors"][0]
    assert isinstance(err["index"], int), body
    assert index is None or err["index"] == index, body
    if field is None:
        assert "field" not in err, body
    else:
        assert err.get("field") == field, body
    assert isinstance(err["error"], str) and err["error"].strip(), body
    return err["error"]


def stored_raw(ch, site, db="imchallenge"):
    """The raw texts stored for a site, oldest correlation id first."""
    text = ch.query("SELECT hex(raw) FROM %s.events WHERE site_id = "
                    "toUUID('%s') ORDER BY correlation_id FORMAT TSV"
                    % (db, site))
    return [bytes.fromhex(line).decode("utf-8")
            for line in text.split() if line]


def stored_count(ch, site, db="imchallenge"):
    return int(ch.scalar("SELECT count() FROM %s.events WHERE site_id = "
                         "toUUID('%s')" % (db, site)))


def children_connected_to(h, port):
    """Children of h holding an established connection to port (a relay
    in front of ClickHouse): those with a request in ClickHouse."""
    import stack

    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if (int(fields[2].split(":")[1], 16) == port
                    and fields[3] == "01"):  # ESTABLISHED
                inodes.add(fields[9])
    return stack.socket_holders(h.children(), inodes)
