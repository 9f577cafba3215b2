# Licensed under the Apache License, Version 2.0.
"""Event ingestion (SPEC section 4) against a real httpd and ClickHouse.

Every test uses site ids of its own (uuid4), so the shared database never
mixes their rows.  What landed is read back from imchallenge.events.
"""

import random
import re
import socket
import threading
import time

import pytest

import stack
from ingest_util import (JSON, JSON_UTF8, NDJSON, apply_schema, array,
                         assert_error_body, assert_rejected, event, get_event,
                         new_id, ndjson, post, segment_pid, site_ids,
                         site_rows, spool_segments, status, stored_cids,
                         utc_epoch, wait_queue_empty, wait_stored)

# Log lines of a server whose ClickHouse is (still) unreachable.
CLICKHOUSE_DOWN = [r"IMC00302: cannot apply the schema",
                   r"IMC00304: delivery of \d+ events to .* failed"]
# Said (once a minute per process) while the spool refuses events.
OVER_LIMIT = r"IMC00203: spool \S+ at IMChallengeSpoolLimit"

SMALL_LIMITS = ("IMChallengeMaxEventSize 1k\n"
                "IMChallengeMaxBatchEvents 10")


@pytest.fixture(scope="module", autouse=True)
def schema(clickhouse):
    """The tables exist before a test reads them, whichever runs first."""
    apply_schema(clickhouse)


@pytest.fixture(scope="module")
def small(servers):
    """An httpd with tiny limits: events of 1k, 10 events a request.

    Stopped at the end of the module, before the session's ClickHouse:
    a ClickHouse that still has clients takes 15 s to stop."""
    h = servers.httpd(directives=SMALL_LIMITS)
    yield h
    h.stop()


def closed_port_url():
    """A ClickHouse URL on which nothing listens."""
    return "http://127.0.0.1:%d/" % stack.free_port()


def wait_status(h, key, value, timeout=20):
    """Poll /api/status until key has value; return the status."""
    last = [None]

    def reached():
        last[0] = status(h)
        return last[0][key] == value
    try:
        stack.wait_until(reached, timeout, interval=0.2,
                         what="/api/status %s == %r" % (key, value))
    except stack.StackError as e:
        raise AssertionError("%s; last: %s" % (e, last[0])) from None
    return last[0]


def accepted(r, n, stored=False):
    """Assert r acknowledges n events (201 stored / 202 accepted)."""
    assert r.status_code == (201 if stored else 202), (r.status_code, r.text)
    assert r.headers.get("Content-Type") == JSON_UTF8
    assert r.json() == {"status": "stored" if stored else "accepted",
                        "accepted": n}


# ------------------------------------------------------------ request forms


def test_post_one_object_typed_row(httpd, clickhouse):
    site, cid = new_id(), new_id()
    text = ('{"time":"2026-11-28T14:05:06.250+02:00","type":"solve",'
            '"correlation_id":"%s","site_id":"%s",'
            '"ua":"Mozilla/5.0","score":0.75,"tags":["a",{"b":null}]}'
            % (cid.upper(), site.upper()))
    before = time.time()
    r = post(httpd, "  \n" + text + "\n", wait=True)
    after = time.time()
    accepted(r, 1, stored=True)
    # 201 means stored: the row is there when the answer comes.
    rows = site_rows(clickhouse, site)
    assert len(rows) == 1
    row = rows[0]
    assert row["time"] == "2026-11-28 12:05:06"
    assert row["ts"] == utc_epoch("2026-11-28 12:05:06")
    assert row["type"] == "solve"
    assert row["cid"] == cid and row["site"] == site  # lower case
    assert row["raw"] == text  # verbatim, unknown members and case kept
    assert before - 2 <= row["received"] <= after + 1


