# Licensed under the Apache License, Version 2.0.
"""Observability (SPEC section 6): /metrics, /healthz, /readyz, /api/status.

The metrics live in shared memory created by the parent in post_config, so
every httpd process adds to the same numbers; they are kept across graceful
and hard restarts (no reset, no double counting) and start at zero only
with a new parent process.
"""

import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
import requests

import stack
from observe_util import (Conn, ExpositionError, connection_owner, event,
                          events, ndjson, parse_prometheus, sample, series)
from report_cache_util import Client, Table, days_metric

COUNTERS = {
    "imchallenge_events_accepted_total": (),
    "imchallenge_requests_rejected_total":
        ("reason", {"invalid", "too_large", "media_type", "method", "spool",
                    "forbidden", "rate_limited"}),
    "imchallenge_events_delivered_total": (),
    "imchallenge_batches_total":
        ("result", {"sent", "failed", "retried", "quarantined"}),
    "imchallenge_reports_total": (),
    "imchallenge_report_errors_total": (),
    "imchallenge_report_day_lookups_total":
        ("source", {"cache", "clickhouse"}),
    "imchallenge_report_form_lookups_total":
        ("source", {"cache", "clickhouse"}),
    "imchallenge_report_cells_total": ("source", {"cache", "clickhouse"}),
    "imchallenge_report_cache_evictions_total": (),
    # The old name of imchallenge_report_day_lookups_total, for one release.
    "imchallenge_report_days_total": ("source", {"cache", "clickhouse"}),
}
# Deprecated families: the name each one repeats.
DEPRECATED = {
    "imchallenge_report_days_total": "imchallenge_report_day_lookups_total",
}
GAUGES = ("imchallenge_events_queued", "imchallenge_spool_bytes",
          "imchallenge_oldest_queued_age_seconds", "imchallenge_clickhouse_up",
          "imchallenge_quarantined_batches", "imchallenge_quarantined_bytes",
          "imchallenge_report_cache_size_bytes",
          "imchallenge_report_cache_bytes")
# Per spool directory, labelled spool="<IMChallengeSpoolDir>".
SPOOL_GAUGES = ("imchallenge_spool_events_queued",
                "imchallenge_spool_pending_bytes",
                "imchallenge_spool_oldest_queued_age_seconds",
                "imchallenge_spool_clickhouse_up")
HISTOGRAMS = ("imchallenge_clickhouse_request_seconds",
              "imchallenge_report_seconds")

# Lines a ClickHouse that stops answering causes on purpose.
CLICKHOUSE_DOWN_LOG = (r"IMC00302: cannot apply the schema",
                       r"IMC00304: delivery of \d+ events")


def metrics(h):
    """GET /metrics on a fresh connection; the parsed families."""
    r = requests.get(h.url + "metrics", timeout=10,
                     headers={"Connection": "close"},
                     proxies={"http": None, "https": None})
    assert r.status_code == 200, r.text
    return parse_prometheus(r.text)


def value(h, name, **labels):
    return sample(metrics(h), name, **labels)


def poll(what, predicate, timeout=15, interval=0.1):
    return stack.wait_until(predicate, timeout, interval=interval, what=what)


