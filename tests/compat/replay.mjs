// Licensed under the Apache License, Version 2.0.
//
// Replays the statements mod_imchallenge sent to ClickHouse 18.16
// (tests/compat/workload.py's capture) on the ClickHouse engine of chDB,
// a current release, over the same rows, and compares the answers.
//
//   node replay.mjs CAPTURE.json     the capture, then the self-test
//   node replay.mjs --self-test      the self-test only
//
// Each exchange of the capture is one of:
//   - not a statement (GET /ping and other paths without SQL): counted and
//     named, nothing to replay;
//   - a statement: the URL's `query` parameter, a newline and the body (as
//     ClickHouse's HTTP interface joins them), or the body alone. It runs
//     in a session of its own (settings do not leak from one statement to
//     the next) after the URL's settings are SET in it. Parameters that the
//     HTTP interface takes for itself (HTTP_ONLY below, as in ClickHouse's
//     HTTPHandler) are not settings and are only counted; `database` is a
//     USE, `default_format` the answer's format, `param_x` a query
//     parameter; a GET runs with readonly=2 as the HTTP interface does. A
//     setting that the current release does not know, or refuses, fails
//     the statement, as it would fail on a server.
// Statements run in the order they were sent; schema statements and
// INSERTs change the session's data as they changed the server's, so that
// every SELECT reads the same rows on both engines.
//
// Answers are compared as TabSeparated text: the same lines (in the same
// order where the statement has an ORDER BY). An exception in a 200 answer
// counts as a refusal. Two refusals match. Any other difference fails,
// unless one of EXPLAINED names why the two engines may differ for that
// statement and its own weaker check holds; a statement that the current
// release refuses is never explained.
//
// The harness's own checks (the events table's full contents at the end)
// compare what the INSERTs stored, since an INSERT answers nothing.
//
// Exchanges marked "posed" were answered by the workload's relay posing as
// 26.7 (the release probes, the dedup window's ALTER, zone lookups) during
// its second run, in which the module sends what it sends only to current
// releases: they are compared with 26.7's own answers like the others, and
// that run must have sent each of CURRENT_ONLY, or the suite fails.
//
// The self-test replays statements that current releases must refuse, and
// an answer that cannot match: each must be flagged, else the harness
// itself has failed.
//
// Ends with `compat: N passed, M failed`; exits 1 when M > 0.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Session } from "chdb";

// ClickHouse's HTTPHandler: parameters that are not settings.
const HTTP_ONLY = new Set([
  "query", "compress", "decompress", "user", "password", "quota_key",
  "query_id", "stacktrace", "role", "buffer_size", "wait_end_of_query",
  "session_id", "session_timeout", "session_check",
  "client_protocol_version", "close_session",
]);

// What the module sends only to releases newer than 18.16: each must
// have been replayed (applied on 26.7) when the capture has posed
// exchanges.
const CURRENT_ONLY = [
  ["setting insert_deduplication_token", (rp) => rp.settingsApplied.get("insert_deduplication_token")],
  ["setting async_insert", (rp) => rp.settingsApplied.get("async_insert")],
  ["setting cancel_http_readonly_queries_on_client_close",
   (rp) => rp.settingsApplied.get("cancel_http_readonly_queries_on_client_close")],
  ["the dedup window's ALTER ... MODIFY SETTING", (rp) => rp.modifySetting],
  ["a system.time_zones lookup", (rp) => rp.timeZones],
];