TIMES = [
    # (sent, stored in UTC)
    ("2026-11-28T12:34:56Z", "2026-11-28 12:34:56"),
    ("2026-11-28T12:34:56", "2026-11-28 12:34:56"),
    ("2026-11-28 12:34:56+00:00", "2026-11-28 12:34:56"),
    ("2026-03-01T01:30:00+03:00", "2026-02-28 22:30:00"),
    ("2024-02-28T22:15:00-05:00", "2024-02-29 03:15:00"),
    ("2026-12-31T23:30:00-01:00", "2027-01-01 00:30:00"),
    ("2026-11-28T12:00:00.999999999+05:30", "2026-11-28 06:30:00"),
    ("2026-11-28 00:00:01.5-00:30", "2026-11-28 00:30:01"),
    ("1970-01-02T00:00:00+01:00", "1970-01-01 23:00:00"),
    ("2105-12-31T23:59:59Z", "2105-12-31 23:59:59"),
]


def test_post_array_converts_times_to_utc(httpd, clickhouse):
    site = new_id()
    sent = {}
    events = []
    for when, utc in TIMES:
        cid = new_id()
        sent[cid] = (when, utc)
        events.append(event(site, cid, when=when))
    r = post(httpd, array(events), wait=True)
    accepted(r, len(events), stored=True)
    rows = site_rows(clickhouse, site)
    assert {row["cid"]: row["time"] for row in rows} == {
        cid: utc for cid, (_, utc) in sent.items()}
    for row in rows:
        assert row["ts"] == utc_epoch(row["time"])


def test_post_array_keeps_each_element_verbatim(httpd, clickhouse):
    site = new_id()
    cids = [new_id() for _ in range(3)]
    elements = [
        '{ "time" : "2026-11-28T10:00:00Z" , "type" : "serve",\n'
        '  "correlation_id" : "%s", "site_id" : "%s", "x" : { "y" : [1, 2] } }'
        % (cids[0], site),
        '{"type":"solve","site_id":"%s","correlation_id":"%s",'
        '"time":"2026-11-28T10:00:01Z","note":"caf\u00e9 \\u00e9 \\"q\\" \\\\ '
        '\u2603"}' % (site, cids[1]),
        event(site, cids[2], when="2026-11-28T10:00:02Z",
              extra=',"nested":{"deep":{"list":[true,false,null,-1.5e3]}}'),
    ]
    body = "\r\n[\n  " + " ,\n\t".join(elements) + "\n]\n"
    r = post(httpd, body, content_type=JSON_UTF8, wait=True)
    accepted(r, 3, stored=True)
    rows = site_rows(clickhouse, site)
    assert [row["cid"] for row in rows] == cids
    assert [row["type"] for row in rows] == ["serve", "solve", "serve"]
    assert [row["raw"] for row in rows] == elements


def test_post_ndjson_with_blank_lines_and_crlf(httpd, clickhouse):
    site = new_id()
    cids = [new_id() for _ in range(4)]
    evs = [event(site, c, kind=k, when="2026-11-28T08:00:0%dZ" % i)
           for i, (c, k) in enumerate(zip(cids, ["serve", "solve"] * 2))]
    body = ("\r\n" + evs[0] + "\r\n\r\n" + "  " + evs[1] + " \t\r\n"
            + "\n\n" + evs[2] + "\n" + evs[3])  # no final line end
    r = post(httpd, body, content_type=NDJSON, wait=True)
    accepted(r, 4, stored=True)
    rows = site_rows(clickhouse, site)
    assert [row["cid"] for row in rows] == cids
    assert [row["raw"] for row in rows] == evs
    assert [row["type"] for row in rows] == ["serve", "solve"] * 2


def test_get_form_with_encoded_slash(httpd, clickhouse):
    site, cid = new_id(), new_id()
    text = event(site, cid, kind="solve",
                 when="2026-11-28T23:30:00-02:00",
                 extra=',"page":"/signup/step?x=1&y=2#top","pct":"100%",'
                       '"esc":"%41%2F%7B"')
    assert "/" in text
    r = get_event(httpd, text)
    accepted(r, 1)
    r = get_event(httpd, event(site, when="2026-11-28T00:00:00Z"), wait=True)
    accepted(r, 1, stored=True)
    rows = wait_stored_rows(clickhouse, site, 2)
    row = next(row for row in rows if row["cid"] == cid)
    assert row["raw"] == text
    assert row["time"] == "2026-11-29 01:30:00"
    assert row["type"] == "solve"


