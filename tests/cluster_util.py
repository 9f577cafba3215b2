# Licensed under the Apache License, Version 2.0.
"""A ClickHouse cluster on this machine: ZooKeeper (Debian's package) and
two ClickHouse servers on 127.0.0.1 as the two shards of the cluster
"imchallenge" (remote_servers, macros, distributed DDL), with
conf/schema-cluster.sql applied once with ON CLUSTER. Each shard has one
replica; the tables are ReplicatedMergeTree all the same, registered in
ZooKeeper. A second cluster, "imchallenge_replicas", is one shard whose
two replicas are the two servers.

Used by tests/integration/test_cluster.py and tests/bench/report_bench.py:

    ensure_zookeeper()          # installs it when missing
    c = Cluster(workdir).start()
    ... c.shards[0].query(...) ...
    c.stop()
"""

import shutil
import signal
import socket
import subprocess
from pathlib import Path

import stack

REPO = stack.REPO
ZK_JAR = Path("/usr/share/java/zookeeper.jar")
SCHEMA = REPO / "conf" / "schema-cluster.sql"
CLUSTER = "imchallenge"
# One shard whose two replicas are the two servers.
REPLICAS = "imchallenge_replicas"


def zookeeper_installed():
    return ZK_JAR.is_file() and shutil.which("java") is not None


def ensure_zookeeper():
    """Debian's zookeeper package (Java); installed when missing
    (tests/install-deps.sh cluster). Raises CalledProcessError when that
    fails."""
    if zookeeper_installed():
        return
    subprocess.run(["bash", str(REPO / "tests" / "install-deps.sh"),
                    "cluster"], check=True, timeout=900)


class ZooKeeper:
    """A standalone ZooKeeper on 127.0.0.1 with its data under workdir."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.port = stack.free_port()
        self.proc = None

    def serving(self):
        """True once ZooKeeper serves sessions ("ruok" answers earlier:
        ClickHouse 18.16 connecting then has its handshake cut off and
        its DDL thread crashes)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"srvr")
                return s.recv(64).startswith(b"Zookeeper version")
        except OSError:
            return False

    def start(self):
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "zoo.cfg"
        cfg.write_text("tickTime=500\ninitLimit=10\nsyncLimit=5\n"
                       "dataDir=%s\nclientPort=%d\n"
                       "clientPortAddress=127.0.0.1\n"
                       "admin.enableServer=false\n"
                       "4lw.commands.whitelist=srvr\n" % (data, self.port))
        log = open(self.workdir / "zookeeper.log", "ab")
        try:
            self.proc = subprocess.Popen(
                ["java", "-Xmx256m", "-cp", str(ZK_JAR),
                 "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                 str(cfg)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        stack.wait_until(self.serving, 60, interval=0.2, what="ZooKeeper")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def zookeeper_reachable(ch):
    try:
        ch.query("SELECT count() FROM system.zookeeper WHERE path = '/'")
        return True
    except Exception:  # not yet: the query fails until the session is up
        return False


def cluster_xml(zk, shards, index):
    replicas = "".join(
        "<shard><internal_replication>true</internal_replication>"
        "<replica><host>127.0.0.1</host><port>%d</port></replica></shard>"
        % ch.tcp_port for ch in shards)
    both = "".join("<replica><host>127.0.0.1</host><port>%d</port></replica>"
                   % ch.tcp_port for ch in shards)
    me = shards[index]
    return """<?xml version="1.0"?>
<yandex>
    <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node></zookeeper>
    <remote_servers><{cluster}>{replicas}</{cluster}>
        <{two}><shard><internal_replication>true</internal_replication>{both}</shard></{two}>
    </remote_servers>
    <macros><shard>{shard}</shard><replica>replica-{shard}-1</replica></macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{ihp}</interserver_http_port>
</yandex>
""".format(zk=zk.port, cluster=CLUSTER, replicas=replicas, shard=index + 1,
           ihp=me.interserver_port, two=REPLICAS, both=both)


# The module user's profile: a write through a Distributed table returns
# once the rows are on their shards. The user imc_rr reads a shard from
# any of its replicas, the local one no more than another.
USERS_XML = """<?xml version="1.0"?>
<yandex><profiles><default>
    <insert_distributed_sync>1</insert_distributed_sync>
</default><any_replica>
    <load_balancing>random</load_balancing>
    <prefer_localhost_replica>0</prefer_localhost_replica>
</any_replica></profiles>
<users><imc_rr>
    <password></password>
    <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>any_replica</profile><quota>default</quota>
</imc_rr></users></yandex>
"""


def apply_schema(ch, sql=None):
    """conf/schema-cluster.sql (or sql, bytes) through clickhouse-client on
    ch; returns its output, raises StackError when it fails."""
    res = subprocess.run(
        ["clickhouse-client", "--host", "127.0.0.1", "--port",
         str(ch.tcp_port), "--multiquery"],
        input=SCHEMA.read_bytes() if sql is None else sql,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if res.returncode != 0:
        raise stack.StackError("conf/schema-cluster.sql failed (status %d): "
                               "%s" % (res.returncode,
                                       res.stdout.decode(errors="replace")))
    return res.stdout


class Cluster:
    """ZooKeeper and two ClickHouse servers (stack.ClickHouse) as the two
    shards of CLUSTER, under workdir; start() applies
    conf/schema-cluster.sql, stop() stops what start() started."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.zookeeper = ZooKeeper(self.workdir / "zookeeper")
        self.shards = [stack.ClickHouse(self.workdir / ("shard%d" % i))
                       for i in (1, 2)]
        for ch in self.shards:
            ch.interserver_port = stack.free_port()
        self.schema_output = None
        self._started = []

    def start(self):
        try:
            self.zookeeper.start()
            self._started.append(self.zookeeper)
            for i, ch in enumerate(self.shards):
                (ch.etc / "config.d").mkdir(parents=True, exist_ok=True)
                (ch.etc / "users.d").mkdir(parents=True, exist_ok=True)
                (ch.etc / "config.d" / "cluster.xml").write_text(
                    cluster_xml(self.zookeeper, self.shards, i))
                (ch.etc / "users.d" / "distributed.xml").write_text(
                    USERS_XML)
                ch.start()
                self._started.append(ch)
            for ch in self.shards:
                stack.wait_until(lambda: zookeeper_reachable(ch), 60,
                                 what="ZooKeeper from ClickHouse")
            self.schema_output = apply_schema(self.shards[0])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop the servers, newest first (all of them, even when one
        fails to stop: the first failure is raised after)."""
        errors = []
        while self._started:
            try:
                self._started.pop().stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
