# Licensed under the Apache License, Version 2.0.
"""What the conftests of tests/integration, tests/browser and
tests/container share: the module under test, a working directory and a
ClickHouse per session, and servers stopped even when pytest is not.

Each conftest imports what it uses, fixtures and hooks alike (pytest finds
them by name in the conftest):

    from stack_fixtures import clickhouse, pytest_configure
    workbase = stack_fixtures.workdir_fixture("imc-test-")

Names
    MODULE          the module: $IMC_MODULE, else
                    <repo>/mod_imchallenge/.libs/mod_imchallenge.so
    require_module  MODULE, or the test fails (not skips) when it is missing
    track(server)   stops server at interpreter exit if nothing else did
    session_servers servers of the session that must stay up: the
                    integration tests restart them after a test that left
                    them down
    workdir_fixture(prefix)
                    a session fixture: one directory /tmp/PREFIX*, removed
                    at the end unless a test failed or $IMC_KEEP_TMP is set
                    (pytest's own tmp_path_factory root is mode 0700, which
                    the www-data children could not enter)
    clickhouse      session fixture: a private ClickHouse (time zone
                    Europe/Moscow) in the directory of the fixture
                    `workbase`
    pytest_configure
                    SIGTERM becomes KeyboardInterrupt, so that pytest tears
                    the servers down
"""

import atexit
import os
import signal
from pathlib import Path

import pytest

import stack

MODULE = Path(os.environ.get("IMC_MODULE") or stack.DEFAULT_MODULE).resolve()

_started = []  # every server tracked, for the atexit safety net
session_servers = []


@atexit.register
def _stop_everything():
    for server in reversed(_started):
        try:
            server.stop()
        except Exception:  # best effort at interpreter exit
            pass


def track(server):
    """server, stopped at interpreter exit if it still runs then."""
    _started.append(server)
    return server


def pytest_configure(config):
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


def workdir_fixture(prefix):
    """A session fixture: the session's directory /tmp/PREFIX*."""

    @pytest.fixture(scope="session")
    def workdir(request):
        base = stack.session_workdir(prefix)
        yield base
        stack.finish_workdir(base, request.session.testsfailed)

    return workdir


@pytest.fixture(scope="session")
def clickhouse(workbase):
    ch = track(stack.ClickHouse(workbase / "clickhouse"))
    ch.start()
    session_servers.append(ch)
    yield ch
    session_servers.remove(ch)
    ch.stop()
