# Licensed under the Apache License, Version 2.0.
"""Delivery under faults (SPEC section 4, "Delivery guarantees").

A load generator (faults_util.LoadGen) posts events while ClickHouse or
httpd misbehave: killed, paused, down at start-up, behind a proxy that
drops answers or answers 5xx, a tiny full spool disk, an unwritable spool,
restarts and a killed child.  After a drain each test checks, and prints:
every acknowledged event is stored, nothing is stored that was not sent or
that was refused, and the report totals equal the distinct procedures.
Run with -s to see the figures.
"""

import http.client
import json
import os
import re
import threading
import signal
import struct
import subprocess
import time
import uuid

import pytest
import requests

import stack

from faults_util import (HttpProxy, LoadGen, answered_status, deliverer_pid,
                         metric, new_id, poll, report_totals,
                         serving_children, status, stored_pairs, tmpfs,
                         verify)

FAST = "IMChallengeBatchSize 50\nIMChallengeTimeout 2s"
CLICKHOUSE_DOWN = [r"IMC00302: cannot apply the schema",
                   r"IMC00304: delivery of \d+ events to .* failed"]
SPOOL_UNWRITABLE = (r"IMC00202: cannot write to the spool",
                    r"IMC00306: cannot read the spool")
# ClickHouse's answer to a burst of inserts: transient, worth a retry.
TOO_MANY_PARTS = ("Code: 252, e.displayText() = DB::Exception: Too many parts "
                  "(300). Merges are processing significantly slower than "
                  "inserts., e.what() = DB::Exception\n")


def queued(h):
    """The status once it shows queued events (polled)."""
    return poll("queued events in /api/status",
                lambda: (lambda s: s if s["queued_events"] > 0 else None)(
                    status(h)))


def batches(h, result):
    return metric(h, "imchallenge_batches_total", result=result)


def wait_failed_batch(h, before):
    poll("a failed batch", lambda: batches(h, "failed") > before, 30)


def spool_files(h, ext=".seg"):
    return sorted(p.name for p in h.spool_dir.iterdir()
                  if p.name.endswith(ext))


# ------------------------------------------------------------ ClickHouse


def test_clickhouse_down_at_startup(make_clickhouse, make_httpd,
                                    error_log_allow):
    error_log_allow.extend(CLICKHOUSE_DOWN)
    ch = make_clickhouse(start=False)  # a fresh server: no schema either
    h = make_httpd(clickhouse=ch, batch_delay="100ms", directives=FAST)
    offset = h.error_log_size()
    load = LoadGen(h).start()
    try:
        load.wait_requests(150)
        down = queued(h)
        assert down["spool_bytes"] > 0 and not down["clickhouse_reachable"]
        poll("the oldest event to age", lambda: (
            status(h)["oldest_queued_age_seconds"] or 0) >= 1.0, 10)
        # The log tells the backlog while ClickHouse is away.
        log = poll("a delivery failure with the backlog in the log",
                   lambda: re.search(
                       r"IMC00304: delivery of \d+ events .* failed.* "
                       r"(\d+) events \((\d+) bytes\) queued, the oldest "
                       r"[\d.]+ s old", h.error_log(offset)), 10)
        assert int(log.group(1)) > 0 and int(log.group(2)) > 0
        ch.start()
        back = time.monotonic()
        load.wait_requests(load.requests() + 100)
    finally:
        load.stop()
    f = verify(load, ch, h, "clickhouse down at start-up", since=back)
    assert f["acknowledged"] > 300
    poll("an empty queue", lambda: status(h)["queued_events"] == 0, 15)


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_clickhouse_kill9_and_restart_under_load(make_clickhouse, make_httpd,
                                                 error_log_allow, mpm):
    error_log_allow.extend(CLICKHOUSE_DOWN)
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, mpm=mpm, batch_delay="100ms",
                   directives=FAST)
    load = LoadGen(h).start()
    try:
        load.wait_requests(100)
        failed = batches(h, "failed")
        ch.kill()
        wait_failed_batch(h, failed)
        load.wait_requests(load.requests() + 200)
        down = queued(h)
        assert down["spool_bytes"] > 0, down
        ch.start()
        back = time.monotonic()
        load.wait_requests(load.requests() + 100)
    finally:
        load.stop()
    f = verify(load, ch, h, "clickhouse kill -9 (%s)" % mpm, since=back)
    assert f["acknowledged"] > 500


def test_clickhouse_sigstop_sigcont_under_load(make_clickhouse, make_httpd,
                                               error_log_allow):
    error_log_allow.extend(CLICKHOUSE_DOWN)
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, batch_delay="100ms", directives=FAST)
    load = LoadGen(h).start()
    try:
        load.wait_requests(100)
        failed, retried = batches(h, "failed"), batches(h, "retried")
        ch.pause()
        t0 = time.monotonic()
        wait_failed_batch(h, failed)
        # Cut by IMChallengeTimeout (2 s; a ping may hang first).
        assert 1.5 <= time.monotonic() - t0 < 8
        load.wait_requests(load.requests() + 200)
        queued(h)
        ch.resume()
        back = time.monotonic()
        load.wait_requests(load.requests() + 100)
    finally:
        load.stop()
        ch.ensure_running()
    f = verify(load, ch, h, "clickhouse SIGSTOP/SIGCONT", since=back)
    # The batch that hung was sent again (the same batch: resend first).
    assert batches(h, "retried") > retried
    assert f["acknowledged"] > 300


# ------------------------------------------------------------ proxies


def insert_policy(plan):
    """A proxy policy: the n-th INSERT (from 0) gets plan(n); others pass."""
    counter = {"n": 0}

    def policy(req):
        if not req.is_insert:
            return "forward"
        n = counter["n"]
        counter["n"] += 1
        return plan(n)
    return policy

def _waiting_client(h, text, timeout, out):
    """POST one event with ?wait=1 on a connection of its own; note the
    status (None: the socket timed out or failed) and how long it took."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(h.host, h.port, timeout=timeout)
    try:
        conn.request("POST", "/api/event?wait=1", body=text,
                     headers={"Content-Type": "application/json",
                              "Connection": "close"})
        st = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        st = None
    finally:
        conn.close()
    out.append((st, time.monotonic() - t0))


def test_waiting_clients_during_an_outage_leave_workers_free(
        make_clickhouse, make_httpd, error_log_allow):
    """500 ?wait=1 clients that give up after 2 s, while ClickHouse is
    down and IMChallengeTimeout is 10 s: the waiters are capped per
    process (the rest are answered 202 at once) and stop when their
    client leaves, so /healthz keeps answering within a second."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, batch_delay="100ms",
                   directives="IMChallengeTimeout 10s")
    poll("readiness", lambda: h.get("readyz", timeout=5).status_code == 200)
    ch.stop()
    site = new_id()
    texts = {new_id(): None for _ in range(500)}
    for cid in texts:
        texts[cid] = json.dumps({"time": "2026-11-28T12:00:00Z",
                                 "type": "serve", "correlation_id": cid,
                                 "site_id": site})
    answers, probes, done = {}, [], threading.Event()

    def probe():
        while not done.is_set():
            t0 = time.monotonic()
            try:
                code = requests.get(h.url + "healthz", timeout=5).status_code
            except requests.RequestException:
                code = None
            probes.append((code, time.monotonic() - t0))
            time.sleep(0.1)

    old_stack = threading.stack_size(512 * 1024)
    try:
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        clients = []
        for cid, text in texts.items():
            answers[cid] = []
            clients.append(threading.Thread(
                target=_waiting_client, args=(h, text, 2, answers[cid]),
                daemon=True))
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
        assert not any(t.is_alive() for t in clients)
        time.sleep(2)  # /healthz once the clients have gone, too
    finally:
        done.set()
        threading.stack_size(old_stack)
    prober.join(10)
    answers = {cid: a[0] for cid, a in answers.items()}  # (status, time)
    slow = [p for p in probes if p[0] != 200 or p[1] >= 1.0]
    results = [a[0] for a in answers.values()]
    quick = [a[0] for a in answers.values() if a[0] == 202 and a[1] < 1.0]
    print("\nwait=1 storm: %d answered 202 (%d within 1 s), %d 201, %d no "
          "answer in 2 s; /healthz: %d probes, slowest %.3f s"
          % (results.count(202), len(quick), results.count(201),
             results.count(None), len(probes),
             max(p[1] for p in probes)))
    assert len(probes) >= 20 and not slow, slow[:5]
    assert len(quick) >= 400, results.count(202)
    assert results.count(201) == 0
    acked = {cid for cid, a in answers.items() if a[0] == 202}
    ch.start()
    last = {"ids": set()}

    def delivered():
        try:
            last["ids"] = {cid for cid, _ in stored_pairs(ch, site)}
        except stack.StackError:  # not answering yet
            return False
        return acked <= last["ids"]

    poll("every acknowledged event in ClickHouse", delivered, 90, 0.5)
    assert last["ids"] <= set(texts)



