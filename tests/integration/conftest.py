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

After every test, each httpd started here is checked: new [error], [crit],
[alert], [emerg] or unexpected [warn] lines, or a crashed child, fail it.
The session servers are restarted (or resumed) if a test left them down.

The module comes from $IMC_MODULE, else
<repo>/mod_imchallenge/.libs/mod_imchallenge.so.  Everything lives in one
directory /tmp/imc-test-*, removed at the end unless a test failed or
$IMC_KEEP_TMP is set.  (pytest's own tmp_path_factory root is mode 0700,
which the www-data children could not enter.)
"""

import atexit
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stack  # noqa: E402

MODULE = Path(os.environ.get("IMC_MODULE") or stack.DEFAULT_MODULE).resolve()

_started = []  # every server started here, for the atexit safety net
_httpds = []  # every httpd whose error log is checked after each test
_session_servers = []  # restored after a test that left them down


@atexit.register
def _stop_everything():
    for server in reversed(_started):
        try:
            server.stop()
        except Exception:  # best effort at interpreter exit
            pass


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "error_log_allow(*regexes): error-log lines the test "
        "causes on purpose")
    # SIGTERM becomes KeyboardInterrupt so that pytest tears servers down.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def require_module():
    """Fail (not skip) when the module has not been built."""
    if not MODULE.is_file():
        pytest.fail("module %s not found: build it with `make` or set "
                    "IMC_MODULE" % MODULE, pytrace=False)
    return MODULE


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
        _started.append(ch)
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
        _started.append(h)
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
def workbase(request):
    base = stack.session_workdir("imc-test-")
    yield base
    stack.finish_workdir(base, request.session.testsfailed)


@pytest.fixture(scope="session")
def clickhouse(workbase):
    ch = stack.ClickHouse(workbase / "clickhouse")
    _started.append(ch)
    ch.start()
    _session_servers.append(ch)
    yield ch
    _session_servers.remove(ch)
    ch.stop()


@pytest.fixture(scope="session")
def httpd(workbase, clickhouse):
    h = stack.Httpd(workbase / "httpd", require_module(),
                    clickhouse_url=clickhouse.url, mpm="event")
    _started.append(h)
    _httpds.append(h)
    h.start()
    h.check_error_log()  # start-up warnings would hide behind every offset
    _session_servers.append(h)
    yield h
    _session_servers.remove(h)
    offset = h.error_log_size()
    h.stop()
    # A crash while stopping shows up here, at the end of the session.
    h.check_error_log(offset=offset)


@pytest.fixture(scope="session")
def servers(workbase, request):
    f = ServerFactory(workbase,
                      lambda: request.getfixturevalue("clickhouse"))
    yield f
    f.close()


@pytest.fixture
def _test_servers(workbase, request):
    f = ServerFactory(workbase,
                      lambda: request.getfixturevalue("clickhouse"))
    yield f
    f.close()


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


@pytest.fixture(autouse=True)
def _error_log_guard(request):
    """Fail the test on new error-log lines of any httpd started here."""
    offsets = {id(h): h.error_log_size() for h in _httpds}
    yield
    for server in list(_session_servers):
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
        if not h.is_running() and h not in _session_servers:
            _httpds.remove(h)
    if report:
        pytest.fail("unexpected error-log lines during the test:\n"
                    + "\n".join(report), pytrace=False)
