# Licensed under the Apache License, Version 2.0.
"""What a browser and Apache's own features need (SPEC section 10).

CORS (IMChallengeCORS), text/plain bodies (navigator.sendBeacon), gzip
bodies through mod_deflate's input filter, HTTP/2 over TLS (mod_ssl) and
in clear text (h2c, mod_http2), HTTP/1.1 over TLS, each with the real
server modules and, for HTTP/2 and TLS, the real client: curl.  The
browser itself is in tests/browser/test_cors.py.
"""

import gzip
import json
import re
import shutil
import subprocess
import uuid
import zlib
from urllib.parse import quote

import pytest
import requests

import stack
from ingest_util import (JSON, JSON_UTF8, NDJSON, apply_schema, array,
                         assert_error_body, assert_rejected, event, ndjson,
                         new_id, post, site_ids, spool_segments)
from observe_util import parse_prometheus, sample

ALLOWED = "https://shop.example"
LOCAL_PAGE = "http://127.0.0.1:8081"
OTHER = "https://evil.example"

# mod_deflate's own lines about the bodies these tests corrupt on purpose.
DEFLATE_REFUSALS = [r"\[deflate:(warn|error)\].*AH0\d+: (Zlib|Encountered|"
                    r"Inflated|Invalid|Premature)"]

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module", autouse=True)
def schema(clickhouse):
    apply_schema(clickhouse)


@pytest.fixture(scope="module")
def tls_files(workbase):
    """A throw-away self-signed certificate for 127.0.0.1."""
    if not OPENSSL:
        pytest.fail("openssl is needed to make a test certificate")
    d = workbase / "tls"
    d.mkdir(exist_ok=True)
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def web(servers, tls_files):
    """httpd with mod_deflate, mod_http2 and mod_ssl as an administrator
    would set them up: h2c on the plain port, h2 on a TLS port, CORS for
    two origins listed by name."""
    cert, key = tls_files
    tls_port = stack.free_port()
    directives = "\n".join([
        "IMChallengeCORS %s %s" % (ALLOWED, LOCAL_PAGE),
        '<Location "/api/report/denied">',
        "    Require all denied",
        "</Location>",
        "Protocols h2c http/1.1",
        "Listen 127.0.0.1:%d" % tls_port,
        "<VirtualHost 127.0.0.1:%d>" % tls_port,
        "    SSLEngine on",
        "    SSLCertificateFile %s" % cert,
        "    SSLCertificateKeyFile %s" % key,
        "    Protocols h2 http/1.1",
        "</VirtualHost>",
    ])
    h = servers.httpd(modules=["deflate", "http2", "socache_shmcb", "ssl"],
                      directives=directives)
    h.tls_url = "https://127.0.0.1:%d/" % tls_port
    h.cert = cert
    yield h
    h.stop()


@pytest.fixture(scope="module")
def any_origin(servers):
    h = servers.httpd(directives="IMChallengeCORS *")
    yield h
    h.stop()


def accepted_json(r, n, stored=False):
    assert r.status_code == (201 if stored else 202), (r.status_code, r.text)
    assert r.json() == {"status": "stored" if stored else "accepted",
                        "accepted": n}


def cors_headers(r):
    return {k.lower(): v for k, v in r.headers.items()
            if k.lower().startswith("access-control-")}


def varies_by_origin(r):
    return "origin" in [v.strip().lower()
                        for v in r.headers.get("Vary", "").split(",")]


def preflight(h, path, origin, method="POST",
              headers="content-type"):
    hdrs = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        hdrs["Access-Control-Request-Headers"] = headers
    return requests.options(h.url + path, headers=hdrs, timeout=10)


def counters(h):
    r = requests.get(h.url + "metrics", timeout=10)
    assert r.status_code == 200, r.text
    fams = parse_prometheus(r.text)
    return (sample(fams, "imchallenge_events_accepted_total"),
            sample(fams, "imchallenge_reports_total"))