def test_ambiguous_commit_resends_the_same_batch(clickhouse, make_httpd,
                                                 error_log_allow):
    """The proxy forwards an INSERT, ClickHouse commits it, the answer is
    lost: the module sends the same batch again; the raw table may hold
    it twice, the report counts it once."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    with HttpProxy(clickhouse, insert_policy(
            lambda n: "drop" if n % 4 == 1 and n < 20 else "forward")) as px:
        h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                       directives=FAST)
        load = LoadGen(h).start()
        try:
            poll("5 dropped answers", lambda: sum(
                1 for r in px.inserts() if r.action == "drop") >= 5, 60)
        finally:
            load.stop()
        f = verify(load, clickhouse, h, "ambiguous commit (answer dropped)")
        inserts = px.inserts()
    dropped = [r for r in inserts if r.action == "drop"]
    assert all(answered_status(r) == 200 for r in dropped)  # committed
    for r in dropped:
        again = [x for x in inserts if x.index > r.index and x.body == r.body]
        assert again, "dropped batch %d was never sent again" % r.index
        assert again[0].token == r.token
        assert again[0].action == "forward"
    dropped_rows = sum(len(r.rows()) for r in dropped
                       if r.rows()[0]["site_id"] == load.site)
    # Each committed-then-resent batch is twice in the raw table...
    assert f["duplicates"] == dropped_rows
    # ...and once in the report (verify() compared the totals).
    assert f["report"] == load.expected_report()


@pytest.mark.parametrize("answer", ["500", "503"])
def test_5xx_answers_are_retried(clickhouse, make_httpd, error_log_allow,
                                 answer):
    error_log_allow.extend(CLICKHOUSE_DOWN)
    reply = (("answer", 500, TOO_MANY_PARTS) if answer == "500" else
             ("answer", 503, "<html><body>503 Service Unavailable"
                             "</body></html>\n"))
    with HttpProxy(clickhouse, insert_policy(
            lambda n: reply if 2 <= n < 8 else "forward")) as px:
        # One connection per client for the whole test: one process, one
        # spool segment per client, whose order delivery must keep.
        h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                       directives=FAST + "\nMaxKeepAliveRequests 0\n"
                       "KeepAliveTimeout 60")
        failed = batches(h, "failed")
        load = LoadGen(h).start()
        try:
            poll("6 refused inserts", lambda: sum(
                1 for r in px.inserts() if isinstance(r.action, tuple)) >= 6)
            load.wait_requests(load.requests() + 100)
        finally:
            load.stop()
        f = verify(load, clickhouse, h, "ClickHouse answers %s" % answer)
        inserts = px.inserts()
    refused = [r for r in inserts if isinstance(r.action, tuple)]
    assert batches(h, "failed") - failed >= len(refused)
    # Exponential back-off: each retry waits at least half of a step that
    # doubles from 100 ms (the other half is jitter).
    gaps = [b.when - a.when for a, b in zip(refused, refused[1:])]
    assert all(g >= 0.045 * 2 ** k for k, g in enumerate(gaps)), gaps
    print("[ClickHouse answers %s] back-off between attempts: %s s"
          % (answer, ", ".join("%.2f" % g for g in gaps)))
    for r in refused:  # each refused batch came back, as it was
        assert any(x.index > r.index and x.body == r.body and
                   x.action == "forward" for x in inserts), r
    # Nothing reached ClickHouse twice: a 5xx is not a commit.
    assert f["duplicates"] == 0
    # Age order: the batches of one spool segment go out oldest first, a
    # refused one again before any later one, so each client's events
    # (one connection, one process, one segment) arrive in order.
    assert_delivered_in_order(inserts, load.site)


def age_inversion(inserts, load):
    """The most by which an event was delivered (first) after one that was
    acknowledged later, in seconds."""
    latest, worst, seen = None, 0.0, set()
    for r in inserts:
        if r.action != "forward" or answered_status(r) != 200:
            continue
        for row in r.rows():
            key = (row["correlation_id"], row["type"])
            if key in seen or key not in load.ack_time:
                continue
            seen.add(key)
            t = load.ack_time[key]
            latest = t if latest is None else max(latest, t)
            worst = max(worst, latest - t)
    assert seen
    return worst


def test_backlog_is_delivered_oldest_first(clickhouse, make_httpd,
                                           error_log_allow):
    """After an outage the backlog of four processes' segments, filled at
    very different rates, leaves in the order of the events' age (to about
    a second), not segment after segment."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    outage = {"until": 0.0}

    def policy(req):
        if req.is_insert and time.monotonic() < outage["until"]:
            return ("answer", 500, TOO_MANY_PARTS)
        return "forward"
    with HttpProxy(clickhouse, policy) as px:
        # prefork and one connection per client: a process, and a spool
        # segment, per client
        h = make_httpd(clickhouse=px.url, mpm="prefork", batch_delay="100ms",
                       directives="IMChallengeBatchSize 10\n"
                       "IMChallengeTimeout 2s\nMaxKeepAliveRequests 0\n"
                       "KeepAliveTimeout 60")
        load = LoadGen(h, pauses=[0.005, 0.01, 0.04, 0.1]).start()
        try:
            load.wait_requests(100)
            outage["until"] = time.monotonic() + 5
            poll("deliveries after the outage", lambda: [
                r for r in px.inserts() if r.when > outage["until"]
                and r.action == "forward"], 30)
            load.wait_requests(load.requests() + 100)
        finally:
            load.stop()
        verify(load, clickhouse, h, "backlog in order of age")
        inserts = px.inserts()
    worst = age_inversion(inserts, load)
    print("[backlog in order of age] worst inversion %.2f s" % worst)
    assert worst < 2.0


def assert_delivered_in_order(inserts, site):
    """The first delivery of each event follows its client's order."""
    last, seen = {}, set()
    for r in inserts:
        if r.action != "forward" or answered_status(r) != 200:
            continue
        for row in r.rows():
            if row["site_id"] != site:
                continue
            seq = json.loads(row["raw"])["seq"]
            if seq in seen:
                continue
            seen.add(seq)
            k, n = (int(x) for x in seq.split("-"))
            assert n > last.get(k, 0), ("client %d: event %d delivered "
                                        "after %d" % (k, n, last[k]))
            last[k] = n
    assert seen


