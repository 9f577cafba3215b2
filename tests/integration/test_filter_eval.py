# Licensed under the Apache License, Version 2.0.
"""imc_filter_match answers what ClickHouse 18.16 answers for the SQL of
imc_filter_compile: random filters of the whole grammar over a table of
events in the real ClickHouse, the rows it returns for WHERE <SQL>
compared with the rows the C evaluator passes (build/filter_eval, made
here with make so that it is never older than imc_filter.c).

The events sit in conf/schema.sql's table, and in a copy of it with one
row per index granule, so that ClickHouse's primary-key analysis on
(site_id, time) decides what it reads. Sites come from a small pool of
UUIDs on which ClickHouse's order (bytes 8..15 first, then bytes 0..7,
unsigned) and the order of their text part ways; the literals of the
filters come from that pool, its neighbours and random ones, in any case
(and a few filters are spoilt: refused, compile and parse must agree).
Days lie
around a few dates, in a zone ahead of UTC by 5:45, so that an event's day
is not its UTC date; the evaluator is told each event's day as ClickHouse
computes it.
"""

import datetime
import random
import subprocess
import uuid
from pathlib import Path

import pytest

from report_cache_util import events_ddl

REPO = Path(__file__).resolve().parents[2]
EVAL = REPO / "build" / "filter_eval"
ZONE = "Asia/Kathmandu"
DAY_SQL = "toDate(time, '%s')" % ZONE
FILTERS = 320       # generated; most are accepted
MIN_ACCEPTED = 200  # compared with ClickHouse
ROWS = 400
BATCH = 40          # filters per SELECT (UNION ALL)

# Sites: both halves extreme, halves shared, high bits of each half.
SITES = [
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "ffffffff-ffff-ffff-0000-000000000000",
    "00000000-0000-0000-0000-000000000001",
    "00000000-0000-0000-8000-000000000000",
    "00000000-0000-0000-7fff-ffffffffffff",
    "80000000-0000-0000-0000-000000000000",
    "7fffffff-ffff-ffff-0000-000000000000",
    "0faf8b64-a33d-4db8-aaee-aa165d13cff6",
    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "7c9e6679-7425-40de-aaee-aa165d13cff6",
    "0faf8b64-a33d-4db8-944b-e07fc1f90ae7",
]
DATES = [datetime.date(2020, 2, 28), datetime.date(2024, 12, 31),
         datetime.date(2026, 11, 1)]
OPS = ["=", "!=", "<>", "<", "<=", ">", ">="]
DAY_NAMES = ["day", "time", "date"]


def _mixed_case(rnd, s):
    return "".join(c.upper() if rnd.random() < 0.3 else c for c in s)


def _neighbour(rnd, site):
    """A UUID next to site: one half kept, the other nudged or random."""
    h = bytearray(uuid.UUID(site).bytes)
    if rnd.random() < 0.5:
        i = rnd.randrange(16)
        h[i] = (h[i] + rnd.choice((1, 255, 128))) % 256
    else:
        half = rnd.choice((0, 8))
        h[half:half + 8] = rnd.randbytes(8)
    return str(uuid.UUID(bytes=bytes(h)))


