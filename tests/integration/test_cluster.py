# Licensed under the Apache License, Version 2.0.
"""conf/schema-cluster.sql on a real cluster on this machine: ZooKeeper
(Debian's package) and two ClickHouse servers on 127.0.0.1 as two shards
of the cluster "imchallenge" (remote_servers, macros, distributed DDL).
The schema is applied once with ON CLUSTER; the module, with
IMChallengeCreateSchema Off, writes through the Distributed table and
reports through it with exact counts. Each shard has one replica here;
the tables are ReplicatedMergeTree all the same, registered in ZooKeeper."""

import uuid
from types import SimpleNamespace

import pytest

import stack
from cluster_util import (CLUSTER, REPLICAS, Cluster, apply_schema,
                          ensure_zookeeper)
from faults_util import HttpProxy
from report_cache_util import Reports, Table, days_metric, delta
from report_util import event as report_event
from report_util import expected_answer, model

REPO = stack.REPO
DAY = "2026-11-27"


@pytest.fixture(scope="module")
def cluster(workbase):
    ensure_zookeeper()
    c = Cluster(workbase / "cluster")
    c.start()
    try:
        yield {"zookeeper": c.zookeeper, "shards": c.shards,
               "schema_output": c.schema_output}
    finally:
        c.stop()


def test_schema_is_on_every_shard(cluster):
    for i, ch in enumerate(cluster["shards"]):
        assert ch.scalar("SELECT substitution FROM system.macros "
                         "WHERE macro = 'shard'") == str(i + 1)
        engines = ch.query(
            "SELECT name, engine FROM system.tables WHERE database = "
            "'imchallenge' ORDER BY name FORMAT TabSeparated")
        assert engines.splitlines() == [
            "events\tDistributed",
            "events_local\tReplicatedMergeTree",
        ]
        assert ch.scalar(
            "SELECT count() FROM system.clusters WHERE cluster = '%s'"
            % CLUSTER) == "2"
        # Replicated: each table registered its replica in ZooKeeper.
        assert ch.scalar(
            "SELECT count() FROM system.replicas WHERE database = "
            "'imchallenge' AND zookeeper_path LIKE '/clickhouse/tables/"
            "%d/imchallenge/%%'" % (i + 1)) == "1"


def test_schema_is_idempotent(cluster):
    # Raises StackError with clickhouse-client's output when it fails.
    apply_schema(cluster["shards"][1])


def events(site, served, solved):
    ids = [str(uuid.uuid4()) for _ in range(served)]
    out = [{"time": "%sT%02d:%02d:00Z" % (DAY, 6 + i % 12, i % 60),
            "type": "serve", "correlation_id": c, "site_id": site}
           for i, c in enumerate(ids)]
    out += [{"time": "%sT%02d:%02d:30Z" % (DAY, 6 + i % 12, i % 60),
             "type": "solve", "correlation_id": c, "site_id": site}
            for i, c in enumerate(ids[:solved])]
    return out


def sites_on_each_shard(ch, n):
    """2n random site ids, n on each of the two shards, by the Distributed
    table's sharding key (cityHash64(toString(site_id)) over two shards of
    weight 1): random ones alone all land on one shard now and then."""
    want, out = [n, n], []
    while want[0] or want[1]:
        site = str(uuid.uuid4())
        shard = int(ch.scalar("SELECT cityHash64(toString(toUUID('%s'))) %% 2"
                              % site))
        if want[shard]:
            want[shard] -= 1
            out.append(site)
    return out