def status(h):
    r = h.get("api/status", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- format


def test_metrics_exposition_is_complete_and_valid(httpd):
    r = httpd.get("metrics")
    assert r.status_code == 200
    ctype = r.headers["Content-Type"].replace(" ", "")
    assert ctype.startswith("text/plain;version=0.0.4"), ctype
    assert r.headers.get("Cache-Control") == "no-store"
    fams = parse_prometheus(r.text)
    for name, labelled in COUNTERS.items():
        assert fams[name].type == "counter", name
        assert fams[name].help, name
        if labelled:
            label, values = labelled
            got = {l[label] for _, l, _ in fams[name].samples}
            assert got == values, (name, got)
        else:
            assert [l for _, l, _ in fams[name].samples] == [{}], name
    for name in GAUGES + SPOOL_GAUGES:
        assert fams[name].type == "gauge", name
    assert sample(fams, "imchallenge_clickhouse_up") in (0, 1)
    spools = {l["spool"] for _, l, _ in
              fams["imchallenge_spool_events_queued"].samples}
    assert spools == {str(httpd.spool_dir)}, spools
    for name in HISTOGRAMS:
        assert fams[name].type == "histogram", name
        les = [l["le"] for n, l, _ in fams[name].samples
               if n == name + "_bucket"]
        assert len(les) >= 5 and les[-1] == "+Inf", les
    # Nothing but the families this module documents.
    assert set(fams) == (set(COUNTERS) | set(GAUGES) | set(SPOOL_GAUGES)
                         | set(HISTOGRAMS))
    for old, new in DEPRECATED.items():
        assert fams[old].help.startswith("Deprecated: "), old
        assert new in fams[old].help, old
        assert ([(l, v) for _, l, v in fams[old].samples]
                == [(l, v) for _, l, v in fams[new].samples]), old


def promtool():
    """promtool as tests/install-deps.sh finds it: $IMC_PROMTOOL, else the
    one it took out of Debian's prometheus package, else one on PATH."""
    path = os.environ.get("IMC_PROMTOOL")
    if not path:
        path = os.path.join(os.environ.get("IMC_TOOLS_DIR",
                                           "/opt/imchallenge-tools"),
                            "bin", "promtool")
        if not os.access(path, os.X_OK):
            path = shutil.which("promtool") or path
    if not os.access(path, os.X_OK):
        pytest.fail("promtool (%s) is missing: bash tests/install-deps.sh "
                    "test installs it" % path, pytrace=False)
    return path


def promtool_check(text):
    """(exit code, output) of `promtool check metrics` on text."""
    res = subprocess.run([promtool(), "check", "metrics"], input=text,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60)
    return res.returncode, res.stdout


def without_families(text, names):
    """The exposition text without the lines of the families named."""
    def family_of(line):
        if line.startswith("# "):
            parts = line.split(" ", 3)
            return parts[2] if len(parts) > 2 else None
        return re.split(r"[{ ]", line, 1)[0]
    return "".join(line for line in text.splitlines(True)
                   if family_of(line) not in names)


def test_metrics_pass_promtool(make_httpd, clickhouse):
    db = "imc_promtool_" + uuid.uuid4().hex[:12]
    h = make_httpd(batch_delay="50ms",
                   directives="IMChallengeDatabase %s" % db)
    try:
        poll("readyz", lambda: h.get("readyz", timeout=2).status_code == 200,
             30)
        site = str(uuid.uuid4())
        r = h.post("api/event?wait=1", json=events(site, 3), timeout=30)
        assert r.status_code == 201, r.text
        assert h.post("api/event", json=[{"type": "serve"}]).status_code == 400
        Table(clickhouse, db).settle()
        with Client(h) as c:  # one child: the second report meets its cache
            for _ in range(2):
                assert c.report(**{"from": "2026-11-19",
                                   "to": "2026-11-21"}).status_code == 200
        cached, queried = days_metric(h)
        assert cached > 0 and queried > 0, (cached, queried)
        r = requests.get(h.url + "metrics", timeout=10,
                         proxies={"http": None, "https": None})
        assert r.status_code == 200, r.text
        fams = parse_prometheus(r.text)
        for name in ("imchallenge_events_accepted_total",
                     "imchallenge_events_delivered_total",
                     "imchallenge_reports_total",
                     "imchallenge_clickhouse_request_seconds_count"):
            assert sample(fams, name) > 0, name
        # Every family passes but the deprecated ones, which keep the
        # names they had (the lint reads "days" as a unit); when they go,
        # the whole text must pass as it is.
        assert promtool_check(without_families(r.text, DEPRECATED)) == (0, "")
        code, out = promtool_check(r.text)
        assert (code, out) == (3, "".join(
            '%s use base unit "seconds" instead of "days"\n' % name
            for name in DEPRECATED)), out
    finally:
        h.stop()
        clickhouse.query("DROP DATABASE IF EXISTS %s" % db)


def test_metrics_head_and_wrong_method(httpd):
    r = httpd.http.head(httpd.url + "metrics", timeout=10)
    assert r.status_code == 200 and r.content == b""
    r = httpd.post("metrics", data=b"x")
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]


