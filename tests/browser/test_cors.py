# Licensed under the Apache License, Version 2.0.
"""A page on another origin sends events and reads the report, in Chromium.

The page is served by a tiny http.server on its own port (its own origin);
httpd allows that origin with IMChallengeCORS.  The page sends events with
fetch (JSON: the browser makes a preflight first) and with
navigator.sendBeacon (text/plain), and reads the report with fetch.  A
second page server, on an origin not allowed, shows the browser's own
CORS check stopping the page.  The README's page is run as the README
shows it: its fetch on load and its beacon as the page unloads.
"""

import http.server
import json
import re
import threading
import uuid

import pytest

import stack

# A database of its own: the dashboard tests compare the session's
# database with the dataset they stored in it.
DATABASE = "imchallenge_cors"

# What a customer's page would hold (the README shows the same code).
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head><body>
<script>
const IMC = "%(api)s";

// One event, or a batch, with fetch: JSON, so a CORS preflight first.
async function sendEvents(events, wait) {
  const r = await fetch(IMC + "/api/event" + (wait ? "?wait=1" : ""), {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(events),
    keepalive: true,
  });
  return {status: r.status, body: await r.json()};
}

// As the page unloads: a beacon (text/plain, no preflight), NDJSON.
function beaconEvents(events) {
  return navigator.sendBeacon(IMC + "/api/event",
      events.map(e => JSON.stringify(e)).join("\\n"));
}

async function report(site) {
  const r = await fetch(IMC + "/api/report/" +
      encodeURIComponent("site_id='" + site + "'"), {credentials: "include"});
  return {status: r.status, body: await r.json()};
}
</script></body></html>
"""


# The README's page: its example site, replaced by each run's own.
README_SITE = "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
README_API = '"https://analytics.example.com"'


def readme_script():
    """The script of the README's page, as the README shows it."""
    text = (stack.REPO / "README.md").read_text()
    start = text.index("```html\n<script>\n",
                       text.index("## From the browser"))
    start += len("```html\n")
    return text[start:text.index("```", start)]


class _Page(http.server.BaseHTTPRequestHandler):
    pages = {}

    def do_GET(self):
        html = self.pages.get(self.path)
        if html is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def log_message(self, *args):
        pass


