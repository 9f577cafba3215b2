# Licensed under the Apache License, Version 2.0.
"""The dashboard (SPEC section 6) in headless Chromium against a real stack
loaded with known data."""

import json
import os
import re
import shutil
import urllib.parse
import uuid

import pytest
from selenium.common.exceptions import (StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


ROWS = "#report-table tbody tr"
DOCS_SCREENSHOT = os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                               "dashboard.png")


def report(stack_, filter_=None, **params):
    path = "api/report"
    if filter_:
        path += "/" + urllib.parse.quote(filter_, safe="")
    r = stack_.httpd.get(path, params=params)
    return r.status_code, r.json()


def wait(driver, what, predicate, timeout=15):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: predicate(d))
    except TimeoutException:
        raise AssertionError("timed out after %s s waiting for %s"
                             % (timeout, what)) from None


def number(text):
    return int(text.replace(",", ""))


def rate(text):
    """A displayed solve rate ("80.8%") as a fraction; None for a dash."""
    if text == "\u2014":
        return None
    assert text.endswith("%"), text
    return float(text[:-1]) / 100


def table(driver):
    """The table's rows as dicts, read from the DOM in one script."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0])).map(tr => ({
            day: tr.dataset.day, site: tr.dataset.site,
            cells: Array.from(tr.cells).map(c => c.textContent.trim())}));
    """, ROWS)


def totals(driver):
    return [driver.find_element(By.ID, i).text
            for i in ("total-served", "total-solved", "total-rate")]


def table_matches(driver, body):
    """True when the table shows exactly the report's rows (no assert:
    used while waiting)."""
    try:
        rows = table(driver)
    except StaleElementReferenceException:
        return False
    if len(rows) != len(body["rows"]):
        return False
    return all(r["day"] == a["day"] and r["site"] == a["site_id"]
               for r, a in zip(rows, body["rows"]))


def assert_rate(shown, api):
    if api is None:
        assert shown is None
    else:
        assert shown is not None and abs(shown - api) <= 0.0005 + 1e-9, \
            (shown, api)


def assert_table_equals_report(driver, body):
    rows = table(driver)
    assert len(rows) == len(body["rows"])
    for got, want in zip(rows, body["rows"]):
        day, site, served, solved, shown_rate = got["cells"]
        assert (got["day"], got["site"]) == (want["day"], want["site_id"])
        assert (day, site) == (want["day"], want["site_id"])
        assert number(served) == want["served"]
        assert number(solved) == want["solved"]
        assert_rate(rate(shown_rate), want["solve_rate"])
    served, solved, shown_rate = totals(driver)
    assert number(served) == body["totals"]["served"]
    assert number(solved) == body["totals"]["solved"]
    assert_rate(rate(shown_rate), body["totals"]["solve_rate"])


def load(driver, stack_, body, fragment=""):
    driver.get(stack_.url + fragment)
    wait(driver, "the table to show the report",
         lambda d: table_matches(d, body))


def severe(entries):
    return [e for e in entries if e["level"] == "SEVERE"]


def screenshot(driver, path, full=True):
    if full:
        h = driver.execute_script(
            "return document.documentElement.scrollHeight")
        w = driver.execute_script("return window.innerWidth")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": w, "height": h, "deviceScaleFactor": 1,
            "mobile": False})
    try:
        assert driver.save_screenshot(str(path))
    finally:
        if full:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride",
                                   {})
    assert path.stat().st_size > 10000


# ---------------------------------------------------------------- tests


