# Licensed under the Apache License, Version 2.0.
"""Fixtures for the integration tests: a real ClickHouse and a real httpd.

Session fixtures
    clickhouse  a private ClickHouse (time zone Europe/Moscow)
    httpd       httpd (event MPM) with the module, against `clickhouse`
    servers     a factory for more servers that live until the session ends:
                servers.httpd(mpm="prefork", directives="...", clickhouse=...)
                servers.clickhouse()
Function fixtures
    make_httpd, make_clickhouse
                the same factories; what they create is stopped when the
                test ends.  Tests that stop, kill or pause servers should
                break servers of their own rather than the session ones.
    error_log_allow
                a list; append regexes of error-log lines a test causes on
                purpose (same as @pytest.mark.error_log_allow(*regexes)).
    table       in a module whose fixture rc is a server with a database of
                its own (report_cache_util.server_with_database): its
                events table, empty, background merges stopped.

After every test, each httpd started here is checked: new [error], [crit],
[alert], [emerg] or unexpected [warn] lines, or a crashed child, fail it.
The session servers are restarted (or resumed) if a test left them down.

The module, the session's ClickHouse and its directory /tmp/imc-test-*
come from tests/stack_fixtures.py, shared with the browser and container
tests.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stack  # noqa: E402
import stack_fixtures  # noqa: E402
from report_cache_util import Table  # noqa: E402
# Tests import MODULE and require_module from here.
from stack_fixtures import MODULE, require_module  # noqa: E402,F401
from stack_fixtures import clickhouse  # noqa: E402,F401 (a fixture)
from stack_fixtures import session_servers, track  # noqa: E402

workbase = stack_fixtures.workdir_fixture("imc-test-")

_httpds = []  # every httpd whose error log is checked after each test


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "error_log_allow(*regexes): error-log lines the test "
        "causes on purpose")
    stack_fixtures.pytest_configure(config)


class ServerFactory:
    """Creates and starts servers in subdirectories of base."""

    _count = 0

    def __init__(self, base, default_clickhouse):
        self.base = Path(base)
        self.default_clickhouse = default_clickhouse
        self.owned = []

    def _dir(self, kind):
        ServerFactory._count += 1
        return self.base / ("%s-%d" % (kind, ServerFactory._count))

    def clickhouse(self, start=True, **options):
        """A new private ClickHouse (options as stack.ClickHouse)."""
        ch = stack.ClickHouse(self._dir("clickhouse"), **options)
        self.owned.append(ch)
        track(ch)
        if start:
            ch.start()
        return ch

    def httpd(self, clickhouse=None, start=True, module_path=None,
              **options):
        """A new httpd with the module (options as stack.Httpd).

        clickhouse: a stack.ClickHouse, a URL, or a list of URLs
        (fail-over); default: the session's ClickHouse.
        """
        if module_path is None:
            module_path = require_module()
        ch = clickhouse if clickhouse is not None else self.default_clickhouse()
        if isinstance(ch, stack.ClickHouse):
            ch = ch.url
        h = stack.Httpd(self._dir("httpd"), module_path, clickhouse_url=ch,
                        **options)
        self.owned.append(h)
        track(h)
        _httpds.append(h)
        if start:
            h.start()
        return h

    def close(self):
        """Stop everything created here, newest first."""
        errors = []
        for server in reversed(self.owned):
            try:
                server.stop()
            except Exception as e:
                errors.append("%s: %s" % (type(server).__name__, e))
        if errors:
            raise stack.StackError("; ".join(errors))


@pytest.fixture(scope="session")
def httpd(workbase, clickhouse):
    h = stack.Httpd(workbase / "httpd", require_module(),
                    clickhouse_url=clickhouse.url, mpm="event")
    track(h)
    _httpds.append(h)
    h.start()
    h.check_error_log()  # start-up warnings would hide behind every offset
    session_servers.append(h)
    yield h
    session_servers.remove(h)
    offset = h.error_log_size()
    h.stop()
    # A crash while stopping shows up here, at the end of the session.
    h.check_error_log(offset=offset)


def _factory(workbase, request):
    """A ServerFactory whose default ClickHouse is the session's, closed
    when the fixture ends."""
    f = ServerFactory(workbase,
                      lambda: request.getfixturevalue("clickhouse"))
    yield f
    f.close()


@pytest.fixture(scope="session")
def servers(workbase, request):
    yield from _factory(workbase, request)


@pytest.fixture
def _test_servers(workbase, request):
    yield from _factory(workbase, request)


@pytest.fixture
def make_httpd(_test_servers):
    """make_httpd(mpm=..., directives=..., clickhouse=...) -> started Httpd."""
    return _test_servers.httpd


@pytest.fixture
def make_clickhouse(_test_servers):
    """make_clickhouse(**options) -> started ClickHouse."""
    return _test_servers.clickhouse


@pytest.fixture
def error_log_allow(request):
    allowed = []
    request.node._imc_error_log_allow = allowed
    return allowed


@pytest.fixture
def table(rc):
    """rc's events table, empty, background merges stopped."""
    t = Table(rc.ch, rc.db)
    t.stop_merges()
    t.truncate()
    return t


@pytest.fixture(autouse=True)
def _error_log_guard(request):
    """Fail the test on new error-log lines of any httpd started here."""
    offsets = {id(h): h.error_log_size() for h in _httpds}
    yield
    for server in list(session_servers):
        if isinstance(server, stack.ClickHouse):
            server.ensure_running()
        elif not server.is_running():
            server.start()
    allowed = list(getattr(request.node, "_imc_error_log_allow", ()))
    for mark in request.node.iter_markers("error_log_allow"):
        allowed.extend(mark.args)
    report = []
    for h in list(_httpds):
        bad = h.error_log_problems(allowed, offsets.get(id(h), 0))
        if bad:
            report.append("%s:\n  %s" % (h.error_log_file, "\n  ".join(bad)))
        if not h.is_running() and h not in session_servers:
            _httpds.remove(h)
    if report:
        pytest.fail("unexpected error-log lines during the test:\n"
                    + "\n".join(report), pytrace=False)
