# Licensed under the Apache License, Version 2.0.
"""A recording HTTP relay between the module and ClickHouse.

Every request the module sends reaches ClickHouse unchanged (method, path,
query string, headers that matter, body), and ClickHouse's answer goes back
unchanged (status, body, its X-ClickHouse-* headers).  Each exchange is kept
as a dict:

    seq, start, end     order and monotonic times (seconds)
    method, path        "POST", "/" (or "/ping", ...)
    query               the raw URL query string (the statement of an
                        INSERT, and the settings)
    body                the request body, base64
    status, answer      ClickHouse's status and body (base64)
    exception_code      X-ClickHouse-Exception-Code, when it sent one

Listens on 127.0.0.1 only; uses the standard library only.
"""

import base64
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Request headers passed on to ClickHouse (hop-by-hop ones are not).
FORWARD = ("authorization", "content-type", "x-clickhouse-user",
           "x-clickhouse-key", "x-clickhouse-database", "x-clickhouse-format",
           "x-clickhouse-query-id", "accept-encoding")


def b64(data):
    return base64.b64encode(data).decode("ascii")


class RecordingRelay:
    """Relay on 127.0.0.1:<free port> to upstream (a base URL)."""

    def __init__(self, upstream, timeout=60):
        u = urlsplit(upstream)
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
        status, answer, out_headers = 502, b"relay: upstream failed", {}
        try:
            conn = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=self.timeout)
            try:
                conn.request(h.command, h.path, body=body if body or
                             h.command == "POST" else None, headers=headers)
                resp = conn.getresponse()
                status, answer = resp.status, resp.read()
                out_headers = {k: v for k, v in resp.getheaders()
                               if k.lower().startswith("x-clickhouse-")
                               or k.lower() == "content-type"}
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            answer = ("relay: %s" % e).encode()
        rec = {"seq": seq, "start": start, "end": time.monotonic(),
               "method": h.command, "path": path, "query": query,
               "body": b64(body), "status": status, "answer": b64(answer),
               "exception_code": out_headers.get("X-ClickHouse-Exception-Code")}
        with self._lock:
            self.records.append(rec)
        h.send_response(status)
        for k, v in out_headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(answer)))
        h.end_headers()
        h.wfile.write(answer)