def test_module_writes_and_reports_through_the_cluster(cluster, make_httpd):
    shards = cluster["shards"]
    # The second URL is the module's fail-over: any server of the cluster
    # can take writes and reports.
    h = make_httpd(clickhouse=[shards[0].url, shards[1].url],
                   directives="IMChallengeCreateSchema Off")
    sites = {site: (10 + 3 * i, 4 + i)
             for i, site in enumerate(sites_on_each_shard(shards[0], 4))}
    batch = []
    for site, (served, solved) in sites.items():
        batch += events(site, served, solved)
    batch += batch[:5]  # sent twice: counted once
    r = h.post("api/event?wait=1", json=batch)
    assert r.status_code == 201, r.text
    assert r.json()["accepted"] == len(batch)

    r = h.get("api/report", params={"from": DAY, "to": DAY})
    assert r.status_code == 200, r.text
    rep = r.json()
    got = {row["site_id"]: (row["served"], row["solved"])
           for row in rep["rows"] if row["site_id"] in sites}
    assert got == sites
    assert all(row["day"] == DAY for row in rep["rows"])
    mine = [row for row in rep["rows"] if row["site_id"] in sites]
    assert [row["site_id"] for row in mine] == sorted(sites)
    for row in mine:
        assert row["solve_rate"] == round(row["solved"] / row["served"], 4)

    # Filters work through the Distributed table too.
    one = sorted(sites)[3]
    r = h.get("api/report/site_id='%s' AND type='solve'" % one)
    assert r.status_code == 200, r.text
    assert [(x["served"], x["solved"]) for x in r.json()["rows"]] == \
        [(0, sites[one][1])]

    # The rows are spread over both shards, each shard holds whole sites,
    # and nothing is lost or doubled on the way.
    total = sum(s + v for s, v in sites.values())
    per_shard = []
    site_list = ",".join("toUUID('%s')" % s for s in sites)
    for ch in shards:
        n = int(ch.scalar(
            "SELECT uniqExact(correlation_id, type) FROM "
            "imchallenge.events_local WHERE site_id IN (%s)" % site_list))
        per_shard.append(n)
        local_sites = set(ch.query(
            "SELECT DISTINCT toString(site_id) FROM imchallenge.events_local "
            "WHERE site_id IN (%s) FORMAT TabSeparated"
            % site_list).split())
        other = shards[1 - shards.index(ch)]
        other_sites = set(other.query(
            "SELECT DISTINCT toString(site_id) FROM imchallenge.events_local "
            "WHERE site_id IN (%s) FORMAT TabSeparated"
            % site_list).split())
        assert not local_sites & other_sites
    assert all(n > 0 for n in per_shard), per_shard
    assert sum(per_shard) == total
    # Exact distinct counts read back through the Distributed table: each
    # shard's partial uniqExact states merge.
    agg = shards[1].query(
        "SELECT toString(site_id), uniqExactIf(correlation_id, type = "
        "'serve'), uniqExactIf(correlation_id, type = 'solve') FROM "
        "imchallenge.events WHERE site_id IN (%s) GROUP BY site_id "
        "FORMAT TabSeparated" % site_list)
    got = {}
    for line in agg.splitlines():
        site, served, solved = line.split("\t")
        got[site] = (int(served), int(solved))
    assert got == sites


# The tables of conf/schema-cluster.sql as they were before time_ms, in a
# database of their own (the ZooKeeper path names it too).
OLD_DB = "imc_upgrade"
OLD_SCHEMA = [
    "CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cl}",
    "CREATE TABLE IF NOT EXISTS {db}.events_local ON CLUSTER {cl} "
    "(time DateTime('UTC'), type Enum8('serve' = 1, 'solve' = 2), "
    "correlation_id UUID, site_id UUID, received_at DateTime('UTC'), "
    "raw String) ENGINE = ReplicatedMergeTree("
    "'/clickhouse/tables/{{shard}}/{db}/events_local', '{{replica}}') "
    "PARTITION BY toYYYYMM(time) ORDER BY (site_id, time)",
    "CREATE TABLE IF NOT EXISTS {db}.events ON CLUSTER {cl} "
    "(time DateTime('UTC'), type Enum8('serve' = 1, 'solve' = 2), "
    "correlation_id UUID, site_id UUID, received_at DateTime('UTC'), "
    "raw String) ENGINE = Distributed({cl}, {db}, events_local, "
    "cityHash64(toString(site_id)))",
]


def shipped_upgrade(db):
    """The upgrade statements that conf/schema-cluster.sql gives, for
    database db: (the shards' tables ON CLUSTER, the Distributed table on
    each server)."""
    text = (REPO / "conf" / "schema-cluster.sql").read_text()
    found = [line.lstrip("- ").rstrip(";") for line in text.splitlines()
             if line.startswith("--   ALTER TABLE ")]
    assert len(found) == 2, found
    assert "events_local ON CLUSTER" in found[0], found
    assert "ON CLUSTER" not in found[1], found
    return [s.replace("imchallenge.", db + ".") for s in found]