def report_of(h, site, session=None, base=None, **kw):
    url = (base or h.url) + "api/report/site_id='%s'" % site
    return (session or requests).get(url, timeout=30, **kw)


# ------------------------------------------------------------------ CORS


@pytest.mark.parametrize("path,methods", [
    ("api/event", "GET, POST"),
    ("api/report/site_id='%s'" % uuid.uuid4(), "GET, HEAD"),
])
def test_preflight_from_an_allowed_origin_is_204(web, path, methods):
    r = preflight(web, path, ALLOWED)
    assert r.status_code == 204, (r.status_code, r.text)
    assert r.content == b""
    assert cors_headers(r) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": methods,
        "access-control-allow-headers":
            "Authorization, Content-Type, Content-Encoding",
        "access-control-max-age": "600",
    }
    assert varies_by_origin(r)


def test_preflight_never_reaches_the_spool_or_clickhouse(web):
    before_counts, before_segments = counters(web), spool_segments(web)
    sizes = {p.name: p.stat().st_size for p in web.spool_dir.iterdir()}
    for _ in range(5):
        assert preflight(web, "api/event", ALLOWED).status_code == 204
        assert preflight(web, "api/event?wait=1", LOCAL_PAGE).status_code \
            == 204
        assert preflight(web, "api/report", ALLOWED,
                         method="GET").status_code == 204
    # No event accepted, no report run (so no ClickHouse query), no byte
    # written to the spool.
    assert counters(web) == before_counts
    assert spool_segments(web) == before_segments
    assert {p.name: p.stat().st_size
            for p in web.spool_dir.iterdir()} == sizes


def test_every_answer_to_an_allowed_origin_carries_cors(web, clickhouse,
                                                       error_log_allow):
    error_log_allow.append(r"AH01630: client denied by server configuration")
    site = new_id()
    hdr = {"Origin": LOCAL_PAGE}
    answers = [
        post(web, event(site), headers=hdr, wait=True),            # 201
        post(web, event(site), headers=hdr),                       # 202
        post(web, event(site, "nope"), headers=hdr),               # 400
        post(web, "{}", content_type="application/xml", headers=hdr),  # 415
        post(web, event(site, extra=',"p":"%s"' % ("x" * 17000)),
             headers=hdr),                                         # 413
        requests.put(web.url + "api/event", data="{}", headers=hdr),  # 405
        report_of(web, site, headers=hdr),                         # 200
        requests.get(web.url + "api/report/colour='red'", headers=hdr),
        # Refused by Apache's own access control, before the handler.
        requests.get(web.url + "api/report/denied", headers=hdr),
    ]
    assert [r.status_code for r in answers] == [201, 202, 400, 415, 413,
                                                405, 200, 400, 403]
    for r in answers:
        assert cors_headers(r) == {
            "access-control-allow-origin": LOCAL_PAGE,
            "access-control-allow-credentials": "true",
            "access-control-expose-headers": "Retry-After",
        }, (r.status_code, r.headers)
        assert varies_by_origin(r), r.headers
        assert r.headers["Vary"].lower().count("origin") == 1, r.headers
    assert answers[6].json()["totals"]["served"] >= 1  # the stored one


def test_origin_matching_is_exact_after_canonical_form(web):
    # The scheme's default port and case are the same origin ...
    r = preflight(web, "api/event", "HTTPS://Shop.Example:443")
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == \
        "HTTPS://Shop.Example:443"
    # ... another scheme, port or host is not.
    for origin in ("http://shop.example", "https://shop.example:8443",
                   "https://shop.example.evil", "https://x.shop.example",
                   "null"):
        r = preflight(web, "api/event", origin)
        assert r.status_code == 405, origin
        assert cors_headers(r) == {}, origin


