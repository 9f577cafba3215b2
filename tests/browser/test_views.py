# Licensed under the Apache License, Version 2.0.
"""The dashboard's views (SPEC section 6) in headless Chromium: the interval
selector, the live view, the change against the previous period, a site
click narrowing the view, and the view's state in the URL. Each view is
compared with the report API's answer for the same parameters.

Runs after test_home.py (which compares the page with the dataset alone):
the live view stores events of today."""

import datetime
import urllib.parse
import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from test_home import number, rate, report, severe, table, wait


def shown_bucket(label):
    """The table's text for a report label: 2026-11-28T13:00:00+01:00 is
    shown as 2026-11-28 13:00 +01:00; dates as they are."""
    if "T" not in label:
        return label
    day, rest = label.split("T")
    return "%s %s %s" % (day, rest[:5], rest[8:])


def time_of(row):
    return row.get("day", row.get("bucket"))


def view_matches(driver, body):
    """True when the table shows exactly the report's rows and numbers."""
    try:
        rows = table(driver)
    except Exception:
        return False
    if len(rows) != len(body["rows"]):
        return False
    for got, want in zip(rows, body["rows"]):
        if (got["day"], got["site"]) != (time_of(want), want["site_id"]):
            return False
        if got["cells"][0] != shown_bucket(time_of(want)):
            return False
        if [number(got["cells"][2]), number(got["cells"][3])] != \
                [want["served"], want["solved"]]:
            return False
    return True


def wait_view(driver, body, what):
    wait(driver, what, lambda d: view_matches(d, body), timeout=20)


def fragment(driver):
    return dict(urllib.parse.parse_qsl(
        urllib.parse.urlsplit(driver.current_url).fragment))


def choose(driver, interval):
    Select(driver.find_element(By.ID, "interval")).select_by_value(interval)


