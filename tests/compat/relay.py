# Licensed under the Apache License, Version 2.0.
"""A recording HTTP relay between the module and ClickHouse.

Every request the module sends reaches ClickHouse unchanged (method, path,
query string, headers that matter, body), and ClickHouse's answer goes back
unchanged (status, body, its X-ClickHouse-* headers), unless the relay poses
as another release (below).  Each exchange is kept as a dict:

    seq, start, end     order and monotonic times (seconds)
    method, path        "POST", "/" (or "/ping", ...)
    query               the raw URL query string (the statement of an
                        INSERT, and the settings)
    body                the request body, base64
    status, answer      ClickHouse's status and body (base64)
    exception_code      X-ClickHouse-Exception-Code, when it sent one
    posed               true when the relay answered itself (below)

A relay may also pose as another release: pose(sql) answers a statement
itself, as (status, body), or returns None to pass it on; strip names URL
parameters taken off before a request is passed on (settings the upstream
release does not know).  The record keeps what the module sent, with
"posed": true on the exchanges the relay answered itself.

Listens on 127.0.0.1 only; uses the standard library only.
"""

import base64
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

# Request headers passed on to ClickHouse (hop-by-hop ones are not).
FORWARD = ("authorization", "content-type", "x-clickhouse-user",
           "x-clickhouse-key", "x-clickhouse-database", "x-clickhouse-format",
           "x-clickhouse-query-id", "accept-encoding")


def b64(data):
    return base64.b64encode(data).decode("ascii")


class RecordingRelay:
    """Relay on 127.0.0.1:<free port> to upstream (a base URL)."""

    def __init__(self, upstream, timeout=60, pose=None, strip=()):
        u = urlsplit(upstream)
        self.pose = pose
        self.strip = frozenset(strip)
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.timeout = timeout
        self.records = []
        self._lock = threading.Lock()
        self._seq = 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as curl expects

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                relay._exchange(self)

            def do_POST(self):
                relay._exchange(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="relay", daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d/" % self.port

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self):
        """The exchanges so far, in the order they began."""
        with self._lock:
            return sorted(self.records, key=lambda r: r["seq"])

    def _exchange(self, h):
        with self._lock:
            self._seq += 1
            seq = self._seq
        start = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in FORWARD}
        out_headers = {}
        params = parse_qsl(query, keep_blank_values=True)
        sql = dict(params).get("query") or body.decode("utf-8", "replace")
        posed = self.pose(sql) if self.pose else None
        target = h.path
        if self.strip and any(k in self.strip for k, _ in params):
            target = path + "?" + urlencode(
                [(k, v) for k, v in params if k not in self.strip],
                quote_via=quote)
        if posed is not None:
            status, answer = posed[0], posed[1].encode("utf-8")
        else:
            status, answer, out_headers = self._forward(h, target, body,
                                                        headers)
        rec = {"seq": seq, "start": start, "end": time.monotonic(),
               "method": h.command, "path": path, "query": query,
               "body": b64(body), "status": status, "answer": b64(answer),
               "exception_code":
                   out_headers.get("X-ClickHouse-Exception-Code"),
               "posed": posed is not None}
        with self._lock:
            self.records.append(rec)
        h.send_response(status)
        for k, v in out_headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(answer)))
        h.end_headers()
        h.wfile.write(answer)

    def _forward(self, h, target, body, headers):
        """ClickHouse's (status, answer, X-ClickHouse-* headers)."""
        try:
            conn = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=self.timeout)
            try:
                conn.request(h.command, target, body=body if body or
                             h.command == "POST" else None, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read(), {
                    k: v for k, v in resp.getheaders()
                    if k.lower().startswith("x-clickhouse-")
                    or k.lower() == "content-type"}
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            return 502, ("relay: upstream failed: %s" % e).encode(), {}