class Gen:
    """Random filters of the grammar (imc_filter.h)."""

    def __init__(self, rnd, sites):
        self.rnd = rnd
        self.sites = sites

    def ws(self):
        return self.rnd.choice(["", " ", " ", "  ", "\t", "\n", " \r\n"])

    def kw(self, word):
        return _mixed_case(self.rnd, word) if self.rnd.random() < 0.3 \
            else word

    def literal(self, col):
        r = self.rnd
        if col == "site_id":
            x = r.random()
            site = (r.choice(self.sites) if x < 0.6 else
                    _neighbour(r, r.choice(self.sites)) if x < 0.9 else
                    str(uuid.UUID(bytes=r.randbytes(16))))
            return _mixed_case(r, site) if r.random() < 0.2 else site
        if col == "type":
            return r.choice(["serve", "solve"])
        if r.random() < 0.05:
            return r.choice(["1970-01-01", "2105-12-31"])
        d = r.choice(DATES) + datetime.timedelta(days=r.randint(-4, 4))
        return d.isoformat()

    def cond(self):
        r = self.rnd
        col = r.choice(["site_id", "type", "day"])
        name = r.choice(DAY_NAMES) if col == "day" else col
        name = self.kw(name)
        if r.random() < 0.3:
            n = r.choice([1, 1, 2, 3, 5, 8, 20]) if col != "type" \
                else r.randint(1, 3)
            lits = ",".join("%s'%s'%s" % (self.ws(), self.literal(col),
                                          self.ws()) for _ in range(n))
            return "%s %s%s(%s)" % (name, self.kw("IN"), self.ws(), lits)
        return "%s%s%s%s'%s'" % (name, self.ws(), r.choice(OPS), self.ws(),
                                 self.literal(col))

    def expr(self, depth):
        """or := and (OR and)*, with NOT and parentheses below."""
        r = self.rnd
        if depth <= 0 or r.random() < 0.3:
            return self.unary(depth)
        parts = [self.unary(depth - 1) for _ in range(r.randint(1, 4))]
        out = parts[0]
        for p in parts[1:]:
            out += " %s%s " % (self.kw(r.choice(["AND", "OR"])), self.ws()) \
                + p
        return out

    def unary(self, depth):
        r = self.rnd
        x = r.random()
        if depth > 0 and x < 0.2:
            return "%s %s" % (self.kw("NOT"), self.unary(depth - 1))
        if depth > 0 and x < 0.45:
            return "(%s%s%s)" % (self.ws(), self.expr(depth - 1), self.ws())
        return self.cond()

    def filter(self):
        r = self.rnd
        f = self.ws() + self.expr(r.randint(0, 4)) + self.ws()
        if r.random() < 0.06:  # spoilt: evaluator and compile must agree
            i = r.randrange(len(f) + 1)
            f = f[:i] + r.choice(["'", "(", ")", "x", "AND", "\0", ""]) \
                + f[i + r.randint(0, 2):]
        return f


@pytest.fixture(scope="module")
def filter_eval():
    """build/filter_eval, brought up to date."""
    subprocess.run(["make", "--no-print-directory", "-s",
                    "build/filter_eval"], cwd=str(REPO), check=True)
    assert EVAL.is_file()
    return EVAL


@pytest.fixture(scope="module")
def events(clickhouse):
    """(database, rows): ROWS events in its tables `events` (the schema's)
    and `fine` (one row per granule); rows are (correlation id, site,
    type, day number in ZONE as ClickHouse computes it)."""
    rnd = random.Random(20261101)
    db = "filter_eval_%s" % uuid.uuid4().hex[:8]
    clickhouse.query("CREATE DATABASE %s" % db)
    clickhouse.query(events_ddl(db))
    clickhouse.query("CREATE TABLE %s.fine AS %s.events ENGINE = MergeTree "
                     "PARTITION BY toYYYYMM(time) ORDER BY (site_id, time) "
                     "SETTINGS index_granularity = 1" % (db, db))
    values = []
    for _ in range(ROWS):
        day = rnd.choice(DATES) + datetime.timedelta(days=rnd.randint(-3, 3))
        t = datetime.datetime(day.year, day.month, day.day) + \
            datetime.timedelta(seconds=rnd.randrange(86400))
        values.append("('%s', '%s', '%s', '%s', '%s', '')" % (
            t.strftime("%Y-%m-%d %H:%M:%S"), rnd.choice(["serve", "solve"]),
            uuid.UUID(bytes=rnd.randbytes(16)), rnd.choice(SITES),
            t.strftime("%Y-%m-%d %H:%M:%S")))
    for table in ("events", "fine"):
        clickhouse.query("INSERT INTO %s.%s (time, type, correlation_id, "
                         "site_id, received_at, raw) VALUES %s"
                         % (db, table, ", ".join(values)))
    text = clickhouse.query(
        "SELECT toString(correlation_id), toString(site_id), "
        "toString(type), toUInt16(%s) FROM %s.events "
        "ORDER BY correlation_id FORMAT TabSeparated" % (DAY_SQL, db))
    rows = [tuple(line.split("\t")) for line in text.splitlines()]
    assert len(rows) == ROWS
    # the zone moves some events to the next day: days are ClickHouse's
    utc_days = clickhouse.query(
        "SELECT countIf(toDate(time, 'UTC') != %s) FROM %s.events"
        % (DAY_SQL, db)).strip()
    assert int(utc_days) > 0
    yield db, rows
    clickhouse.query("DROP DATABASE %s" % db)