GOOD_TEXT = """# HELP a_total A.
# TYPE a_total counter
a_total{x="1"} 3
# HELP h H.
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 2
h_sum 0.7
h_count 2
"""


@pytest.mark.parametrize("broken", [
    GOOD_TEXT.rstrip("\n"),                                 # no final newline
    GOOD_TEXT.replace("# TYPE a_total counter\n", ""),      # no TYPE
    GOOD_TEXT.replace("# HELP a_total A.\n", ""),           # no HELP
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a_total{x="1"} -3'),
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a_total{x="1} 3'),
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a_total{1x="1"} 3'),
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a_total{x="1"} three'),
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a_total{x="1"} 1_0'),
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a-total{x="1"} 3'),
    GOOD_TEXT.replace('a_total{x="1"} 3',
                      'a_total{x="1"} 3\na_total{x="1"} 4'),
    GOOD_TEXT.replace('a_total{x="1"} 3', 'a_total{x="1",x="2"} 3'),
    GOOD_TEXT.replace('h_bucket{le="0.5"} 1', 'h_bucket{le="0.5"} 3'),
    GOOD_TEXT.replace('h_bucket{le="0.5"} 1', 'h_bucket{le=".5"} 1'),
    GOOD_TEXT.replace('h_count 2', 'h_count 5'),
    GOOD_TEXT.replace('h_bucket{le="+Inf"} 2\n', ''),
    GOOD_TEXT + 'a_total{x="2"} 1\n',                       # not contiguous
    GOOD_TEXT + "# TYPE h gauge\n",
])
def test_exposition_checker_rejects_broken_text(broken):
    # The checker used above must be able to fail.
    parse_prometheus(GOOD_TEXT)
    with pytest.raises(ExpositionError):
        parse_prometheus(broken)


# ---------------------------------------------------------------- counters


@pytest.fixture
def prefork(make_httpd):
    # A long batch delay keeps events queued long enough to see the gauges.
    return make_httpd(mpm="prefork", batch_delay="3s",
                      directives="IMChallengeMaxEventSize 1k")


def _pinned_connections(h, n):
    """n kept-alive connections, each held by a different prefork child."""
    conns, owners = [], []
    for _ in range(n):
        c = Conn(h.host, h.port)
        st, _, _ = c.request("GET", "/healthz")
        assert st == 200
        pid = poll("the child holding a connection",
                   lambda: connection_owner(h.port, c, h.children()), 5)
        conns.append(c)
        owners.append(pid)
    return conns, owners


def test_counters_summed_over_processes(prefork, clickhouse):
    h = prefork
    site = str(uuid.uuid4())
    before = series(metrics(h))
    conns, owners = _pinned_connections(h, 5)
    try:
        assert len(set(owners)) == 5, owners  # five different processes
        a, b, c, d, e = conns
        assert a.post_json("/api/event", events(site, 3))[0] == 202
        assert a.request("POST", "/api/event", ndjson(events(site, 2)),
                         {"Content-Type": "application/x-ndjson"})[0] == 202
        assert a.request("GET", "/api/report/site_id='%s'" % site)[0] == 200
        assert b.post_json("/api/event", events(site, 4, "solve"))[0] == 202
        assert b.request("GET", "/api/report/colour='red'")[0] == 400
        assert b.post_json("/api/event", [event(site), {"type": "serve"}]
                           )[0] == 400
        assert c.post_json("/api/event", [event(site)])[0] == 202
        assert c.request("POST", "/api/event", b"{}",
                         {"Content-Type": "application/xml"})[0] == 415
        assert d.request("PUT", "/api/event", b"{}",
                         {"Content-Type": "application/json"})[0] == 405
        big = event(site, padding="x" * 2000)
        assert e.post_json("/api/event", big)[0] == 413
    finally:
        for conn in conns:
            conn.close()
    accepted = 10

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return sample(fams, name, **labels) - before[key]

    # Queued until the batch delay passes: the gauges show the spool.
    fams = None

    def queued():
        nonlocal fams
        fams = metrics(h)
        return sample(fams, "imchallenge_events_queued") == accepted

    poll("all accepted events in imchallenge_events_queued", queued, 3,
         0.05)
    assert sample(fams, "imchallenge_spool_bytes") > 0
    st = status(h)
    assert st["queued_events"] == accepted and st["spool_bytes"] > 0
    assert st["oldest_queued_age_seconds"] > 0

    # Every process's increments are visible from any other process.
    assert delta("imchallenge_events_accepted_total") == accepted
    for reason, n in (("invalid", 1), ("too_large", 1), ("media_type", 1),
                      ("method", 1), ("spool", 0)):
        assert delta("imchallenge_requests_rejected_total",
                     reason=reason) == n, reason
    assert delta("imchallenge_reports_total") == 2
    assert delta("imchallenge_report_errors_total") == 1
    assert delta("imchallenge_report_seconds_count") == 2

    def delivered():
        nonlocal fams
        fams = metrics(h)
        return (delta("imchallenge_events_delivered_total") >= accepted
                and sample(fams, "imchallenge_events_queued") == 0)

    poll("delivery of the accepted events", delivered, 20, 0.2)
    assert delta("imchallenge_events_delivered_total") == accepted
    sent = delta("imchallenge_batches_total", result="sent")
    assert sent == 3  # one batch per writer process (segment): a, b, c
    for result in ("failed", "retried", "quarantined"):
        assert delta("imchallenge_batches_total", result=result) == 0
    # Inserts, pings and the one report that reached ClickHouse were timed.
    assert delta("imchallenge_clickhouse_request_seconds_count") >= sent + 1
    assert sample(fams, "imchallenge_spool_bytes") == 0
    assert sample(fams, "imchallenge_clickhouse_up") == 1
    assert clickhouse.scalar(
        "SELECT count() FROM imchallenge.events WHERE site_id = '%s'"
        % site) == str(accepted)


def _counters(fams):
    """Every counter and histogram series (values that only grow)."""
    out = {}
    for fam in fams.values():
        if fam.type in ("counter", "histogram"):
            for n, l, v in fam.samples:
                if not n.endswith("_sum"):
                    out[(n, tuple(sorted(l.items())))] = v
    return out


@pytest.mark.parametrize("mpm,how", [("prefork", "graceful"),
                                     ("event", "graceful"),
                                     ("event", "restart")])
def test_counters_kept_across_restart(make_httpd, mpm, how):
    h = make_httpd(mpm=mpm, batch_delay="50ms")
    site = str(uuid.uuid4())
    assert h.post("api/event?wait=1", json=events(site, 3)).status_code == 201
    assert h.post("api/event", data=b"[1]",
                  headers={"Content-Type": "application/json"}
                  ).status_code == 400
    assert h.get("api/report/site_id='%s'" % site).status_code == 200
    poll("the queue to drain",
         lambda: sample(metrics(h), "imchallenge_events_queued") == 0)
    old = metrics(h)
    getattr(h, how)()
    new = metrics(h)
    before, after = _counters(old), _counters(new)
    assert set(before) == set(after)
    for key, v in before.items():
        assert after[key] >= v, (key, v, after[key])
    # Counters that only requests move are exactly where they were.
    for name, labels in (("imchallenge_events_accepted_total", {}),
                         ("imchallenge_events_delivered_total", {}),
                         ("imchallenge_requests_rejected_total",
                          {"reason": "invalid"}),
                         ("imchallenge_reports_total", {}),
                         ("imchallenge_report_seconds_count", {})):
        assert sample(new, name, **labels) == sample(old, name, **labels)
    assert sample(new, "imchallenge_events_accepted_total") == 3
    # ...and keep counting in the new generation, once per event.
    assert h.post("api/event?wait=1", json=events(site, 2)).status_code == 201
    poll("delivered to count the new events", lambda: sample(
        metrics(h), "imchallenge_events_delivered_total") == 5)
    assert value(h, "imchallenge_events_accepted_total") == 5


def _dead_clickhouse_httpd(make_httpd, directives=""):
    """httpd whose ClickHouse port has nothing listening."""
    dead = "http://127.0.0.1:%d/" % stack.free_port()
    return make_httpd(clickhouse=dead, mpm="prefork",
                      directives="IMChallengeTimeout 1s\n" + directives)


def test_spool_full_counts_rejections(make_httpd, error_log_allow):
    error_log_allow.extend(CLICKHOUSE_DOWN_LOG)
    error_log_allow.append(r"IMC00203: spool \S+ at IMChallengeSpoolLimit")
    h = _dead_clickhouse_httpd(make_httpd, "IMChallengeSpoolLimit 64k")
    site = str(uuid.uuid4())
    codes = []
    for _ in range(10):
        r = h.post("api/event", json=events(site, 100))
        codes.append(r.status_code)
        if r.status_code == 503:
            assert r.headers.get("Retry-After")
            break
    assert codes[0] == 202 and codes[-1] == 503, codes
    accepted = 100 * (len(codes) - 1)
    fams = metrics(h)
    assert sample(fams, "imchallenge_requests_rejected_total",
                  reason="spool") == 1
    assert sample(fams, "imchallenge_events_accepted_total") == accepted
    assert sample(fams, "imchallenge_events_delivered_total") == 0
    assert sample(fams, "imchallenge_batches_total", result="sent") == 0
    assert sample(fams, "imchallenge_clickhouse_up") == 0
    r = h.get("readyz")
    assert r.status_code == 503
    assert "ClickHouse" in r.json()["reason"]


def test_queue_gauges_while_clickhouse_never_answered(make_httpd,
                                                       error_log_allow):
    # The queue shows even before ClickHouse has answered once.
    error_log_allow.extend(CLICKHOUSE_DOWN_LOG)
    h = _dead_clickhouse_httpd(make_httpd)
    site = str(uuid.uuid4())
    assert h.post("api/event", json=events(site, 3)).status_code == 202
    poll("queued events to show in /api/status",
         lambda: status(h)["queued_events"] == 3, 5, 0.1)
    st = status(h)
    assert st["spool_bytes"] > 0 and st["oldest_queued_age_seconds"] > 0
    assert st["clickhouse_reachable"] is False
    fams = metrics(h)
    assert sample(fams, "imchallenge_events_queued") == 3
    assert sample(fams, "imchallenge_spool_bytes") == st["spool_bytes"]


# ---------------------------------------------------------------- access


@pytest.fixture(scope="module")
def proxied(servers):
    """httpd behind a (pretend) reverse proxy on 127.0.0.1: mod_remoteip
    takes the client address from X-Forwarded-For, so `Require local` in
    the shipped conf meets a non-local client."""
    return servers.httpd(
        modules=["remoteip"],
        directives="RemoteIPHeader X-Forwarded-For\n"
                   "RemoteIPInternalProxy 127.0.0.1\n"
                   "<Location \"/api/event\">\n"
                   "    LimitRequestBody 4096\n"
                   "</Location>")


def test_shipped_conf_limits_metrics_to_local_clients():
    text = stack.SHIPPED_CONF.read_text()
    block = re.search(r'<Location\s+"?/metrics"?\s*>(.*?)</Location>', text,
                      re.S)
    assert block, "no <Location /metrics> in %s" % stack.SHIPPED_CONF
    body = [l.strip() for l in block.group(1).splitlines()
            if l.strip() and not l.strip().startswith("#")]
    assert "SetHandler imchallenge-metrics" in body
    assert "Require local" in body


def test_metrics_refused_to_remote_clients(proxied, error_log_allow):
    error_log_allow.append(
        r"\[client 203\.0\.113\.7:\d+\] AH01630: client denied")
    remote = {"X-Forwarded-For": "203.0.113.7"}
    r = proxied.get("metrics", headers=remote)
    assert r.status_code == 403
    assert "imchallenge_" not in r.text
    assert proxied.get("healthz", headers=remote).status_code == 200
    assert proxied.get("metrics").status_code == 200
    assert proxied.get("metrics", headers={"X-Forwarded-For": "127.0.0.9"}
                       ).status_code == 200


def test_limit_request_body_counts_as_too_large(proxied):
    before = value(proxied, "imchallenge_requests_rejected_total",
                   reason="too_large")
    body = json.dumps(events(str(uuid.uuid4()), 30)).encode()
    assert len(body) > 4096
    r = proxied.post("api/event", data=body,
                     headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert value(proxied, "imchallenge_requests_rejected_total",
                 reason="too_large") == before + 1


# ---------------------------------------------------------------- health


def test_healthz_and_status_shapes(httpd):
    r = httpd.get("healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["Content-Type"].startswith("application/json")
    r = httpd.post("healthz", data=b"")
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    r = httpd.http.head(httpd.url + "readyz", timeout=10)
    assert r.status_code in (200, 503) and r.content == b""
    st = status(httpd)
    assert set(st) == {"queued_events", "spool_bytes",
                       "oldest_queued_age_seconds", "clickhouse_reachable",
                       "spool_writable", "quarantined_batches",
                       "quarantined_bytes"}
    for k in ("queued_events", "spool_bytes", "quarantined_batches",
              "quarantined_bytes"):
        assert type(st[k]) is int and st[k] >= 0, (k, st[k])
    age = st["oldest_queued_age_seconds"]
    assert age is None or (type(age) in (int, float) and age >= 0)
    assert (age is None) == (st["queued_events"] == 0)
    assert st["clickhouse_reachable"] is True
    assert st["spool_writable"] is True


def _ready(h):
    r = h.get("readyz", timeout=5)
    return r.status_code, r.json()


def _readiness_round(h, ch, break_it, repair_it):
    """Ready; broken -> 503 within ~10 s while ingestion goes on; ready
    again after repair, and what was accepted meanwhile is delivered."""
    poll("/readyz 200", lambda: _ready(h)[0] == 200, 15, 0.2)
    before = metrics(h)
    site = str(uuid.uuid4())
    break_it()
    broken_at = time.monotonic()
    accepted = 0
    last = [None]

    def not_ready():
        nonlocal accepted
        # Ingestion never waits on ClickHouse.
        r = h.post("api/event", json=events(site, 2), timeout=5)
        assert r.status_code == 202, r.text
        accepted += 2
        assert h.get("healthz", timeout=5).status_code == 200
        last[0] = _ready(h)
        return last[0][0] == 503

    poll("/readyz 503 after ClickHouse stopped answering", not_ready, 12,
         0.5)
    assert time.monotonic() - broken_at < 12
    body = last[0][1]
    assert body["status"] == "not ready"
    assert "ClickHouse" in body["reason"]
    st = status(h)
    assert st["clickhouse_reachable"] is False and st["spool_writable"]
    fams = metrics(h)
    assert sample(fams, "imchallenge_clickhouse_up") == 0
    assert h.post("api/event", json=events(site, 2),
                  timeout=5).status_code == 202
    accepted += 2
    poll("the queue gauge to hold the undelivered events",
         lambda: status(h)["queued_events"] >= accepted, 10, 0.2)
    # The oldest event's age follows the clock, also while the deliverer
    # waits on a timeout or backs off (a measurement, not a wait).
    age0, t0 = status(h)["oldest_queued_age_seconds"], time.monotonic()
    assert age0 > 0
    time.sleep(1.0)
    age1, t1 = status(h)["oldest_queued_age_seconds"], time.monotonic()
    assert age1 - age0 >= 0.9 * (t1 - t0) - 0.05, (age0, age1, t1 - t0)

    repair_it()
    poll("/readyz 200 after ClickHouse came back",
         lambda: _ready(h)[0] == 200, 20, 0.2)
    assert h.get("healthz").status_code == 200
    # Delivery waits out its back-off (capped at 30 s) before it tries again.
    poll("the queue to drain", lambda: status(h)["queued_events"] == 0, 40,
         0.2)
    st = status(h)
    assert st["clickhouse_reachable"] is True
    assert st["oldest_queued_age_seconds"] is None
    fams = metrics(h)
    delivered = (sample(fams, "imchallenge_events_delivered_total")
                 - sample(before, "imchallenge_events_delivered_total"))
    assert delivered >= accepted
    failed = (sample(fams, "imchallenge_batches_total", result="failed")
              - sample(before, "imchallenge_batches_total", result="failed"))
    assert failed >= 1
    assert sample(fams, "imchallenge_clickhouse_up") == 1
    assert ch.scalar("SELECT uniqExact(correlation_id) FROM "
                     "imchallenge.events WHERE site_id = '%s'"
                     % site) == str(accepted)
    return fams, before


def test_readiness_follows_paused_clickhouse(make_clickhouse, make_httpd,
                                             error_log_allow):
    error_log_allow.extend(CLICKHOUSE_DOWN_LOG)
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, batch_delay="50ms",
                   directives="IMChallengeTimeout 2s")
    fams, before = _readiness_round(h, ch, ch.pause, ch.resume)
    # A batch that timed out was sent again, with the same token.
    assert (sample(fams, "imchallenge_batches_total", result="retried")
            - sample(before, "imchallenge_batches_total",
                     result="retried")) >= 1


def test_readiness_follows_stopped_clickhouse(make_clickhouse, make_httpd,
                                              error_log_allow):
    error_log_allow.extend(CLICKHOUSE_DOWN_LOG)
    ch = make_clickhouse()
    h = make_httpd(clickhouse=ch, mpm="prefork", batch_delay="50ms",
                   directives="IMChallengeTimeout 2s")
    _readiness_round(h, ch, ch.stop, ch.start)


def test_readiness_needs_a_writable_spool(make_httpd, error_log_allow):
    error_log_allow.append(r"IMC\d+: .*spool")
    h = make_httpd(batch_delay="50ms")
    poll("/readyz 200", lambda: _ready(h)[0] == 200, 15, 0.2)
    mode = h.spool_dir.stat().st_mode & 0o777
    h.spool_dir.chmod(0o500)
    try:
        code, body = _ready(h)
        assert code == 503
        assert "spool" in body["reason"]
        assert status(h)["spool_writable"] is False
        assert h.get("healthz").status_code == 200
    finally:
        h.spool_dir.chmod(mode)
    assert _ready(h)[0] == 200
    assert status(h)["spool_writable"] is True


REFUSED_LOG = [r"IMC00600: ClickHouse at .* refuses the module's queries",
               r"IMC00302: cannot apply the schema",
               r"IMC00304: delivery of \d+ events to .* failed"]


def test_readiness_needs_clickhouse_to_accept_the_credentials(
        make_httpd, clickhouse, workbase, error_log_allow):
    """ClickHouse answers /ping (which takes no credentials) but refuses
    the module's user: /readyz stays 503, and says so once in the log;
    with the right password it is ready and delivers."""
    error_log_allow.extend(REFUSED_LOG)
    pwfile = workbase / ("wrong-%s.password" % uuid.uuid4())
    pwfile.write_text("not-the-password\n")
    pwfile.chmod(0o600)
    h = make_httpd(batch_delay="50ms", directives=(
        "IMChallengeClickHouseUser %s\nIMChallengeClickHousePasswordFile %s\n"
        "IMChallengeTimeout 2s" % (clickhouse.imc_user, pwfile)))
    site = str(uuid.uuid4())
    assert h.post("api/event", json=events(site, 1),
                  timeout=5).status_code == 202
    assert clickhouse.ping()
    poll("the refusal in the error log", lambda: "IMC00600" in h.error_log(),
         15, 0.2)
    deadline = time.monotonic() + 7  # past IMC_DELIVER_READY_WINDOW (5 s)
    while time.monotonic() < deadline:
        code, body = _ready(h)
        assert code == 503, body
        time.sleep(0.25)
    assert "ClickHouse" in body["reason"]
    assert status(h)["clickhouse_reachable"] is False
    assert h.error_log().count("IMC00600") == 1  # once, not every second
    pwfile.write_text(clickhouse.imc_password + "\n")
    h.graceful()
    poll("/readyz 200 with the right password",
         lambda: _ready(h)[0] == 200, 20, 0.2)
    poll("the event delivered", lambda: clickhouse.scalar(
        "SELECT count() FROM imchallenge.events WHERE site_id = '%s'"
        % site) == "1", 40, 0.2)
def test_gauges_and_readiness_per_virtual_host(make_httpd, clickhouse,
                                               error_log_allow):
    """Two virtual hosts, each with its own spool; the second's ClickHouse
    never answers. Its /readyz says not ready and its /api/status shows its
    backlog while the first's says ready with nothing queued (the two
    deliverers used to overwrite one set of numbers); /metrics shows both
    spools and their sum."""
    error_log_allow.extend(CLICKHOUSE_DOWN_LOG)
    port = stack.free_port()
    dead = "http://127.0.0.1:%d/" % stack.free_port()
    h = make_httpd(batch_delay="50ms", directives="IMChallengeTimeout 1s")
    other_spool = h.workdir / "spool-down"
    h.directives = (
        "IMChallengeTimeout 1s\nListen 127.0.0.1:%d\n"
        "<VirtualHost 127.0.0.1:%d>\n    ServerName down.example\n"
        "    IMChallengeClickHouse %s\n    IMChallengeSpoolDir %s\n"
        "</VirtualHost>\n<VirtualHost 127.0.0.1:%d>\n"
        "    ServerName up.example\n</VirtualHost>"
        % (port, port, dead, other_spool, h.port))
    other_spool.mkdir(exist_ok=True)
    h.restart()
    down = "http://127.0.0.1:%d/" % port
    get = lambda base, path: requests.get(  # noqa: E731
        base + path, timeout=10, headers={"Connection": "close"},
        proxies={"http": None, "https": None})
    site = str(uuid.uuid4())
    assert requests.post(down + "api/event", json=events(site, 4),
                         timeout=10).status_code == 202
    poll("the down host's backlog in its /api/status",
         lambda: get(down, "api/status").json()["queued_events"] == 4, 10)
    for _ in range(10):  # over several pings of both deliverers
        up_st = get(h.url, "api/status").json()
        down_st = get(down, "api/status").json()
        assert get(h.url, "readyz").status_code == 200
        r = get(down, "readyz")
        assert r.status_code == 503, r.text
        assert "ClickHouse" in r.json()["reason"]
        assert up_st["queued_events"] == 0 and up_st["clickhouse_reachable"]
        assert down_st["queued_events"] == 4, down_st
        assert down_st["clickhouse_reachable"] is False
        time.sleep(0.3)
    fams = metrics(h)
    assert sample(fams, "imchallenge_spool_events_queued",
                  spool=str(other_spool)) == 4
    assert sample(fams, "imchallenge_spool_events_queued",
                  spool=str(h.spool_dir)) == 0
    assert sample(fams, "imchallenge_spool_clickhouse_up",
                  spool=str(other_spool)) == 0
    assert sample(fams, "imchallenge_spool_clickhouse_up",
                  spool=str(h.spool_dir)) == 1
    assert sample(fams, "imchallenge_events_queued") == 4
    assert sample(fams, "imchallenge_clickhouse_up") == 0
