# Licensed under the Apache License, Version 2.0.
"""Tenants and limits (README "Tenants and limits"): IMChallengeSiteAccess
with real authentication modules (mod_auth_basic + mod_authn_file, mod_ssl
client certificates) and IMChallengeRateLimit across httpd processes.

Two tenants (acme: sites A1, A2; globex: site G1) and an operator (`*`)
log in with Basic auth; the htpasswd file and a throw-away CA are made
here.  Reports are asked for a day of their own, so that other tests'
events never show.
"""

import base64
import hashlib
import json
import os
import random
import subprocess
import time

import pytest
import requests

import stack
from ingest_util import (JSON, NDJSON, array, event, ndjson, new_id,
                         stored_cids, wait_stored)
from report_cache_util import days_metric, delta

A1, A2, G1 = new_id(), new_id(), new_id()
QUOTED = "o'brien\"x"  # a principal with quotes
PASSWORD = "secret-pw"
USERS = ("acme", "globex", "operator", "stranger", QUOTED)

# A day no other test writes to, and its events' time.
DAY = "2031-%02d-%02d" % (random.randint(1, 12), random.randint(1, 28))
WHEN = DAY + "T12:00:00Z"

SITES_FILE = """# principal   sites
acme      %s %s
globex    %s   # one site
operator  *
%s %s
""" % (A1, A2.upper(), G1, QUOTED, A1)

AUTH = """AuthType Basic
    AuthName "imchallenge"
    AuthBasicProvider file
    AuthUserFile %s
    Require valid-user"""

AUTH_MODULES = ("auth_basic", "authn_core", "authn_file", "authz_user")

REJECTED = ('{"status":"rejected","errors":[{"index":%d,"field":"site_id",'
            '"error":"site not allowed"}]}')


def htpasswd_line(user, password):
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest())
    return "%s:{SHA}%s\n" % (user, digest.decode())


@pytest.fixture(scope="module")
def files(workbase):
    d = workbase / "tenants"
    d.mkdir(exist_ok=True)
    (d / "sites.txt").write_text(SITES_FILE)
    (d / "htpasswd").write_text("".join(htpasswd_line(u, PASSWORD)
                                        for u in USERS))
    for f in d.iterdir():
        os.chmod(f, 0o644)
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="module")
def tenants(servers, files):
    """Auth on the event and report URLs; /open/event maps the event
    handler without any authentication."""
    auth = AUTH % (files / "htpasswd")
    # One child, as before the report cache was shared by every process:
    # the cache test below finds the rows an earlier report kept.
    return servers.httpd(modules=AUTH_MODULES, directives="""
StartServers 1
ServerLimit 1
MaxRequestWorkers 32
IMChallengeSiteAccess %s
<Location "/api/event">
    %s
</Location>
<Location "/api/report">
    %s
</Location>
<Location "/open/event">
    SetHandler imchallenge-event
</Location>
""" % (files / "sites.txt", auth, auth))


def as_user(h, user, method, path, **kw):
    kw.setdefault("timeout", 30)
    return requests.request(method, h.url + path, auth=(user, PASSWORD),
                            proxies={"http": None, "https": None}, **kw)


def post_as(h, user, body, content_type=NDJSON, wait=False):
    return as_user(h, user, "POST", "api/event" + ("?wait=1" if wait else ""),
                   data=body.encode(), headers={"Content-Type": content_type})


def report_as(h, user, flt=None, **params):
    from urllib.parse import quote
    path = "api/report" + ("/" + quote(flt, safe="") if flt else "")
    params.setdefault("from", DAY)
    params.setdefault("to", DAY)
    return as_user(h, user, "GET", path, params=params)


def rows_of(r):
    assert r.status_code == 200, (r.status_code, r.text)
    return {(row["site_id"], row["served"], row["solved"])
            for row in r.json()["rows"]}


@pytest.fixture(scope="module")
def written(tenants, clickhouse):
    """Events of the day: A1 3 served / 1 solved, A2 1 served, G1 2 served,
    each tenant writing its own."""
    a = [event(A1, kind="serve", when=WHEN) for _ in range(3)]
    a.append(event(A1, cid=json.loads(a[0])["correlation_id"], kind="solve",
                   when=WHEN))
    a.append(event(A2, when=WHEN))
    g = [event(G1, when=WHEN) for _ in range(2)]
    assert post_as(tenants, "acme", ndjson(a), wait=True).status_code == 201
    assert post_as(tenants, "globex", ndjson(g), wait=True).status_code == 201
    return {"acme": {(A1, 3, 1), (A2, 1, 0)}, "globex": {(G1, 2, 0)}}