def columns_of(ch, db, table):
    return ch.query("SELECT name FROM system.columns WHERE database = '%s' "
                    "AND table = '%s' FORMAT TabSeparated"
                    % (db, table)).split()


def ms_rows(ch, db, sites):
    """{cid: time_ms} of the sites, read through the Distributed table."""
    text = ch.query("SELECT toString(correlation_id), time_ms FROM %s.events "
                    "WHERE site_id IN (%s) FORMAT TabSeparated" % (
                        db, ",".join("toUUID('%s')" % s for s in sites)))
    return {c: int(m) for c, m in (x.split("\t") for x in text.splitlines())}


def post_ms(h, sites, ms):
    """One event per site at DAY 12:00:00.<ms>; returns their cids."""
    cids = {}
    batch = []
    for site in sites:
        cid = str(uuid.uuid4())
        cids[cid] = ms
        batch.append({"time": "%sT12:00:00.%03dZ" % (DAY, ms),
                      "type": "serve", "correlation_id": cid,
                      "site_id": site})
    r = h.post("api/event?wait=1", json=batch)
    assert r.status_code == 201, r.text
    return cids


def test_upgrade_of_tables_made_before_time_ms(cluster, make_httpd):
    """A cluster whose tables predate time_ms: a module with
    IMChallengeCreateSchema On leaves its Distributed table alone and keeps
    delivering (without the milliseconds); the statements that
    conf/schema-cluster.sql gives add the column on every shard in place
    (the same parts, the rows kept, reading 0); then the milliseconds are
    stored through the Distributed table."""
    shards = cluster["shards"]
    for sql in OLD_SCHEMA:
        shards[0].query(sql.format(db=OLD_DB, cl=CLUSTER))
    sites = sites_on_each_shard(shards[0], 3)
    h = make_httpd(clickhouse=shards[0].url,
                   directives="IMChallengeDatabase %s" % OLD_DB)
    before = post_ms(h, sites, 250)
    h.stop()
    for ch in shards:
        assert "time_ms" not in columns_of(ch, OLD_DB, "events")
        assert "time_ms" not in columns_of(ch, OLD_DB, "events_local")
    parts = [ch.query("SELECT name, rows FROM system.parts WHERE database = "
                      "'%s' AND active ORDER BY name FORMAT TabSeparated"
                      % OLD_DB) for ch in shards]
    assert all(parts), parts  # rows on both shards

    local, distributed = shipped_upgrade(OLD_DB)
    shards[0].query(local)
    for ch in shards:
        ch.query(distributed)
    for ch, had in zip(shards, parts):
        for table in ("events_local", "events"):
            stack.wait_until(
                lambda: "time_ms" in columns_of(ch, OLD_DB, table), 60,
                interval=0.2, what="time_ms on every shard")
        assert ch.query("SELECT name, rows FROM system.parts WHERE database "
                        "= '%s' AND active ORDER BY name FORMAT TabSeparated"
                        % OLD_DB) == had
    assert ms_rows(shards[1], OLD_DB, sites) == {c: 0 for c in before}

    h = make_httpd(clickhouse=shards[1].url,
                   directives="IMChallengeDatabase %s\n"
                   "IMChallengeCreateSchema Off" % OLD_DB)
    after = post_ms(h, sites, 125)
    assert ms_rows(shards[0], OLD_DB, sites) == dict(
        {c: 0 for c in before}, **after)


# ------------------------------------------------- the report's cache


def cluster_schema(db):
    """conf/schema-cluster.sql's statements for database db (its own
    ZooKeeper path too)."""
    text = (REPO / "conf" / "schema-cluster.sql").read_text()
    body = "\n".join(x for x in text.splitlines() if not x.startswith("--"))
    for old, new in (("EXISTS imchallenge ON", "EXISTS %s ON" % db),
                     ("imchallenge.", db + "."),
                     ("/imchallenge/", "/%s/" % db),
                     ("Distributed(imchallenge, imchallenge,",
                      "Distributed(imchallenge, %s," % db)):
        assert old in body, old
        body = body.replace(old, new)
    return [s.strip() for s in body.split(";\n") if s.strip()]


