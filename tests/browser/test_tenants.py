# Licensed under the Apache License, Version 2.0.
"""Each customer's dashboard shows its own sites only, in Chromium.

An httpd with IMChallengeSiteAccess and Basic auth (mod_auth_basic,
mod_authn_file) in front of the session's ClickHouse, which holds the
dataset's three sites: tenant "first" is granted the first site, tenant
"second" the second, "operator" every site. The browser logs in by sending
the Authorization header with every request (DevTools'
Network.setExtraHTTPHeaders), as the browser would after a login prompt.
"""

import base64
import hashlib
import os

import pytest
import requests

import stack
from test_home import ROWS, severe, table, table_matches, wait

PASSWORD = "dashboard-secret"
AUTH_MODULES = ("auth_basic", "authn_core", "authn_file", "authz_user")


def _htpasswd_line(user):
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest())
    return "%s:{SHA}%s\n" % (user, digest.decode())


@pytest.fixture(scope="module")
def tenant_httpd(stack_, workdir, dataset):
    d = workdir / "tenants"
    d.mkdir()
    users = {"first": dataset.sites[0], "second": dataset.sites[1],
             "operator": "*"}
    (d / "sites.txt").write_text("".join("%s %s\n" % kv
                                         for kv in users.items()))
    (d / "htpasswd").write_text("".join(_htpasswd_line(u) for u in users))
    for f in (d, d / "sites.txt", d / "htpasswd"):
        os.chmod(f, 0o755 if f == d else 0o644)
    h = stack.Httpd(
        workdir / "tenant-httpd", stack_.httpd.module_path,
        clickhouse_url=stack_.clickhouse.url, batch_delay="50ms",
        modules=AUTH_MODULES, directives="""
IMChallengeSiteAccess %s
<LocationMatch "^/($|api/)">
    AuthType Basic
    AuthName "captcha statistics"
    AuthBasicProvider file
    AuthUserFile %s
    Require valid-user
</LocationMatch>
""" % (d / "sites.txt", d / "htpasswd"))
    h.start()
    try:
        offset = h.error_log_size()
        yield h, users
        h.check_error_log(offset=offset)
    finally:
        h.stop()


@pytest.fixture
def logged_in(browser):
    """logged_in(user): every request of the browser carries user's Basic
    credentials until the test ends."""
    browser.execute_cdp_cmd("Network.enable", {})

    def login(user):
        token = base64.b64encode(("%s:%s" % (user, PASSWORD)).encode())
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {
            "headers": {"Authorization": "Basic " + token.decode()}})
    yield login
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


def api_report(h, user):
    r = requests.get(h.url + "api/report", auth=(user, PASSWORD),
                     proxies={"http": None, "https": None}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("user", ["first", "second", "operator"])
def test_dashboard_shows_the_principals_sites_only(browser, logged_in,
                                                   stack_, tenant_httpd,
                                                   dataset, user):
    h, users = tenant_httpd
    full = stack_.httpd.get("api/report").json()
    mine = ({r["site_id"] for r in full["rows"]} if users[user] == "*"
            else {users[user]})
    body = api_report(h, user)
    # The API gives exactly this principal's rows of the whole report (the
    # session's httpd, without IMChallengeSiteAccess, sees every site; other
    # tests add events to the dataset's sites, so it is the reference).
    assert body["rows"] == [r for r in full["rows"] if r["site_id"] in mine]
    assert {r["site_id"] for r in body["rows"]} == mine
    logged_in(user)
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(h.url)
    wait(browser, "the table to show %s's report" % user,
         lambda d: table_matches(d, body))
    assert {row["site"] for row in table(browser)} == mine
    page = browser.page_source
    for other in set(dataset.sites) - mine:  # never shown, not even hidden
        assert other not in page
    assert severe(browser.get_log("browser")) == []


def test_dashboard_without_credentials_shows_nothing(browser, tenant_httpd,
                                                     dataset):
    h, _ = tenant_httpd
    browser.get(h.url)
    # Apache's own 401 (headless Chromium shows an empty page for it): no
    # table, no figure of any site.
    assert not browser.find_elements("css selector", ROWS)
    page = browser.page_source
    assert not [s for s in dataset.sites if s in page]