def test_numbers_equal_the_report_api(browser, stack_, dataset, artifacts):
    status, body = report(stack_)
    assert status == 200
    # The API itself agrees with the events sent (the page is compared with
    # the API below, so this keeps both honest).
    assert {(r["day"], r["site_id"]): [r["served"], r["solved"]]
            for r in body["rows"]} == dataset.expected
    browser.get_log("browser")  # drop what earlier pages logged
    load(browser, stack_, body)
    assert_table_equals_report(browser, body)
    none_served = [r for r in table(browser) if r["cells"][2] == "0"]
    assert none_served and none_served[0]["cells"][4] == "\u2014"
    # The delivery status from /api/status.
    wait(browser, "the ClickHouse badge",
         lambda d: d.find_element(By.ID, "status-clickhouse").text
         == "reachable")
    queued = browser.find_element(By.ID, "status-queued").text
    assert re.fullmatch(r"[\d,]+", queued), queued
    assert browser.find_element(By.ID, "status-spool-writable").text == \
        "writable"
    assert browser.find_element(By.ID, "updated").text.startswith("updated")
    assert not browser.find_element(By.ID, "filter-error").is_displayed()
    assert not browser.find_element(By.ID, "api-help").is_displayed()
    assert severe(browser.get_log("browser")) == []
    path = artifacts / "dashboard.png"
    screenshot(browser, path)
    if os.environ.get("IMC_UPDATE_DOCS"):
        os.makedirs(os.path.dirname(DOCS_SCREENSHOT), exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)


def test_chart_shows_both_series(browser, stack_, dataset):
    status, body = report(stack_)
    load(browser, stack_, body)
    chart = browser.find_element(By.ID, "chart")
    size = chart.size
    assert size["width"] > 300 and size["height"] > 150, size
    daily = dataset.daily()
    first, last = min(daily), max(daily)
    # One slot per calendar day from the first to the last, gaps included.
    ndays = (int(last[-2:]) - int(first[-2:])) + 1
    bars = browser.execute_script("""
        const out = {};
        for (const k of ['served', 'solved']) {
            out[k] = Array.from(document.querySelectorAll(
                    '#chart rect.' + k + ':not([rx])'))
                .map(r => [parseFloat(r.getAttribute('x')),
                           r.getBoundingClientRect().height]);
        }
        return out;
    """)
    top = max(h for k in bars for _, h in bars[k])
    peak = max(max(d) for d in daily.values())
    assert top > 50
    for series, idx in (("served", 0), ("solved", 1)):
        got = sorted(bars[series])
        assert len(got) == ndays, (series, len(got))
        values = [daily.get("2026-11-%02d" % (int(first[-2:]) + i),
                            [0, 0])[idx] for i in range(ndays)]
        for (_, height), value in zip(got, values):
            # Bar heights are proportional to the day's numbers.
            assert abs(height / top - value / peak) < 0.03, \
                (series, height, value)
    legend = browser.find_elements(By.CSS_SELECTOR, "#chart text.legend")
    assert [t.text for t in legend] == ["Served", "Solved"]
    desc = browser.find_element(By.ID, "chart-desc").get_attribute(
        "textContent")
    assert first in desc and last in desc