@pytest.fixture
def cdb(cluster, make_httpd):
    """A database of its own on the cluster, its tables made by
    conf/schema-cluster.sql, merges stopped on both shards; a module
    reporting through its Distributed table (one URL: the listing and the
    query come from one server). Yields SimpleNamespace(h, db, shards,
    tables): tables are the shards' events_local (report_cache_util.Table)."""
    shards = cluster["shards"]
    db = "imc_cparts_" + uuid.uuid4().hex[:8]
    for sql in cluster_schema(db):
        shards[0].query(sql)
    tables = [Table(ch, db, "events_local") for ch in shards]
    for t in tables:
        stack.wait_until(lambda: t.ch.scalar(
            "SELECT count() FROM system.tables WHERE database = '%s'" % db)
            == "2", 60, interval=0.2, what="the tables on every shard")
        t.stop_merges()
    h = make_httpd(clickhouse=shards[0].url,
                   directives="IMChallengeCreateSchema Off\n"
                   "IMChallengeDatabase %s" % db)
    yield SimpleNamespace(h=h, db=db, shards=shards, tables=tables)
    shards[0].query("DROP DATABASE IF EXISTS %s ON CLUSTER %s" % (db, CLUSTER))


def procedures(day, site, served, solved, clock="10:00:00"):
    """served procedures of site on day, solved of them solved."""
    at = "%sT%sZ" % (day, clock)
    out = []
    for i in range(served):
        cid = str(uuid.uuid4())
        out.append(report_event(at, "serve", cid, site))
        if i < solved:
            out.append(report_event(at, "solve", cid, site))
    return out


def settle(tables):
    for t in tables:
        t.settle()


def test_report_cache_through_the_distributed_table(cdb):
    """Days of parts on both shards come from the cache while their parts
    stay; rows that arrive on either shard, for a cached day or a new one,
    make the next report ask ClickHouse for those days alone, and it is
    exact."""
    t1, t2 = cdb.tables
    s1, s2 = sites_on_each_shard(cdb.shards[0], 1)
    D = ["2026-05-04", "2026-05-05", "2026-05-06"]
    events = []
    for i, day in enumerate(D):  # one part per day and shard
        events += t1.insert_days([day], lambda d: procedures(d, s1, i + 2, 1))
        events += t2.insert_days([day], lambda d: procedures(d, s2, 3, i))
    settle(cdb.tables)
    # Both shards hold parts of the same names: only the server tells
    # their ids apart.
    assert [p[0] for p in t1.parts()] == [p[0] for p in t2.parts()]
    with Reports(cdb.h) as rep:
        m0 = days_metric(cdb.h)
        first = rep.check(events)
        m1 = days_metric(cdb.h)
        assert delta(m0, m1) == {"cache": 0, "clickhouse": len(D)}
        second = rep.check(events)
        assert second.text == first.text
        m2 = days_metric(cdb.h)
        assert delta(m1, m2) == {"cache": len(D), "clickhouse": 0}

        # Late rows on each shard for cached days, and a new day.
        events += t1.insert_days([D[0]], lambda d: procedures(d, s1, 2, 2))
        events += t2.insert_days([D[1]], lambda d: procedures(d, s2, 1, 1))
        events += t2.insert_days(["2026-05-09"],
                                 lambda d: procedures(d, s2, 4, 3))
        settle(cdb.tables)
        rep.check(events)
        m3 = days_metric(cdb.h)
        assert delta(m2, m3) == {"cache": 1, "clickhouse": 3}
        rep.check(events)
        m4 = days_metric(cdb.h)
        assert delta(m3, m4) == {"cache": 4, "clickhouse": 0}