def test_other_origins_get_no_cors_headers(web, clickhouse):
    # The preflight is handled as usual (405, no CORS: the browser stops);
    # a request sent anyway (curl, a beacon) is handled as usual too.
    r = preflight(web, "api/event", OTHER)
    assert r.status_code == 405
    assert cors_headers(r) == {}
    assert varies_by_origin(r)
    site = new_id()
    r = post(web, event(site), headers={"Origin": OTHER}, wait=True)
    accepted_json(r, 1, stored=True)
    assert cors_headers(r) == {}
    assert varies_by_origin(r)
    r = report_of(web, site, headers={"Origin": OTHER})
    assert r.status_code == 200 and cors_headers(r) == {}
    assert varies_by_origin(r)
    # Without an Origin (not a browser's cross-origin request): no CORS,
    # but Vary still, so that a cache never hands this answer to a page.
    for r in (report_of(web, site), post(web, event(site))):
        assert r.status_code in (200, 202) and cors_headers(r) == {}
        assert varies_by_origin(r), r.headers


def test_star_allows_any_origin_without_credentials(any_origin):
    for origin in (OTHER, "http://127.0.0.1:9"):
        r = preflight(any_origin, "api/event", origin)
        assert r.status_code == 204
        hdrs = cors_headers(r)
        assert hdrs["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in hdrs
        assert varies_by_origin(r), r.headers
        r = post(any_origin, event(new_id()), headers={"Origin": origin})
        accepted_json(r, 1)
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "Access-Control-Allow-Credentials" not in r.headers
        assert varies_by_origin(r), r.headers


def test_cors_is_off_by_default(httpd):
    r = preflight(httpd, "api/event", ALLOWED)
    assert r.status_code == 405
    assert cors_headers(r) == {}
    assert not varies_by_origin(r)


def test_cors_is_only_for_the_event_and_report_urls(web):
    for path in ("healthz", "api/status", "metrics", ""):
        r = requests.get(web.url + path, headers={"Origin": ALLOWED},
                         timeout=10)
        assert r.status_code == 200, path
        assert cors_headers(r) == {}, path


# ------------------------------------------------- text/plain (sendBeacon)

TEXT = "text/plain;charset=UTF-8"  # what sendBeacon sends for a string


@pytest.mark.parametrize("form", ["single", "array", "ndjson", "pretty"])
def test_text_plain_is_read_as_json_or_ndjson(httpd, clickhouse, form):
    site = new_id()
    evs = [event(site) for _ in range(1 if form in ("single", "pretty")
                                      else 7)]
    body = {"single": evs[0], "array": array(evs), "ndjson": ndjson(evs),
            "pretty": json.dumps(json.loads(evs[0]), indent=2)}[form]
    accepted_json(post(httpd, body, content_type=TEXT, wait=True), len(evs),
                  stored=True)
    assert site_ids(clickhouse, site) == (len(evs), len(evs))


def test_text_plain_keeps_every_rule_of_json(httpd, clickhouse):
    site = new_id()
    # All or nothing: the third line is bad, nothing is stored.
    lines = [event(site), event(site), event(site, kind="nope"),
             event(site)]
    assert_rejected(post(httpd, ndjson(lines), content_type=TEXT), index=2,
                    field="type")
    # Duplicate members, one event too large, too many events.
    assert_rejected(post(httpd, '{"type":"serve","type":"solve"}',
                         content_type=TEXT), index=0)
    big = event(site, extra=',"p":"%s"' % ("x" * 17000))
    assert_error_body(post(httpd, ndjson([event(site), big]),
                           content_type=TEXT), 413)
    many = ndjson([event(site) for _ in range(10001)])
    assert_error_body(post(httpd, many, content_type=TEXT), 413)
    accepted_json(post(httpd, event(site), content_type=TEXT, wait=True), 1,
                  stored=True)
    assert site_ids(clickhouse, site) == (1, 1)


# ------------------------------------------------------------------- gzip


def gz_post(h, body, wait=False, content_type=NDJSON, encoding="gzip",
            base=None):
    url = (base or h.url) + "api/event" + ("?wait=1" if wait else "")
    return requests.post(url, data=body, timeout=60,
                         headers={"Content-Type": content_type,
                                  "Content-Encoding": encoding})


def test_gzip_ndjson_is_accepted_with_exact_rows(web, clickhouse):
    site = new_id()
    evs = [event(site) for _ in range(3000)]
    body = gzip.compress(ndjson(evs).encode())
    accepted_json(gz_post(web, body, wait=True), 3000, stored=True)
    assert site_ids(clickhouse, site) == (3000, 3000)
    # A sendBeacon-like text/plain body, gzip-compressed, too.
    site = new_id()
    body = gzip.compress(array([event(site), event(site)]).encode())
    accepted_json(gz_post(web, body, wait=True, content_type=TEXT), 2,
                  stored=True)
    assert site_ids(clickhouse, site) == (2, 2)


def test_gzip_of_many_identical_events_is_not_a_zip_bomb(web):
    # 5000 copies of one event compress over 200:1, mod_deflate's default
    # ratio limit; the shipped conf allows zlib's best ratio.
    body = gzip.compress(ndjson([event(new_id())] * 5000).encode(), 9)
    assert len(ndjson([event(new_id())] * 5000)) / len(body) > 200
    accepted_json(gz_post(web, body), 5000)


def test_corrupt_gzip_is_400_and_nothing_stored(web, clickhouse,
                                                error_log_allow):
    error_log_allow.extend(DEFLATE_REFUSALS)
    site = new_id()
    good = gzip.compress(ndjson([event(site) for _ in range(50)]).encode())
    bodies = [
        good[:-8] + b"\x00" * 8,                 # wrong CRC and length
        good[:len(good) // 2],                   # cut short
        good[:20] + bytes(b ^ 0x55 for b in good[20:60]) + good[60:],
        b"not gzip at all",
    ]
    for body in bodies:
        r = gz_post(web, body)
        assert_error_body(r, 400)
    accepted_json(post(web, event(new_id()), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site) == (0, 0)


def test_zip_bomb_is_413_and_nothing_stored(web, clickhouse,
                                            error_log_allow):
    error_log_allow.extend(DEFLATE_REFUSALS)
    site = new_id()
    body = bomb(site)
    assert len(body) < 300 * 1024
    r = gz_post(web, body)
    assert_error_body(r, 413)
    accepted_json(post(web, event(new_id()), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site) == (0, 0)


def test_gzip_limits_of_the_module_apply_to_the_inflated_body(web,
                                                              clickhouse):
    site = new_id()
    # One event past IMChallengeMaxEventSize (16k) once inflated, though
    # its compressed body is far below it.
    big = event(site, extra=',"p":"%s"' % ("x" * 17000))
    body = gzip.compress(ndjson([event(site), big]).encode())
    assert len(body) < 1024
    assert_error_body(gz_post(web, body), 413)
    # One event past IMChallengeMaxBatchEvents (10,000).
    body = gzip.compress(ndjson([event(site) for _ in range(10001)]).encode())
    assert_error_body(gz_post(web, body), 413)
    accepted_json(post(web, event(new_id()), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site) == (0, 0)


# Each of httpd's limits on a gzip body, set low on the event URL: the
# limit, the body it must refuse and the status it refuses it with.
INFLATED_LIMITS = {
    # The module's read of the inflated body is capped by LimitRequestBody
    # (httpd's own check counts the compressed bytes only).
    "LimitRequestBody": ("LimitRequestBody 100000", "varied", 413),
    "DeflateInflateLimitRequestBody": (
        "DeflateInflateLimitRequestBody 100000", "varied", 413),
    "DeflateInflateRatioLimit": ("DeflateInflateRatioLimit 20", "repeated",
                                 400),
}


@pytest.fixture(scope="module", params=sorted(INFLATED_LIMITS))
def limited(request, servers):
    """(httpd with mod_deflate and one limit set low, the too-large kind
    of body, the status that refuses it)."""
    line, kind, status = INFLATED_LIMITS[request.param]
    h = servers.httpd(modules=["deflate"], directives="\n".join([
        '<Location "/api/event">', "    " + line, "</Location>"]))
    yield h, kind, status
    h.stop()


def test_gzip_past_a_limit_once_inflated_is_refused(limited, clickhouse,
                                                    error_log_allow):
    h, kind, status = limited
    error_log_allow.extend(DEFLATE_REFUSALS)
    site = new_id()
    if kind == "varied":
        # 1,000 events: over 100,000 bytes inflated, far under compressed.
        raw = ndjson([event(site) for _ in range(1000)]).encode()
        body = gzip.compress(raw)
        assert len(body) < 100000 < len(raw)
    else:
        # One event 5,000 times: a ratio over 20 all along the stream.
        raw = ndjson([event(site)] * 5000).encode()
        body = gzip.compress(raw)
        assert len(raw) / len(body) > 200
    assert_error_body(gz_post(h, body), status)
    assert site_ids(clickhouse, site) == (0, 0)
    # Below the limit, the same server stores a gzip body with exact rows.
    site = new_id()
    raw = ndjson([event(site) for _ in range(200)]).encode()
    body = gzip.compress(raw)
    assert len(raw) < 100000 and len(raw) / len(body) < 20
    accepted_json(gz_post(h, body, wait=True), 200, stored=True)
    assert site_ids(clickhouse, site) == (200, 200)


def bomb(site):
    """Ten valid events, then 200 MB of blanks: about 200 kB gzip."""
    comp = zlib.compressobj(9, wbits=31)
    body = comp.compress(ndjson([event(site) for _ in range(10)]).encode())
    for _ in range(200):
        body += comp.compress(b" " * (1024 * 1024))
    return body + comp.flush()


@pytest.mark.parametrize("kind", ["valid", "corrupt", "bomb"])
def test_gzip_without_mod_deflate_is_415(httpd, clickhouse, kind):
    # httpd (the session's server) loads no mod_deflate: the shipped
    # conf's <IfModule mod_deflate.c> sets no filter.
    site = new_id()
    good = gzip.compress(ndjson([event(site) for _ in range(50)]).encode())
    body = {"valid": good, "corrupt": good[:len(good) // 2],
            "bomb": bomb(site)}[kind]
    r = gz_post(httpd, body)
    assert_error_body(r, 415)
    assert "Content-Encoding" in r.json()["error"]
    assert r.headers["Accept-Encoding"] == "identity"
    accepted_json(post(httpd, event(new_id()), wait=True), 1, stored=True)
    assert site_ids(clickhouse, site) == (0, 0)


def test_unknown_content_encoding_is_415(web, clickhouse):
    site = new_id()
    for enc in ("br", "deflate", "gzip, br", "x-unknown"):
        r = gz_post(web, ndjson([event(site)]).encode(), encoding=enc)
        assert_error_body(r, 415)
    assert site_ids(clickhouse, site) == (0, 0)


# ---------------------------------------------------- HTTP/2 and TLS


def curl(args, body=None, timeout=60):
    """curl with args; (status, http version, body text)."""
    if not CURL:
        pytest.fail("curl is needed for the HTTP/2 tests")
    cmd = [CURL, "-sS", "--noproxy", "*", "-o", "-", "-w",
           "\n%{http_code} %{http_version}"] + args
    res = subprocess.run(cmd, input=body, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=timeout)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    text, _, tail = res.stdout.decode().rpartition("\n")
    code, version = tail.split()
    return int(code), version, text


@pytest.fixture(params=["h2-tls", "h2c", "http1.1-tls"])
def h2(request, web):
    """(curl options, base URL, the HTTP version curl must report) for
    HTTP/2 over TLS or in clear text, and HTTP/1.1 over TLS (mod_ssl
    alone)."""
    if request.param == "h2-tls":
        return ["--http2", "--cacert", str(web.cert)], web.tls_url, "2"
    if request.param == "http1.1-tls":
        return ["--http1.1", "--cacert", str(web.cert)], web.tls_url, "1.1"
    return ["--http2-prior-knowledge"], web.url, "2"


def test_h2_single_event_and_wait(web, clickhouse, h2):
    opts, base, version = h2
    site = new_id()
    hdr = ["-H", "Content-Type: application/json"]
    code, ver, text = curl(opts + hdr + ["--data-binary", "@-",
                                         base + "api/event"],
                           body=event(site).encode())
    assert (code, ver, json.loads(text)) == (
        202, version, {"status": "accepted", "accepted": 1})
    code, ver, text = curl(opts + hdr + ["--data-binary", "@-",
                                         base + "api/event?wait=1"],
                           body=event(site).encode())
    assert (code, ver, json.loads(text)) == (
        201, version, {"status": "stored", "accepted": 1})


def test_h2_large_ndjson_batch_and_report(web, clickhouse, h2, workbase):
    opts, base, version = h2
    site = new_id()
    evs = [event(site, kind="serve") for _ in range(10000)]
    f = workbase / ("batch-%s.ndjson" % site)
    f.write_text(ndjson(evs))
    code, ver, text = curl(opts + ["-H", "Content-Type: application/x-ndjson",
                                   "--data-binary", "@%s" % f,
                                   base + "api/event?wait=1"])
    assert (code, ver) == (201, version), text
    assert json.loads(text) == {"status": "stored", "accepted": 10000}
    assert site_ids(clickhouse, site) == (10000, 10000)
    code, ver, text = curl(opts + [base + "api/report/site_id='%s'" % site])
    assert (code, ver) == (200, version), text
    assert json.loads(text)["totals"] == {"served": 10000, "solved": 0,
                                          "solve_rate": 0}
    # gzip over HTTP/2 too.
    site = new_id()
    f.write_bytes(gzip.compress(ndjson([event(site)
                                        for _ in range(500)]).encode()))
    code, ver, text = curl(opts + ["-H", "Content-Type: application/x-ndjson",
                                   "-H", "Content-Encoding: gzip",
                                   "--data-binary", "@%s" % f,
                                   base + "api/event?wait=1"])
    assert (code, ver) == (201, version), text
    assert site_ids(clickhouse, site) == (500, 500)


def test_h2_metrics_health_and_home(web, h2):
    opts, base, version = h2
    code, ver, text = curl(opts + [base + "metrics"])
    assert (code, ver) == (200, version)
    assert re.search(r"^imchallenge_events_accepted_total \d+", text, re.M)
    for path, want in (("healthz", '"ok"'), ("readyz", '"status":"ready"'),
                       ("api/status", "queued_events"), ("", "<html")):
        code, ver, text = curl(opts + [base + path])
        assert (code, ver) == (200, version), path
        assert want in text, path


def test_h2_get_event_and_csv_report(web, clickhouse, h2):
    # The GET form of one event, with ?wait=1, and the report as CSV.
    opts, base, version = h2
    site = new_id()
    path = "api/event/" + quote(event(site), safe="") + "?wait=1"
    code, ver, text = curl(opts + [base + path])
    assert (code, ver, json.loads(text)) == (
        201, version, {"status": "stored", "accepted": 1})
    assert site_ids(clickhouse, site) == (1, 1)
    code, ver, text = curl(opts + [base + "api/report/site_id='%s'"
                                   "?format=csv" % site])
    assert (code, ver) == (200, version), text
    assert text.splitlines() == ["day,site_id,served,solved,solve_rate",
                                 "2026-11-28,%s,1,0,0.0000" % site], text


def test_h2_preflight(web, h2):
    opts, base, version = h2
    code, ver, text = curl(opts + ["-X", "OPTIONS", "-D", "-",
                                   "-H", "Origin: %s" % ALLOWED,
                                   "-H", "Access-Control-Request-Method: POST",
                                   base + "api/event"])
    assert (code, ver) == (204, version)
    assert ("access-control-allow-origin: %s" % ALLOWED) in text.lower()