def wait_stored_rows(clickhouse, site, n, timeout=15):
    return stack.wait_until(
        lambda: (lambda rows: rows if len(rows) >= n else None)(
            site_rows(clickhouse, site)),
        timeout, interval=0.1, what="%d rows of site %s" % (n, site))


def test_accepted_answer_without_wait(httpd, clickhouse):
    site = new_id()
    evs = [event(site) for _ in range(5)]
    r = post(httpd, array(evs))
    accepted(r, 5)
    r = post(httpd, ndjson(evs[:2]), content_type=NDJSON + "; charset=utf-8")
    accepted(r, 2)
    # Without ?wait=1 the events arrive on their own (batch delay 200 ms).
    rows = wait_stored_rows(clickhouse, site, 7)
    assert len(rows) == 7
    assert site_ids(clickhouse, site) == (7, 5)


# ------------------------------------------------------------ rejections


def good(site=None):
    return event(site or new_id())


def test_missing_and_bad_fields_name_the_field(httpd):
    site = new_id()
    cases = [
        ('{"type":"serve","correlation_id":"%s","site_id":"%s"}'
         % (new_id(), site), "time"),
        (event(site, when="2026-02-30T00:00:00Z"), "time"),
        (event(site, when="2026-11-28T24:00:00Z"), "time"),
        (event(site, when="1969-12-31T23:59:59Z"), "time"),
        (event(site, when="2106-01-01T00:00:00Z"), "time"),
        (event(site, when="2026-11-28T12:00:00+0300"), "time"),
        (event(site, kind="Serve"), "type"),
        (event(site, kind="view"), "type"),
        (event(site, cid="not-a-uuid"), "correlation_id"),
        (event(site, cid=new_id()[:-1] + "g"), "correlation_id"),
        (event("0faf8b64a33d4db8aaeeaa165d13cff6"), "site_id"),
        ('{"time":"2026-11-28T12:00:00Z","type":"serve","correlation_id":7,'
         '"site_id":"%s"}' % site, "correlation_id"),
    ]
    for text, field in cases:
        assert_rejected(post(httpd, text), 0, field)


def test_batch_error_names_the_bad_event(httpd):
    site = new_id()
    evs = [event(site), event(site), event(site, kind="view"), event(site)]
    assert_rejected(post(httpd, array(evs)), 2, "type")
    lines = [evs[0], "", evs[1], "  ", evs[3],
             event(site, cid="x"), evs[0]]
    assert_rejected(post(httpd, "\n".join(lines) + "\n",
                         content_type=NDJSON), 3, "correlation_id")
    # A non-object element is an error of that whole event.
    assert_rejected(post(httpd, array([evs[0], '"serve"', evs[1]])), 1)


@pytest.mark.parametrize("body", [
    b"",
    b"{",
    b"not json",
    b'{"time":"2026-11-28T12:00:00Z",}',
    b"[",
    b"null",
    b"[]",
    b'{"time":',
    b"[1,2",
])
def test_invalid_json_is_400_without_field(httpd, body):
    assert_rejected(post(httpd, body), 0)


def test_duplicate_members_are_rejected(httpd):
    site = new_id()
    text = ('{"time":"2026-11-28T12:00:00Z","type":"serve","type":"solve",'
            '"correlation_id":"%s","site_id":"%s"}' % (new_id(), site))
    r = post(httpd, text)
    body = assert_error_body(r, 400)
    err = body["errors"][0]
    assert err["index"] == 0 and err.get("field") in (None, "type"), err
    # Duplicates deep inside unknown members too.
    r = post(httpd, array([good(site),
                           event(site, extra=',"x":{"a":1,"a":2}')]))
    assert assert_error_body(r, 400)["errors"][0]["index"] == 1


def nested(depth_of_event):
    """An event whose deepest value is at depth_of_event (event = 1)."""
    k = depth_of_event - 1
    return event(new_id(), extra=',"n":' + "[" * k + "]" * k)


