# Licensed under the Apache License, Version 2.0.
"""The drop-in path: `make install` into a copy of Debian's /etc/apache2
(APACHE_CONFDIR), `a2enmod imchallenge`, `apache2ctl configtest`, start,
the shipped URLs answer; `make uninstall` takes it all away again."""

import os
import re
import shutil
import socket
import subprocess
import uuid

import pytest

import stack
from conftest import MODULE, require_module

REPO = stack.REPO
DAY = "2026-11-29"


def run(cmd, env, check=True, **kw):
    res = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors="replace", timeout=300, **kw)
    if check and res.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s"
                             % (" ".join(map(str, cmd)), res.returncode,
                                res.stdout))
    return res


class ApacheCopy:
    """A copy of /etc/apache2 whose run, lock, log and state files live
    under root, listening on 127.0.0.1:port only."""

    def __init__(self, root, port):
        self.root = root
        self.port = port
        self.confdir = root / "etc" / "apache2"
        self.modules = root / "modules"
        self.rundir = root / "run"
        self.logdir = root / "log"
        self.spool = root / "spool"
        self.pid_file = self.rundir / "apache2.pid"
        self.url = "http://127.0.0.1:%d/" % port
        shutil.copytree("/etc/apache2", self.confdir, symlinks=True)
        # A clean Debian Apache: no earlier install of the module, only
        # the default site.
        for sub in ("mods-available", "mods-enabled"):
            for f in (self.confdir / sub).glob("imchallenge.*"):
                f.unlink()
        for f in (self.confdir / "sites-enabled").iterdir():
            if f.name != "000-default.conf":
                f.unlink()
        for d in (self.rundir, self.logdir, root / "lock", root / "state",
                  self.modules):
            d.mkdir(parents=True, exist_ok=True)
        with open(self.confdir / "envvars", "a") as f:
            f.write("\n# private copy for the install test\n"
                    "export APACHE_RUN_DIR=%s\n"
                    "export APACHE_PID_FILE=%s\n"
                    "export APACHE_LOCK_DIR=%s\n"
                    "export APACHE_LOG_DIR=%s\n"
                    % (self.rundir, self.pid_file, root / "lock",
                       self.logdir))
        # Listen on the loopback only, on a private port; no SSL port.
        (self.confdir / "ports.conf").write_text(
            "Listen 127.0.0.1:%d\n" % port)
        site = self.confdir / "sites-available" / "000-default.conf"
        if site.exists():
            site.write_text(site.read_text().replace(
                "<VirtualHost *:80>", "<VirtualHost 127.0.0.1:%d>" % port))
        self.env = dict(os.environ, APACHE_CONFDIR=str(self.confdir),
                        APACHE_STATE_DIRECTORY=str(root / "state"))

    def a2(self, tool, *names):
        return run([tool, "-q"] + list(names), self.env)

    def ctl(self, *args, check=True):
        return run(["apache2ctl"] + list(args), self.env, check=check)

    def pid(self):
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def error_log(self):
        try:
            return (self.logdir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def http(self):
        return stack.http_session()


@pytest.fixture
def apache_copy(workbase):
    root = workbase / ("install-%s" % uuid.uuid4().hex[:8])
    copy = ApacheCopy(root, stack.free_port())
    yield copy
    pid = copy.pid()
    if pid and stack.pid_alive(pid):
        copy.ctl("stop", check=False)
        try:
            stack.wait_until(lambda: not stack.pid_alive(pid), 20,
                             what="apache2 (copy) to stop")
        except stack.StackError:
            os.kill(pid, 9)


def make(target, copy, env):
    module = require_module()
    return run(["make", "-s", "-C", str(REPO), "-o", str(module), target,
                "MODULE=%s" % module, "APACHE_CONFDIR=%s" % copy.confdir,
                "LIBEXECDIR=%s" % copy.modules], env)


def body_too_large(port, length):
    """Status of a POST that announces length bytes and sends none."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: %d\r\nConnection: close\r\n\r\n"
                   % length).encode())
        return int(s.recv(4096).split(b" ", 2)[1])


def test_make_install_a2enmod_configtest_start(apache_copy, clickhouse):
    copy = apache_copy
    env = copy.env
    make("install", copy, env)
    avail = copy.confdir / "mods-available"
    load = (avail / "imchallenge.load").read_text()
    assert "LoadModule imchallenge_module %s/mod_imchallenge.so" \
        % copy.modules in load
    assert (avail / "imchallenge.conf").read_text() == \
        (REPO / "conf" / "imchallenge.conf").read_text()
    assert (copy.modules / "mod_imchallenge.so").read_bytes() == \
        MODULE.read_bytes()
    assert not (copy.confdir / "mods-enabled" / "imchallenge.load").exists()

    # An administrator's settings, as a conf-available snippet.
    (copy.confdir / "conf-available" / "imchallenge-site.conf").write_text(
        "<IfModule imchallenge_module>\n"
        "    IMChallengeClickHouse %s\n"
        "    IMChallengeClickHouseUser %s\n"
        "    IMChallengeClickHousePasswordFile %s\n"
        "    IMChallengeDatabase imc_install\n"
        "    IMChallengeSpoolDir %s\n"
        "    IMChallengeBatchDelay 200ms\n"
        "</IfModule>\n"
        % (clickhouse.url, clickhouse.imc_user, clickhouse.password_file,
           copy.spool))
    copy.a2("a2enmod", "imchallenge")
    copy.a2("a2enconf", "imchallenge-site")
    enabled = copy.confdir / "mods-enabled"
    assert os.readlink(enabled / "imchallenge.load") == \
        "../mods-available/imchallenge.load"
    assert (enabled / "imchallenge.conf").is_symlink()
    res = copy.ctl("configtest")
    assert "Syntax OK" in res.stdout
    assert "imchallenge_module" in copy.ctl("-M").stdout

    copy.ctl("start")
    pid = stack.wait_until(copy.pid, 20, what="the pid file")
    s = copy.http()

    def answers():
        try:
            return s.get(copy.url + "healthz", timeout=2).status_code == 200
        except Exception:
            return False
    stack.wait_until(answers, 20, what="GET /healthz")
    stack.wait_until(
        lambda: s.get(copy.url + "readyz", timeout=5).status_code == 200,
        30, interval=0.2, what="GET /readyz")

    site = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(5)]
    events = [{"time": DAY + "T08:00:00Z", "type": "serve",
               "correlation_id": c, "site_id": site} for c in ids]
    events += [{"time": DAY + "T08:01:00Z", "type": "solve",
                "correlation_id": c, "site_id": site} for c in ids[:2]]
    r = s.post(copy.url + "api/event?wait=1", json=events, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json() == {"status": "stored", "accepted": 7}
    r = s.get(copy.url + "api/report/site_id='%s'" % site, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [{"day": DAY, "site_id": site, "served": 5,
                                 "solved": 2, "solve_rate": 0.4}]
    home = s.get(copy.url, timeout=10)
    assert home.status_code == 200
    assert home.headers["Content-Type"].startswith("text/html")
    status = s.get(copy.url + "api/status", timeout=10).json()
    assert status["clickhouse_reachable"] is True
    metrics = s.get(copy.url + "metrics", timeout=10)
    assert metrics.status_code == 200  # 127.0.0.1 is local
    assert "imchallenge_" in metrics.text
    r = s.put(copy.url + "api/event", data="{}", timeout=10)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    # The shipped LimitRequestBody (16 MiB) answers before the module reads.
    assert body_too_large(copy.port, 16 * 1024 * 1024 + 1) == 413
    assert clickhouse.scalar(
        "SELECT count() FROM imc_install.events WHERE site_id = "
        "toUUID('%s')" % site) == "7"
    assert stat_uid(copy.spool) == 33

    copy.ctl("graceful-stop")
    stack.wait_until(lambda: not stack.pid_alive(pid), 30,
                     what="apache2 (copy) to stop")
    log = copy.error_log()
    bad = [l for l in log.splitlines()
           if stack._BAD_LEVEL.search(l) or stack._CRASH.search(l)
           or stack._WARN_LEVEL.search(l)]
    assert not bad, log

    copy.a2("a2dismod", "imchallenge")
    make("uninstall", copy, env)
    assert not (avail / "imchallenge.load").exists()
    assert not (avail / "imchallenge.conf").exists()
    assert not (copy.modules / "mod_imchallenge.so").exists()
    assert "Syntax OK" in copy.ctl("configtest").stdout
    assert "imchallenge_module" not in copy.ctl("-M").stdout


def stat_uid(path):
    return os.stat(path).st_uid


def test_shipped_conf_keeps_metrics_local_and_limits_bodies():
    text = (REPO / "conf" / "imchallenge.conf").read_text()
    block = text[text.index('<Location "/metrics">'):]
    block = block[:block.index("</Location>")]
    assert "Require local" in block
    assert "LimitRequestBody 16777216" in text
    # A body timeout with a maximum: body=<initial>-<max>,MinRate=<rate>
    assert re.search(r"^\s*RequestReadTimeout .*\bbody=\d+-\d+,MinRate=\d+",
                     text, re.M), text
    load = (REPO / "conf" / "imchallenge.load").read_text()
    assert "LoadModule imchallenge_module " in load