def _evaluate(filter_eval, rows, filters, tmp_path):
    """[(sql, set of correlation ids) or None for a refused filter]."""
    rows_file = tmp_path / "rows"
    rows_file.write_text("".join("%s\t%s\t%s\n" % (site, typ, day)
                                 for _, site, typ, day in rows))
    proc = subprocess.run(
        [str(filter_eval), DAY_SQL, str(rows_file)],
        input="".join(f.encode().hex() + "\n" for f in filters),
        capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = []
    for line in proc.stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "error":  # a spoilt filter
            out.append(None)
            continue
        assert fields[0] == "ok" and len(fields) == 3, line
        out.append((fields[1], {rows[int(i)][0]
                                for i in fields[2].split()}))
    assert len(out) == len(filters)
    return out


def _clickhouse_rows(clickhouse, db, table, sqls):
    """For each SQL condition, the correlation ids of the rows of
    db.table that ClickHouse returns for WHERE <condition>."""
    got = {}
    for start in range(0, len(sqls), BATCH):
        parts = ["SELECT toUInt32(%d) AS i, "
                 "groupArray(toString(correlation_id)) "
                 "FROM %s.%s WHERE %s" % (start + k, db, table, sql)
                 for k, sql in enumerate(sqls[start:start + BATCH])]
        text = clickhouse.query(" UNION ALL ".join(parts)
                                + " FORMAT TabSeparated")
        for line in text.splitlines():
            i, ids = line.split("\t")
            got[int(i)] = {x.strip("'") for x in ids.strip("[]").split(",")
                           if x}
    assert sorted(got) == list(range(len(sqls)))
    return [got[i] for i in range(len(sqls))]


def test_match_is_what_clickhouse_answers(clickhouse, events, filter_eval,
                                          tmp_path):
    db, rows = events
    rnd = random.Random(1811)
    gen = Gen(rnd, SITES)
    filters = ["", "type = 'serve'", "site_id < '%s'" % SITES[3]]
    filters += [gen.filter() for _ in range(FILTERS - len(filters))]
    answers = _evaluate(filter_eval, rows, filters, tmp_path)
    accepted = [(f, a) for f, a in zip(filters, answers) if a is not None]
    assert len(accepted) >= MIN_ACCEPTED
    sqls = [a[0] for _, a in accepted]
    # every operator, column and form of the grammar was drawn
    for needle in (" = ", " != ", " < ", " <= ", " > ", " >= ", " IN (",
                   "NOT ", " AND ", " OR ", "site_id ", "type ", DAY_SQL):
        assert sum(needle in s for s in sqls) >= 5, needle
    everything = {r[0] for r in rows}
    for table in ("events", "fine"):
        ch = _clickhouse_rows(clickhouse, db, table, sqls)
        mismatches = []
        for (f, (sql, want)), got in zip(accepted, ch):
            if got != want:
                mismatches.append("%r\n  %s\n  ClickHouse only: %d rows, "
                                  "evaluator only: %d rows"
                                  % (f, sql, len(got - want), len(want - got)))
        assert not mismatches, "%s: %d of %d filters differ:\n%s" % (
            table, len(mismatches), len(sqls), "\n".join(mismatches[:5]))
    # the filters tell rows apart: neither all nor none pass most of them
    split = sum(0 < len(want) < len(everything) for _, (_, want) in accepted)
    assert split >= len(accepted) // 2
    # the pool's order cases were compared: a site_id ordering that the
    # text order would answer otherwise
    text_differs = 0
    for f, (sql, want) in accepted:
        if sql.startswith("(site_id < toUUID('") and sql.count("(") == 2:
            lit = sql[len("(site_id < toUUID('"):-3]
            by_text = {r[0] for r in rows if r[1] < lit}
            text_differs += by_text != want
    assert text_differs >= 1