def test_interval_selector_shows_the_reports_buckets(browser, stack_,
                                                     dataset):
    browser.get(stack_.url)
    browser.get_log("browser")
    status, body = report(stack_)
    wait_view(browser, body, "the day view")
    for interval in ("week", "month"):
        choose(browser, interval)
        status, body = report(stack_, interval=interval)
        assert status == 200
        wait_view(browser, body, "the %s view" % interval)
        assert browser.find_element(By.ID, "bucket-head").get_attribute(
            "textContent") == interval.capitalize()
        assert fragment(browser)["interval"] == interval
    # Hours of two days in a zone east of UTC.
    browser.find_element(By.ID, "from").send_keys("11172026")
    browser.find_element(By.ID, "to").send_keys("11182026")
    tz = browser.find_element(By.ID, "tz")
    tz.clear()
    tz.send_keys("Asia/Kolkata")
    choose(browser, "hour")
    status, body = report(stack_, interval="hour", tz="Asia/Kolkata",
                          **{"from": "2026-11-17", "to": "2026-11-18"})
    assert status == 200 and body["rows"]
    assert body["rows"][0]["bucket"].endswith("+05:30")
    wait_view(browser, body, "the hour view")
    assert browser.find_element(By.ID, "chart-heading").text == \
        "Served and solved per hour"
    # The chart has a bar slot for every hour from the first to the last,
    # those without events included.
    first = datetime.datetime.fromisoformat(body["rows"][0]["bucket"])
    last = datetime.datetime.fromisoformat(body["rows"][-1]["bucket"])
    hours = int((last - first).total_seconds() // 3600) + 1
    assert browser.execute_script(
        "return document.querySelectorAll('#chart .hit').length") == hours
    assert severe(browser.get_log("browser")) == []


def test_view_state_in_the_url_reopens_the_view(browser, stack_, dataset):
    site = dataset.sites[1]
    filt = "site_id='%s'" % site
    params = {"filter": filt, "from": "2026-11-17", "to": "2026-11-21",
              "tz": "Europe/Berlin", "interval": "hour"}
    browser.get(stack_.url + "#" + urllib.parse.urlencode(params))
    browser.get_log("browser")
    status, body = report(stack_, filt, interval="hour", tz="Europe/Berlin",
                          **{"from": "2026-11-17", "to": "2026-11-21"})
    assert status == 200 and body["rows"]
    assert {r["site_id"] for r in body["rows"]} == {site}
    wait_view(browser, body, "the view of the link")
    assert browser.find_element(By.ID, "filter").get_attribute("value") == \
        filt
    assert Select(browser.find_element(By.ID, "interval")) \
        .first_selected_option.get_attribute("value") == "hour"
    assert browser.find_element(By.ID, "tz").get_attribute("value") == \
        "Europe/Berlin"
    # A copied URL, opened again, shows the same view.
    url = browser.current_url
    browser.get("about:blank")
    browser.get(url)
    wait_view(browser, body, "the view after reopening the copied URL")
    assert fragment(browser) == params
    assert severe(browser.get_log("browser")) == []


def test_a_site_click_narrows_the_view(browser, stack_, dataset):
    browser.get(stack_.url + "#interval=week")
    status, body = report(stack_, interval="week")
    wait_view(browser, body, "the week view")
    site = dataset.sites[2]
    button = [b for b in browser.find_elements(
        By.CSS_SELECTOR, "#report-table td.site button") if b.text == site][0]
    button.click()
    status, narrowed = report(stack_, "site_id='%s'" % site, interval="week")
    wait_view(browser, narrowed, "the week view of one site")
    assert fragment(browser)["interval"] == "week"
    assert fragment(browser)["filter"] == "site_id='%s'" % site


def expected_change(cur, prev):
    if prev == 0:
        return "new" if cur else "\u2014"
    pc = (cur - prev) / prev * 100
    return "%s%.1f%%" % ("\u25b2 +" if pc > 0 else "\u25bc " if pc < 0
                         else "", pc)


def test_headline_figures_show_their_change(browser, stack_, dataset):
    browser.get(stack_.url + "#from=2026-11-20&to=2026-11-22")
    browser.get_log("browser")
    status, body = report(stack_, compare="previous_period",
                          **{"from": "2026-11-20", "to": "2026-11-22"})
    assert status == 200
    prev = body["previous"]
    assert (prev["from"], prev["to"]) == ("2026-11-17", "2026-11-19")
    # The previous period's totals are the report of those days.
    status, before = report(stack_, **{"from": "2026-11-17",
                                       "to": "2026-11-19"})
    assert prev["totals"] == before["totals"]
    wait_view(browser, body, "the range's rows")
    since = " vs 2026-11-17 \u2013 2026-11-19"
    for key, node in (("served", "delta-served"), ("solved", "delta-solved")):
        want = expected_change(body["totals"][key], prev["totals"][key])
        wait(browser, "the change of %s" % key,
             lambda d: d.find_element(By.ID, node).text == want + since)
    pp = (body["totals"]["solve_rate"] - prev["totals"]["solve_rate"]) * 100
    text = browser.find_element(By.ID, "delta-rate").text
    assert text.endswith(" pp" + since), text
    assert abs(float(text.split()[1]) - pp) < 0.051, (text, pp)
    # Without a range there is no previous period to compare with.
    browser.get(stack_.url + "#")
    browser.refresh()
    status, body = report(stack_)
    wait_view(browser, body, "the whole report")
    assert not browser.find_element(By.ID, "delta-served").is_displayed()
    assert rate(browser.find_element(By.ID, "total-rate").text) is not None
    assert severe(browser.get_log("browser")) == []


def test_live_view_refreshes_with_new_events(browser, stack_, post):
    site = str(uuid.uuid4())
    filt = "site_id='%s'" % site
    browser.get(stack_.url + "#" + urllib.parse.urlencode(
        {"filter": filt, "interval": "live"}))
    browser.get_log("browser")
    wait(browser, "the live view's 60 minutes",
         lambda d: d.execute_script(
             "return document.querySelectorAll('#chart .hit').length") == 60)
    assert browser.find_element(By.ID, "chart-heading").text == \
        "Served and solved per minute, last 60 minutes"
    assert not browser.find_element(By.ID, "from").is_enabled()
    browser.execute_script("window.__chart = document.getElementById('chart');")

    def now():
        return datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")

    cid = str(uuid.uuid4())
    post([{"time": now(), "type": "serve", "correlation_id": cid,
           "site_id": site}])
    wait(browser, "the new event in the live view, without a reload",
         lambda d: [r["cells"][2] for r in table(d)] == ["1"], timeout=20)
    post([{"time": now(), "type": "solve", "correlation_id": cid,
           "site_id": site}])
    wait(browser, "its solve",
         lambda d: [r["cells"][3] for r in table(d)] in (["1"], ["0", "1"]),
         timeout=20)
    rows = table(browser)
    assert rows[-1]["site"] == site
    assert rows[-1]["day"].endswith("+00:00")
    assert browser.execute_script("return window.__chart.isConnected")
    assert severe(browser.get_log("browser")) == []


def solve_events(site, day, seconds):
    """A procedure per solve time: served at noon, solved seconds later."""
    evs = []
    for i, s in enumerate(seconds):
        cid = str(uuid.uuid4())
        served = datetime.datetime.fromisoformat(day + "T12:00:00+00:00") + \
            datetime.timedelta(minutes=i)
        solved = served + datetime.timedelta(seconds=s)
        evs.append({"time": served.isoformat(), "type": "serve",
                    "correlation_id": cid, "site_id": site})
        evs.append({"time": solved.isoformat(), "type": "solve",
                    "correlation_id": cid, "site_id": site})
    return evs


def test_solve_time_chart_and_median(browser, stack_, post):
    site = str(uuid.uuid4())
    post(solve_events(site, "2026-11-24", [2 * s for s in range(1, 11)]) +
         solve_events(site, "2026-11-25", list(range(1, 11))))
    filt = "site_id='%s'" % site
    params = {"filter": filt, "from": "2026-11-25", "to": "2026-11-25"}
    status, body = report(stack_, filt, by="none", compare="previous_period",
                          metrics="solve_time_p50,solve_time_p90",
                          **{"from": "2026-11-25", "to": "2026-11-25"})
    assert status == 200
    # Nearest rank: the 5th and the 9th of ten solve times.
    assert body["totals"]["solve_time_p50"] == 5.0
    assert body["totals"]["solve_time_p90"] == 9.0
    assert body["previous"]["totals"]["solve_time_p50"] == 10.0
    browser.get(stack_.url + "#" + urllib.parse.urlencode(params))
    browser.get_log("browser")
    wait(browser, "the median solve time",
         lambda d: d.find_element(By.ID, "total-p50").text == "5.00 s")
    assert browser.find_element(By.ID, "delta-p50").text == \
        "\u25bc -50.0% vs 2026-11-24 \u2013 2026-11-24"
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('#times .hit title'))"
        ".map(t => t.textContent)")
    assert titles == ["2026-11-25: median 5.00 s, 90th percentile 9.00 s"]
    assert browser.execute_script(
        "return document.querySelectorAll('#times circle.p50').length") == 1
    # Over both days, by day: a point a day, each its own quantiles.
    browser.get(stack_.url + "#" + urllib.parse.urlencode(
        {"filter": filt, "from": "2026-11-24", "to": "2026-11-25"}))
    def times(d):
        return d.execute_script(
            "return Array.from(document.querySelectorAll('#times .hit title'))"
            ".map(t => t.textContent)")

    wait(browser, "two days of solve times",
         lambda d: len(times(d)) == 2 and times(d)[0].startswith("2026-11-24"))
    assert times(browser) == [
        "2026-11-24: median 10.0 s, 90th percentile 18.0 s",
        "2026-11-25: median 5.00 s, 90th percentile 9.00 s"]
    assert severe(browser.get_log("browser")) == []