def test_failover_across_urls(clickhouse, make_httpd, error_log_allow):
    """First URL hangs, then refuses: the second takes over, no batch is
    lost or failed, nothing is stored twice."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    mode = {"a": "forward"}
    a = HttpProxy(clickhouse, lambda req: mode["a"])
    b = HttpProxy(clickhouse)
    try:
        h = make_httpd(clickhouse=[a.url, b.url], batch_delay="100ms",
                       directives=FAST)
        load = LoadGen(h).start()
        try:
            load.wait_requests(100)
            assert a.inserts() and not b.inserts()
            failed = batches(h, "failed")
            mode["a"] = "hang"
            t0 = time.monotonic()
            poll("inserts through the second URL", lambda: b.inserts(), 15)
            assert time.monotonic() - t0 >= 1.5  # after IMChallengeTimeout
            a.close()  # now refused
            load.wait_requests(load.requests() + 200)
        finally:
            load.stop()
        f = verify(load, clickhouse, h, "fail-over across URLs")
        # The hung insert went to the next URL within the same attempt.
        assert batches(h, "failed") == failed
        assert f["duplicates"] == 0
    finally:
        a.close()
        b.close()


def newer_clickhouse(plan):
    """Policy and rewrite of a proxy that makes ClickHouse 18.16 look like
    a release with insert_deduplication_token: the settings probe names
    it, the token is taken off the INSERT (and recorded) before it is
    forwarded."""
    inner = insert_policy(plan)

    def policy(req):
        if "'insert_deduplication_token'" in req.sql:
            return ("answer", 200, "insert_deduplication_token\n")
        if "'non_replicated_deduplication_window'" in req.sql:
            return ("answer", 200, "0\n")
        return inner(req)

    def rewrite(req):
        if not req.is_insert:
            return None
        target = re.sub(r"&insert_deduplication_token=[^&]*", "", req.target)
        return target, req.body
    return policy, rewrite


@pytest.mark.parametrize("schema", ["On", "Off"])
def test_resend_carries_the_same_dedup_token(clickhouse, make_httpd,
                                             error_log_allow, schema):
    """Against a ClickHouse with insert_deduplication_token (also when the
    module does not create the schema): every batch carries a token, and a
    batch whose answer was lost or that hung is sent again with its own."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    policy, rewrite = newer_clickhouse(
        lambda n: "drop" if n in (1, 4) else ("hang" if n == 6 else
                                              "forward"))
    px = HttpProxy(clickhouse, policy, rewrite)
    try:
        h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                       directives=FAST + "\nIMChallengeCreateSchema " + schema)
        load = LoadGen(h, threads=2).start()
        try:
            poll("8 inserts", lambda: len(px.inserts()) >= 8, 60)
            px.release()
        finally:
            load.stop()
        verify(load, clickhouse, h, "dedup token on resend (schema %s)"
               % schema)
        inserts = px.inserts()
    finally:
        px.close()
    assert all(r.token for r in inserts), "an INSERT without a token"
    for r in inserts:
        if r.action in ("drop", "hang"):
            again = [x for x in inserts if x.index > r.index
                     and x.token == r.token]
            assert again and again[0].body == r.body, r
    # Different batches, different tokens.
    firsts = {}
    for r in inserts:
        firsts.setdefault(r.token, r.body)
        assert firsts[r.token] == r.body


# Log lines of a table that refuses some events for good.
REFUSED_LOG = (r"IMC00303: ClickHouse rejected \d+ events",
               r"IMC00308: ClickHouse rejected a batch of \d+ events")
# imc_deliver.c: rows of one batch quarantined one by one at most.
MAX_REFUSED_ALONE = 8


class DriftedTable:
    """Schema drift: a database whose events table predates 'solve', so
    that ClickHouse refuses a solve for good and takes a serve; an httpd
    delivering to it."""

    def __init__(self, clickhouse, make_httpd, error_log_allow):
        error_log_allow.extend(REFUSED_LOG)
        error_log_allow.extend(CLICKHOUSE_DOWN)
        self.ch = clickhouse
        self.db = "imc_q_" + uuid.uuid4().hex[:12]
        clickhouse.query("CREATE DATABASE %s" % self.db)
        clickhouse.query(
            "CREATE TABLE %s.events (time DateTime('UTC'), type Enum8("
            "'serve' = 1), correlation_id UUID, site_id UUID, received_at "
            "DateTime('UTC'), raw String) ENGINE = MergeTree "
            "ORDER BY (site_id, time)" % self.db)
        self.h = make_httpd(batch_delay="100ms",
                            directives="IMChallengeDatabase %s\n%s"
                            % (self.db, FAST))
        self.site = new_id()

    def event(self, cid, kind):
        return ('{"time":"2026-11-28T12:00:00Z","type":"%s",'
                '"correlation_id":"%s","site_id":"%s"}'
                % (kind, cid, self.site))

    def post(self, events, wait=True):
        """One request of events [(cid, kind)]."""
        body = "[" + ",".join(self.event(c, k) for c, k in events) + "]"
        return self.h.post("api/event" + ("?wait=1" if wait else ""),
                           data=body,
                           headers={"Content-Type": "application/json"})

    def stored(self):
        return stored_pairs(self.ch, self.site, self.db)

    def failed_files(self):
        """{file name: [(cid, type)]} of spool/failed, files in order."""
        out = {}
        for f in sorted((self.h.spool_dir / "failed").iterdir(),
                        key=lambda f: int(f.name.rsplit("-", 2)[1])):
            assert f.name.endswith(".rows"), f.name
            rows = [json.loads(x) for x in f.read_text().split("\n") if x]
            out[f.name] = [(r["correlation_id"], r["type"]) for r in rows]
        return out

    def log_count(self, regex):
        return len(re.findall(regex, self.h.error_log()))


@pytest.fixture
def drifted(clickhouse, make_httpd, error_log_allow):
    return DriftedTable(clickhouse, make_httpd, error_log_allow)


def test_quarantine_of_a_batch_clickhouse_never_takes(drifted):
    """ClickHouse refuses a solve for good: it goes to spool/failed/ with
    an [error] line and a metric, and serves behind it are delivered."""
    d = drifted
    first, bad, later = new_id(), new_id(), [new_id() for _ in range(3)]
    assert d.post([(first, "serve")]).status_code == 201
    quarantined = batches(d.h, "quarantined")
    t0 = time.monotonic()
    r = d.post([(bad, "solve")])
    # Not stored: ?wait=1 does not say 201 for a quarantined event.
    assert r.status_code == 202, r.text
    assert time.monotonic() - t0 >= 1.5
    poll("the quarantine metric", lambda: batches(
        d.h, "quarantined") == quarantined + 1)
    for cid in later:
        assert d.post([(cid, "serve")]).status_code == 201
    assert list(d.failed_files().values()) == [[(bad, "solve")]]
    # What spool/failed holds shows (never retried, outside the limit).
    size = sum(f.stat().st_size
               for f in (d.h.spool_dir / "failed").iterdir())
    poll("spool/failed in /api/status", lambda: status(d.h)[
        "quarantined_batches"] == 1)
    assert status(d.h)["quarantined_bytes"] == size > 0
    assert metric(d.h, "imchallenge_quarantined_batches") == 1
    assert metric(d.h, "imchallenge_quarantined_bytes") == size
    assert re.search(r"\[(\w+:)?error\].*IMC00303: ClickHouse rejected 1 "
                     r"events",
                     d.h.error_log())
    assert set(d.stored()) == {(c, "serve") for c in [first] + later}
    # Kept, not lost: once the table is fixed, the rows can be fed again.
    failed = next((d.h.spool_dir / "failed").iterdir())
    d.ch.query("ALTER TABLE %s.events MODIFY COLUMN type "
               "Enum8('serve' = 1, 'solve' = 2)" % d.db)
    d.ch.query("INSERT INTO %s.events FORMAT JSONEachRow\n%s"
               % (d.db, failed.read_text()))
    assert (bad, "solve") in d.stored()