# ------------------------------------------------------------ ingestion


def test_own_sites_are_accepted(tenants):
    r = post_as(tenants, "acme", array([event(A1), event(A2.upper())]),
                content_type=JSON)
    assert (r.status_code, r.json()) == (202, {"status": "accepted",
                                               "accepted": 2})
    r = post_as(tenants, "operator", ndjson([event(A1), event(G1)]))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("user,sites,index", [
    ("acme", [A1, G1, A2], 1),
    ("acme", [G1], 0),
    ("globex", [G1, G1, A1], 2),
    (QUOTED, [A1, A2], 1),
])
def test_others_sites_are_refused_with_the_index(tenants, clickhouse, user,
                                                 sites, index):
    events = [event(s) for s in sites]
    cids = {json.loads(e)["correlation_id"] for e in events}
    r = post_as(tenants, user, ndjson(events))
    assert r.status_code == 403
    assert r.text == REJECTED % index
    assert r.headers["Content-Type"].startswith("application/json")
    # Nothing of the request was accepted: a later good event of the same
    # sites is stored, the refused ones are not.
    good = event(sites[0])
    assert post_as(tenants, "operator", good, wait=True).status_code == 201
    assert not (stored_cids(clickhouse, list(set(sites))) & cids)


def test_the_get_form_is_checked_too(tenants):
    from urllib.parse import quote
    r = as_user(tenants, "globex", "GET",
                "api/event/" + quote(event(A1), safe=""))
    assert (r.status_code, r.text) == (403, REJECTED % 0)
    r = as_user(tenants, "globex", "GET",
                "api/event/" + quote(event(G1), safe=""))
    assert r.status_code == 202, r.text


@pytest.mark.error_log_allow(r"AH01617: user acme: authentication failure")
def test_no_user_or_an_unknown_user_gets_403(tenants):
    r = requests.post(tenants.url + "open/event", data=event(A1),
                      headers={"Content-Type": JSON}, timeout=10)
    assert r.status_code == 403
    assert "error" in r.json()
    for method, path in (("POST", "api/event"), ("GET", "api/report")):
        r = as_user(tenants, "stranger", method, path, data=event(A1),
                    headers={"Content-Type": JSON})
        assert r.status_code == 403, (path, r.text)
        assert set(r.json()) == {"error"}
    # A wrong password never reaches the module: Apache answers 401.
    r = requests.get(tenants.url + "api/report", auth=("acme", "wrong"),
                     timeout=10)
    assert r.status_code == 401


def test_health_status_and_metrics_are_unchanged(tenants):
    for path in ("healthz", "readyz", "api/status", "metrics"):
        r = requests.get(tenants.url + path, timeout=10)
        assert r.status_code == 200, (path, r.status_code)
    assert 'reason="forbidden"' in requests.get(tenants.url + "metrics",
                                                timeout=10).text


# ------------------------------------------------------------ reports


def test_each_tenant_sees_only_its_rows(tenants, written):
    assert rows_of(report_as(tenants, "acme")) == written["acme"]
    assert rows_of(report_as(tenants, "globex")) == written["globex"]
    everything = rows_of(report_as(tenants, "operator"))
    assert everything >= written["acme"] | written["globex"]
    body = report_as(tenants, "acme").json()
    assert body["totals"] == {"served": 4, "solved": 1, "solve_rate": 0.25}


def test_interval_forms_show_only_the_tenants_procedures(tenants, written):
    r = report_as(tenants, "acme", interval="total", by="none")
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [{"served": 4, "solved": 1, "solve_rate": 0.25}]
    body = report_as(tenants, "globex", interval="hour", by="none",
                     fill="1").json()
    assert len(body["rows"]) == 24
    assert [x for x in body["rows"] if x["served"] or x["solved"]] == [
        {"bucket": DAY + "T12:00:00+00:00", "served": 2, "solved": 0,
         "solve_rate": 0.0}]
    r = report_as(tenants, "acme", "site_id='%s'" % G1, interval="week",
                  by="none", compare="previous_period")
    assert r.json() == {"rows": [], "totals": {
        "served": 0, "solved": 0, "solve_rate": None}, "previous": {
        "from": r.json()["previous"]["from"], "to": r.json()["previous"]["to"],
        "totals": {"served": 0, "solved": 0, "solve_rate": None}}}
    # The solve window's metrics: another tenant's site is never read.
    r = report_as(tenants, "globex", interval="total", by="none",
                  metrics="served,unsolved,solve_time_p50")
    assert r.json()["rows"] == [{"served": 2, "unsolved": 2,
                                 "solve_time_p50": None}]
    r = report_as(tenants, "acme", "site_id='%s'" % G1, interval="total",
                  metrics="unsolved,solve_time_avg")
    assert r.json() == {"rows": [], "totals": {"unsolved": 0,
                                               "solve_time_avg": None}}