def test_nesting_deeper_than_32_is_rejected(httpd):
    accepted(post(httpd, nested(32)), 1)
    assert_rejected(post(httpd, nested(33)), 0)
    assert_rejected(post(httpd, array([good(), nested(200)])), 1)
    # A deep object in the GET form too.
    r = get_event(httpd, nested(33))
    assert_rejected(r, 0)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80",
                                 b"caf\xe9", b"\xe2\x82"])
def test_invalid_utf8_is_rejected(httpd, bad):
    site = new_id()
    text = event(site, extra=',"note":"@"').encode()
    assert_rejected(post(httpd, text.replace(b"@", bad)), 0)
    nd = (good(site) + "\n").encode() + text.replace(b"@", bad)
    assert_rejected(post(httpd, nd, content_type=NDJSON), 1)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_with_allow(httpd, method):
    r = httpd.http.request(method, httpd.url + "api/event",
                           data=good().encode(),
                           headers={"Content-Type": JSON}, timeout=10)
    assert_error_body(r, 405)
    allow = {m.strip() for m in r.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allow
    assert not allow & {"PUT", "DELETE", "PATCH"}


@pytest.mark.parametrize("ctype", ["text/html", None, "application/xml",
                                   "application/jsonx", "multipart/form-data"])
def test_other_content_type_is_415(httpd, clickhouse, ctype):
    site = new_id()
    r = post(httpd, good(site), content_type=ctype)
    assert_error_body(r, 415)
    # Nothing of it is stored, even later.
    accepted(post(httpd, good(site), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site) == (1, 1)


def test_event_over_max_event_size_is_413(httpd, small):
    # The default limit is 16k.
    pad = ',"pad":"%s"'
    base = len(event(new_id(), extra=pad % ""))
    fits = event(new_id(), extra=pad % ("x" * (16 * 1024 - base)))
    assert len(fits) == 16 * 1024
    accepted(post(httpd, fits), 1)
    over = event(new_id(), extra=pad % ("x" * (16 * 1024 - base + 1)))
    assert_rejected(post(httpd, array([good(), over])), 1, status_code=413)
    # 1k on the small server, in every form.
    over = event(new_id(), extra=pad % ("x" * (1024 - base + 1)))
    assert_rejected(post(small, over), 0, status_code=413)
    assert_rejected(post(small, ndjson([good(), good(), over]),
                         content_type=NDJSON), 2, status_code=413)
    assert_error_body(get_event(small, over), 413)


def test_more_than_max_batch_events_is_413(httpd, small, clickhouse):
    site = new_id()
    accepted(post(small, array([event(site) for _ in range(10)])), 10)
    r = post(small, array([event(site) for _ in range(11)]))
    assert_error_body(r, 413)
    r = post(small, ndjson([event(site) for _ in range(11)]),
             content_type=NDJSON)
    assert_error_body(r, 413)
    # The default limit is 10000.
    r = post(httpd, ndjson([event(site) for _ in range(10001)]),
             content_type=NDJSON)
    assert_error_body(r, 413)
    accepted(post(small, good(site), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site)[0] == 11


def test_long_body_is_413_chunked_or_not(small):
    chunk = (" " * 4095 + "\n").encode()
    sent = [0]

    def chunks():
        yield b"["
        for _ in range(256):  # 1 MiB, 100 times the small server's cap
            sent[0] += len(chunk)
            yield chunk
        yield b"]"

    r = small.http.post(small.url + "api/event", data=chunks(),
                        headers={"Content-Type": JSON}, timeout=30)
    assert_error_body(r, 413)
    assert sent[0] == 256 * 4096  # the generator did run: a chunked body
    r = post(small, b"[" + chunk * 64 + b"]")  # with Content-Length
    assert_error_body(r, 413)


def announce_only(h, length, ctype=JSON, timeout=10):
    """Send POST headers announcing `length` body bytes but no body; return
    the status line and the response text (the server must not wait)."""
    head = ("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (ctype, length))
    with socket.create_connection((h.host, h.port), timeout=timeout) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    text = data.decode("utf-8", "replace")
    return text.split("\r\n", 1)[0], text


def test_announced_too_large_body_is_refused_unread(httpd, small):
    # The server answers at once: it never waits for the 64 MiB.
    for h, length in ((httpd, 64 * 1024 * 1024 + 1), (small, 20000)):
        line, text = announce_only(h, length)
        assert line.startswith("HTTP/1.1 413 "), text
        assert "application/json; charset=utf-8" in text
        assert text.endswith('{"error":"the request body is too large"}')


def rejected_metric(h, reason):
    text = h.get("metrics", timeout=5).text
    m = re.search(r'^imchallenge_requests_rejected_total\{reason="%s"\} '
                  r'(\d+)$' % reason, text, re.M)
    assert m, "no rejected_total for %s" % reason
    return int(m.group(1))


def test_limit_request_body_is_413_and_counted(make_httpd):
    h = make_httpd(directives='<Location "/api/event">\n'
                   "    LimitRequestBody 2000\n</Location>")
    body = array([event(new_id()) for _ in range(20)]).encode()
    assert len(body) > 2000
    before = rejected_metric(h, "too_large")
    # Announced: the module refuses it with its own JSON answer.
    assert_error_body(post(h, body), 413)

    def chunks():
        for i in range(0, len(body), 500):
            yield body[i:i + 500]
    # Chunked: httpd's own LimitRequestBody check answers (its page).
    r = h.http.post(h.url + "api/event", data=chunks(),
                    headers={"Content-Type": JSON}, timeout=10)
    assert r.status_code == 413
    assert rejected_metric(h, "too_large") == before + 2
    accepted(post(h, array([event(new_id()) for _ in range(5)])), 5)


# ------------------------------------------------------------ all or nothing


def test_rejected_batch_stores_nothing(httpd, clickhouse):
    site = new_id()
    goods = [event(site) for _ in range(4)]
    bad = event(site, when="2026-11-28T12:00:00+25:00")
    assert_rejected(post(httpd, array(goods[:2] + [bad] + goods[2:])), 2,
                    "time")
    assert_rejected(post(httpd, ndjson(goods[:2] + [bad] + goods[2:]),
                         content_type=NDJSON), 2, "time")
    too_big = event(site, extra=',"pad":"%s"' % ("x" * 17000))
    assert_rejected(post(httpd, array(goods[:3] + [too_big])), 3,
                    status_code=413)
    # Later requests, on fresh connections (other children too), are stored:
    # delivery had its chance for anything spooled before them.
    later = set()
    for _ in range(4):
        cid = new_id()
        r = post(httpd, event(site, cid), wait=True,
                 headers={"Connection": "close"})
        accepted(r, 1, stored=True)
        later.add(cid)
    assert stored_cids(clickhouse, [site]) == later
    assert site_ids(clickhouse, site) == (4, 4)


# ------------------------------------------------------------ ?wait=1


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_wait_with_clickhouse_down_is_202_then_delivered(make_httpd,
                                                         clickhouse):
    h = make_httpd(clickhouse=closed_port_url(),
                   directives="IMChallengeTimeout 1s")
    site, cid = new_id(), new_id()
    t0 = time.monotonic()
    r = post(h, event(site, cid), wait=True)
    elapsed = time.monotonic() - t0
    accepted(r, 1)  # 202: queued, not stored
    assert 0.8 <= elapsed < 10, elapsed
    assert site_ids(clickhouse, site) == (0, 0)
    q = wait_status(h, "queued_events", 1)
    assert q["clickhouse_reachable"] is False
    # The same spool, now with a live ClickHouse.
    h.clickhouse_urls = [clickhouse.url]
    h.graceful()
    wait_stored(clickhouse, site, {cid}, timeout=30)
    cid2 = new_id()
    accepted(post(h, event(site, cid2), wait=True), 1, stored=True)
    assert stored_cids(clickhouse, [site]) == {cid, cid2}
    wait_queue_empty(h)


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_wait_ends_when_the_client_leaves(make_httpd):
    # ClickHouse down and a 10 s timeout: a client that closes its
    # connection after 0.5 s frees its worker at once, not 10 s later.
    h = make_httpd(clickhouse=closed_port_url(),
                   directives="IMChallengeTimeout 10s")
    body = event(new_id()).encode()
    with socket.create_connection((h.host, h.port), timeout=5) as s:
        s.sendall(b"POST /api/event?wait=1 HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)
    line = stack.wait_until(lambda: re.search(
        r'"POST /api/event\?wait=1 HTTP/1.1" \d+ \S+ (\d+)',
        h.access_log()), 20, interval=0.1, what="the access log line")
    assert int(line.group(1)) < 2000000, line.group(0)
    wait_status(h, "queued_events", 1)  # accepted all the same


def test_wait_is_woken_by_the_delivery_not_its_recheck(make_httpd,
                                                       clickhouse):
    # One child process: the waiter and the deliverer share it, so each
    # ?wait=1 request is woken by the commit of its batch (IMC00803), not
    # by its 100 ms recheck. Without the notification none would be.
    h = make_httpd(directives="StartServers 1\nServerLimit 1\n"
                              "MaxRequestWorkers 32\n"
                              "LogLevel warn imchallenge:debug")
    site = new_id()
    offset = h.error_log_size()
    for _ in range(5):
        accepted(post(h, event(site), wait=True), 1, stored=True)
    woken = h.error_log(offset).count("IMC00803")
    assert woken >= 4, h.error_log(offset)[-2000:]


def wait_first_failure(h, offset, n):
    """Wait for the [warn] of the first failed delivery of n events."""
    pattern = re.compile(r"IMC00304: delivery of %d events .* failed" % n)
    stack.wait_until(lambda: pattern.search(h.error_log(offset)), 15,
                     what="the first failed delivery")


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_events_queued_behind_a_failed_batch_are_delivered(make_httpd,
                                                           clickhouse):
    h = make_httpd(clickhouse=closed_port_url(),
                   directives="IMChallengeTimeout 1s")
    site = new_id()
    cids = [new_id() for _ in range(3)]
    offset = h.error_log_size()
    accepted(post(h, event(site, cids[0])), 1)
    # The first batch (one event) fails and is recorded as the batch to
    # resend; two more requests queue behind it, in the same segment.
    wait_first_failure(h, offset, 1)
    for cid in cids[1:]:
        accepted(post(h, event(site, cid)), 1)
    assert len(spool_segments(h)) == 1
    h.clickhouse_urls = [clickhouse.url]
    h.graceful()
    wait_stored(clickhouse, site, set(cids), timeout=15)


def test_queue_longer_than_batch_size_is_delivered(make_httpd, clickhouse):
    h = make_httpd(directives="IMChallengeBatchSize 2", batch_delay="1s")
    site = new_id()
    cids = [new_id() for _ in range(7)]
    for cid in cids:
        accepted(post(h, event(site, cid)), 1)
    wait_stored(clickhouse, site, set(cids), timeout=15)


def fill_spool(h, site, acked):
    """Post 20-event requests, then single events, until each gets 503.
    Adds the acknowledged correlation ids to acked; returns the 503s."""
    refused = []
    for n in (20, 1):
        for _ in range(300):
            cids = [new_id() for _ in range(n)]
            r = post(h, array([event(site, c) for c in cids]))
            if r.status_code == 503:
                refused.append(r)
                break
            accepted(r, n)
            acked.update(cids)
    assert len(refused) == 2, "no 503 after %d events" % len(acked)
    return refused


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN, OVER_LIMIT)
def test_spool_limit_is_503_with_retry_after(make_httpd, clickhouse):
    h = make_httpd(clickhouse=closed_port_url(),
                   directives="IMChallengeSpoolLimit 64k\n"
                   "IMChallengeTimeout 1s")
    site, acked = new_id(), set()
    for r in fill_spool(h, site, acked):
        assert_error_body(r, 503)
        assert int(r.headers["Retry-After"]) > 0

    def refused():
        # Each process recounts the spool every 250 ms and may admit a few
        # more events meanwhile; once all have recounted, all refuse.
        cid = new_id()
        r = post(h, event(site, cid), headers={"Connection": "close"})
        if r.status_code == 202:
            acked.add(cid)
            return False
        assert_error_body(r, 503)
        return True
    for _ in range(3):
        stack.wait_until(refused, 10, interval=0.1, what="a 503")
    on_disk = sum((h.spool_dir / n).stat().st_size for n in spool_segments(h))
    assert 60 * 1024 <= on_disk <= 72 * 1024, on_disk
    # Every acknowledged event is kept.
    q = wait_status(h, "queued_events", len(acked))
    assert q["spool_bytes"] == on_disk, q
    assert q["clickhouse_reachable"] is False, q
    assert site_ids(clickhouse, site) == (0, 0)


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN, OVER_LIMIT)
def test_spool_limit_then_every_acknowledged_event_delivered(make_httpd,
                                                            clickhouse):
    h = make_httpd(clickhouse=closed_port_url(),
                   directives="IMChallengeSpoolLimit 64k\n"
                   "IMChallengeTimeout 1s")
    site, acked = new_id(), set()
    offset = h.error_log_size()
    cids = [new_id() for _ in range(20)]
    accepted(post(h, array([event(site, c) for c in cids])), 20)
    acked.update(cids)
    wait_first_failure(h, offset, 20)
    fill_spool(h, site, acked)
    h.clickhouse_urls = [clickhouse.url]
    h.graceful()
    wait_stored(clickhouse, site, acked, timeout=60)
    # Nothing refused was stored; every acknowledged event was.
    assert stored_cids(clickhouse, [site]) == acked
    wait_queue_empty(h)
    accepted(post(h, event(site), wait=True), 1, stored=True)


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN, OVER_LIMIT)
def test_full_spool_refuses_a_post_before_its_body(make_httpd):
    # The spool at its limit: a POST gets 503 + Retry-After from its
    # headers alone, without waiting for (or holding) its body.
    h = make_httpd(clickhouse=closed_port_url(),
                   directives="IMChallengeSpoolLimit 64k\n"
                   "IMChallengeTimeout 1s")
    fill_spool(h, new_id(), set())
    t0 = time.monotonic()
    line, text = announce_only(h, 1000000, timeout=20)
    assert line.startswith("HTTP/1.1 503 "), text
    assert time.monotonic() - t0 < 5
    assert re.search(r"\r\nRetry-After: \d+\r\n", text), text
    assert "IMChallengeSpoolLimit" in text


def vm_kb(pid, field):
    """VmRSS, VmHWM, ... of a process, in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (field, pid))


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_a_big_upload_costs_about_its_size_in_memory(make_httpd):
    # One 60 MiB request: the child that takes it grows by about the body
    # (read into memory sized once, rows written to the spool in pieces),
    # not by the body's doubling buffers plus a second copy as rows.
    # ClickHouse is down, so no delivery batch adds to any child.
    h = make_httpd(clickhouse=closed_port_url(), directives=(
        "IMChallengeBatchSize 10\n"
        '<Location "/api/event">\n    LimitRequestBody 0\n</Location>'))
    site = new_id()
    pad = "x" * 6200
    body = "[" + ",".join(event(site, extra=',"pad":"%s"' % pad)
                          for _ in range(10000)) + "]"
    body = body.encode()
    assert 60 << 20 <= len(body) < 64 << 20
    children = stack.wait_until(lambda: h.children() or None, 10,
                                what="the children")
    before = {pid: vm_kb(pid, "VmHWM") for pid in children}
    r = post(h, body, headers={"Connection": "close"})
    accepted(r, 10000)
    growth = max(vm_kb(pid, "VmHWM") - kb for pid, kb in before.items()
                 if stack.pid_alive(pid))
    print("\npeak RSS growth for a %.1f MiB upload: %.1f MiB"
          % (len(body) / 1048576, growth / 1024))
    assert growth * 1024 < len(body) * 1.25, growth


# ------------------------------------------------------------ concurrency


def client(h, site, k, acked, failures):
    """One client thread: singles, GETs, arrays and NDJSON batches."""
    s = stack.http_session()
    try:
        plan = ["one"] * 40 + ["get"] * 10 + ["array"] * 10 + ["nd"] * 10
        random.Random(k).shuffle(plan)  # interleave the kinds
        for kind in plan:
            n = 10 if kind in ("array", "nd") else 1
            cids = [new_id() for _ in range(n)]
            evs = [event(site, c, kind="solve" if j % 2 else "serve")
                   for j, c in enumerate(cids)]
            if kind == "get":
                r = get_event(h, evs[0], session=s)
            elif kind == "nd":
                r = post(h, ndjson(evs), content_type=NDJSON, session=s)
            else:
                r = post(h, evs[0] if n == 1 else array(evs), session=s)
            if r.status_code != 202 or r.json().get("accepted") != n:
                failures.append((r.status_code, r.text[:200]))
                continue
            acked.update(cids)
    except Exception as e:  # reported by the test
        failures.append(repr(e))
    finally:
        s.close()


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_concurrent_clients_all_stored(make_httpd, clickhouse, mpm):
    h = make_httpd(mpm=mpm)
    site = new_id()
    acked, failures, threads = set(), [], []
    for k in range(8):  # 8 x 250 = 2000 events
        t = threading.Thread(target=client,
                             args=(h, site, k, acked, failures))
        threads.append(t)
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert len(acked) == 2000
    wait_stored(clickhouse, site, acked, timeout=60)
    rows, distinct = site_ids(clickhouse, site)
    assert distinct == 2000 and rows >= 2000
    assert stored_cids(clickhouse, [site]) == acked
    served = clickhouse.scalar(
        "SELECT countIf(type = 'serve') FROM imchallenge.events "
        "WHERE site_id = toUUID('%s')" % site)
    # Singles and GETs are serves; batches alternate serve/solve.
    assert int(served) == 8 * (50 + 100)
    wait_queue_empty(h)


# ------------------------------------------------------------ restarts


def test_events_accepted_before_the_first_delivery_wait_the_delay(
        make_httpd, clickhouse):
    # Events accepted while the deliverer cannot reach ClickHouse yet are
    # new ones: once it can, they wait out the batch delay like any others
    # (since their segment was made at the latest), rather than being
    # taken for events left by an earlier server and sent at once.
    clickhouse.pause()
    try:
        h = make_httpd(batch_delay="15s")
        started = time.monotonic()
        site = new_id()
        cids = {new_id() for _ in range(10)}
        accepted(post(h, array([event(site, c) for c in cids])), 10)
    finally:
        clickhouse.resume()
    stack.wait_until(lambda: h.get("readyz", timeout=5).status_code == 200,
                     20, what="/readyz 200 once ClickHouse answers")
    time.sleep(1)  # the deliverer's first passes over the spool
    assert time.monotonic() - started < 15, "checked too late to tell"
    assert site_ids(clickhouse, site) == (0, 0)
    wait_stored(clickhouse, site, cids, timeout=30)


@pytest.mark.parametrize("mpm", ["event", "prefork"])
@pytest.mark.parametrize("how", ["graceful", "restart"])
def test_restart_with_events_queued(make_httpd, clickhouse, how, mpm):
    # The delay holds the 100 events while they are posted: 10 requests
    # on new connections took over 3 s under ASan on a loaded machine. The
    # timeout outlasts it, so that ?wait=1 below sees its event stored.
    h = make_httpd(mpm=mpm, batch_delay="10s",
                   directives="IMChallengeTimeout 30s")
    site = new_id()
    acked = set()
    old_kids = set(h.children())
    for _ in range(10):
        cids = [new_id() for _ in range(10)]
        accepted(post(h, array([event(site, c) for c in cids]),
                      headers={"Connection": "close"}), 10)
        acked.update(cids)
    # Queued, not yet sent.
    assert site_ids(clickhouse, site) == (0, 0)
    assert spool_segments(h), "nothing in the spool"
    getattr(h, how)()
    assert set(h.children()) - old_kids
    wait_stored(clickhouse, site, acked, timeout=30)
    assert site_ids(clickhouse, site)[1] == 100
    wait_queue_empty(h)
    # Segments of the old generation are removed once delivered.
    stack.wait_until(
        lambda: all(segment_pid(n) in h.children() for n in spool_segments(h)),
        15, what="old segments to be removed")
    # The new generation accepts and delivers as before.
    accepted(post(h, event(site), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site)[1] == 101
