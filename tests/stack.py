#!/usr/bin/python3
# Licensed under the Apache License, Version 2.0.
"""Private ClickHouse and Apache httpd servers for mod_imchallenge.

One launcher serves both `make run` and the test suites:

    /usr/bin/python3 tests/stack.py run [--port 8080] [--clickhouse-port 8123]
        [--workdir ./var] [--module mod_imchallenge/.libs/mod_imchallenge.so]

As a module it offers ClickHouse, Httpd and Stack (both together).  Every
server listens on 127.0.0.1 only, keeps its data, configuration and logs
under a work directory, and is stopped only through the pid it was started
with.  Only the Python standard library and requests are used.
"""

import argparse
import grp
import html
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODULE = REPO / "mod_imchallenge" / ".libs" / "mod_imchallenge.so"
SHIPPED_CONF = Path(os.environ.get("IMC_CONF")
                    or REPO / "conf" / "imchallenge.conf")
APACHE_BIN = "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
CLICKHOUSE_CANDIDATES = ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server",
                         "/usr/bin/clickhouse")
LOCALHOST = "127.0.0.1"


class StackError(RuntimeError):
    """A server could not be started, stopped or queried."""


class ErrorLogProblem(AssertionError):
    """The httpd error log holds lines that a clean run never writes."""


# ---------------------------------------------------------------- helpers


def port_is_free(port, host=LOCALHOST):
    """True when nothing listens on host:port and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_handed_out = set()


def free_port(host=LOCALHOST):
    """A TCP port on host that is free now and not handed out before."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise StackError("no free port found on %s" % host)


def wait_until(predicate, timeout, interval=0.1, what="condition"):
    """Poll predicate() until it returns a true value; return that value.

    Raises StackError naming `what` when timeout seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise StackError("timed out after %.1f s waiting for %s"
                             % (timeout, what))
        time.sleep(interval)


def tail(path, lines=40):
    """The last lines of a text file, or a note when it does not exist."""
    try:
        with open(path, "r", errors="replace") as f:
            text = f.read()
    except OSError as e:
        return "(%s: %s)" % (path, e.strerror)
    return "\n".join(text.splitlines()[-lines:])


def session_workdir(prefix):
    """A fresh directory under /tmp that httpd's children (www-data) can
    enter on their way to their spool (a pytest tmp_path is mode 0700)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(base, 0o755)
    return base


def finish_workdir(base, failed):
    """Remove a session_workdir(), or keep it for a look when tests failed
    or $IMC_KEEP_TMP is set."""
    if failed or os.environ.get("IMC_KEEP_TMP"):
        sys.stderr.write("\nserver files kept in %s\n" % base)
    else:
        shutil.rmtree(base, ignore_errors=True)


def log_tails(log, output):
    """A server's log and its output's last lines, for an error message."""
    return "--- %s\n%s\n--- %s\n%s" % (log, tail(log), output,
                                        tail(output, 20))


def http_session():
    """A requests session that never goes through an environment proxy."""
    s = requests.Session()
    s.trust_env = False
    return s


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def child_pids(ppid):
    """Live processes whose parent is ppid, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == ppid and fields[0] != "Z":
            pids.append(int(entry))
    return sorted(pids)


def socket_holders(pids, inodes):
    """The pids among pids with a descriptor on a socket whose inode (as
    /proc/net/tcp writes it) is in inodes, in the order of pids."""
    targets = {"socket:[%s]" % i for i in inodes}
    out = []
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link in targets:
                out.append(pid)
                break
    return out


def clickhouse_binary():
    """The clickhouse-server executable (Debian: /usr/sbin; upstream: /usr/bin)."""
    env = os.environ.get("IMC_CLICKHOUSE_SERVER")
    for path in ((env,) if env else ()) + CLICKHOUSE_CANDIDATES:
        if os.access(path, os.X_OK):
            if os.path.basename(path) == "clickhouse":
                return [path, "server"]
            return [path]
    raise StackError("clickhouse-server not found (tried %s)"
                     % ", ".join(CLICKHOUSE_CANDIDATES))


def _die_with_launcher():
    """In the forked server: receive SIGTERM when the launcher dies."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _untraversable(path, uid, gid):
    """The first directory from / to path that uid:gid may not enter."""
    path = Path(path).resolve()
    for d in list(reversed(path.parents)) + [path]:
        st = d.stat()
        if st.st_uid == uid:
            bit = 0o100
        elif st.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return d
    return None