def test_only_the_refused_events_of_a_batch_are_quarantined(drifted):
    """A batch ClickHouse refuses for good is sent again in halves: the
    serves in it are delivered, and each solve goes to spool/failed alone."""
    d = drifted
    kinds = ["serve", "solve", "serve", "serve", "solve", "solve", "serve",
             "serve"]
    events = [(new_id(), k) for k in kinds]
    quarantined = batches(d.h, "quarantined")
    # One request, one batch; not all of it is stored: 202.
    assert d.post(events).status_code == 202
    serves = {e for e in events if e[1] == "serve"}
    poll("the serves of the batch", lambda: set(d.stored()) == serves)
    poll("the quarantine metric",
         lambda: batches(d.h, "quarantined") == quarantined + 3)
    assert list(d.failed_files().values()) == [
        [e] for e in events if e[1] == "solve"]
    assert sum(d.stored().values()) == len(serves)  # each stored once
    assert d.log_count(r"IMC00308: ClickHouse rejected a batch of 8 "
                       r"events") == 1
    assert d.log_count(r"IMC00303: ClickHouse rejected 1 events") == 3
    # Later events go in full batches again.
    later = [(new_id(), "serve") for _ in range(5)]
    assert d.post(later).status_code == 201


def test_a_batch_refused_row_after_row_is_quarantined_at_once(drifted):
    """A batch whose every row is refused costs a few INSERTs, not two per
    row: past MAX_REFUSED_ALONE rows quarantined alone, the rest of the
    batch goes to spool/failed in one file. Nothing is lost."""
    d = drifted
    solves = [(new_id(), "solve") for _ in range(30)]
    quarantined = batches(d.h, "quarantined")
    failed_inserts = batches(d.h, "failed")
    assert d.post(solves, wait=False).status_code == 202
    poll("the quarantine metric",
         lambda: batches(d.h, "quarantined") == quarantined
         + MAX_REFUSED_ALONE + 1)
    files = list(d.failed_files().values())
    assert [len(f) for f in files] == [1] * MAX_REFUSED_ALONE + [
        len(solves) - MAX_REFUSED_ALONE]
    assert [row for f in files for row in f] == solves
    # Halving to one row, then one or two INSERTs per row refused alone.
    assert batches(d.h, "failed") - failed_inserts <= 3 * (
        MAX_REFUSED_ALONE + 1) + 5
    serve = (new_id(), "serve")
    assert d.post([serve]).status_code == 201
    assert set(d.stored()) == {serve}


# ------------------------------------------------------------ spool


def post_events(h, site, n, session=None):
    """One request of n new serve events; (response, cids)."""
    cids = [new_id() for _ in range(n)]
    body = "[" + ",".join(
        '{"time":"2026-11-28T12:00:00Z","type":"serve","correlation_id":'
        '"%s","site_id":"%s","pad":"%s"}' % (c, site, "x" * 200)
        for c in cids) + "]"
    s = session or h.http
    r = s.post(h.url + "api/event", data=body, timeout=30,
               headers={"Content-Type": "application/json"})
    return r, cids


class Poster:
    """Posts 20-event requests for one site and keeps what became of them;
    every refusal must be a 503 with Retry-After."""

    def __init__(self, h):
        self.h, self.site = h, new_id()
        self.acked, self.refused = set(), set()
        self.refusals, self.last_error = 0, None

    def post(self):
        r, cids = post_events(self.h, self.site, 20)
        if r.status_code == 202:
            self.acked.update(cids)
        else:
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) > 0
            self.last_error = r.json()["error"]
            self.refusals += 1
            self.refused.update(cids)
        return r.status_code

    def until(self, status, what, timeout=30, interval=0.05):
        poll(what, lambda: self.post() == status, timeout, interval)

    def stored(self, ch):
        return {c for c, _ in stored_pairs(ch, self.site)}


DISK_FULL_LOG = r"IMC00204: the disk of spool \S+ is full"
OVER_LIMIT_LOG = r"IMC00203: spool \S+ at IMChallengeSpoolLimit"


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN, DISK_FULL_LOG)
def test_spool_disk_full(make_clickhouse, make_httpd, workbase):
    """The spool on a 1 MB tmpfs. ClickHouse down: the disk fills, events
    get 503 + Retry-After (never a 2xx for what was not written); once
    ClickHouse is back the module frees its disk and accepts again. Then
    something else fills the disk: what was accepted is still delivered,
    and events are accepted again once there is room."""
    ch = make_clickhouse()
    ch.stop()
    mnt = workbase / ("tmpfs-%s" % uuid.uuid4().hex[:8])
    with tmpfs(mnt, "1m"):
        h = make_httpd(clickhouse=ch, spool_dir=mnt, batch_delay="100ms",
                       directives=FAST)
        try:
            p = Poster(h)
            p.until(503, "the spool disk to fill", 60, 0)
            for _ in range(9):  # and it stays full
                assert p.post() == 503
            assert "disk is full" in p.last_error, p.last_error
            # Said in the error log, once a minute per process at most.
            lines = len(re.findall(DISK_FULL_LOG, h.error_log()))
            assert 1 <= lines <= len(h.children()) + 1 < p.refusals, lines
            full = len(p.acked)
            ch.start()
            back = time.monotonic()
            p.until(202, "room once ClickHouse is back")
            recover = time.monotonic() - back
            poll("acknowledged events stored", lambda: p.acked <= p.stored(
                ch), 60, 0.25)
            # ClickHouse away again, events queue; then another tenant of
            # the disk takes all the room left.
            ch.stop()
            queued_before = set(p.acked)
            for _ in range(5):
                assert p.post() == 202
            hog = mnt / "hog"
            with open(hog, "wb", buffering=0) as f:
                with pytest.raises(OSError):
                    for _ in range(300):
                        f.write(b"\0" * 4096)
            p.until(503, "a refusal on the full disk", 30, 0)
            assert p.acked - queued_before  # waiting in the spool
            # Delivery works on a full disk (its progress is recorded in
            # place), so what was accepted still reaches ClickHouse.
            ch.start()
            poll("acknowledged events stored, on a full disk",
                 lambda: p.acked <= p.stored(ch), 30, 0.25)
            hog.unlink()
            p.until(202, "room again")
            poll("acknowledged events stored", lambda: p.acked <= p.stored(
                ch), 30, 0.25)
            stored = p.stored(ch)
            print("\n[disk full] acknowledged %d (%d until the disk was "
                  "full), refused %d, stored %d, accepting again %.2f s "
                  "after ClickHouse came back"
                  % (len(p.acked), full, len(p.refused), len(stored),
                     recover))
            assert stored == p.acked
            assert not stored & p.refused
            assert report_totals(h, p.site) == (len(p.acked), 0)
        finally:
            h.stop()