// Why two engines may answer one statement differently, and what is
// compared instead. A rule applies only when the plain comparison failed.
const EXPLAINED = [
  {
    name: "feature probe",
    why: "system.settings / merge_tree_settings list each release's own " +
      "settings, and system.tables its own system tables (time_zones is " +
      "new): the module asks so that it can choose per release",
    applies: (sql) =>
      /\bFROM\s+system\.(settings|merge_tree_settings|build_options)\b/i.test(sql) ||
      /\bFROM\s+system\.tables\s+WHERE\s+database\s*=\s*'system'/i.test(sql),
    check: (a, b) => sameShape(a, b),
  },
  {
    name: "parts listing",
    why: "part names, modification times and merges are each server's own " +
      "(the fingerprint cityHash64(name, rows, modification_time) and the " +
      "number of parts differ); the days the parts cover and the partition " +
      "key must not",
    applies: (sql) => /\bFROM\s+system\.parts\b/i.test(sql),
    check: partsAgree,
  },
  {
    name: "clock",
    why: "the answer depends on now() / today(), read at another time",
    applies: (sql) => /\b(now|today|yesterday|now64)\s*\(/i.test(sql),
    check: (a, b) => sameShape(a, b),
  },
  {
    name: "server identity",
    why: "version(), uptime(), hostName() or query ids are the server's own",
    applies: (sql) =>
      /\b(version|uptime|hostName|queryID|initialQueryID)\s*\(/i.test(sql),
    check: (a, b) => sameShape(a, b),
  },
];

function lines(text) {
  const out = text.split("\n");
  if (out.length && out[out.length - 1] === "") out.pop();
  return out;
}

function sameShape(a, b) {
  const la = lines(a), lb = lines(b);
  const cols = (l) => new Set(l.map((x) => x.split("\t").length));
  const ca = [...cols(la)], cb = [...cols(lb)];
  if (la.length && lb.length && (ca.length !== 1 || cb.length !== 1 ||
                                 ca[0] !== cb[0])) {
    return "the answers have different columns";
  }
  return null;
}

// The report's parts listing: rows tagged 'part' (first day, last day,
// fingerprint, recent, rows), 'key' (0, 0, 0, 0, the partition key) and
// 'engine' (events' engine when Distributed). Same events on both sides,
// so the same days overall, the same rows in all, the same key and
// engine; the fingerprint, "recent" (written in the current second) and
// how the rows are cut into parts are each server's own.
function partsAgree(a, b) {
  const parse = (t) => lines(t).map((l) => l.split("\t"));
  const pa = parse(a), pb = parse(b);
  if (!pa.length !== !pb.length) return "one engine lists no parts";
  if (!pa.length) return null;
  const shape = sameShape(a, b);
  if (shape) return shape;
  const summary = (rows) => {
    const tagged = (tag) => rows.filter((r) => r[0] === tag);
    const parts = tagged("part");
    const num = (i) => parts.map((r) => Number(r[i]));
    return JSON.stringify({
      first: parts.length ? Math.min(...num(1)) : null,
      last: parts.length ? Math.max(...num(2)) : null,
      rows: num(5).reduce((x, y) => x + y, 0),
      keys: [...new Set(tagged("key").map((r) => r[5]))].sort(),
      engines: tagged("engine").map((r) => r[5]).sort(),
    });
  };
  const sa = summary(pa), sb = summary(pb);
  return sa === sb ? null : `parts cover different days: ${sa} vs ${sb}`;
}

function hasOrderBy(sql) {
  return /\bORDER\s+BY\b/i.test(sql);
}

// An error answer, or an exception that ClickHouse wrote into a 200 after
// it had begun the answer ("Code: N. DB::Exception: ..." on a line of its
// own; 25.x and later also end the stream with __exception__).
function refused(status, answer) {
  return status !== 200 ||
    /(^|\n)Code: \d+[.,] (DB::Exception|e\.displayText\(\))|__exception__/.test(answer);
}

function codeOf(text) {
  const m = /Code: (\d+)/.exec(text);
  return m ? Number(m[1]) : null;
}

function quote(v) {
  return "'" + String(v).replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'";
}

class Replayer {
  constructor(dir, timezone) {
    this.dir = dir;
    this.timezone = timezone;
    this.counts = { replayed: 0, matched: 0, explained: 0, failed: 0,
                    notStatements: 0 };
    this.reasons = new Map();
    this.httpOnly = new Map();
    this.settingsApplied = new Map();
    this.failures = [];
    this.keeper = new Session(dir); // keeps the data directory open
  }

  // Runs sql with the exchange's URL parameters in a fresh session.
  run(sql, params, method) {
    const s = new Session(this.dir);
    let format = "TabSeparated";
    try {
      const pre = [];
      if (this.timezone) pre.push(`SET session_timezone = ${quote(this.timezone)}`);
      let readonly = method === "GET" ? "2" : null;
      for (const [k, v] of params) {
        if (HTTP_ONLY.has(k)) {
          this.httpOnly.set(k, (this.httpOnly.get(k) || 0) + 1);
        } else if (k === "database") {
          pre.push(`USE ${v.replace(/[^\w]/g, "")}`);
        } else if (k === "default_format") {
          format = v;
        } else if (k === "readonly") {
          readonly = v;
        } else if (k.length) {
          this.settingsApplied.set(k, (this.settingsApplied.get(k) || 0) + 1);
          pre.push(`SET ${k.replace(/[^\w]/g, "")} = ${quote(v)}`);
        }
      }
      if (readonly !== null) {
        this.settingsApplied.set("readonly", (this.settingsApplied.get("readonly") || 0) + 1);
        pre.push(`SET readonly = ${quote(readonly)}`);
      }
      for (const p of pre) s.query(p, "TabSeparated");
      return { ok: true, answer: s.query(sql, format) };
    } catch (e) {
      return { ok: false, answer: String(e.message || e) };
    } finally {
      s.close();
    }
  }

  // Replays one recorded statement; returns "matched", "explained" or
  // "failed".
  statement(label, sql, params, method, status, answer) {
    this.counts.replayed++;
    const got = this.run(sql, params, method);
    const was = refused(status, answer);
    let verdict, detail = "";
    if (was && !got.ok) {
      verdict = "matched";
    } else if (!got.ok) {
      verdict = "failed";
      detail = `18.16 ran it, the current release refuses it: ${got.answer.slice(0, 400)}`;
    } else if (was) {
      verdict = "failed";
      detail = `18.16 refused it (${answer.slice(0, 200).trim()}), the current release runs it`;
    } else {
      let a = lines(answer), b = lines(got.answer);
      if (!hasOrderBy(sql)) { a = [...a].sort(); b = [...b].sort(); }
      if (a.join("\n") === b.join("\n")) {
        verdict = "matched";
      } else {
        const rule = EXPLAINED.find((r) => r.applies(sql));
        const why = rule ? rule.check(answer, got.answer) : "no explanation";
        if (rule && why === null) {
          verdict = "explained";
          this.reasons.set(rule.name, (this.reasons.get(rule.name) || 0) + 1);
        } else {
          verdict = "failed";
          let i = 0;
          while (i < a.length && i < b.length && a[i] === b[i]) i++;
          detail = `answers differ (${rule ? rule.name + ": " : ""}${why}); ` +
            `${a.length} vs ${b.length} lines, first difference at line ${i + 1}\n` +
            `  18.16:   ${JSON.stringify((a[i] ?? "(none)").slice(0, 400))}\n` +
            `  current: ${JSON.stringify((b[i] ?? "(none)").slice(0, 400))}`;
        }
      }
    }
    this.counts[verdict]++;
    if (verdict === "failed") {
      this.failures.push(`${label}: ${detail}\n  statement: ${sql.slice(0, 500)}` +
        (params.length ? `\n  URL: ${params.map(([k, v]) => k === "query" ? "query=…" : `${k}=${v}`).join("&")}` : ""));
    }
    return verdict;
  }

  // Exchanges whose time overlaps an INSERT's: the order in which the
  // server ran the two is unknown, and the replay's order may differ.
  overlaps(ex, all) {
    return all.filter((o) => o !== ex && /^query=INSERT/i.test(o.query) &&
                      o.start < ex.end && ex.start < o.end).map((o) => o.seq);
  }

  exchange(ex, all) {
    const params = [...new URLSearchParams(ex.query)];
    const body = Buffer.from(ex.body, "base64").toString("utf8");
    const answer = Buffer.from(ex.answer, "base64").toString("utf8");
    const q = params.find(([k]) => k === "query");
    let data = body;
    if (q && /\bFORMAT\s+JSONEachRow\s*$/i.test(q[1]) && /\n\s*\n/.test(body)) {
      data = body.replace(/\n\s*\n/g, "\n");
      this.blankLines = (this.blankLines || 0) + 1;
    }
    const sql = q ? q[1] + (data.length ? "\n" + data : "") : body;
    if (ex.path !== "/" || !sql.trim()) {
      this.counts.notStatements++;
      this.notStatement = this.notStatement || new Map();
      const k = `${ex.method} ${ex.path}`;
      this.notStatement.set(k, (this.notStatement.get(k) || 0) + 1);
      return null;
    }
    if (ex.posed) this.posed = (this.posed || 0) + 1;
    if (/\bMODIFY\s+SETTING\b/i.test(sql)) this.modifySetting = (this.modifySetting || 0) + 1;
    if (/\bFROM\s+system\.time_zones\b/i.test(sql)) this.timeZones = (this.timeZones || 0) + 1;
    const during = all ? this.overlaps(ex, all) : [];
    if (during.length) this.concurrent = (this.concurrent || 0) + 1;
    return this.statement(`exchange #${ex.seq}` +
      (ex.posed ? " (answered by the relay as 26.7 would)" : "") + (during.length ?
      ` (ran while INSERT #${during.join(", #")} ran: their order is unknown)` : ""),
      sql, params, ex.method, ex.status, answer);
  }

  close() {
    this.keeper.close();
  }
}

// Statements that a current release must refuse or answer otherwise: each
// is recorded as 18.16 answered it, and the replay must flag every one.
const SELF_TEST = [
  {
    what: "old-style MergeTree(date, key, 8192)",
    sql: "CREATE TABLE IF NOT EXISTS compat_selftest.old (date Date, " +
      "key UInt32) ENGINE = MergeTree(date, key, 8192)",
    params: [], status: 200, answer: "",
  },
  {
    what: "a URL setting of 18.16 that current releases removed (compile)",
    sql: "SELECT 1 FORMAT TabSeparated",
    params: [["compile", "1"]], status: 200, answer: "1\n",
  },
  {
    what: "a URL setting applied, not only checked (readonly=1 INSERT)",
    sql: "INSERT INTO compat_selftest.t FORMAT JSONEachRow\n{\"k\":1}\n",
    params: [["readonly", "1"]], status: 200, answer: "",
  },
  {
    what: "an answer that differs",
    sql: "SELECT count() FROM compat_selftest.t FORMAT TabSeparated",
    params: [], status: 200, answer: "2\n",
  },
];

function selfTest(rp) {
  let passed = 0, failed = 0;
  rp.run("CREATE DATABASE IF NOT EXISTS compat_selftest", [], "POST");
  rp.run("CREATE TABLE IF NOT EXISTS compat_selftest.t (k UInt32) " +
         "ENGINE = MergeTree ORDER BY k", [], "POST");
  rp.run("INSERT INTO compat_selftest.t FORMAT JSONEachRow\n{\"k\":7}\n", [], "POST");
  // The control: the same statements as a current release answers them pass.
  const control = rp.statement("self-test control", "SELECT count() FROM " +
    "compat_selftest.t FORMAT TabSeparated", [], "POST", 200, "1\n");
  const before = { ...rp.counts }, failures = rp.failures.length;
  for (const t of SELF_TEST) {
    const v = rp.statement(`self-test: ${t.what}`, t.sql, t.params, "POST",
                           t.status, t.answer);
    const ok = v === "failed";
    console.log(`self-test: ${t.what}: ${ok ? "flagged" : "NOT flagged (" + v + ")"}` +
      (ok ? ` (${rp.failures[rp.failures.length - 1].split("\n")[0].replace(/^[^:]*: [^:]*: /, "").slice(0, 160)})` : ""));
    ok ? passed++ : failed++;
  }
  if (control === "matched") passed++; else { failed++; console.log("self-test: control statement did not match"); }
  // The self-test's own verdicts are not the capture's.
  rp.counts = before;
  rp.failures.length = failures;
  return { passed, failed };
}

function main(argv) {
  const args = argv.slice(2);
  const onlySelf = args[0] === "--self-test";
  const capture = onlySelf ? null : JSON.parse(fs.readFileSync(args[0], "utf8"));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "imc-compat-chdb-"));
  const probe = new Session(dir);
  const version = probe.query("SELECT version()", "TabSeparated").trim();
  probe.close();
  const rp = new Replayer(dir, capture ? capture.server.timezone : null);
  let passed = 0, failed = 0;
  const t0 = Date.now();
  try {
    if (capture) {
      console.log(`replay: ${capture.exchanges.length} exchanges recorded with ` +
        `ClickHouse ${capture.server.version} (time zone ${capture.server.timezone}), ` +
        `replayed on ClickHouse ${version} (chDB) in that time zone`);
      for (const ex of capture.exchanges) rp.exchange(ex, capture.exchanges);
      for (const c of capture.checks) {
        const answer = Buffer.from(c.answer, "base64").toString("utf8");
        rp.statement(`harness check "${c.name}"`, c.sql, [], "POST", 200, answer);
      }
      const c = rp.counts;
      console.log(`replay: ${c.replayed} statements replayed (${capture.checks.length} of ` +
        `them the harness's checks), ${c.matched} matched, ${c.explained} explained, ` +
        `${c.failed} failed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      for (const [name, n] of rp.reasons) {
        const rule = EXPLAINED.find((r) => r.name === name);
        console.log(`  explained ${n}: ${name}: ${rule.why}`);
      }
      for (const [k, n] of rp.notStatement || []) {
        console.log(`  not a statement ${n}: ${k} (no SQL to replay)`);
      }
      if (rp.posed) {
        console.log(`  answered by the relay posing as 26.7 ${rp.posed} (the release probes, the ` +
          "dedup window's ALTER, zone lookups of the module's second run; compared with 26.7's own)");
      }
      if (rp.concurrent) {
        console.log(`  statements that ran while an INSERT ran ${rp.concurrent} ` +
          "(replayed after it; named where they fail)");
      }
      if (rp.blankLines) {
        console.log(`  INSERT bodies with empty lines ${rp.blankLines}: replayed without them (a server's ` +
          "HTTP interface streams the body to JSONEachRow, which skips any whitespace between " +
          "rows; chDB takes the rows as a multi-query client's inline data, which ends at the " +
          "first empty line)");
      }
      for (const [k, n] of rp.settingsApplied) {
        console.log(`  setting ${k} applied on ${n} statements`);
      }
      for (const [k, n] of rp.httpOnly) {
        if (k !== "query") console.log(`  HTTP parameter ${k} on ${n} statements (the HTTP interface's own, not a setting)`);
      }
      for (const f of rp.failures) console.log(`FAILED ${f}`);
      passed += c.matched + c.explained;
      failed += c.failed;
      if (rp.posed) {
        for (const [what, count] of CURRENT_ONLY) {
          if (count(rp)) {
            console.log(`current-release run: ${what} replayed on ${count(rp)} statements`);
            passed++;
          } else {
            console.log(`FAILED current-release run: ${what} was never sent`);
            failed++;
          }
        }
      }
      if (c.replayed - capture.checks.length === 0) {
        console.log("FAILED the capture holds no statement");
        failed++;
      }
    }
    const st = selfTest(rp);
    passed += st.passed;
    failed += st.failed;
  } finally {
    rp.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`compat: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv);