def _serve_page(html, extra=None):
    pages = {"/": html.encode()}
    pages.update({k: v.encode() for k, v in (extra or {}).items()})
    handler = type("Page", (_Page,), {"pages": pages})
    srv = http.server.ThreadingHTTPServer((stack.LOCALHOST, 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, "http://%s:%d" % (stack.LOCALHOST, srv.server_address[1])


@pytest.fixture(scope="module")
def cors_site(stack_, workdir):
    """(httpd allowing the allowed page's origin, allowed page URL, other
    page URL)."""
    port = stack.free_port()
    api = "http://%s:%d" % (stack.LOCALHOST, port)
    allowed_srv, allowed = _serve_page(PAGE % {"api": api}, {
        "/readme": readme_page(api, README_RUN_SITE), "/away": "<p>away"})
    other_srv, other = _serve_page(PAGE % {"api": api})
    h = stack.Httpd(workdir / "cors-httpd", stack_.httpd.module_path,
                    port=port, clickhouse_url=stack_.clickhouse.url,
                    batch_delay="50ms",
                    directives="IMChallengeCORS %s\nIMChallengeDatabase %s"
                    % (allowed, DATABASE))
    h.start()
    try:
        offset = h.error_log_size()
        yield h, allowed, other
        h.check_error_log(offset=offset)
    finally:
        h.stop()
        allowed_srv.shutdown()
        other_srv.shutdown()


# The site the README's page sends events for in this run.
README_RUN_SITE = str(uuid.uuid4())


def readme_page(api, site):
    script = readme_script()
    assert script.count(README_API) == 1 and script.count(README_SITE) == 1
    script = script.replace(README_API, json.dumps(api))
    return ('<!doctype html>\n<html><head><meta charset="utf-8">'
            '<title>readme</title></head><body>\n%s</body></html>\n'
            % script.replace(README_SITE, site))


def run_js(browser, body):
    """Run an async function body in the page; its value or {error}."""
    script = ("const done = arguments[arguments.length - 1];"
              "(async () => { %s })().then(done, "
              "e => done({error: String(e)}));" % body)
    return browser.execute_async_script(script)


def events(site, n, kind="serve"):
    return [{"time": "2026-11-25T10:%02d:00Z" % (i % 60), "type": kind,
             "correlation_id": str(uuid.uuid4()), "site_id": site,
             "widget": "v2"} for i in range(n)]


def counts(ch, site):
    text = ch.scalar("SELECT count(), uniqExact(correlation_id) FROM "
                     "%s.events WHERE site_id = toUUID('%s') "
                     "FORMAT TSV" % (DATABASE, site))
    return tuple(int(x) for x in text.split("\t"))


def test_page_on_an_allowed_origin_sends_and_reads(browser, stack_,
                                                   cors_site):
    h, allowed, _ = cors_site
    ch = stack_.clickhouse
    site = str(uuid.uuid4())
    served = events(site, 40)
    solved = [dict(e, type="solve") for e in served[:25]]
    browser.set_script_timeout(60)
    browser.get(allowed + "/")
    got = run_js(browser, "return await sendEvents(%s, true);"
                 % json.dumps(served))
    assert got == {"status": 201,
                   "body": {"status": "stored", "accepted": 40}}, got
    # The JSON POST was preceded by the browser's own preflight.
    log = h.access_log()
    assert '"OPTIONS /api/event?wait=1 HTTP/1.1" 204' in log, log[-2000:]
    # Two beacons (NDJSON and a single event as text/plain): queued by the
    # browser, in ClickHouse shortly after.
    assert run_js(browser, "return beaconEvents(%s);"
                  % json.dumps(solved[:24])) is True
    assert run_js(browser, "return navigator.sendBeacon(IMC + '/api/event',"
                  " JSON.stringify(%s));" % json.dumps(solved[24])) is True
    stack.wait_until(lambda: counts(ch, site) == (65, 40), 30,
                     what="the beacons' events in ClickHouse")
    assert h.access_log().count('"POST /api/event HTTP/1.1" 202') == 2
    # The report, read by the page with credentials.
    got = run_js(browser, "return await report(%s);" % json.dumps(site))
    assert got["status"] == 200, got
    assert got["body"]["totals"] == {"served": 40, "solved": 25,
                                     "solve_rate": 0.625}, got


def test_page_on_another_origin_is_stopped_by_the_browser(browser, stack_,
                                                          cors_site):
    h, _, other = cors_site
    ch = stack_.clickhouse
    site = str(uuid.uuid4())
    h.post("api/event?wait=1", json=events(site, 3), timeout=30)
    browser.set_script_timeout(60)
    browser.get(other + "/")
    # fetch with JSON: the preflight gets no CORS answer, nothing is sent.
    got = run_js(browser, "return await sendEvents(%s, true);"
                 % json.dumps(events(site, 5)))
    assert got.get("error", "").startswith("TypeError: Failed to fetch"), got
    # The report is answered by httpd, but the browser keeps it from the
    # page: no Access-Control-Allow-Origin for this origin.
    got = run_js(browser, "return await report(%s);" % json.dumps(site))
    assert got.get("error", "").startswith("TypeError: Failed to fetch"), got
    # (httpd logs a request after its answer went out: wait for the line.)
    answered = r'"GET /api/report/\S*%s\S* HTTP/1.1" 200' % site
    stack.wait_until(lambda: re.search(answered, h.access_log()), 10,
                     what="the report's line in the access log")
    log = h.access_log()
    assert '"OPTIONS /api/event?wait=1 HTTP/1.1" 405' in log, log[-2000:]
    assert counts(ch, site) == (3, 3)
    messages = [m["message"] for m in browser.get_log("browser")]
    assert any("CORS policy" in m for m in messages), messages


def test_readme_shows_the_functions_this_page_runs():
    functions = PAGE.split("\n<script>\n", 1)[1].split("</script>")[0]
    functions = functions.split("\n", 2)[2]  # after the IMC line
    assert functions in readme_script()


def test_readme_page_sends_a_serve_then_a_beacon_as_it_unloads(
        browser, stack_, cors_site):
    h, allowed, _ = cors_site
    ch = stack_.clickhouse
    site = README_RUN_SITE
    browser.get(allowed + "/readme")
    # The fetch on load: one serve, in ClickHouse after its batch delay.
    stack.wait_until(lambda: counts(ch, site) == (1, 1), 30,
                     what="the README page's serve in ClickHouse")
    # Leaving the page fires pagehide: the beacon of its solve.
    browser.get(allowed + "/away")
    stack.wait_until(lambda: counts(ch, site) == (2, 1), 30,
                     what="the README page's beacon in ClickHouse")
    types = ch.scalar("SELECT groupArray(type) FROM (SELECT type FROM "
                      "%s.events WHERE site_id = toUUID('%s') ORDER BY "
                      "type) FORMAT TSV" % (DATABASE, site))
    assert types == "['serve','solve']", types
    log = h.access_log()
    assert '"POST /api/event HTTP/1.1" 202' in log, log[-2000:]
    messages = [m["message"] for m in browser.get_log("browser")]
    assert not any("CORS policy" in m for m in messages), messages