def test_spool_unwritable(make_httpd, clickhouse, error_log_allow):
    error_log_allow.extend(SPOOL_UNWRITABLE)
    h = make_httpd(batch_delay="100ms", directives=FAST)
    site = new_id()
    acked, refused = set(), set()
    r, cids = post_events(h, site, 5)
    assert r.status_code == 202
    acked.update(cids)
    mode = h.spool_dir.stat().st_mode & 0o777
    h.spool_dir.chmod(0)
    try:
        def refused_now():
            r, cids = post_events(h, site, 5)
            (refused if r.status_code == 503 else acked).update(cids)
            return (r,) if r.status_code == 503 else None
        r, = poll("503 from an unwritable spool", refused_now, 10, 0.05)
        assert int(r.headers["Retry-After"]) > 0
        assert "spool" not in r.text and "/" not in r.json()["error"]
        for _ in range(10):
            r, cids = post_events(h, site, 5)
            assert r.status_code == 503, r.text
            refused.update(cids)
        ready = h.get("readyz")
        assert ready.status_code == 503
        assert "spool" in ready.json()["reason"]
    finally:
        h.spool_dir.chmod(mode)
    r = poll("202 again", lambda: (lambda x: x if x[0].status_code == 202
                                   else None)(post_events(h, site, 5)), 10)
    acked.update(r[1])
    poll("acknowledged events stored", lambda: acked <= {
        c for c, _ in stored_pairs(clickhouse, site)}, 30, 0.25)
    stored = {c for c, _ in stored_pairs(clickhouse, site)}
    assert stored == acked and not stored & refused
    print("\n[unwritable spool] acknowledged %d, refused %d, stored %d"
          % (len(acked), len(refused), len(stored)))


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN, OVER_LIMIT_LOG)
def test_spool_limit_under_load(make_clickhouse, make_httpd):
    """Over IMChallengeSpoolLimit: 503 + Retry-After; nothing accepted is
    dropped, nothing refused is stored."""
    ch = make_clickhouse()
    ch.stop()
    h = make_httpd(clickhouse=ch, batch_delay="100ms",
                   directives=FAST + "\nIMChallengeSpoolLimit 128k")
    load = LoadGen(h).start()
    try:
        poll("503s from the full spool", lambda: load.statuses[503] >= 50,
             30, 0.05)
        r, _ = post_events(h, new_id(), 1)
        assert r.status_code == 503
        assert "IMChallengeSpoolLimit" in r.json()["error"], r.text
        assert re.search(r"\[(\w+:)?warn\].*" + OVER_LIMIT_LOG,
                         h.error_log())
        ch.start()
        back = time.monotonic()
        load.wait_acked(300)
    finally:
        load.stop()
    f = verify(load, ch, h, "spool limit", since=back)
    assert f["rejected"] > 0 and f["acknowledged"] > 300


# ------------------------------------------------------------ httpd


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_httpd_restarts_and_child_kill_under_load(make_httpd, clickhouse,
                                                  mpm):
    h = make_httpd(mpm=mpm, batch_delay="100ms", directives=FAST)
    load = LoadGen(h).start()
    try:
        load.wait_requests(100)
        h.graceful()
        load.wait_requests(load.requests() + 150)
        # The child that delivers (it also takes requests and writes its
        # own segment): its lock and its segment must be taken over.
        victims = [poll("the deliverer", lambda: deliverer_pid(h))]
        h.kill_child(victims[0])
        load.wait_requests(load.requests() + 150)
        # And one that holds clients' connections.
        victims.append(h.kill_child(poll(
            "a child with clients", lambda: serving_children(h))[0]))
        load.wait_requests(load.requests() + 150)
        h.restart()
        load.wait_requests(load.requests() + 150)
    finally:
        load.stop()
    f = verify(load, clickhouse, h, "httpd graceful, kill -9, restart (%s)"
               % mpm)
    assert f["acknowledged"] > 500
    # The killed children's segments were adopted, delivered and removed.
    poll("the dead children's segments to go", lambda: not [
        n for n in spool_files(h) if int(n.split("-")[1]) in victims], 15)


def test_graceful_stop_drains_the_spool(make_httpd, clickhouse):
    # A batch larger than the 200 events posted: only the delay holds them
    # (with FAST's 50, a delivery pass that came between two posts sent a
    # full batch before the check below).
    h = make_httpd(batch_delay="5s",
                   directives="IMChallengeBatchSize 1000\nIMChallengeTimeout 2s")
    site = new_id()
    acked = set()
    for _ in range(10):
        r, cids = post_events(h, site, 20)
        assert r.status_code == 202
        acked.update(cids)
    assert not stored_pairs(clickhouse, site)  # held by the batch delay
    t0 = time.monotonic()
    h.stop()
    took = time.monotonic() - t0
    stored = {c for c, _ in stored_pairs(clickhouse, site)}
    print("\n[graceful stop] %d events held, %d stored by the stop in "
          "%.2f s" % (len(acked), len(stored), took))
    assert stored == acked


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_graceful_stop_under_load_with_clickhouse_hung(make_clickhouse,
                                                       make_httpd):
    """Graceful stop while ClickHouse hangs: httpd is gone within
    GracefulShutdownTimeout (an INSERT in flight is cut, although
    IMChallengeTimeout is longer), the rest waits in the spool and the next
    start delivers it."""
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, batch_delay="100ms",
                   directives="IMChallengeBatchSize 50\n"
                   "IMChallengeTimeout 30s\nGracefulShutdownTimeout 5")
    load = LoadGen(h).start()
    try:
        load.wait_requests(100)
        ch.pause()
        load.wait_requests(load.requests() + 150)
        t0 = time.monotonic()
        h.stop()
        took = time.monotonic() - t0
    finally:
        load.stop()
    # httpd waits 5 s for its children, then would signal them.
    assert took < 5.5, took
    assert spool_files(h), "nothing left in the spool"
    ch.resume()
    restarted = time.monotonic()
    h.start()
    verify(load, ch, h, "graceful stop, ClickHouse hung", since=restarted)
    print("[graceful stop, ClickHouse hung] stop took %.2f s" % took)
    assert not h.error_log_problems(CLICKHOUSE_DOWN)


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_dead_writers_segment_with_torn_tail(make_clickhouse, make_httpd):
    """A segment left by a dead process, its last record torn by the kill:
    the complete records are delivered by the next httpd, the torn one
    (never acknowledged) is not, and the segment is removed."""
    ch = make_clickhouse()
    ch.stop()
    h = make_httpd(clickhouse=ch, batch_delay="100ms", directives=FAST)
    site = new_id()
    acked = set()
    for _ in range(3):
        r, cids = post_events(h, site, 4)
        assert r.status_code == 202
        acked.update(cids)
    h.stop()
    segs = [h.spool_dir / n for n in spool_files(h)]
    text = "".join(p.read_text() for p in segs)
    rows = [x for x in text.split("\n") if x]
    assert len(rows) == 12
    # A segment of a process that no longer exists: two complete records
    # of new events, then a record cut by a kill in three ways.
    dead = "%016x-%d-0.seg" % (int(time.time() * 1e6) + 1, 4194303 + 7)
    adopted, torn = set(), set()

    def row_for(cid):
        old = json.loads(rows[0])["correlation_id"]
        return rows[0].replace(old, cid)
    body = ""
    for _ in range(2):
        cids = [new_id(), new_id()]
        adopted.update(cids)
        body += "".join(row_for(c) + "\n" for c in cids) + "\n"
    cut = [new_id(), new_id(), new_id()]
    torn.update(cut)
    body += row_for(cut[0]) + "\n" + row_for(cut[1]) + "\n"  # no terminator
    body += row_for(cut[2])[:40]  # half a row
    (h.spool_dir / dead).write_text(body)
    os.chown(h.spool_dir / dead, (h.spool_dir.stat()).st_uid,
             (h.spool_dir.stat()).st_gid)
    # And the last acknowledged segment loses its terminator's neighbour:
    # a complete row with no record end after it.
    extra = new_id()
    with open(segs[-1], "a") as f:
        f.write(row_for(extra) + "\n")
    torn.add(extra)
    ch.start()
    h.start()
    want = acked | adopted

    def stored():
        try:
            return {c for c, _ in stored_pairs(ch, site)}
        except stack.StackError:  # the schema is not there yet
            return set()
    poll("complete records stored", lambda: want <= stored(), 30, 0.25)
    poll("the dead segment removed", lambda: dead not in spool_files(h), 15)
    stored = {c for c, _ in stored_pairs(ch, site)}
    assert stored == want and not stored & torn
    print("\n[torn tail] acknowledged %d + adopted %d stored, %d torn "
          "dropped" % (len(acked), len(adopted), len(torn)))


# ------------------------------------------- current releases' HTTP (§11)