def test_report_cache_after_a_merge_on_one_shard(cdb):
    """Rows added on one shard for a cached day, then OPTIMIZE ... FINAL
    there, which rewrites the part of every partition of that shard (one
    a day): those days' parts changed, so they are asked again and the
    counts stay exact; the other shard's day comes from the cache."""
    t1, t2 = cdb.tables
    s1, s2 = sites_on_each_shard(cdb.shards[0], 1)
    D = ["2026-06-01", "2026-06-02"]
    later = "2026-07-15"  # another partition, on shard 2 alone
    events = []
    for day in D:
        events += t1.insert_days([day], lambda d: procedures(d, s1, 3, 2))
    events += t2.insert_days([later], lambda d: procedures(d, s2, 2, 1))
    settle(cdb.tables)
    with Reports(cdb.h) as rep:
        rep.check(events)
        m0 = days_metric(cdb.h)
        rep.check(events)
        m1 = days_metric(cdb.h)
        assert delta(m0, m1) == {"cache": 3, "clickhouse": 0}
        events += t1.insert_days([D[1]], lambda d: procedures(d, s1, 2, 2))
        t1.optimize()
        assert len(t1.parts()) == len(D)  # a part a day, all rewritten
        settle(cdb.tables)
        rep.check(events)
        m2 = days_metric(cdb.h)
        assert delta(m1, m2) == {"cache": 1, "clickhouse": 2}


@pytest.mark.parametrize("engine, cached", [
    ("Distributed('imchallenge', '{db}', 'events_local', rand())", True),
    ("Distributed(`imchallenge`, \"{db}\", events_local)", True),
    ("Distributed(imchallenge, '{db}', concat('events', '_local'))", False),
])
def test_distributed_engine_forms(cdb, make_httpd, engine, cached):
    """A Distributed table of another database over the same shards'
    tables: quoted names are read; an argument that is not a plain name
    leaves the cache out, and the counts are exact either way."""
    t1, t2 = cdb.tables
    s1, s2 = sites_on_each_shard(cdb.shards[0], 1)
    events = t1.insert_days(["2026-08-03"], lambda d: procedures(d, s1, 2, 1))
    events += t2.insert_days(["2026-08-04"],
                             lambda d: procedures(d, s2, 3, 1))
    settle(cdb.tables)
    other = cdb.db + "_v"
    ch = cdb.shards[1]
    ch.query("CREATE DATABASE %s" % other)
    try:
        ch.query("CREATE TABLE %s.events AS %s.events ENGINE = %s"
                 % (other, cdb.db, engine.format(db=cdb.db)))
        assert ch.scalar("SELECT engine FROM system.tables WHERE database "
                         "= '%s' AND name = 'events'" % other) == "Distributed"
        h = make_httpd(clickhouse=ch.url,
                       directives="IMChallengeCreateSchema Off\n"
                       "IMChallengeDatabase %s" % other)
        with Reports(h) as rep:
            rep.check(events)
            m0 = days_metric(h)
            rep.check(events)
            m1 = days_metric(h)
        assert delta(m0, m1) == ({"cache": 2, "clickhouse": 0} if cached
                                 else {"cache": 0, "clickhouse": 0})
    finally:
        for c in cdb.shards:
            c.query("DROP DATABASE IF EXISTS %s" % other)


def test_report_cache_off_when_a_shard_partitions_otherwise(cdb, make_httpd):
    """Shards' tables partitioned by received_at: their parts' times are
    not the events' days, so nothing is cached; the counts are exact."""
    other = cdb.db + "_r"
    shards = cdb.shards
    shards[0].query("CREATE DATABASE %s ON CLUSTER %s" % (other, CLUSTER))
    try:
        shards[0].query(
            "CREATE TABLE %s.events_local ON CLUSTER %s AS %s.events_local "
            "ENGINE = MergeTree PARTITION BY toYYYYMM(received_at) "
            "ORDER BY (site_id, time)" % (other, CLUSTER, cdb.db))
        shards[0].query(
            "CREATE TABLE %s.events AS %s.events_local ENGINE = "
            "Distributed(%s, %s, events_local)"
            % (other, other, CLUSTER, other))
        t1, t2 = (Table(c, other, "events_local") for c in shards)
        s1, s2 = sites_on_each_shard(shards[0], 1)
        events = t1.insert_days(["2026-09-01"],
                                lambda d: procedures(d, s1, 2, 1))
        events += t2.insert_days(["2026-09-02"],
                                 lambda d: procedures(d, s2, 1, 1))
        settle([t1, t2])
        h = make_httpd(clickhouse=shards[0].url,
                       directives="IMChallengeCreateSchema Off\n"
                       "IMChallengeDatabase %s" % other)
        with Reports(h) as rep:
            m0 = days_metric(h)
            rep.check(events)
            rep.check(events)
            assert delta(m0, days_metric(h)) == {"cache": 0, "clickhouse": 0}
    finally:
        shards[0].query("DROP DATABASE IF EXISTS %s ON CLUSTER %s"
                        % (other, CLUSTER))