def test_filter_round_trip_and_errors(browser, stack_, dataset, artifacts):
    status, body = report(stack_)
    load(browser, stack_, body)
    site = dataset.sites[1]
    flt = "site_id='%s'" % site
    status, want = report(stack_, flt)
    assert status == 200 and want["rows"]
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(flt)
    browser.find_element(By.ID, "apply").click()
    wait(browser, "the filtered table", lambda d: table_matches(d, want))
    assert {r["site"] for r in table(browser)} == {site}
    assert_table_equals_report(browser, want)
    assert "filter=" in browser.current_url  # kept in the fragment

    # The fragment restores the selection on reload.
    browser.refresh()
    wait(browser, "the filtered table after reload",
         lambda d: table_matches(d, want))
    assert browser.find_element(By.ID, "filter").get_attribute(
        "value") == flt

    # A syntax error: the API's message and a marker at its position.
    bad = "site_id = '%s' AND (type = 'serve'" % site
    status, err = report(stack_, bad)
    assert status == 400 and isinstance(err.get("position"), int)
    box = browser.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(bad + Keys.ENTER)
    shown = wait(browser, "the filter error",
                 lambda d: d.find_element(By.ID, "filter-error").is_displayed()
                 and d.find_element(By.ID, "filter-error"))
    text = shown.text
    assert err["error"] in text
    mark = shown.find_element(By.CSS_SELECTOR, ".mark").text
    assert mark.endswith("^ position %d" % err["position"])
    marker_line = shown.find_element(By.TAG_NAME, "pre").get_attribute(
        "textContent").split("\n")[1]
    assert marker_line.index("^") == err["position"]  # ASCII: bytes = chars
    assert box.get_attribute("aria-invalid") == "true"
    # The last good result stays on screen, marked stale.
    assert "stale" in browser.find_element(By.ID, "results").get_attribute(
        "class")
    assert table_matches(browser, want)
    screenshot(browser, artifacts / "dashboard-filter-error.png", full=False)

    # An unknown column: the message and the known columns.
    status, err = report(stack_, "colour='red'")
    assert status == 400
    box.clear()
    box.send_keys("colour='red'" + Keys.ENTER)
    wait(browser, "the unknown-column error",
         lambda d: err["error"] in d.find_element(By.ID, "filter-error").text)
    text = browser.find_element(By.ID, "filter-error").text
    for col in err["columns"]:
        assert col in text

    # Clicking a site in the table filters by it; the error goes away.
    box.clear()
    box.send_keys(Keys.ENTER)
    wait(browser, "the whole report again", lambda d: table_matches(d, body))
    assert not browser.find_element(By.ID, "filter-error").is_displayed()
    other = dataset.sites[2]
    browser.find_element(
        By.CSS_SELECTOR, "tr[data-site='%s'] td.site button" % other).click()
    status, want = report(stack_, "site_id='%s'" % other)
    wait(browser, "the table filtered by a click",
         lambda d: table_matches(d, want))
    assert browser.find_element(By.ID, "filter").get_attribute(
        "value") == "site_id='%s'" % other


def test_date_range_and_time_zone(browser, stack_, dataset):
    status, want = report(stack_, **{"from": "2026-11-17", "to": "2026-11-18",
                                     "tz": "Asia/Tokyo"})
    assert status == 200 and want["rows"]
    status, body = report(stack_)
    load(browser, stack_, body)
    # Date inputs take typed digits in the locale's order (en-US: m/d/y).
    browser.find_element(By.ID, "from").send_keys("11172026")
    browser.find_element(By.ID, "to").send_keys("11182026")
    tz = browser.find_element(By.ID, "tz")
    tz.clear()
    tz.send_keys("Asia/Tokyo" + Keys.ENTER)
    wait(browser, "the table for the range in Tokyo",
         lambda d: table_matches(d, want))
    assert_table_equals_report(browser, want)
    assert {r["day"] for r in table(browser)} <= {"2026-11-17", "2026-11-18"}
    # An unknown zone is the API's 400, shown inline.
    status, err = report(stack_, tz="Mars/Olympus")
    assert status == 400
    tz.clear()
    tz.send_keys("Mars/Olympus" + Keys.ENTER)
    wait(browser, "the time-zone error",
         lambda d: err["error"] in d.find_element(By.ID, "filter-error").text)


def test_refreshes_itself_in_place(browser, stack_, dataset, post):
    status, body = report(stack_)
    load(browser, stack_, body)
    browser.execute_script(
        "window.__row = document.querySelector(arguments[0]);"
        "window.__chart = document.getElementById('chart');", ROWS)
    site = dataset.sites[0]
    cid = str(uuid.uuid4())
    post([{"time": "2026-11-16T12:00:00Z", "type": "serve",
                          "correlation_id": cid, "site_id": site}])
    status, after = report(stack_)
    assert after["totals"]["served"] == body["totals"]["served"] + 1
    wait(browser, "the new total without a reload",
         lambda d: number(d.find_element(By.ID, "total-served").text)
         == after["totals"]["served"], timeout=20)
    assert_table_equals_report(browser, after)
    # Rows and chart were updated in place, not rebuilt.
    assert browser.execute_script(
        "return window.__row.isConnected && window.__chart.isConnected")