def test_csv_shows_only_the_tenants_rows(tenants, written):
    r = report_as(tenants, "globex", format="csv")
    assert r.status_code == 200
    assert r.text == ("day,site_id,served,solved,solve_rate\r\n"
                      "%s,%s,2,0,0.0000\r\n" % (DAY, G1))
    r = report_as(tenants, "acme", format="csv")
    assert G1 not in r.text and A1 in r.text and A2 in r.text


@pytest.mark.parametrize("flt", [
    "site_id='%s'" % G1,
    "site_id IN ('%s')" % G1,
    "type='serve' AND site_id='%s'" % G1.upper(),
])
def test_another_tenants_site_looks_like_a_never_used_one(tenants, written,
                                                          flt):
    other = report_as(tenants, "acme", flt)
    unused = report_as(tenants, "acme", flt.replace(G1, new_id()).replace(
        G1.upper(), new_id()))
    assert (other.status_code, other.headers["Content-Type"], other.text) == \
        (unused.status_code, unused.headers["Content-Type"], unused.text)
    assert other.json() == {"rows": [], "totals": {
        "served": 0, "solved": 0, "solve_rate": None}}
    csv_other = report_as(tenants, "acme", flt, format="csv")
    assert csv_other.text == "day,site_id,served,solved,solve_rate\r\n"


@pytest.mark.parametrize("flt,expected", [
    ("site_id='%s' OR site_id='%s'" % (A1, G1), {A1}),
    ("NOT site_id='%s'" % A1, {A2}),
    ("NOT (site_id IN ('%s'))" % G1, {A1, A2}),
    ("type='serve' OR type='solve'", {A1, A2}),
])
def test_a_filter_narrows_and_never_widens(tenants, written, flt, expected):
    sites = {s for s, _, _ in rows_of(report_as(tenants, "acme", flt))}
    assert sites == expected


def test_the_report_cache_keeps_tenants_apart(tenants, written):
    # Parts written in the current second are never cached: let them age.
    time.sleep(1.5)
    first = {u: rows_of(report_as(tenants, u)) for u in ("acme", "globex")}
    before = days_metric(tenants)
    again = {u: rows_of(report_as(tenants, u)) for u in
             ("globex", "acme", "operator", "globex")}
    moved = delta(before, days_metric(tenants))
    assert moved["cache"] >= 2, moved  # the cache answered these reports
    assert first["acme"] == again["acme"] == written["acme"]
    assert first["globex"] == again["globex"] == written["globex"]
    assert again["operator"] >= written["acme"] | written["globex"]


# ------------------------------------------------------------ config


@pytest.mark.parametrize("text,line,what", [
    ("acme %s\nglobex 0faf8b64-a33d-4db8-aaee\n" % A1, 2, "must be a UUID"),
    ("# x\nacme %s\n\nacme %s\n" % (A1, A2), 4, "already granted"),
    ("acme\n", 1, "has no sites"),
])
def test_configtest_names_file_and_line_of_a_bad_entry(httpd, workbase, text,
                                                       line, what):
    path = workbase / ("bad-sites-%d.txt" % line)
    path.write_text(text)
    rc, out = httpd.configtest("IMChallengeSiteAccess %s" % path)
    assert rc != 0
    assert "IMChallengeSiteAccess: %s:%d: " % (path, line) in out, out
    assert what in out


def test_configtest_names_an_unreadable_file(httpd, workbase):
    for path in (workbase / "no-such-sites.txt", workbase):
        rc, out = httpd.configtest("IMChallengeSiteAccess %s" % path)
        assert rc != 0
        assert "IMChallengeSiteAccess: %s: cannot read the file" % path in out


# ------------------------------------------------------------ certificates


def openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=str(cwd), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def pki(files):
    d = files / "pki"
    d.mkdir(exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=imc test CA", "-keyout", "ca.key", "-out", "ca.crt",
            cwd=d)
    for name, cn, ext in (("server", "127.0.0.1",
                           "subjectAltName=IP:127.0.0.1\n"
                           "basicConstraints=CA:FALSE\n"
                           "extendedKeyUsage=serverAuth\n"),
                          ("acme", "acme", "basicConstraints=CA:FALSE\n"
                           "extendedKeyUsage=clientAuth\n"),
                          ("nobody", "nobody", "basicConstraints=CA:FALSE\n"
                           "extendedKeyUsage=clientAuth\n")):
        (d / (name + ".ext")).write_text(ext)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn,
                "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", name + ".ext", "-out", name + ".crt", cwd=d)
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return d


@pytest.fixture(scope="module")
def tls(servers, files, pki):
    port = stack.free_port()
    h = servers.httpd(modules=("ssl", "socache_shmcb"), directives="""
SSLSessionCache shmcb:%(run)s/ssl_scache(512000)
Listen 127.0.0.1:%(port)d
<VirtualHost 127.0.0.1:%(port)d>
    ServerName 127.0.0.1
    SSLEngine on
    SSLCertificateFile %(pki)s/server.crt
    SSLCertificateKeyFile %(pki)s/server.key
    SSLCACertificateFile %(pki)s/ca.crt
    SSLVerifyClient require
    SSLVerifyDepth 1
    SSLUserName SSL_CLIENT_S_DN_CN
    IMChallengeSiteAccess %(sites)s
</VirtualHost>
""" % {"port": port, "pki": pki, "sites": files / "sites.txt",
       "run": servers.base})
    h.tls_url = "https://127.0.0.1:%d/" % port
    return h


def tls_request(h, pki, who, method, path, **kw):
    return requests.request(
        method, h.tls_url + path, verify=str(pki / "ca.crt"),
        cert=(str(pki / (who + ".crt")), str(pki / (who + ".key"))),
        proxies={"http": None, "https": None}, timeout=30, **kw)


def test_a_client_certificate_names_the_principal(tls, pki, clickhouse):
    mine, theirs = event(A1), event(G1)
    r = tls_request(tls, pki, "acme", "POST", "api/event?wait=1", data=mine,
                    headers={"Content-Type": JSON})
    assert r.status_code == 201, r.text
    r = tls_request(tls, pki, "acme", "POST", "api/event", data=theirs,
                    headers={"Content-Type": JSON})
    assert (r.status_code, r.text) == (403, REJECTED % 0)
    r = tls_request(tls, pki, "acme", "GET", "api/report",
                    params={"from": "2026-11-28", "to": "2026-11-28"})
    assert {row["site_id"] for row in r.json()["rows"]} <= {A1, A2}
    assert A1 in {row["site_id"] for row in r.json()["rows"]}
    r = tls_request(tls, pki, "nobody", "GET", "api/report")
    assert r.status_code == 403
    # The main server (plain HTTP, no IMChallengeSiteAccess) is open.
    r = requests.get(tls.url + "api/report", timeout=10)
    assert r.status_code == 200


# ------------------------------------------------------------ rate limit

RATE = """IMChallengeRateLimit 0.5 5
LimitRequestFieldSize 16384
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1"""


@pytest.fixture(scope="module")
def limited(servers):
    return servers.httpd(mpm="prefork", modules=("remoteip",),
                         directives=RATE)


def post_from(h, ip, body, content_type=NDJSON, wait=False):
    # A new connection each time: prefork spreads them over its children.
    return requests.post(h.url + "api/event" + ("?wait=1" if wait else ""),
                         data=body.encode(), timeout=30,
                         headers={"Content-Type": content_type,
                                  "X-Forwarded-For": ip,
                                  "Connection": "close"})


def fresh_ip():
    return "10.%d.%d.%d" % tuple(random.randint(1, 254) for _ in range(3))


def assert_429(r):
    assert r.status_code == 429, (r.status_code, r.text)
    retry = r.headers["Retry-After"]
    assert retry.isdigit() and int(retry) >= 1, retry
    assert set(r.json()) == {"error"}
    return int(retry)