def test_report_cache_with_a_lagging_replica(cluster, make_httpd):
    """One shard of two replicas, which the report's query reads at random
    (the user imc_rr): while one replica lags, each report is that of one
    replica or the other; once it caught up, every report is exact, from
    the cache too. The listing covers both replicas: one of a replica
    that was up to date would keep the lagging one's rows under a
    fingerprint that its catching up does not change."""
    shards = cluster["shards"]
    db = "imc_replicas_" + uuid.uuid4().hex[:8]
    for i, ch in enumerate(shards):
        ch.query("CREATE DATABASE %s" % db)
        ch.query(
            "CREATE TABLE %s.events_local (time DateTime('UTC'), time_ms "
            "UInt16 DEFAULT 0, type Enum8('serve' = 1, 'solve' = 2), "
            "correlation_id UUID, site_id UUID, received_at "
            "DateTime('UTC'), raw String) ENGINE = ReplicatedMergeTree("
            "'/clickhouse/tables/replicas/%s/events_local', 'r%d') "
            "PARTITION BY toYYYYMM(time) ORDER BY (site_id, time)"
            % (db, db, i))
    try:
        shards[0].query(
            "CREATE TABLE %s.events AS %s.events_local ENGINE = "
            "Distributed(%s, %s, events_local)" % (db, db, REPLICAS, db))
        a, b = (Table(ch, db, "events_local") for ch in shards)
        for t in (a, b):
            t.stop_merges()
        site = str(uuid.uuid4())
        D = ["2026-10-05", "2026-10-06"]
        events = a.insert_days(D, lambda d: procedures(d, site, 3, 1))
        b.ch.query("SYSTEM SYNC REPLICA %s" % b.name)
        settle([a, b])
        h = make_httpd(clickhouse=shards[0].url,
                       directives="IMChallengeCreateSchema Off\n"
                       "IMChallengeDatabase %s\n"
                       "IMChallengeClickHouseUser imc_rr" % db)
        with Reports(h) as rep:
            for _ in range(3):
                rep.check(events)
            b.ch.query("SYSTEM STOP FETCHES %s" % b.name)
            old = list(events)
            events += a.insert_days([D[0]], lambda d: procedures(d, site, 2,
                                                                 2))
            settle([a])
            either = (expected_answer(model(old)),
                      expected_answer(model(events)))
            for _ in range(10):
                r = rep.client.report()
                assert r.status_code == 200, r.text
                assert r.json() in either
            b.ch.query("SYSTEM START FETCHES %s" % b.name)

            def caught_up():  # reports meanwhile keep the connection
                r = rep.client.report()
                assert r.status_code == 200, r.text
                assert r.json() in either
                return [p[:2] for p in b.parts()] == [p[:2]
                                                      for p in a.parts()]

            stack.wait_until(caught_up, 60, interval=0.5,
                             what="the lagging replica")
            settle([b])
            m0 = days_metric(h)
            for _ in range(10):
                rep.check(events)
            # All but the first report's two days from the cache: a
            # listing of one replica, each time either, would change the
            # fingerprints from one report to the next.
            assert delta(m0, days_metric(h))["cache"] >= 18
    finally:
        for ch in shards:
            ch.query("DROP DATABASE IF EXISTS %s" % db)


def listings(proxy, since):
    """The parts listings among the requests proxy passed on from index
    since: those that read system.parts or system.tables."""
    with proxy.lock:
        reqs = proxy.requests[since:]
    return [r for r in reqs
            if "system.parts" in r.sql or "system.tables" in r.sql]