def test_phone_width(browser, stack_, dataset, artifacts):
    status, body = report(stack_)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 360, "height": 780, "deviceScaleFactor": 2, "mobile": True})
    try:
        load(browser, stack_, body)
        dims = browser.execute_script("""
            const de = document.documentElement;
            return {inner: window.innerWidth, doc: de.scrollWidth,
                    body: document.body.scrollWidth,
                    chart: document.getElementById('chart')
                        .getBoundingClientRect().width};
        """)
        assert dims["inner"] == 360, dims
        assert dims["doc"] <= 360 and dims["body"] <= 360, dims
        assert 200 < dims["chart"] <= 360, dims
        assert browser.find_element(By.ID, "apply").is_displayed()
        assert_table_equals_report(browser, body)
        screenshot(browser, artifacts / "dashboard-phone.png", full=False)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _luminance(css):
    m = re.match(r"rgba?\((\d+), (\d+), (\d+)", css)
    assert m, css

    def lin(c):
        c = int(c) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(x) for x in m.groups())
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a, b):
    hi, lo = max(a, b), min(a, b)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_readable_in_light_and_dark(browser, stack_, dataset, artifacts,
                                    scheme):
    status, body = report(stack_)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})
    try:
        load(browser, stack_, body)
        colours = browser.execute_script("""
            const css = (sel, p) => getComputedStyle(
                document.querySelector(sel))[p];
            return {bg: css('body', 'backgroundColor'),
                    fg: css('body', 'color'),
                    card: css('.card', 'backgroundColor'),
                    cell: css('#report-table tbody td', 'color'),
                    dark: matchMedia('(prefers-color-scheme: dark)').matches};
        """)
        assert colours["dark"] == (scheme == "dark")
        bg = _luminance(colours["bg"])
        assert (bg < 0.1) if scheme == "dark" else (bg > 0.8), colours
        for fg in ("fg", "cell"):
            for back in ("bg", "card"):
                assert _contrast(_luminance(colours[fg]),
                                 _luminance(colours[back])) >= 7, colours
        if scheme == "dark":
            screenshot(browser, artifacts / "dashboard-dark.png")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": []})


def test_without_javascript_shows_the_api(browser, stack_):
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled",
                            {"value": True})
    try:
        browser.get(stack_.url)
        help_ = browser.find_element(By.ID, "api-help")
        assert help_.is_displayed()
        text = help_.text
        for needle in ("POST /api/event", "GET /api/report", "/api/status",
                       "/healthz", "/metrics", "JavaScript is off"):
            assert needle in text, needle
        assert not browser.find_element(By.ID, "app").is_displayed()
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled",
                                {"value": False})
    browser.get(stack_.url)
    wait(browser, "the dashboard with JavaScript again",
         lambda d: d.find_element(By.ID, "app").is_displayed())
    assert not browser.find_element(By.ID, "api-help").is_displayed()


def test_page_is_self_contained(stack_):
    r = stack_.httpd.get("")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    html = r.text
    # No CDN, no absolute URLs to load: everything is in the page or
    # relative to it.
    for m in re.finditer(r'(?:src|href)="([^"]*)"', html):
        url = m.group(1)
        assert not re.match(r"(https?:)?//", url), url
    assert "fetch(url" in html and "'api/status'" in html
    for id_ in ("filter", "from", "to", "tz", "apply", "filter-error",
                "total-served", "total-solved", "total-rate", "chart",
                "report-table"):
        assert ('id="%s"' % id_) in html, id_
    r = stack_.httpd.post("", data=b"")
    assert r.status_code == 405
    assert json.loads(r.text)["error"]
