# Licensed under the Apache License, Version 2.0.
"""pytest plugin for `make test-asan` (mk/asan.mk): sanitizers in httpd.

Loaded with `-p asan_util` (tests/ and tests/integration/ on PYTHONPATH).
When IMC_SAN_PRELOAD names libasan.so, every httpd that stack.Httpd starts
or signals gets

    LD_PRELOAD=$IMC_SAN_PRELOAD
    ASAN_OPTIONS=log_path=$IMC_SAN_LOGDIR/asan:detect_leaks=0:...
                 (plus $IMC_SAN_ASAN_EXTRA)
    UBSAN_OPTIONS=log_path=$IMC_SAN_LOGDIR/ubsan:print_stacktrace=1:...

and nothing else does (neither pytest nor ClickHouse run under ASan).
Leak checks are off: httpd exits without freeing its pools; leaks belong to
the unit tests under valgrind (`make unit-valgrind`).  After each test a
new report file in IMC_SAN_LOGDIR fails that test and shows the report.
"""

import os
from pathlib import Path

import pytest

import stack

PRELOAD = os.environ.get("IMC_SAN_PRELOAD", "")
LOGDIR = Path(os.environ.get("IMC_SAN_LOGDIR") or "/nonexistent")
# More ASAN_OPTIONS, ':'-separated (make test-asan ASAN_EXTRA=...).
EXTRA = [o for o in os.environ.get("IMC_SAN_ASAN_EXTRA", "").split(":") if o]


def sanitizer_environment():
    """The variables every sanitized httpd process gets."""
    env = {
        "LD_PRELOAD": PRELOAD,
        "ASAN_OPTIONS": ":".join([
            "log_path=%s" % (LOGDIR / "asan"), "detect_leaks=0",
            "halt_on_error=1", "detect_stack_use_after_return=0",
            "strict_string_checks=1", "check_initialization_order=1"]
            + EXTRA),
        "UBSAN_OPTIONS": ":".join([
            "log_path=%s" % (LOGDIR / "ubsan"), "print_stacktrace=1",
            "report_error_type=1"]),
    }
    for symbolizer in ("/usr/bin/llvm-symbolizer",
                       "/usr/bin/llvm-symbolizer-14"):
        if os.access(symbolizer, os.X_OK):
            env["ASAN_SYMBOLIZER_PATH"] = symbolizer
            break
    return env


def reports():
    """The sanitizer report files written so far."""
    try:
        return sorted(p for p in LOGDIR.iterdir()
                      if p.name.startswith(("asan.", "ubsan.")))
    except OSError:
        return []


def pytest_configure(config):
    if not PRELOAD:
        return
    if not os.path.isfile(PRELOAD):
        raise pytest.UsageError("IMC_SAN_PRELOAD=%s: no such file" % PRELOAD)
    if not LOGDIR.is_dir():
        raise pytest.UsageError("IMC_SAN_LOGDIR=%s: not a directory"
                                % LOGDIR)
    extra = sanitizer_environment()
    original = stack.Httpd._environ

    def sanitized_environ(self):
        env = original(self)
        env.update(extra)
        return env

    stack.Httpd._environ = sanitized_environ


@pytest.fixture(autouse=True)
def _no_sanitizer_report():
    """Fail the test during which a sanitizer wrote a report."""
    if not PRELOAD:
        yield
        return
    before = set(reports())
    yield
    new = [p for p in reports() if p not in before]
    if new:
        text = "\n".join("== %s\n%s" % (p, stack.tail(p, 200)) for p in new)
        pytest.fail("sanitizer report(s) during the test:\n" + text,
                    pytrace=False)