def test_a_burst_over_the_limit_gets_429_another_key_does_not(limited,
                                                              clickhouse):
    ip, other, site = fresh_ip(), fresh_ip(), new_id()
    start = time.monotonic()
    answers = [post_from(limited, ip, event(site)) for _ in range(12)]
    elapsed = time.monotonic() - start
    passed = [r for r in answers if r.status_code == 202]
    # Five of burst, and one more for each two seconds that went by.
    assert 5 <= len(passed) <= 5 + int(elapsed / 2) + 1, (len(passed), elapsed)
    refused = [r for r in answers if r.status_code != 202]
    assert refused and all(assert_429(r) <= 2 for r in refused)
    assert post_from(limited, other, event(site)).status_code == 202
    assert len(limited.children()) >= 2  # prefork: several processes


def test_nothing_of_a_429_request_is_stored(limited, clickhouse):
    ip, site = fresh_ip(), new_id()
    assert post_from(limited, ip, ndjson([event(site) for _ in range(5)])
                     ).status_code == 202
    refused = [event(site) for _ in range(3)]
    assert_429(post_from(limited, ip, ndjson(refused)))
    # Another key's event of the site, delivered after the refused one.
    good = event(site)
    assert post_from(limited, fresh_ip(), good, wait=True).status_code == 201
    stored = stored_cids(clickhouse, [site])
    assert json.loads(good)["correlation_id"] in stored
    assert not stored & {json.loads(e)["correlation_id"] for e in refused}


def test_batches_and_wait_count_events(limited):
    ip = fresh_ip()
    site = new_id()
    assert post_from(limited, ip, ndjson([event(site) for _ in range(3)]),
                     wait=True).status_code == 201
    # Two events left: a batch of three is refused whole, two pass.
    assert_429(post_from(limited, ip, array([event(site)] * 3), JSON))
    assert post_from(limited, ip, array([event(site) for _ in range(2)]),
                     JSON).status_code == 202
    assert_429(post_from(limited, ip, event(site), JSON, wait=True))


def test_after_the_wait_requests_pass_again(limited):
    ip, site = fresh_ip(), new_id()
    assert post_from(limited, ip, ndjson([event(site) for _ in range(5)])
                     ).status_code == 202
    retry = assert_429(post_from(limited, ip, event(site)))
    time.sleep(retry + 0.1)
    assert post_from(limited, ip, event(site)).status_code == 202


def test_rate_limited_requests_are_counted(limited):
    ip = fresh_ip()

    def count():
        text = requests.get(limited.url + "metrics", timeout=10).text
        line = [l for l in text.splitlines() if l.startswith(
            'imchallenge_requests_rejected_total{reason="rate_limited"}')]
        return int(line[0].split()[-1])
    before = count()
    post_from(limited, ip, ndjson([event(new_id()) for _ in range(5)]))
    assert_429(post_from(limited, ip, event(new_id())))
    assert count() == before + 1


# ------------------------------------------------------------ hostile


@pytest.mark.parametrize("value", [
    "10.0.0.1\"' OR 1=1 --",
    "'\"",
    "1.2.3.4, 5.6.7.8, \"x\"",
    "9" * 10000,
    "10.1.1.1," * 1000,
])
def test_hostile_forwarded_for_values(limited, value):
    r = post_from(limited, value, event(new_id()))
    assert r.status_code in (202, 400, 429), (r.status_code, r.text)


def test_a_nul_in_forwarded_for_is_refused_before_the_module(limited):
    import socket
    body = event(new_id()).encode()
    wire = (b"POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nX-Forwarded-For: 1.2\x003\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            ) + body
    with socket.create_connection((limited.host, limited.port), 10) as s:
        s.sendall(wire)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]


@pytest.mark.error_log_allow(r"AH01618: user .* not found",
                             r"AH01617: user .*authentication failure")
@pytest.mark.parametrize("user", ["x" * 10000, "a\"b'c", "acme\x01"])
def test_hostile_principals(tenants, user):
    """Users that are not in htpasswd never reach the module (401); the
    one with quotes that is writes its own site."""
    r = requests.post(tenants.url + "api/event", data=event(A1),
                      auth=(user, PASSWORD), timeout=10,
                      headers={"Content-Type": JSON})
    assert r.status_code in (400, 401), r.status_code


def test_a_quoted_principal_reads_only_its_site(tenants, written):
    assert post_as(tenants, QUOTED, event(A1, when=WHEN),
                   content_type=JSON).status_code == 202
    r = report_as(tenants, QUOTED)
    assert {row["site_id"] for row in r.json()["rows"]} == {A1}
