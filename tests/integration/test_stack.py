# Licensed under the Apache License, Version 2.0.
"""Smoke tests: the private servers start, answer and stop as promised."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import stack

from conftest import require_module


def test_clickhouse_answers_select_1(clickhouse):
    assert clickhouse.ping()
    assert clickhouse.query("SELECT 1") == "1\n"
    assert clickhouse.scalar("SELECT 40 + 2") == "42"


def test_clickhouse_runs_in_moscow_time(clickhouse):
    # The module must not rely on a server that runs in UTC.
    assert clickhouse.scalar("SELECT timezone()") == "Europe/Moscow"
    assert clickhouse.scalar(
        "SELECT toString(toDateTime(86400))") == "1970-01-02 03:00:00"


def test_clickhouse_password_user(clickhouse):
    pw = clickhouse.password_file.read_text().strip()
    assert pw == clickhouse.imc_password and len(pw) >= 16
    assert clickhouse.scalar("SELECT 7", user="imc", password=pw) == "7"
    with pytest.raises(stack.StackError, match="401|[Pp]assword"):
        clickhouse.query("SELECT 7", user="imc", password=pw + "x")


def test_healthz_answers_json(httpd):
    r = httpd.get("/healthz")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert isinstance(r.json(), dict)
    stack.wait_until(lambda: '"GET /healthz HTTP/1.1" 200 '
                     in httpd.access_log(), 5, what="the access log line")


def test_httpd_runs_children_as_www_data(httpd):
    kids = httpd.children()
    assert kids, "httpd has no children"
    for pid in kids:
        with open("/proc/%d/status" % pid) as f:
            uid_line = next(l for l in f if l.startswith("Uid:"))
        assert uid_line.split()[1] == "33"
    spool = os.stat(httpd.spool_dir)
    assert spool.st_uid == 33


def test_configtest_accepts_the_shipped_conf(httpd):
    rc, out = httpd.configtest("")
    assert (rc, out.strip()) == (0, "Syntax OK")


@pytest.mark.parametrize("directive", [
    "IMChallengeClickHouse ftp://127.0.0.1/",
    "IMChallengeClickHouseUser a:b",
    "IMChallengeClickHousePasswordFile /nonexistent/password",
    "IMChallengeDatabase bad-name",
    "IMChallengeSpoolLimit lots",
    "IMChallengeSpoolSync maybe",
    "IMChallengeBatchSize 0",
    "IMChallengeBatchDelay soon",
    "IMChallengeTimeout 5h",
    "IMChallengeMaxEventSize 16T",
    "IMChallengeMaxBatchEvents -1",
    "IMChallengeCreateSchema yes",
    "IMChallengeCORS https://www.example.com/",
    "IMChallengeSiteAccess /nonexistent/sites.txt",
    "IMChallengeRateLimit fast",
    "IMChallengeRateLimit 10 0",
    "IMChallengeMaxReports 0",
])
def test_configtest_rejects_bad_directive_value(httpd, directive):
    rc, out = httpd.configtest(directive)
    assert rc != 0
    assert directive.split()[0] in out


def test_configtest_rejects_a_spool_shared_by_two_destinations(httpd):
    # A virtual host delivering elsewhere but inheriting the main server's
    # spool: its events would go to the main server's database.
    port = stack.free_port()
    vhost = ("Listen 127.0.0.1:%d\n<VirtualHost 127.0.0.1:%d>\n"
             "    IMChallengeDatabase imc_other\n%%s</VirtualHost>"
             % (port, port))
    rc, out = httpd.configtest(vhost % "")
    assert rc != 0
    assert "IMChallengeSpoolDir %s is shared" % httpd.spool_dir in out, out
    rc, out = httpd.configtest(vhost % "    IMChallengeSpoolDir %s\n"
                               % (httpd.spool_dir.parent / "spool-other"))
    assert (rc, out.strip()) == (0, "Syntax OK")


def test_configtest_knows_a_spool_by_its_inode(httpd, workbase):
    # The same spool written otherwise (a trailing slash, a symbolic link)
    # is still shared: refused like the plain spelling.
    link = workbase / ("spool-link-%s" % uuid.uuid4().hex[:8])
    link.symlink_to(httpd.spool_dir)
    port = stack.free_port()
    for spelling in ("%s/" % httpd.spool_dir, "%s//" % httpd.spool_dir,
                     str(link)):
        rc, out = httpd.configtest(
            "Listen 127.0.0.1:%d\n<VirtualHost 127.0.0.1:%d>\n"
            "    IMChallengeDatabase imc_other\n"
            "    IMChallengeSpoolDir %s\n</VirtualHost>"
            % (port, port, spelling))
        assert rc != 0, (spelling, out)
        assert "is shared by servers delivering to" in out, out
    link.unlink()


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_graceful_and_hard_restart(make_httpd, mpm):
    h = make_httpd(mpm=mpm)
    assert h.get("/healthz").status_code == 200
    for step in (h.graceful, h.restart):
        before = set(h.children())
        step()
        assert set(h.children()) - before, "no new generation"
        assert h.get("/healthz").status_code == 200
    pid = h.pid
    h.stop()
    assert not stack.pid_alive(pid)


def test_killed_child_is_replaced(make_httpd):
    h = make_httpd(mpm="prefork")
    victim = h.kill_child()
    assert not stack.pid_alive(victim)
    stack.wait_until(lambda: len(h.children()) >= 2, 10,
                     what="a replacement child")
    assert h.get("/healthz").status_code == 200


def test_error_log_check_catches_a_crashed_child(make_httpd, error_log_allow):
    h = make_httpd(mpm="prefork")
    offset = h.error_log_size()
    h.check_error_log(offset=offset)
    victim = h.kill_child(sig=signal.SIGSEGV)
    pattern = r"child pid %d exit signal Segmentation fault" % victim
    stack.wait_until(lambda: h.error_log_problems(offset=offset), 10,
                     what="the crash in the error log")
    with pytest.raises(stack.ErrorLogProblem, match="exit signal"):
        h.check_error_log(offset=offset)
    h.check_error_log([pattern], offset=offset)
    error_log_allow.append(pattern)


def test_check_error_log_levels(tmp_path):
    h = stack.Httpd(tmp_path, module_path=None)
    h.logdir.mkdir()
    h.error_log_file.write_text(
        "[Sat Nov 28 12:00:00.1 2026] [mpm_event:notice] [pid 1:tid 1] "
        "AH00489: resuming normal operations\n"
        "[Sat Nov 28 12:00:01.1 2026] [imchallenge:warn] [pid 2:tid 3] "
        "IMC0042: ClickHouse unreachable, retrying\n")
    with pytest.raises(stack.ErrorLogProblem, match="IMC0042"):
        h.check_error_log()
    h.check_error_log([r"IMC0042"])
    with open(h.error_log_file, "a") as f:
        f.write("[Sat Nov 28 12:00:02.1 2026] [imchallenge:error] [pid 2:"
                "tid 3] IMC0043: spool not writable\n")
    assert len(h.error_log_problems([r"IMC0042"])) == 1
    offset = h.error_log_size()
    with open(h.error_log_file, "a") as f:
        f.write("[Sat Nov 28 12:00:03.1 2026] [core:info] [pid 2:tid 3] "
                "AH00000: fine\n")
    h.check_error_log(offset=offset)


def test_run_command_serves_and_stops_on_sigint(workbase):
    module = require_module()
    workdir = workbase / "run-command"
    port, ch_port = stack.free_port(), stack.free_port()
    cmd = [sys.executable, str(stack.REPO / "tests" / "stack.py"), "run",
           "--port", str(port), "--clickhouse-port", str(ch_port),
           "--workdir", str(workdir), "--module", str(module)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready"):
                break
        assert lines and lines[-1].startswith("ready"), "".join(lines)
        text = "".join(lines)
        assert "http://127.0.0.1:%d/" % port in text
        assert "http://127.0.0.1:%d/" % ch_port in text
        r = stack.http_session().get("http://127.0.0.1:%d/healthz" % port,
                                     timeout=5)
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    assert stack.port_is_free(port) and stack.port_is_free(ch_port)
    assert (workdir / "clickhouse" / "data" / "metadata").is_dir()
    assert "stopped" in rest
