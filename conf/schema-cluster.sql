-- mod_imchallenge: the ClickHouse schema for a cluster (sharded, replicated).
--
-- For users who outgrow one ClickHouse server (see README.md, "ClickHouse
-- cluster"). The same tables as conf/schema.sql, split in two layers:
--   *_local   ReplicatedMergeTree tables holding each shard's rows, copied
--             between the shard's replicas through ZooKeeper (or ClickHouse
--             Keeper);
--   events    a Distributed table over them, under the name the module
--             uses: it writes to and reports from <db>.events unchanged.
-- Every server needs in its configuration: the cluster "imchallenge" in
-- <remote_servers> (shards with <internal_replication>true</...>), the
-- macros {shard} and {replica}, and <zookeeper> (or Keeper). Writes through
-- a Distributed table are synchronous with the setting
-- insert_distributed_sync = 1 (distributed_foreground_insert in newer
-- releases) in the module user's profile, so that 201 from ?wait=1 means
-- the rows are on their shard.
--
-- Run once, on any one server; ON CLUSTER runs each statement on all:
--   clickhouse-client --multiquery < conf/schema-cluster.sql
-- and configure the module with "IMChallengeCreateSchema Off". Runs on
-- ClickHouse 18.16 (with ZooKeeper) and on current releases (with Keeper).
-- Every statement is idempotent. Statements end with ';' at the end of a
-- line; lines starting with '--' are comments. Another database name:
-- replace "imchallenge." and "imchallenge," below (the cluster name is the
-- word after ON CLUSTER and the first argument of Distributed).

CREATE DATABASE IF NOT EXISTS imchallenge ON CLUSTER imchallenge;

-- One shard's events, on each of its replicas. time_ms: the milliseconds
-- within time's second (0-999, truncated), 0 for rows stored before it.
CREATE TABLE IF NOT EXISTS imchallenge.events_local ON CLUSTER imchallenge
(
    time           DateTime('UTC'),
    time_ms        UInt16 DEFAULT 0,
    type           Enum8('serve' = 1, 'solve' = 2),
    correlation_id UUID,
    site_id        UUID,
    received_at    DateTime('UTC'),
    raw            String
)
ENGINE = ReplicatedMergeTree(
    '/clickhouse/tables/{shard}/imchallenge/events_local', '{replica}')
PARTITION BY toDate(time) -- a day a partition: see conf/schema.sql
ORDER BY (site_id, time);

-- What the module writes to and reads from. Rows go to a shard by their
-- site: a site's procedures stay together, and the shards' partial
-- uniqExact states merge into exact distinct counts whatever the sharding.
CREATE TABLE IF NOT EXISTS imchallenge.events ON CLUSTER imchallenge
(
    time           DateTime('UTC'),
    time_ms        UInt16 DEFAULT 0,
    type           Enum8('serve' = 1, 'solve' = 2),
    correlation_id UUID,
    site_id        UUID,
    received_at    DateTime('UTC'),
    raw            String
)
ENGINE = Distributed(imchallenge, imchallenge, events_local,
                     cityHash64(toString(site_id)));

-- Upgrading tables made before time_ms (without them), once, in this
-- order: the shards' tables first, so that no Distributed table sends a
-- column they lack,
--   ALTER TABLE imchallenge.events_local ON CLUSTER imchallenge ADD COLUMN time_ms UInt16 DEFAULT 0 AFTER time;
-- then the Distributed table on every server, one by one (each server has
-- its own; 18.16 refuses ALTER ... ON CLUSTER of a table that is not
-- replicated when the cluster's shards are):
--   ALTER TABLE imchallenge.events ADD COLUMN time_ms UInt16 DEFAULT 0 AFTER time;
-- In place: a change of metadata, no part is rewritten, every row is kept
-- and reads 0. Until then the module's rows go in without time_ms (it
-- leaves out what the table does not have).