# An exception ClickHouse writes after a 200 began, as each release does.
LATE_EXCEPTIONS = {
    "18.16": ("Code: 395, e.displayText() = DB::Exception: Value passed to "
              "'throwIf' function is non zero, e.what() = DB::Exception\n"),
    "24.8": ("Code: 241. DB::Exception: Memory limit (for query) exceeded. "
             "(MEMORY_LIMIT_EXCEEDED) (version 24.8.4.13 (official build))\n"),
    "25.11": ("__exception__PU1FNUFH98\nCode: 395. DB::Exception: Value "
              "passed to 'throwIf' function is non-zero. "
              "(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)\n"
              "120 PU1FNUFH98__exception__\n"),
}
REPORT_FAILED = r"IMC00401: report query failed"


def is_report_query(req):
    return "uniqExactIf" in req.sql


@pytest.mark.parametrize("release", sorted(LATE_EXCEPTIONS))
def test_report_with_an_exception_after_200_is_502(clickhouse, make_httpd,
                                                    error_log_allow, release):
    """ClickHouse began a 200 and then failed: the report answers 502,
    never the rows that came before the exception; every query asked
    ClickHouse to hold its answer until the end (wait_end_of_query)."""
    error_log_allow.append(REPORT_FAILED)
    # The proxy goes when the test ends, maybe while the delivery thread
    # still applies the schema through it.
    error_log_allow.extend(CLICKHOUSE_DOWN)
    rows = "20000\t%s\t5\t2\n" % new_id()

    def policy(req):
        if is_report_query(req):
            return ("answer", 200, rows + LATE_EXCEPTIONS[release])
        return "forward"
    with HttpProxy(clickhouse, policy) as px:
        h = make_httpd(clickhouse=px.url, directives=FAST)
        r = h.get("api/report", timeout=30)
        assert r.status_code == 502, (r.status_code, r.text[:300])
        assert "rows" not in r.text and "throwIf" not in r.text
        queries = [q for q in px.requests if not q.is_insert
                   and q.path == "/" and q.sql]
    assert any(is_report_query(q) for q in queries)
    assert all(q.params.get("wait_end_of_query") == "1" for q in queries), [
        (q.sql[:40], q.params) for q in queries]


def test_insert_with_an_exception_in_its_200_is_not_delivered(
        clickhouse, make_httpd, error_log_allow):
    """An INSERT answered 200 with an exception in the body did not
    deliver: the batch stays in the spool and is sent again, as it was."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    late = ("answer", 200, "Code: 252. DB::Exception: Too many parts (300)"
            ". (TOO_MANY_PARTS) (version 24.8.4.13)\n")
    with HttpProxy(clickhouse, insert_policy(
            lambda n: late if n < 2 else "forward")) as px:
        h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                       directives=FAST)
        failed = batches(h, "failed")
        site = new_id()
        cids = [new_id() for _ in range(5)]
        body = "\n".join(
            '{"time":"%sT12:00:00Z","type":"serve","correlation_id":"%s",'
            '"site_id":"%s"}' % (DAY_TEXT, c, site) for c in cids)
        r = h.post("api/event", data=body,
                   headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 202, r.text
        poll("the events in ClickHouse", lambda: set(
            stored_pairs(clickhouse, site)) == {(c, "serve") for c in cids})
        inserts = px.inserts()
    late_ones = [x for x in inserts if isinstance(x.action, tuple)]
    assert len(late_ones) == 2
    assert batches(h, "failed") - failed >= 2
    assert batches(h, "quarantined") == 0
    assert any(x.action == "forward" and x.body == late_ones[0].body
               for x in inserts)
    assert sum(stored_pairs(clickhouse, site).values()) == len(cids)


DAY_TEXT = "2026-11-28"
NEWER = "26.7.2.1"
NEWER_SETTINGS = ("insert_deduplication_token\nasync_insert\n"
                  "cancel_http_readonly_queries_on_client_close\n")
# What 18.16 does not know: taken off before a request is forwarded.
NEWER_ONLY = ("insert_deduplication_token", "async_insert",
              "cancel_http_readonly_queries_on_client_close")


def current_release(plan):
    """Policy and rewrite of a proxy that makes 18.16 look like 26.7:
    version() and the settings probe are answered by the proxy, settings
    18.16 does not know are taken off (after they were recorded)."""
    inner = insert_policy(plan)

    def policy(req):
        if req.sql.strip() == "SELECT version()":
            return ("answer", 200, NEWER + "\n")
        if "FROM system.settings" in req.sql:
            return ("answer", 200, NEWER_SETTINGS)
        if "'non_replicated_deduplication_window'" in req.sql:
            return ("answer", 200, "0\n")
        return inner(req)

    def rewrite(req):
        target = req.target
        for name in NEWER_ONLY:
            target = re.sub(r"&%s=[^&]*" % name, "", target)
        return target, req.body
    return policy, rewrite


def test_current_release_inserts_are_synchronous_and_logical_error_retried(
        clickhouse, make_httpd, error_log_allow):
    """Against a release that knows async_insert, every INSERT carries
    async_insert=0; its LOGICAL_ERROR (49, a server bug there) is retried,
    never quarantined, while on 18.16 code 49 still is an unknown Enum
    element (test_quarantine_of_a_batch_clickhouse_never_takes)."""
    error_log_allow.extend(CLICKHOUSE_DOWN)
    bug = ("answer", 500, "Code: 49. DB::Exception: Logical error: 'x'. "
           "(LOGICAL_ERROR) (version %s)\n" % NEWER)
    policy, rewrite = current_release(lambda n: bug if n < 2 else "forward")
    with HttpProxy(clickhouse, policy, rewrite) as px:
        h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                       directives=FAST)
        site, cid = new_id(), new_id()
        r = h.post("api/event", json={
            "time": DAY_TEXT + "T12:00:00Z", "type": "serve",
            "correlation_id": cid, "site_id": site})
        assert r.status_code == 202, r.text
        poll("the event in ClickHouse",
             lambda: (cid, "serve") in stored_pairs(clickhouse, site))
        inserts = px.inserts()
        # The report's queries carry cancel-on-close where it is known.
        assert h.get("api/report", timeout=30).status_code == 200
        reports = [q for q in px.requests if is_report_query(q)]
    assert len(inserts) >= 3
    assert all(x.params.get("async_insert") == "0" for x in inserts)
    assert all(x.token for x in inserts)
    assert [x.action for x in inserts[:2]] == [bug, bug]
    assert batches(h, "quarantined") == 0
    assert not (h.spool_dir / "failed").exists() or not list(
        (h.spool_dir / "failed").iterdir())
    assert reports and all(q.params.get(
        "cancel_http_readonly_queries_on_client_close") == "1"
        for q in reports)
    # A current release counts the UUIDs themselves (faster there).
    rows = [q for q in reports if "uniqExactIf" in q.sql]
    assert rows and all("uniqExactIf(correlation_id," in q.sql and
                        "reinterpretAs" not in q.sql for q in rows)


def test_nothing_newer_is_sent_to_18_16(clickhouse, make_httpd):
    """18.16 refuses settings it does not know: its INSERTs carry neither
    async_insert nor a token, its report queries no cancel-on-close, but
    the report's bounds (readonly, time, memory); and they count distinct
    procedures over the UUID's two halves, which 18.16 hashes faster."""
    with HttpProxy(clickhouse) as px:
        h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                       directives="IMChallengeTimeout 3s")
        site = new_id()
        r = h.post("api/event?wait=1", json={
            "time": DAY_TEXT + "T12:00:00Z", "type": "serve",
            "correlation_id": new_id(), "site_id": site})
        assert r.status_code == 201, r.text
        assert h.get("api/report", timeout=30).status_code == 200
        inserts = px.inserts()
        reports = [q for q in px.requests if is_report_query(q)]
    assert inserts and reports
    for x in inserts:
        assert not set(x.params) & set(NEWER_ONLY), x.params
    for q in reports:
        assert not set(q.params) & set(NEWER_ONLY), q.params
        assert q.params["readonly"] == "2"
        assert q.params["max_execution_time"] == "3"
        assert q.params["max_memory_usage"] == str(1 << 30)
        assert q.params["wait_end_of_query"] == "1"
    # 18.16 counts the UUIDs as their two UInt64 halves (faster there).
    rows = [q for q in reports if "uniqExactIf" in q.sql]
    assert rows and all(
        "uniqExactIf(reinterpretAsUInt64(reinterpretAsString(correlation_id))"
        in q.sql for q in rows)