def _xml(value):
    return html.escape(str(value), quote=True)


# ---------------------------------------------------------------- ClickHouse


class ClickHouse:
    """A private clickhouse-server with its data and logs under workdir.

    The server time zone is Europe/Moscow on purpose: nothing may rely on
    a server that runs in UTC.  User `default` has no password; user
    `imc` has the password in .imc_password (also in .password_file).
    """

    IMC_USER = "imc"

    def __init__(self, workdir, http_port=None, tcp_port=None,
                 timezone="Europe/Moscow", imc_password=None,
                 binary=None):
        self.workdir = Path(workdir).resolve()
        self.http_port = http_port or free_port()
        self.tcp_port = tcp_port or free_port()
        self.timezone = timezone
        self.binary = ([binary] if isinstance(binary, str)
                       else list(binary or clickhouse_binary()))
        self.host = LOCALHOST
        self.user = "default"
        self.imc_user = self.IMC_USER
        self.etc = self.workdir / "etc"
        self.data = self.workdir / "data"
        self.logdir = self.workdir / "log"
        self.config_file = self.etc / "config.xml"
        self.users_file = self.etc / "users.xml"
        self.log_file = self.logdir / "clickhouse-server.log"
        self.err_file = self.logdir / "clickhouse-server.err.log"
        self.stdout_file = self.logdir / "stdout.log"
        self.password_file = self.workdir / "imc.password"
        self.imc_password = imc_password or self._load_or_make_password()
        self.proc = None
        self.paused = False
        self._http = http_session()

    @property
    def url(self):
        """Base URL of the HTTP interface, with a trailing slash."""
        return "http://%s:%d/" % (self.host, self.http_port)

    def _load_or_make_password(self):
        try:
            text = self.password_file.read_text().strip()
            if text:
                return text
        except OSError:
            pass
        return secrets.token_hex(16)

    # -- configuration

    def write_config(self):
        for d in (self.etc, self.data, self.logdir, self.data / "tmp",
                  self.data / "user_files", self.data / "format_schemas"):
            d.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._config_xml())
        self.users_file.write_text(self._users_xml())
        self.password_file.write_text(self.imc_password + "\n")
        os.chmod(self.password_file, 0o640)
        try:
            os.chown(self.password_file, 0, grp.getgrnam("www-data").gr_gid)
        except (KeyError, PermissionError):
            pass

    def _config_xml(self):
        d = self.data
        return """<?xml version="1.0"?>
<!-- Private test and development server for mod_imchallenge. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>{log}</log>
        <errorlog>{err}</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>{host}</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>134217728</uncompressed_cache_size>
    <mark_cache_size>134217728</mark_cache_size>
    <path>{path}/</path>
    <tmp_path>{path}/tmp/</tmp_path>
    <user_files_path>{path}/user_files/</user_files_path>
    <format_schema_path>{path}/format_schemas/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>{tz}</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
""".format(log=_xml(self.log_file), err=_xml(self.err_file),
           host=_xml(self.host), http_port=self.http_port,
           tcp_port=self.tcp_port, path=_xml(d),
           users=_xml(self.users_file), tz=_xml(self.timezone))

    def _users_xml(self):
        networks = """<networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>"""
        return """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            {networks}
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <{imc}>
            <password>{pw}</password>
            {networks}
            <profile>default</profile>
            <quota>default</quota>
        </{imc}>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
""".format(networks=networks, imc=self.imc_user, pw=_xml(self.imc_password))

    # -- life cycle

    def start(self, timeout=30):
        """Start the server (again, on the same data); wait for /ping."""
        if self.is_running():
            return self
        self.write_config()
        out = open(self.stdout_file, "ab")
        try:
            self.proc = subprocess.Popen(
                self.binary + ["--config-file=%s" % self.config_file],
                cwd=str(self.workdir), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_launcher)
        finally:
            out.close()
        self.paused = False
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise StackError("clickhouse-server exited with status %s\n%s"
                                 % (self.proc.returncode, self._log_tails()))
            if time.monotonic() >= deadline:
                self.kill()
                raise StackError("clickhouse-server did not answer /ping on "
                                 "%s within %s s\n%s"
                                 % (self.url, timeout, self._log_tails()))
            time.sleep(0.1)
        return self

    def _log_tails(self):
        return log_tails(self.err_file, self.stdout_file)

    def is_running(self):
        """True while the process started here has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def ping(self, timeout=1.0):
        """True when GET /ping answers "Ok."."""
        try:
            r = self._http.get(self.url + "ping", timeout=timeout)
        except requests.RequestException:
            return False
        return r.status_code == 200 and r.text.strip() == "Ok."

    def stop(self, timeout=15):
        """SIGTERM, wait up to timeout seconds, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            _signal_pid(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_pid(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill(self):
        """SIGKILL the server and reap it."""
        if self.proc is None:
            return
        _signal_pid(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.paused = False

    def pause(self):
        """SIGSTOP: connections are accepted by the kernel, never answered."""
        if not self.is_running():
            raise StackError("clickhouse-server is not running")
        _signal_pid(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT after pause()."""
        if self.is_running():
            _signal_pid(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def ensure_running(self, timeout=30):
        """Undo pause() and restart a stopped or killed server."""
        if self.paused:
            self.resume()
        if not self.is_running():
            self.start(timeout)
        return self

    # -- queries

    def query(self, sql, user=None, password=None, timeout=30, **settings):
        """Run one statement through the HTTP interface; return the text.

        Settings become URL parameters (e.g. database="imchallenge").
        Raises StackError with ClickHouse's message on a non-200 answer.
        """
        params = dict(settings)
        auth = None
        if user is not None:
            auth = (user, password or "")
        r = self._http.post(self.url, params=params, auth=auth,
                            data=sql.encode("utf-8"), timeout=timeout)
        if r.status_code != 200:
            raise StackError("ClickHouse answered %d to %r: %s"
                             % (r.status_code, sql[:200], r.text.strip()))
        return r.text

    def scalar(self, sql, **kw):
        """The single value of a one-row, one-column SELECT, as text."""
        return self.query(sql, **kw).strip()

    def error_log(self):
        """Text of the server's error log (empty when absent)."""
        try:
            return self.err_file.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- httpd

MPM_SIZING = {
    # Two cores: a few processes, enough threads for wrk, children stable
    # while idle. No child started under load is reaped as a spare
    # afterwards (MaxSpare* at the most there can be): a reaped child
    # seals its spool segment, which is then delivered at once, whatever
    # the batch delay a test relies on.
    "event": """StartServers 2
ServerLimit 4
ThreadLimit 32
ThreadsPerChild 32
MinSpareThreads 16
MaxSpareThreads 128
MaxRequestWorkers 128
MaxConnectionsPerChild 0""",
    "worker": """StartServers 2
ServerLimit 4
ThreadLimit 32
ThreadsPerChild 32
MinSpareThreads 16
MaxSpareThreads 128
MaxRequestWorkers 128
MaxConnectionsPerChild 0""",
    "prefork": """StartServers 4
MinSpareServers 2
MaxSpareServers 16
ServerLimit 16
MaxRequestWorkers 16
MaxConnectionsPerChild 0""",
}

# Lines that never appear in the error log of a healthy server.
_BAD_LEVEL = re.compile(r"\[(?:[\w.-]*:)?(error|crit|alert|emerg)\]")
_WARN_LEVEL = re.compile(r"\[(?:[\w.-]*:)?warn\]")
_CRASH = re.compile(r"exit signal|AddressSanitizer|LeakSanitizer|"
                    r"UndefinedBehaviorSanitizer|runtime error:|"
                    r"Segmentation fault|core dumped|double free|"
                    r"malloc\(\)|free\(\): ")


class Httpd:
    """A private Apache httpd with mod_imchallenge, all files under workdir.

    Layout: conf/httpd.conf, logs/{error,access}.log, run/ (pid file,
    runtime files), spool/ (IMChallengeSpoolDir, owned by www-data),
    htdocs/.  module_path=None starts httpd without the module, its
    directives and the shipped conf (useful only to try the launcher).

    The configuration is: core and MPM sizing, the module with
    IMChallengeClickHouse / IMChallengeSpoolDir / IMChallengeBatchDelay,
    `Include` of the shipped conf, then `directives`, last so that they
    can override both.  env adds to httpd's environment; $IMC_HTTPD_PRELOAD
    becomes its LD_PRELOAD (a sanitizer runtime for an instrumented build).
    """

    def __init__(self, workdir, module_path=DEFAULT_MODULE, port=None,
                 mpm="event", directives="", clickhouse_url=None,
                 batch_delay="200ms", spool_dir=None,
                 include_conf=SHIPPED_CONF, modules=(), env=None,
                 user="www-data", group="www-data", log_level="warn"):
        if mpm not in MPM_SIZING:
            raise ValueError("mpm must be one of %s" % ", ".join(MPM_SIZING))
        self.workdir = Path(workdir).resolve()
        self.module_path = Path(module_path).resolve() if module_path else None
        self.port = port or free_port()
        self.mpm = mpm
        self.directives = directives
        self.clickhouse_urls = ([clickhouse_url] if isinstance(
            clickhouse_url, str) else list(clickhouse_url or ()))
        self.batch_delay = batch_delay
        self.include_conf = Path(include_conf) if include_conf else None
        self.modules = list(modules)
        self.env = dict(env or {})
        preload = os.environ.get("IMC_HTTPD_PRELOAD")  # e.g. libasan for ASan
        if preload and "LD_PRELOAD" not in self.env:
            self.env["LD_PRELOAD"] = preload
        self.user, self.group = user, group
        self.log_level = log_level
        self.host = LOCALHOST
        self.confdir = self.workdir / "conf"
        self.logdir = self.workdir / "logs"
        self.rundir = self.workdir / "run"
        self.docroot = self.workdir / "htdocs"
        self.spool_dir = Path(spool_dir) if spool_dir else self.workdir / "spool"
        self.conf_file = self.confdir / "httpd.conf"
        self.pid_file = self.rundir / "httpd.pid"
        self.error_log_file = self.logdir / "error.log"
        self.access_log_file = self.logdir / "access.log"
        self.stderr_file = self.logdir / "stderr.log"
        self.proc = None
        self.expected_log = []  # regexes for lines caused on purpose
        self.http = http_session()
        self._configtests = 0

    @property
    def url(self):
        """Base URL, with a trailing slash."""
        return "http://%s:%d/" % (self.host, self.port)

    @property
    def pid(self):
        """The parent process id, or None when not running."""
        return self.proc.pid if self.is_running() else None

    # -- configuration

    def config_text(self, extra_directives=""):
        """The complete httpd.conf, with extra_directives at the end."""
        mods = ["mpm_%s" % self.mpm, "authz_core", "authz_host"]
        mods += [m for m in self.modules if m not in mods]
        lines = [
            "# Private httpd for mod_imchallenge; generated, do not edit.",
            "ServerRoot %s" % self.workdir,
            "DefaultRuntimeDir %s" % self.rundir,
            "PidFile %s" % self.pid_file,
            "Listen %s:%d" % (self.host, self.port),
            "ServerName %s" % self.host,
        ]
        for m in mods:
            lines.append("LoadModule %s_module %s"
                         % (m, APACHE_MODULES / ("mod_%s.so" % m)))
        lines += [
            "User %s" % self.user,
            "Group %s" % self.group,
            "ErrorLog %s" % self.error_log_file,
            "LogLevel %s" % self.log_level,
            'LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" imc',
            "CustomLog %s imc" % self.access_log_file,
            "Timeout 30",
            "KeepAlive On",
            "KeepAliveTimeout 5",
            "GracefulShutdownTimeout 15",
            "TraceEnable Off",
            "DocumentRoot %s" % self.docroot,
            "<Directory />",
            "    AllowOverride None",
            "    Require all denied",
            "</Directory>",
            "<Directory %s>" % self.docroot,
            "    Require all granted",
            "</Directory>",
            MPM_SIZING[self.mpm],
        ]
        if self.module_path:
            lines.append("LoadModule imchallenge_module %s" % self.module_path)
            if self.clickhouse_urls:
                lines.append("IMChallengeClickHouse %s"
                             % " ".join(self.clickhouse_urls))
            lines.append("IMChallengeSpoolDir %s" % self.spool_dir)
            if self.batch_delay:
                lines.append("IMChallengeBatchDelay %s" % self.batch_delay)
            if self.include_conf:
                lines.append("Include %s" % self.include_conf)
        if self.directives:
            lines.append(self.directives)
        if extra_directives:
            lines.append(extra_directives)
        return "\n".join(lines) + "\n"

    def _prepare_dirs(self):
        for d in (self.workdir, self.confdir, self.logdir, self.rundir,
                  self.docroot, self.spool_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Children run as www-data: they must reach the spool and logs.
        os.chmod(self.workdir, 0o755)
        uid = pwd.getpwnam(self.user).pw_uid
        gid = grp.getgrnam(self.group).gr_gid
        blocked = _untraversable(self.spool_dir.parent, uid, gid)
        if blocked:
            raise StackError("%s cannot enter %s (mode %o): children could "
                             "not reach %s" % (self.user, blocked,
                                               blocked.stat().st_mode & 0o777,
                                               self.spool_dir))
        for d in (self.spool_dir, self.logdir):
            os.chown(d, uid, gid)
            os.chmod(d, 0o750)

    def write_config(self):
        self._prepare_dirs()
        self.conf_file.write_text(self.config_text())

    def _environ(self):
        env = dict(os.environ)
        env.update({
            "APACHE_RUN_DIR": str(self.rundir),
            "APACHE_LOCK_DIR": str(self.rundir),
            "APACHE_PID_FILE": str(self.pid_file),
            "APACHE_LOG_DIR": str(self.logdir),
            "APACHE_RUN_USER": self.user,
            "APACHE_RUN_GROUP": self.group,
        })
        env.update(self.env)
        return env

    def _apache(self, *args, conf=None, timeout=60):
        cmd = [APACHE_BIN, "-f", str(conf or self.conf_file)] + list(args)
        return subprocess.run(cmd, env=self._environ(), cwd=str(self.workdir),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout,
                              text=True, errors="replace")

    def configtest(self, extra_directives=""):
        """`apache2 -t` on this config plus extra_directives.

        Returns (returncode, output).  The running server is not touched.
        """
        self._prepare_dirs()
        self._configtests += 1
        conf = self.confdir / ("configtest-%d.conf" % self._configtests)
        conf.write_text(self.config_text(extra_directives))
        res = self._apache("-t", conf=conf)
        return res.returncode, res.stdout

    # -- life cycle

    def start(self, timeout=30):
        """Start httpd in the foreground of its own session; wait for it."""
        if self.is_running():
            return self
        self.write_config()
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass
        out = open(self.stderr_file, "ab")
        try:
            self.proc = subprocess.Popen(
                [APACHE_BIN, "-f", str(self.conf_file), "-k", "start",
                 "-DFOREGROUND"],
                env=self._environ(), cwd=str(self.workdir),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_launcher)
        finally:
            out.close()
        try:
            self._wait_ready(timeout, "httpd to start")
            wait_until(self._pid_file_ok, timeout, what="the httpd pid file")
        except StackError:
            self._hard_stop()
            raise
        return self

    def _pid_file_ok(self):
        try:
            return int(self.pid_file.read_text().strip()) == self.proc.pid
        except (OSError, ValueError):
            return False

    def _answers(self):
        # A fresh connection: a kept-alive one may reach an old child.
        try:
            requests.get(self.url + "healthz", timeout=2,
                         headers={"Connection": "close"},
                         proxies={"http": None, "https": None})
        except requests.RequestException:
            return False
        return True

    def _wait_ready(self, timeout, what, new_children_of=None):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StackError("httpd exited with status %s while waiting "
                                 "for %s\n%s" % (self.proc.returncode, what,
                                                 self._log_tails()))
            fresh = True
            if new_children_of is not None:
                fresh = bool(set(self.children()) - new_children_of)
            if fresh and self._answers():
                return
            if time.monotonic() >= deadline:
                raise StackError("timed out after %s s waiting for %s\n%s"
                                 % (timeout, what, self._log_tails()))
            time.sleep(0.05)

    def _log_tails(self):
        return log_tails(self.error_log_file, self.stderr_file)

    def is_running(self):
        """True while the parent process started here has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def children(self):
        """Pids of the live child processes of the parent."""
        if not self.is_running():
            return []
        return child_pids(self.proc.pid)

    def graceful(self, timeout=30):
        """`-k graceful`; wait until a new generation answers."""
        self._signal_generation("graceful", timeout)

    def restart(self, timeout=30):
        """`-k restart` (hard); wait until a new generation answers."""
        self._signal_generation("restart", timeout)

    def _signal_generation(self, how, timeout):
        if not self.is_running():
            raise StackError("httpd is not running")
        self.write_config()
        old = set(self.children())
        res = self._apache("-k", how)
        if res.returncode != 0:
            raise StackError("apache2 -k %s failed: %s" % (how, res.stdout))
        # A kept-alive connection is to a child of the old generation,
        # which closes it: a request sent on it as the close arrives is
        # reset. The next request opens a connection to the new one.
        self.http.close()
        self._wait_ready(timeout, "httpd -k %s" % how, new_children_of=old)

    def stop(self, graceful=True, timeout=30):
        """`-k graceful-stop` (or `-k stop`); wait for the parent to exit.

        Falls back to `-k stop` and finally SIGKILL of the parent and its
        children when timeout passes.
        """
        if self.proc is None:
            return
        self.http.close()  # kept-alive connections would delay the stop
        if self.proc.poll() is None:
            self._apache("-k", "graceful-stop" if graceful else "stop")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._hard_stop()
        self.proc = None

    def _hard_stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = self.children()
        _signal_pid(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _signal_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in kids:
            _signal_pid(pid, signal.SIGKILL)

    def kill_child(self, pid=None, sig=signal.SIGKILL, wait=True):
        """Send sig (SIGKILL) to one child (the first, or pid); return its pid.

        With SIGKILL, a "child pid N exit signal" line for it is expected
        and does not fail check_error_log(); other signals stand for a
        crash and are reported.
        """
        kids = self.children()
        if not kids:
            raise StackError("httpd has no child process")
        if pid is None:
            pid = kids[0]
        elif pid not in kids:
            raise StackError("pid %d is not a child of httpd" % pid)
        if sig == signal.SIGKILL:
            self.expected_log.append(r"child pid %d exit signal" % pid)
        _signal_pid(pid, sig)
        if wait:
            wait_until(lambda: not pid_alive(pid), 10,
                       what="child %d to die" % pid)
        return pid

    # -- logs

    def error_log(self, offset=0):
        """Error log text from byte offset on."""
        try:
            with open(self.error_log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def error_log_size(self):
        """Current size of the error log (an offset for later checks)."""
        try:
            return self.error_log_file.stat().st_size
        except OSError:
            return 0

    def access_log(self):
        try:
            return self.access_log_file.read_text(errors="replace")
        except OSError:
            return ""

    def error_log_problems(self, allowed_patterns=(), offset=0):
        """Lines from offset on that check_error_log() would reject."""
        allowed = [re.compile(p) for p in
                   list(allowed_patterns) + self.expected_log]
        bad = []
        for line in self.error_log(offset).splitlines():
            if any(p.search(line) for p in allowed):
                continue
            if (_BAD_LEVEL.search(line) or _CRASH.search(line)
                    or _WARN_LEVEL.search(line)):
                bad.append(line)
        return bad

    def check_error_log(self, allowed_patterns=(), offset=0):
        """Raise ErrorLogProblem for [error]/[crit]/[alert]/[emerg] lines,
        crashed children ("exit signal", sanitizer reports) and [warn]
        lines, from byte offset on.  A line that matches one of the
        allowed_patterns (regexes) or a kill_child() expectation passes.
        """
        bad = self.error_log_problems(allowed_patterns, offset)
        if bad:
            raise ErrorLogProblem("unexpected lines in %s:\n%s"
                                  % (self.error_log_file, "\n".join(bad)))

    # -- HTTP shortcuts

    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.get(self.url + path.lstrip("/"), **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.post(self.url + path.lstrip("/"), **kw)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- both


class Stack:
    """ClickHouse and httpd with the module, under one work directory.

    workdir/clickhouse holds ClickHouse's data, workdir/httpd the httpd
    configuration, logs and spool; both are kept between runs.
    """

    def __init__(self, workdir, module_path=DEFAULT_MODULE, port=None,
                 clickhouse_port=None, mpm="event", directives="",
                 **httpd_options):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.clickhouse = ClickHouse(self.workdir / "clickhouse",
                                     http_port=clickhouse_port)
        self.httpd = Httpd(self.workdir / "httpd", module_path, port=port,
                           mpm=mpm, directives=directives,
                           clickhouse_url=self.clickhouse.url,
                           **httpd_options)

    @property
    def url(self):
        return self.httpd.url

    def start(self, timeout=30):
        self.clickhouse.start(timeout)
        try:
            self.httpd.start(timeout)
        except BaseException:
            self.clickhouse.stop()
            raise
        return self

    def wait_ready(self, timeout=30):
        """Wait until GET /readyz answers 200; return its last answer."""
        last = [None]

        def ready():
            try:
                last[0] = self.httpd.get("readyz", timeout=2)
            except requests.RequestException as e:
                last[0] = e
                return False
            return last[0].status_code == 200

        try:
            wait_until(ready, timeout, interval=0.2, what="GET /readyz")
        except StackError as e:
            answer = last[0]
            if isinstance(answer, requests.Response):
                answer = "%d %s" % (answer.status_code, answer.text[:500])
            raise StackError("%s; last answer: %s" % (e, answer)) from None
        return last[0]

    def stop(self):
        try:
            self.httpd.stop()
        finally:
            self.clickhouse.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------- command line


class _Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def _run(args):
    module = Path(args.module).resolve()
    if not module.is_file():
        sys.exit("stack.py: module %s not found; build it first (make)"
                 % module)
    if os.geteuid() != 0:
        sys.exit("stack.py: run as root (httpd switches its children to "
                 "www-data)")
    if not port_is_free(args.port):
        sys.exit("stack.py: 127.0.0.1:%d is in use" % args.port)
    ch_port = args.clickhouse_port
    if ch_port is None:
        ch_port = 8123 if port_is_free(8123) else free_port()
    elif not port_is_free(ch_port):
        sys.exit("stack.py: 127.0.0.1:%d is in use" % ch_port)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stack = Stack(workdir, module, port=args.port, clickhouse_port=ch_port,
                  mpm=args.mpm)
    status = 0
    try:
        stack.start()
        u = stack.url
        print("mod_imchallenge on %s (httpd %s, ClickHouse %s)"
              % (u, stack.httpd.mpm, stack.clickhouse.url))
        for name, path in (("home", ""), ("event API", "api/event"),
                           ("report", "api/report"), ("status", "api/status"),
                           ("metrics", "metrics"), ("health", "healthz")):
            print("  %-10s %s%s" % (name, u, path))
        print("  %-10s %s" % ("ClickHouse", stack.clickhouse.url))
        print("  %-10s %s" % ("logs", stack.httpd.logdir))
        sys.stdout.flush()
        try:
            stack.wait_ready(args.ready_timeout)
            print("ready (Ctrl-C stops)", flush=True)
        except StackError as e:
            print("stack.py: not ready: %s\n%s" % (e, stack.httpd._log_tails()),
                  file=sys.stderr, flush=True)
        while True:
            for name, server in (("httpd", stack.httpd),
                                 ("clickhouse-server", stack.clickhouse)):
                if not server.is_running():
                    raise StackError("%s exited with status %s\n%s"
                                     % (name, server.proc.returncode,
                                        server._log_tails()))
            time.sleep(0.5)
    except _Stop as e:
        print("\nstack.py: %s received, stopping" % e, flush=True)
    except StackError as e:
        print("stack.py: %s" % e, file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    print("stack.py: stopped", flush=True)
    return status


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="stack.py",
        description="Private ClickHouse + httpd with mod_imchallenge.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start both in the foreground until "
                         "Ctrl-C or SIGTERM")
    run.add_argument("--port", type=int, default=8080,
                     help="httpd port on 127.0.0.1 (8080)")
    run.add_argument("--clickhouse-port", type=int, default=None,
                     help="ClickHouse HTTP port (8123, or a free one when "
                     "8123 is taken)")
    run.add_argument("--workdir", default="./var",
                     help="data, configuration and logs (./var)")
    run.add_argument("--module", default=str(DEFAULT_MODULE),
                     help="path of mod_imchallenge.so")
    run.add_argument("--mpm", default="event", choices=sorted(MPM_SIZING))
    run.add_argument("--ready-timeout", type=float, default=30,
                     help="seconds to wait for /readyz (30)")
    args = p.parse_args(argv)
    if args.command == "run":
        return _run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
