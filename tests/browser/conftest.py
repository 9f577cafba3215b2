# Licensed under the Apache License, Version 2.0.
"""Fixtures for the dashboard's browser tests.

    stack_    a private ClickHouse + httpd with the module (one per session)
    dataset   known events, stored with ?wait=1, and the report they make
    browser   headless Chromium through Selenium and Debian's chromedriver

Chromium, chromium-driver and python3-selenium come from Debian; when one
is missing, tests/install-deps.sh installs it; only when that is
impossible are the tests skipped, with the reason.  Screenshots go
to tests/browser/artifacts/.  The httpd error log is checked at the end of
the session like in the integration tests.  The module and the session's
directory /tmp/imc-browser-* come from tests/stack_fixtures.py.

Run: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/browser
"""

import datetime
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import stack  # noqa: E402
import stack_fixtures  # noqa: E402
from stack_fixtures import pytest_configure  # noqa: E402,F401 (a hook)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = HERE / "artifacts"


def _missing():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER)
               if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python3-selenium")
    return missing


def _install():
    """tests/install-deps.sh browser; its output when it fails."""
    res = subprocess.run(["bash", str(HERE.parent / "install-deps.sh"),
                          "browser"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=900)
    return None if res.returncode == 0 else res.stdout[-500:]


def _require_browser():
    if not _missing():
        return
    why = _install()
    still = _missing()
    if still:
        pytest.skip("browser tests need %s, which are missing and could not "
                    "be installed (%s)" % (", ".join(still), why),
                    allow_module_level=True)


_require_browser()

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402


workdir = stack_fixtures.workdir_fixture("imc-browser-")


@pytest.fixture(scope="session")
def stack_(workdir):
    s = stack.Stack(workdir / "stack", stack_fixtures.require_module(),
                    batch_delay="50ms")
    stack_fixtures.track(s)
    s.start()
    try:
        s.wait_ready(30)
        offset = s.httpd.error_log_size()
        yield s
        s.httpd.check_error_log(offset=offset)
    finally:
        s.stop()


# ---------------------------------------------------------------- data

DAYS = ["2026-11-%02d" % d for d in (16, 17, 18, 20, 21, 22)]  # 19: none


def _utc_day(text):
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t.astimezone(datetime.timezone.utc).date().isoformat()


def _expected(evs):
    """The report the events must give: {(day, site): [served, solved]}."""
    seen = {}
    for e in evs:
        key = (_utc_day(e["time"]), e["site_id"])
        seen.setdefault(key, ({}, {}))
        which = 0 if e["type"] == "serve" else 1
        seen[key][which][e["correlation_id"]] = True
    return {k: [len(v[0]), len(v[1])] for k, v in seen.items()}


def make_events(sites, rnd):
    """Serve and solve events over several days and sites, with a repeated
    event, an offset time that falls on the previous UTC day, and a day
    with solves but no serves."""
    evs = []
    for di, day in enumerate(DAYS):
        for si, site in enumerate(sites):
            served = rnd.randint(15, 60) * (si + 1) + 10 * di
            rate = rnd.uniform(0.55, 0.95)
            for n in range(served):
                cid = str(uuid.uuid4())
                t = "%sT%02d:%02d:%02dZ" % (day, rnd.randint(0, 23),
                                            rnd.randint(0, 59), n % 60)
                evs.append({"time": t, "type": "serve", "correlation_id": cid,
                            "site_id": site, "ua": "test"})
                if n < served * rate:
                    evs.append({"time": t, "type": "solve",
                                "correlation_id": cid, "site_id": site})
    evs.append(dict(evs[0]))  # sent twice: counted once
    evs.append({"time": "2026-11-18T01:30:00+03:00", "type": "serve",
                "correlation_id": str(uuid.uuid4()), "site_id": sites[0]})
    for _ in range(2):
        evs.append({"time": "2026-11-19T08:00:00Z", "type": "solve",
                    "correlation_id": str(uuid.uuid4()),
                    "site_id": sites[-1]})
    return evs


class Dataset:
    def __init__(self, sites, evs):
        self.sites = sites
        self.events = evs
        self.expected = _expected(evs)

    def daily(self):
        """{day: [served, solved]} over all sites."""
        out = {}
        for (day, _), (sv, so) in self.expected.items():
            d = out.setdefault(day, [0, 0])
            d[0] += sv
            d[1] += so
        return out


def post_events(s, evs):
    for i in range(0, len(evs), 5000):
        r = s.httpd.post("api/event?wait=1", json=evs[i:i + 5000],
                         timeout=60)
        assert r.status_code == 201, r.text


@pytest.fixture
def post(stack_):
    """post(events): store events with ?wait=1."""
    return lambda evs: post_events(stack_, evs)


@pytest.fixture(scope="session")
def dataset(stack_):
    rnd = random.Random(20261128)
    sites = sorted(str(uuid.UUID(int=rnd.getrandbits(128), version=4))
                   for _ in range(3))
    evs = make_events(sites, rnd)
    post_events(stack_, evs)
    return Dataset(sites, evs)


# ---------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser(workdir):
    profile = workdir / "chromium-profile"
    profile.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking",
                "--user-data-dir=%s" % profile, "--window-size=1280,1000",
                "--lang=en-US", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