def access_denied(table):
    """ClickHouse's answer to a user without a grant on system.table, as
    select_from_system_db_requires_grant makes current releases answer."""
    return ("answer", 403, "Code: 497. DB::Exception: imc: Not enough "
            "privileges. To execute this query, it's necessary to have the "
            "grant SELECT ON system.%s. (ACCESS_DENIED) (version %s)\n"
            % (table, NEWER))


PROBE_REFUSED = r"IMC00601: ClickHouse at .* refused a probe"
LISTING_REFUSED = r"IMC00602: ClickHouse refused the report's listing"


@pytest.mark.error_log_allow(PROBE_REFUSED, LISTING_REFUSED)
def test_refused_probe_and_listing_are_told_once_at_warn(clickhouse,
                                                         make_httpd):
    """No grant on system.settings nor on system.parts: the feature probe
    and the report's parts listing are refused. Each is logged at warn,
    once however often it is refused again; events are delivered and the
    reports are right, without the cache."""
    from report_cache_util import Client
    db = "imc_grant_" + uuid.uuid4().hex[:10]

    def policy(req):
        if "FROM system.settings" in req.sql:
            return access_denied("settings")
        if "FROM system.parts" in req.sql:
            return access_denied("parts")
        return "forward"
    try:
        with HttpProxy(clickhouse, policy) as px:
            h = make_httpd(clickhouse=px.url, batch_delay="100ms",
                           directives="IMChallengeDatabase %s\n%s"
                           % (db, FAST))
            site = new_id()
            for day in ("2026-11-27", "2026-11-28"):
                r = h.post("api/event?wait=1", json={
                    "time": day + "T12:00:00Z", "type": "serve",
                    "correlation_id": new_id(), "site_id": site})
                assert r.status_code == 201, r.text
            flt = "site_id='%s'" % site
            with Client(h) as c:  # one connection: one child
                for _ in range(4):
                    r = c.report(flt)
                    assert r.status_code == 200, r.text
                    assert r.json()["totals"]["served"] == 2
            # Refused again after the first time: the module asked on.
            listings = [q for q in px.requests if "FROM system.parts" in q.sql]
            probes = [q for q in px.requests
                      if "FROM system.settings" in q.sql]
            assert len(listings) >= 4 and probes
            # Delivered without what the probe would have told.
            assert all(not x.token for x in px.inserts())
        log = h.error_log()
        for what in (PROBE_REFUSED, LISTING_REFUSED):
            lines = [x for x in log.splitlines() if re.search(what, x)]
            assert len(lines) == 1, (what, lines)
            assert re.search(r"\[(\w+:)?warn\]", lines[0]), lines[0]
            assert "HTTP 403, code 497" in lines[0], lines[0]
    finally:
        clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


def test_slow_report_query_is_stopped_by_clickhouse(clickhouse, make_httpd,
                                                    error_log_allow):
    """A report query that would run for ever (an events view over
    system.numbers) is ended by ClickHouse itself at max_execution_time,
    the whole seconds of IMChallengeTimeout: TIMEOUT_EXCEEDED, 504, and
    nothing of it keeps running on the server."""
    error_log_allow.append(REPORT_FAILED)
    db = "imc_slow_" + uuid.uuid4().hex[:10]
    clickhouse.query("CREATE DATABASE %s" % db)
    clickhouse.query(
        "CREATE VIEW %s.events AS SELECT toDateTime('2026-11-28 12:00:00', "
        "'UTC') AS time, 'serve' AS type, toUUID('%s') AS correlation_id, "
        "toUUID('%s') AS site_id FROM system.numbers"
        % (db, new_id(), new_id()))

    def running():
        return int(clickhouse.scalar(
            "SELECT count() FROM system.processes WHERE query LIKE "
            "'%%uniqExactIf%%' AND query LIKE '%%%s.events%%' AND query "
            "NOT LIKE '%%system.processes%%'" % db))
    try:
        with HttpProxy(clickhouse) as px:
            h = make_httpd(clickhouse=px.url, directives=(
                "IMChallengeDatabase %s\nIMChallengeCreateSchema Off\n"
                "IMChallengeTimeout 2500ms" % db))
            t0 = time.monotonic()
            r = h.get("api/report", timeout=30)
            elapsed = time.monotonic() - t0
            assert r.status_code == 504, (r.status_code, r.text[:200])
            query = [q for q in px.requests if is_report_query(q)][-1]
            assert query.params["max_execution_time"] == "2"
            poll("the proxy to get ClickHouse's answer",
                 lambda: getattr(query, "answer", None), 10)
        assert answered_status(query) == 500
        assert b"Code: 159" in query.answer  # TIMEOUT_EXCEEDED
        assert elapsed < 5, elapsed
        assert running() == 0
        print("\n[slow report] 504 after %.2f s, ClickHouse ended the query "
              "with TIMEOUT_EXCEEDED" % elapsed)
    finally:
        clickhouse.query("KILL QUERY WHERE query LIKE '%%uniqExactIf%%%s.events"
                         "%%' SYNC" % db)
        clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


def test_report_failed_over_after_its_listing_is_not_cached(
        clickhouse, make_httpd, error_log_allow):
    """The report lists the parts on the first URL, which then hangs; its
    query times out there and is answered by the second. Those rows are of
    another server than the listing's fingerprints: the report is right,
    and nothing of it is cached (the next report asks for every day)."""
    from report_cache_util import Client, days_metric, delta
    error_log_allow.extend(CLICKHOUSE_DOWN)
    db = "imc_fo_" + uuid.uuid4().hex[:10]
    site = new_id()
    closed = threading.Event()

    def policy(req):
        if closed.is_set():
            return "hang"  # past IMChallengeTimeout: the next URL
        if "system.parts" in req.sql:
            closed.set()
        return "forward"
    a = HttpProxy(clickhouse, policy)
    b = HttpProxy(clickhouse)
    try:
        h = make_httpd(clickhouse=[a.url, b.url], batch_delay="100ms",
                       directives="IMChallengeDatabase %s\n%s" % (db, FAST))
        for day in ("2026-11-27", "2026-11-28"):
            r = h.post("api/event?wait=1", json={
                "time": day + "T12:00:00Z", "type": "serve",
                "correlation_id": new_id(), "site_id": site})
            assert r.status_code == 201, r.text
        time.sleep(1.2)  # no part of the current second is ever cached
        flt = "site_id='%s'" % site
        with Client(h) as c:
            before = days_metric(h)
            first = c.report(flt)
            assert first.status_code == 200, first.text
            assert closed.is_set()
            assert first.json()["totals"]["served"] == 2
            assert [q for q in b.requests if is_report_query(q)]
            second = c.report(flt)
            assert second.json() == first.json()
            d = delta(before, days_metric(h))
            # Nothing stored by the first: the second asked for both days.
            assert d["cache"] == 0, d
            third = c.report(flt)  # one server throughout: cached now
            assert third.json() == first.json()
            assert delta(before, days_metric(h))["cache"] >= 2
    finally:
        a.close()
        b.close()
        clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


