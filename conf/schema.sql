-- mod_imchallenge: the ClickHouse schema.
--
-- Runs as it is on ClickHouse 18.16 and on current releases:
--   clickhouse-client --multiquery < conf/schema.sql
-- The module applies the same statements at start-up (IMChallengeCreateSchema
-- On), with the database of IMChallengeDatabase in place of "imchallenge".
-- Every statement is idempotent. Statements end with ';' at the end of a
-- line; lines starting with '--' are comments.

CREATE DATABASE IF NOT EXISTS imchallenge;

-- One row per accepted event, as the module delivers it: typed columns
-- (times in UTC) and the original event text. time holds the event's whole
-- second; time_ms the milliseconds within it (0-999, the fraction
-- truncated, not rounded: time + time_ms / 1000 is never in another second
-- than time). Rows stored before time_ms existed read 0. Delivery is at least once, so
-- a redelivered batch may appear twice here; the report counts distinct
-- correlation ids and never counts it twice.
--
-- The report reads this table directly: sorted by site and time, one site's
-- report reads only that site's rows, and exact distinct counts over the
-- raw rows cost less than merging pre-aggregated uniqExact states (measured
-- on 18.16, see README "Performance"). The module keeps per-day report rows
-- while the parts holding a day's events stay the same; it can tell the
-- days of a part because the table is partitioned by time alone (with
-- another partition key every report runs the whole query). One partition
-- a day (UTC): ClickHouse merges parts only within a partition, so a merge
-- never changes what the report keeps of the other days, and the query for
-- one day (today's, under steady ingestion) reads that day's parts only.
-- Tables made with PARTITION BY toYYYYMM(time) keep working as they are.
CREATE TABLE IF NOT EXISTS imchallenge.events
(
    time           DateTime('UTC'),
    time_ms        UInt16 DEFAULT 0,
    type           Enum8('serve' = 1, 'solve' = 2),
    correlation_id UUID,
    site_id        UUID,
    received_at    DateTime('UTC'),
    raw            String
)
ENGINE = MergeTree
PARTITION BY toDate(time)
ORDER BY (site_id, time);

-- Upgrading a table made before time_ms (without it): the module does
-- this at start-up with IMChallengeCreateSchema On, in place (a change of
-- metadata: no part is rewritten, every row is kept and reads 0). With
-- IMChallengeCreateSchema Off, run it once by hand (18.16 has no
-- ADD COLUMN IF NOT EXISTS: run again, it fails with "already exists"):
--   ALTER TABLE imchallenge.events ADD COLUMN time_ms UInt16 DEFAULT 0 AFTER time;