def test_report_cache_lists_the_shards_in_one_request(cdb, make_httpd):
    """Through a Distributed events, the first report of a process lists
    the local parts with the engine of events, then the shards' parts;
    from then on each report lists the shards' parts alone, checking the
    engine of events in the same request: one request a report, the
    query of its rows aside (none when every day is cached)."""
    t1, t2 = cdb.tables
    s1, s2 = sites_on_each_shard(cdb.shards[0], 1)
    D = ["2026-03-02", "2026-03-03"]
    events = t1.insert_days(D, lambda d: procedures(d, s1, 3, 1))
    events += t2.insert_days(D, lambda d: procedures(d, s2, 2, 2))
    settle(cdb.tables)
    with HttpProxy(cdb.shards[0]) as proxy:
        h = make_httpd(clickhouse=proxy.url,
                       directives="IMChallengeCreateSchema Off\n"
                       "IMChallengeDatabase %s" % cdb.db)
        with Reports(h) as rep:
            seen = len(proxy.requests)
            rep.check(events)
            first = listings(proxy, seen)
            assert len(first) == 2, [r.sql for r in first]
            for _ in range(3):
                m0 = days_metric(h)
                seen = len(proxy.requests)
                rep.check(events)
                with proxy.lock:
                    asked = proxy.requests[seen:]
                assert len(asked) == 1, [r.sql for r in asked]
                assert "clusterAllReplicas(" in asked[0].sql or \
                    "cluster(" in asked[0].sql, asked[0].sql
                assert delta(m0, days_metric(h)) == {"cache": len(D),
                                                     "clickhouse": 0}


def test_report_cache_after_events_is_made_again(cdb):
    """events dropped and made again between two reports of one process,
    over another table of the shards, then as a plain MergeTree: the
    engine the process remembered no longer lists the parts that the
    report reads, so each next answer is exact, the days asked again."""
    db, (c1, c2) = cdb.db, cdb.shards
    t1, t2 = cdb.tables
    s1, s2 = sites_on_each_shard(c1, 1)
    D = ["2026-04-06", "2026-04-07"]
    events = t1.insert_days(D, lambda d: procedures(d, s1, 3, 1))
    events += t2.insert_days(D, lambda d: procedures(d, s2, 2, 2))
    settle(cdb.tables)
    for c in (c1, c2):
        c.query("CREATE TABLE %s.events_other AS %s.events_local ENGINE = "
                "MergeTree PARTITION BY toDate(time) ORDER BY (site_id, time)"
                % (db, db))
    others = [Table(c, db, "events_other") for c in (c1, c2)]
    # The same days, other counts, on both shards.
    moved = others[0].insert_days(D, lambda d: procedures(d, s1, 4, 4))
    moved += others[1].insert_days(D, lambda d: procedures(d, s2, 1, 0))
    settle(others)
    with Reports(cdb.h) as rep:
        def check(rows, cached):
            """rows exact, every day from the cache or every day not."""
            m = days_metric(cdb.h)
            rep.check(rows)
            assert delta(m, days_metric(cdb.h)) == {
                "cache": len(D) if cached else 0,
                "clickhouse": 0 if cached else len(D)}

        rep.check(events)
        check(events, True)
        c1.query("DROP TABLE %s.events" % db)
        c1.query("CREATE TABLE %s.events AS %s.events_local ENGINE = "
                 "Distributed(%s, %s, events_other)" % (db, db, CLUSTER, db))
        check(moved, False)
        check(moved, True)

        # A plain table of its own rows: no shard's parts count.
        c1.query("DROP TABLE %s.events" % db)
        c1.query("CREATE TABLE %s.events AS %s.events_local ENGINE = "
                 "MergeTree PARTITION BY toDate(time) ORDER BY (site_id, time)"
                 % (db, db))
        plain = Table(c1, db, "events")
        here = plain.insert_days(D, lambda d: procedures(d, s2, 5, 3))
        settle([plain])
        check(here, False)
        rep.check(here)

        # Distributed again, over the first table.
        c1.query("DROP TABLE %s.events" % db)
        c1.query("CREATE TABLE %s.events AS %s.events_local ENGINE = "
                 "Distributed(%s, %s, events_local)" % (db, db, CLUSTER, db))
        rep.check(events)
        rep.check(events)