def test_environment_proxy_is_not_used(clickhouse, make_httpd):
    """http_proxy / ALL_PROXY in httpd's environment, pointing at a dead
    port: the module goes straight to ClickHouse all the same."""
    dead = "http://127.0.0.1:%d/" % stack.free_port()
    env = {name: dead for name in ("http_proxy", "HTTP_PROXY", "https_proxy",
                                   "HTTPS_PROXY", "all_proxy", "ALL_PROXY")}
    env.update(no_proxy="", NO_PROXY="")
    h = make_httpd(env=env, batch_delay="100ms")
    site = new_id()
    r = h.post("api/event?wait=1", json={
        "time": DAY_TEXT + "T12:00:00Z", "type": "serve",
        "correlation_id": new_id(), "site_id": site})
    assert r.status_code == 201, r.text
    assert sum(stored_pairs(clickhouse, site).values()) == 1
    assert h.get("api/report", timeout=30).status_code == 200
# ------------------------------------------------------------ destinations


STRANDED = (r"IMC00901: \d+ segments of \S+ were accepted for another "
            r"destination")


def _kill_all(h):
    """SIGKILL the parent, then its children: the spool stays as it is,
    with nothing drained."""
    kids = h.children()
    os.kill(h.proc.pid, signal.SIGKILL)
    h.proc.wait()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    poll("the children to die",
         lambda: not any(stack.pid_alive(p) for p in kids), 10)
    h.proc = None


def _stored(ch, db, site):
    try:
        return int(ch.scalar("SELECT count() FROM %s.events WHERE site_id = "
                             "toUUID('%s')" % (db, site)))
    except stack.StackError:  # no such database (yet)
        return 0


@pytest.mark.error_log_allow(STRANDED)
def test_backlog_stays_with_the_database_it_was_accepted_for(make_httpd,
                                                             clickhouse):
    """Events queued for one database, then a restart with another
    IMChallengeDatabase (same spool): the backlog is not sent to the new
    database, it is kept and said once; back with the old database, it is
    delivered there."""
    other = "imc_other_%s" % uuid.uuid4().hex[:8]
    h = make_httpd(batch_delay="10m", directives=FAST)  # nothing leaves
    time.sleep(0.5)  # the deliverer's first pass, before the events
    site = new_id()
    for _ in range(5):
        r = h.post("api/event", data=json.dumps({
            "time": "2026-11-28T12:00:00Z", "type": "serve",
            "correlation_id": new_id(), "site_id": site}),
            headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 202, r.text
    segs = spool_files(h)
    assert segs
    _kill_all(h)
    h.directives = FAST + "\nIMChallengeDatabase %s" % other
    h.batch_delay = "100ms"
    offset = h.error_log_size()
    h.start()
    poll("the backlog kept (in the error log) or sent",
         lambda: re.search(STRANDED, h.error_log(offset)) or _stored(
             clickhouse, other, site), 20)
    time.sleep(2)  # many delivery passes
    assert _stored(clickhouse, other, site) == 0
    assert re.search(STRANDED, h.error_log(offset))
    assert _stored(clickhouse, "imchallenge", site) == 0
    assert set(segs) <= set(spool_files(h))
    # said once per destination, not once per pass
    assert len(re.findall(STRANDED, h.error_log(offset))) <= len(
        h.children()) + 1
    h.stop()
    h.directives = FAST
    h.start()
    poll("the backlog in its own database",
         lambda: _stored(clickhouse, "imchallenge", site) == 5, 30)
    assert _stored(clickhouse, other, site) == 0
    clickhouse.query("DROP DATABASE IF EXISTS %s" % other)


# ------------------------------------------------------------ clocks


CLOCK_SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "clockshift.c")


def _clock_shim(workbase):
    """The LD_PRELOAD library of clockshift.c, built once per session."""
    lib = workbase / "clockshift.so"
    if not lib.exists():
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
                        "-o", str(lib), CLOCK_SHIM], check=True)
        os.chmod(lib, 0o755)
    return lib


@pytest.mark.error_log_allow(*CLICKHOUSE_DOWN)
def test_wall_clock_step_back_does_not_stall_delivery(make_clickhouse,
                                                      make_httpd, workbase):
    """ClickHouse down, events queued, the deliverer backing off; then the
    wall clock of httpd steps back an hour (NTP, an administrator) and
    ClickHouse comes back: delivery resumes within seconds, not in an hour
    (pings, back-off and batch delay run on the monotonic clock)."""
    shift = workbase / ("clock-%s" % uuid.uuid4().hex[:8])
    shift.write_bytes(struct.pack("=q", 0))
    os.chmod(shift, 0o644)
    preload = " ".join(filter(None, [os.environ.get("IMC_HTTPD_PRELOAD"),
                                     str(_clock_shim(workbase))]))
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, batch_delay="100ms", directives=FAST,
                   env={"LD_PRELOAD": preload,
                        "IMC_CLOCK_SHIFT_FILE": str(shift)})
    ch.stop()
    site = new_id()
    for _ in range(5):
        r = h.post("api/event", data=json.dumps({
            "time": "2026-11-28T12:00:00Z", "type": "serve",
            "correlation_id": new_id(), "site_id": site}),
            headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 202, r.text
    wait_failed_batch(h, 2)  # a few failures: backing off
    with open(shift, "r+b") as f:  # in place: the shim maps the file
        f.write(struct.pack("=q", -3600 * 10 ** 6))
    ch.start()
    t0 = time.monotonic()
    poll("the queued events stored after the step",
         lambda: _stored(ch, "imchallenge", site) == 5, 30, 0.25)
    took = time.monotonic() - t0
    print("\ndelivered %.1f s after ClickHouse came back, the wall clock "
          "an hour behind" % took)
    assert status(h)["clickhouse_reachable"]


@pytest.mark.error_log_allow(REPORT_FAILED)
def test_wall_clock_steps_leave_the_report_cap_alone(clickhouse, make_httpd,
                                                      workbase):
    """IMChallengeMaxReports 1 and one report held in ClickHouse (a relay
    holds its query): the wall clock of httpd steps back an hour, then
    forward an hour past where it was. Each time a second report is still
    over the cap (the slot's age is on the monotonic clock); once the held
    report ends, a report runs."""
    shift = workbase / ("clock-%s" % uuid.uuid4().hex[:8])
    shift.write_bytes(struct.pack("=q", 0))
    os.chmod(shift, 0o644)
    preload = " ".join(filter(None, [os.environ.get("IMC_HTTPD_PRELOAD"),
                                     str(_clock_shim(workbase))]))
    held = []

    def policy(req):
        # The first report query hangs; any later one (a report let
        # through over the cap) is answered, so that the test sees it.
        if is_report_query(req) and not held:
            held.append(req)
            return "hang"
        return "forward"

    def step(usec):
        with open(shift, "r+b") as f:  # in place: the shim maps the file
            f.write(struct.pack("=q", usec))

    with HttpProxy(clickhouse, policy) as relay:
        h = make_httpd(clickhouse=relay.url, directives=(
            "IMChallengeMaxReports 1\nIMChallengeTimeout 30s"),
            env={"LD_PRELOAD": preload, "IMC_CLOCK_SHIFT_FILE": str(shift)})
        poll("readiness", lambda: h.get("readyz", timeout=5).status_code
             == 200)
        answers = []
        holder = threading.Thread(target=lambda: answers.append(h.get(
            "api/report", timeout=60).status_code), daemon=True)
        holder.start()
        poll("the report held in ClickHouse", lambda: held, 20, 0.05)
        for usec in (0, -3600 * 10 ** 6, 3600 * 10 ** 6):
            step(usec)
            r = h.get("api/report", params={"tz": "Asia/Tokyo"}, timeout=20)
            assert r.status_code == 503, (usec, r.status_code, r.text[:200])
            assert r.headers.get("Retry-After") == "1"
        step(0)
        relay.release()  # the held query's connection closes
        holder.join(60)
        assert len(answers) == 1
        poll("a report once the held one has ended", lambda: h.get(
            "api/report", timeout=20).status_code == 200, 20, 0.2)
    assert len([q for q in relay.requests if is_report_query(q)]) >= 2
