/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_filter: grammar, canonical SQL, errors with their
 * positions, limits and injection attempts; imc_filter_parse agreeing with
 * imc_filter_compile on every filter compiled here, and imc_filter_match
 * (operators, IN lists, logic, aliases, ClickHouse's order of UUIDs).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "check_main.h"
#include "imc_filter.h"
#include "imc_syntax.h"

#define U1    "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
#define U2    "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define U1SQL "toUUID('" U1 "')"
#define U2SQL "toUUID('" U2 "')"

static apr_pool_t *pool;

/* The columns used by most tests: plain names, except day. */
static const imc_filter_columns cols = {"toDate(time)", "site_id", "type"};

static void setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

/* imc_filter_parse of len bytes answers as compile did (rv, *err). */
static void check_parse_agrees(const char *f, apr_size_t len, apr_status_t rv,
                               const imc_filter_error *err)
{
    const imc_filter *filter = NULL;
    imc_filter_error perr;

    memset(&perr, 0, sizeof(perr));
    ck_assert_int_eq(imc_filter_parse(pool, f, len, &filter, &perr), rv);
    if (rv == APR_SUCCESS) {
        ck_assert_ptr_nonnull(filter);
        return;
    }
    ck_assert_ptr_null(filter);
    ck_assert_int_eq(perr.kind, err->kind);
    ck_assert_int_eq(perr.position, err->position);
    ck_assert_str_eq(perr.message, err->message);
    if (err->column) {
        ck_assert_str_eq(perr.column, err->column);
    } else {
        ck_assert_ptr_null(perr.column);
    }
}

/* Compile len bytes; the SQL or NULL, err filled on failure. Parsing the
 * same bytes must answer the same. */
static const char *compile_n(const char *f, apr_size_t len,
                             imc_filter_error *err)
{
    const char *sql = NULL;
    apr_status_t rv;

    memset(err, 0, sizeof(*err));
    rv = imc_filter_compile(pool, f, len, &cols, &sql, err);
    check_parse_agrees(f, len, rv, err);
    if (rv == APR_SUCCESS) {
        ck_assert_ptr_nonnull(sql);
        return sql;
    }
    ck_assert_int_eq(rv, APR_EINVAL);
    ck_assert_ptr_null(sql);
    ck_assert_ptr_nonnull(err->message);
    ck_assert_int_ge(err->kind, IMC_FILTER_ESYNTAX);
    ck_assert_int_le(err->kind, IMC_FILTER_ELIMIT);
    ck_assert_int_ge(err->position, -1);
    ck_assert_int_le(err->position, (int)len);
    return NULL;
}

static void check_ok(const char *f, const char *want)
{
    imc_filter_error err;
    const char *sql = compile_n(f, strlen(f), &err);

    ck_assert_msg(sql != NULL, "[%s] rejected: %s at %d", f, err.message,
                  err.position);
    ck_assert_msg(strcmp(sql, want) == 0, "[%s]\n got  %s\n want %s", f, sql,
                  want);
}

/*
 * Expect an error of kind at the offset of the caret in marker (a string
 * of spaces and one '^'), with message msg when msg is not NULL.
 */
static void check_err_n(const char *f, apr_size_t len, int kind,
                        const char *marker, const char *msg)
{
    imc_filter_error err;
    const char *sql = compile_n(f, len, &err);
    int pos = marker ? (int)(strchr(marker, '^') - marker) : -1;

    ck_assert_msg(sql == NULL, "[%s] accepted as %s", f, sql);
    ck_assert_msg(err.kind == kind, "[%s] kind %d, want %d (%s)", f, err.kind,
                  kind, err.message);
    ck_assert_msg(err.position == pos, "[%s] position %d, want %d (%s)", f,
                  err.position, pos, err.message);
    if (msg) {
        ck_assert_msg(strcmp(err.message, msg) == 0, "[%s]\n got  %s\n want %s",
                      f, err.message, msg);
    }
    if (kind != IMC_FILTER_ECOLUMN) {
        ck_assert_ptr_null(err.column);
    }
}

static void check_err(const char *f, int kind, const char *marker,
                      const char *msg)
{
    check_err_n(f, strlen(f), kind, marker, msg);
}

/* n times s, concatenated */
static char *repeat(const char *s, int n)
{
    size_t l = strlen(s);
    char *out = apr_palloc(pool, l * n + 1);
    int i;

    for (i = 0; i < n; i++) {
        memcpy(out + i * l, s, l);
    }
    out[l * n] = '\0';
    return out;
}

/* n spaces and a caret: the marker of offset n */
static const char *caret(int n)
{
    return apr_pstrcat(pool, repeat(" ", n), "^", NULL);
}

#define SYN(f, marker, msg) check_err(f, IMC_FILTER_ESYNTAX, marker, msg)
#define LIT(f, marker, msg) check_err(f, IMC_FILTER_ELITERAL, marker, msg)

/* ---- accepted forms ------------------------------------------------------ */

START_TEST(empty_filter)
{
    const char *sql = NULL;

    check_ok("", "1");
    check_ok(" \t\r\n  ", "1");
    ck_assert_int_eq(imc_filter_compile(pool, NULL, 0, &cols, &sql, NULL),
                     APR_SUCCESS);
    ck_assert_str_eq(sql, "1");
}
END_TEST

START_TEST(prototype_example)
{
    check_ok("site_id='" U1 "'", "(site_id = " U1SQL ")");
}
END_TEST

START_TEST(brief_example)
{
    check_ok("site_id='0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6' AND NOT type IN "
             "('serve')",
             "((site_id = " U1SQL ") AND (NOT (type IN ('serve'))))");
}
END_TEST

START_TEST(operators)
{
    static const char *const ops[][2] = {
        {"=", "="},   {"!=", "!="}, {"<>", "!="}, {"<", "<"},
        {"<=", "<="}, {">", ">"},   {">=", ">="}};
    size_t i;

    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        const char *o = ops[i][0], *w = ops[i][1];

        check_ok(apr_pstrcat(pool, "type", o, "'solve'", NULL),
                 apr_pstrcat(pool, "(type ", w, " 'solve')", NULL));
        check_ok(apr_pstrcat(pool, "day ", o, " '2026-11-01'", NULL),
                 apr_pstrcat(pool, "(toDate(time) ", w,
                             " toDate('2026-11-01'))", NULL));
        check_ok(apr_pstrcat(pool, "site_id  ", o, "  '", U2, "'", NULL),
                 apr_pstrcat(pool, "(site_id ", w, " ", U2SQL, ")", NULL));
    }
}
END_TEST

START_TEST(in_lists)
{
    check_ok("type IN ('serve')", "(type IN ('serve'))");
    check_ok("type in('serve','solve')", "(type IN ('serve', 'solve'))");
    check_ok("site_id IN ( '" U1 "' , '" U2 "' , '" U1 "' )",
             "(site_id IN (" U1SQL ", " U2SQL ", " U1SQL "))");
    check_ok("day IN ('2026-11-01','2026-11-02')",
             "(toDate(time) IN (toDate('2026-11-01'), toDate('2026-11-02')))");
    check_ok("NOT day IN ('2026-11-01')",
             "(NOT (toDate(time) IN (toDate('2026-11-01'))))");
}
END_TEST

START_TEST(precedence)
{
    /* NOT binds tighter than AND, AND tighter than OR. */
    check_ok("type='serve' OR type='solve' AND day='2026-11-01'",
             "((type = 'serve') OR ((type = 'solve') AND "
             "(toDate(time) = toDate('2026-11-01'))))");
    check_ok("type='serve' AND type='solve' OR day='2026-11-01'",
             "(((type = 'serve') AND (type = 'solve')) OR "
             "(toDate(time) = toDate('2026-11-01')))");
    check_ok("NOT type='serve' AND type='solve'",
             "((NOT (type = 'serve')) AND (type = 'solve'))");
    check_ok("NOT type='serve' OR type='solve'",
             "((NOT (type = 'serve')) OR (type = 'solve'))");
    check_ok("type='serve' AND NOT type='solve' OR NOT day='2026-11-01' AND "
             "site_id='" U1 "'",
             "(((type = 'serve') AND (NOT (type = 'solve'))) OR ((NOT "
             "(toDate(time) = toDate('2026-11-01'))) AND (site_id = " U1SQL
             ")))");
}
END_TEST

START_TEST(chains)
{
    check_ok("type='serve' AND type='solve' AND day>'2026-01-01'",
             "((type = 'serve') AND (type = 'solve') AND "
             "(toDate(time) > toDate('2026-01-01')))");
    check_ok("type='serve' OR type='solve' OR day>'2026-01-01'",
             "((type = 'serve') OR (type = 'solve') OR "
             "(toDate(time) > toDate('2026-01-01')))");
}
END_TEST

START_TEST(parentheses)
{
    check_ok("(type='serve')", "(type = 'serve')");
    check_ok("(((type='serve')))", "(type = 'serve')");
    check_ok("(type='serve' OR type='solve') AND day='2026-11-01'",
             "(((type = 'serve') OR (type = 'solve')) AND "
             "(toDate(time) = toDate('2026-11-01')))");
    check_ok("type='serve' AND (type='solve' OR day='2026-11-01')",
             "((type = 'serve') AND ((type = 'solve') OR "
             "(toDate(time) = toDate('2026-11-01'))))");
    check_ok("NOT (type='serve' OR type='solve')",
             "(NOT ((type = 'serve') OR (type = 'solve')))");
    check_ok("NOT NOT type='serve'", "(NOT (NOT (type = 'serve')))");
    check_ok("NOT(NOT(type='serve'))", "(NOT (NOT (type = 'serve')))");
    /* a parenthesised AND chain inside an AND chain stays a group */
    check_ok("type='serve' AND (type='solve' AND type='serve')",
             "((type = 'serve') AND ((type = 'solve') AND (type = 'serve')))");
}
END_TEST

START_TEST(case_and_aliases)
{
    const char *want = "((toDate(time) = toDate('2026-11-01')) OR "
                       "(NOT (type IN ('solve'))))";

    check_ok("day='2026-11-01' or not type in ('solve')", want);
    check_ok("DAY='2026-11-01' OR NOT TYPE IN ('solve')", want);
    check_ok("Time='2026-11-01' Or nOt tYpE iN ('solve')", want);
    check_ok("date='2026-11-01' oR NoT Type In ('solve')", want);
    check_ok("SITE_ID='" U1 "' aNd TIME<'2026-12-01'",
             "((site_id = " U1SQL ") AND (toDate(time) < "
             "toDate('2026-12-01')))");
}
END_TEST

START_TEST(white_space)
{
    const char *want = "((type = 'serve') AND ((toDate(time) >= "
                       "toDate('2026-11-01')) OR (site_id IN (" U1SQL "))))";

    check_ok("type='serve'AND(day>='2026-11-01'OR site_id IN('" U1 "'))", want);
    check_ok("\r\n type\t=\n'serve'\r\nAND\t(\tday\n>=\r'2026-11-01' \tOR"
             "\nsite_id\tIN\r(\n'" U1 "'\t)\n)\n",
             want);
}
END_TEST

START_TEST(literal_values)
{
    static const char *const good_days[] = {"1970-01-01", "2105-12-31",
                                            "2024-02-29", "2000-02-29",
                                            "2026-04-30", "2026-12-31"};
    static const char *const bad_days[] = {"1969-12-31",
                                           "2106-01-01",
                                           "2026-02-29",
                                           "2100-02-29",
                                           "2026-04-31",
                                           "2026-13-01",
                                           "2026-00-10",
                                           "2026-01-00",
                                           "2026-1-01",
                                           "2026-01-1",
                                           "26-01-01",
                                           "2026/01/01",
                                           "2026-01-01 ",
                                           " 2026-01-01",
                                           "2026-01-01T00:00:00",
                                           "",
                                           "2026-0a-01",
                                           "+026-01-01"};
    static const char *const bad_uuids[] = {
        "",
        "x",
        U1 "0",
        "0faf8b64-a33d-4db8-aaee-aa165d13cff",
        "0faf8b64a33d-4db8-aaee-aa165d13cff6-",
        "0faf8b64-a33d-4db8-aaee_aa165d13cff6",
        "0faf8b64-a33d-4db8-aaee-aa165d13cffg",
        "{0faf8b64-a33d-4db8-aaee-aa165d13cff}",
        "0faf8b64a33d4db8aaeeaa165d13cff60000",
        (" " U1)};
    static const char *const bad_types[] = {"Serve",  "SOLVE", "serve ",
                                            "served", "",      "s"};
    size_t i;

    for (i = 0; i < sizeof(good_days) / sizeof(good_days[0]); i++) {
        check_ok(apr_pstrcat(pool, "day='", good_days[i], "'", NULL),
                 apr_pstrcat(pool, "(toDate(time) = toDate('", good_days[i],
                             "'))", NULL));
    }
    for (i = 0; i < sizeof(bad_days) / sizeof(bad_days[0]); i++) {
        LIT(apr_pstrcat(pool, "day='", bad_days[i], "'", NULL), "    ^",
            "day expects a date YYYY-MM-DD between 1970-01-01 and "
            "2105-12-31");
    }
    for (i = 0; i < sizeof(bad_uuids) / sizeof(bad_uuids[0]); i++) {
        LIT(apr_pstrcat(pool, "site_id = '", bad_uuids[i], "'", NULL),
            "          ^",
            "site_id expects a UUID such as "
            "0faf8b64-a33d-4db8-aaee-aa165d13cff6");
    }
    for (i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++) {
        LIT(apr_pstrcat(pool, "type IN ('serve', '", bad_types[i], "')", NULL),
            caret(18), "type expects 'serve' or 'solve'");
    }
    /* the alias as written names the column */
    LIT("TIME = 'yesterday'", "       ^",
        "time expects a date YYYY-MM-DD between 1970-01-01 and 2105-12-31");
    check_ok("site_id='aBcDeF01-2345-6789-AbCd-eF0123456789'",
             "(site_id = toUUID('abcdef01-2345-6789-abcd-ef0123456789'))");
}
END_TEST

START_TEST(quote_escapes)
{
    /* '' and \' are quotes inside a literal, \\ is a backslash: each of
       these is one literal (so the error is at its start), not valid for
       type. */
    LIT("type = 'it''s' AND x", "       ^", NULL);
    LIT("type = 'it\\'s' AND x", "       ^", NULL);
    LIT("type = '\\\\' AND x", "       ^", NULL);
    LIT("type = '''' AND x", "       ^", NULL);
    LIT("type IN ('serve', '\\'', 'x')", "                  ^", NULL);
    LIT("type IN ('serve', '''', 'x')", "                  ^", NULL);
    LIT("type = 'serve\\\\' OR x", "       ^", NULL);
    /* other backslash sequences: error at the backslash */
    SYN("type = 'ser\\ve'", "           ^",
        "invalid escape sequence in a string literal; only \\\\ and \\' are "
        "allowed");
    SYN("type = '\\n'", "        ^", NULL);
    SYN("type = '\\\"'", "        ^", NULL);
    /* a literal that never closes */
    SYN("type = 'serve", "       ^", "unterminated string literal");
    SYN("type = 'serve\\'", "       ^", "unterminated string literal");
    SYN("type = 'serve''", "       ^", "unterminated string literal");
    SYN("type = 'serve\\", "       ^", "unterminated string literal");
    SYN("type = '", "       ^", "unterminated string literal");
}
END_TEST

START_TEST(columns_default_and_custom)
{
    static const imc_filter_columns paris = {"toDate(time, 'Europe/Paris')",
                                             "s.site_id", "s.type"};
    static const imc_filter_columns partial = {NULL, "sid", NULL};
    const char *f =
        "day >= '2026-11-01' AND site_id = '" U1 "' AND type IN ('solve')";
    const char *sql = NULL;

    ck_assert_int_eq(imc_filter_compile(pool, f, strlen(f), &paris, &sql, NULL),
                     APR_SUCCESS);
    ck_assert_str_eq(sql, "((toDate(time, 'Europe/Paris') >= "
                          "toDate('2026-11-01')) AND (s.site_id = " U1SQL
                          ") AND (s.type IN ('solve')))");
    ck_assert_int_eq(imc_filter_compile(pool, f, strlen(f), NULL, &sql, NULL),
                     APR_SUCCESS);
    ck_assert_str_eq(sql, "((day >= toDate('2026-11-01')) AND (site_id = " U1SQL
                          ") AND (type IN ('solve')))");
    ck_assert_int_eq(
        imc_filter_compile(pool, f, strlen(f), &partial, &sql, NULL),
        APR_SUCCESS);
    ck_assert_str_eq(sql, "((day >= toDate('2026-11-01')) AND (sid = " U1SQL
                          ") AND (type IN ('solve')))");
    ck_assert_str_eq(imc_filter_column_names[0], "day");
    ck_assert_str_eq(imc_filter_column_names[1], "site_id");
    ck_assert_str_eq(imc_filter_column_names[2], "type");
    ck_assert_ptr_null(imc_filter_column_names[3]);
}
END_TEST

START_TEST(length_is_respected)
{
    /* The filter is not NUL-terminated: bytes past len are never read. */
    const char *full = "type = 'serve' AND day = '2026-11-01'";
    apr_size_t n = strlen("type = 'serve'");
    char *exact = malloc(n);
    imc_filter_error err;
    const char *sql;

    ck_assert_ptr_nonnull(exact);
    memcpy(exact, full, n);
    sql = compile_n(exact, n, &err);
    ck_assert_ptr_nonnull(sql);
    ck_assert_str_eq(sql, "(type = 'serve')");
    /* cut inside the literal: unterminated */
    sql = compile_n(exact, n - 1, &err);
    ck_assert_ptr_null(sql);
    ck_assert_int_eq(err.position, 7);
    ck_assert_str_eq(err.message, "unterminated string literal");
    /* cut inside the column name */
    sql = compile_n(exact, 2, &err);
    ck_assert_ptr_null(sql);
    ck_assert_int_eq(err.kind, IMC_FILTER_ECOLUMN);
    ck_assert_str_eq(err.column, "ty");
    free(exact);
}
END_TEST

/* ---- errors ---------------------------------------------------------------
 */

START_TEST(unknown_columns)
{
    imc_filter_error err;
    char name[101];
    const char *f;

    memset(name, 'c', 100);
    name[100] = '\0';
    check_err("foo = 'x'", IMC_FILTER_ECOLUMN, "^", "unknown column 'foo'");
    f = "type='serve' AND Foo_Bar='x'";
    check_err(f, IMC_FILTER_ECOLUMN, "                 ^",
              "unknown column 'Foo_Bar'");
    compile_n(f, strlen(f), &err);
    ck_assert_str_eq(err.column, "Foo_Bar");
    /* a keyword glued to a name is a name */
    check_err("NOTtype='serve'", IMC_FILTER_ECOLUMN, "^", NULL);
    check_err("site_ids='x'", IMC_FILTER_ECOLUMN, "^", NULL);
    f = apr_pstrcat(pool, " ", name, "='x'", NULL);
    check_err(f, IMC_FILTER_ECOLUMN, " ^", NULL);
    compile_n(f, strlen(f), &err);
    ck_assert_uint_eq(strlen(err.column), 64);
    ck_assert_int_eq(strncmp(err.column, name, 64), 0);
    ck_assert_str_eq(err.message,
                     apr_psprintf(pool, "unknown column '%.64s'", name));
}
END_TEST

START_TEST(syntax_errors)
{
    SYN("site_id 'x'", "        ^",
        "expected an operator after column 'site_id'");
    SYN("Type", "    ^", "expected an operator after column 'type'");
    SYN("site_id =", "         ^",
        "expected a single-quoted literal after '='");
    SYN("type <> type", "        ^",
        "expected a single-quoted literal after '<>'");
    SYN("type == 'serve'", "      ^", NULL);
    SYN("type ! 'serve'", "     ^", "expected '=' after '!'");
    SYN("type = 'serve' ;", "               ^", "unexpected character");
    SYN("(type = 'serve'", "               ^", "expected ')'");
    SYN("((type = 'serve') AND (type = 'solve')",
        "                                      ^", "expected ')'");
    SYN("(type = 'serve' type", "                ^", "expected ')'");
    SYN("type = 'serve')", "              ^",
        "unexpected input after the end of the filter");
    SYN("type = 'serve' type = 'solve'", "               ^",
        "unexpected input after the end of the filter");
    SYN("type = 'serve' NOT type = 'solve'", "               ^", NULL);
    SYN("type IN 'serve'", "        ^", "expected '(' after IN");
    SYN("type IN ()", "         ^",
        "expected a single-quoted literal in the IN list");
    SYN("type IN ('serve',)", "                 ^",
        "expected a single-quoted literal in the IN list");
    SYN("type IN ('serve' 'solve')", "                 ^",
        "expected ',' or ')' in the IN list");
    SYN("type IN ('serve'", "                ^",
        "expected ',' or ')' in the IN list");
    SYN("AND type='serve'", "^", "expected a column name, NOT or '('");
    SYN("type='serve' AND", "                ^",
        "expected a column name, NOT or '('");
    SYN("type='serve' OR OR type='solve'", "                ^", NULL);
    SYN("IN ('serve')", "^", NULL);
    SYN("()", " ^", NULL);
    SYN("NOT", "   ^", NULL);
    SYN("'serve' = type", "^", NULL);
    SYN("day = 2026-11-01", "      ^",
        "unexpected character; literals such as dates must be "
        "single-quoted");
    SYN("type = \"serve\"", "       ^",
        "unexpected character; enclose literals in ASCII single quotes");
    SYN("type = `serve`", "       ^", NULL);
    /* the first error from the left wins over a later lexical error */
    SYN("type = = 'serve' ;", "       ^", NULL);
    LIT("type = 'x' ;", "       ^", NULL);
}
END_TEST

START_TEST(nul_bytes)
{
    static const char f1[] = "type = 'se\0ve'";
    static const char f2[] = "type\0= 'serve'";
    static const char f3[] = "type = 'serve'\0";
    static const char f4[] = "\0";

    check_err_n(f1, sizeof(f1) - 1, IMC_FILTER_ESYNTAX, "          ^",
                "unexpected NUL byte");
    check_err_n(f2, sizeof(f2) - 1, IMC_FILTER_ESYNTAX, "    ^",
                "unexpected NUL byte");
    check_err_n(f3, sizeof(f3) - 1, IMC_FILTER_ESYNTAX, "              ^",
                "unexpected NUL byte");
    check_err_n(f4, sizeof(f4) - 1, IMC_FILTER_ESYNTAX, "^", NULL);
}
END_TEST

/* ---- limits ---------------------------------------------------------------
 */

START_TEST(limit_length)
{
    const char *cond = "type='serve'";
    char *f = apr_palloc(pool, 100 * 1024);
    imc_filter_error err;

    /* exactly 4096 bytes is fine, 4097 is not */
    memset(f, ' ', 4096 - strlen(cond));
    memcpy(f + 4096 - strlen(cond), cond, strlen(cond));
    ck_assert_str_eq(compile_n(f, 4096, &err), "(type = 'serve')");
    check_err_n(f, 4097, IMC_FILTER_ELIMIT, NULL,
                "the filter is longer than 4096 bytes");
    /* 100 KB of repeated conditions */
    memset(f, 'x', 100 * 1024);
    check_err_n(f, 100 * 1024, IMC_FILTER_ELIMIT, NULL, NULL);
    /* 10000 nested parentheses */
    f = apr_pstrcat(pool, repeat("(", 10000), cond, repeat(")", 10000), NULL);
    check_err(f, IMC_FILTER_ELIMIT, NULL, NULL);
}
END_TEST

START_TEST(limit_depth)
{
    const char *cond = "type='serve'";
    const char *msg = "the filter nests parentheses and NOT more than 32 deep";

    check_ok(apr_pstrcat(pool, repeat("(", 32), cond, repeat(")", 32), NULL),
             "(type = 'serve')");
    check_err(apr_pstrcat(pool, repeat("(", 33), cond, repeat(")", 33), NULL),
              IMC_FILTER_ELIMIT, caret(32), msg);
    check_ok(apr_pstrcat(pool, repeat("NOT ", 32), cond, NULL),
             apr_pstrcat(pool, repeat("(NOT ", 32), "(type = 'serve')",
                         repeat(")", 32), NULL));
    check_err(apr_pstrcat(pool, repeat("NOT ", 33), cond, NULL),
              IMC_FILTER_ELIMIT, caret(32 * 4), msg);
    /* parentheses and NOT count together */
    check_ok(apr_pstrcat(pool, repeat("NOT ", 16), repeat("(", 16), cond,
                         repeat(")", 16), NULL),
             apr_pstrcat(pool, repeat("(NOT ", 16), "(type = 'serve')",
                         repeat(")", 16), NULL));
    check_err(apr_pstrcat(pool, repeat("NOT ", 16), repeat("(", 17), cond,
                          repeat(")", 17), NULL),
              IMC_FILTER_ELIMIT, caret(16 * 4 + 16), msg);
    check_err(
        apr_pstrcat(pool, repeat("(NOT ", 17), cond, repeat(")", 17), NULL),
        IMC_FILTER_ELIMIT, caret(16 * 5), msg);
    /* the parentheses of an IN list do not nest */
    check_ok(apr_pstrcat(pool, repeat("(", 32), "type IN ('serve')",
                         repeat(")", 32), NULL),
             "(type IN ('serve'))");
    /* depth is nesting, not a count: many groups side by side are fine */
    check_ok(apr_pstrcat(pool, cond,
                         repeat(" OR ((((NOT type='solve'))))", 100), NULL),
             apr_pstrcat(pool, "((type = 'serve')",
                         repeat(" OR (NOT (type = 'solve'))", 100), ")", NULL));
    /* thousands of openings within the length limit */
    check_err(repeat("(", 4000), IMC_FILTER_ELIMIT, caret(32), msg);
    check_err(repeat("NOT ", 1000), IMC_FILTER_ELIMIT, caret(32 * 4), msg);
    check_err(repeat("(NOT ", 800), IMC_FILTER_ELIMIT, caret(16 * 5), msg);
}
END_TEST

START_TEST(limit_literals)
{
    const char *msg = "the filter has more than 1000 literals";
    char *f;

    /* 1000 literals: the limit is not hit, the first literal is invalid */
    f = apr_pstrcat(pool, "type IN ('x'", repeat(",''", 999), ")", NULL);
    LIT(f, caret(9), "type expects 'serve' or 'solve'");
    /* 1001 literals: refused before parsing, at the 1001st literal */
    f = apr_pstrcat(pool, "type IN ('x'", repeat(",''", 1000), ")", NULL);
    check_err(f, IMC_FILTER_ELIMIT, caret((int)strlen(f) - 3), msg);
    /* counted over the whole filter */
    f = apr_pstrcat(pool, "type IN (''", repeat(",''", 499), ") OR day IN (''",
                    repeat(",''", 500), ")", NULL);
    check_err(f, IMC_FILTER_ELIMIT, caret((int)strlen(f) - 3), msg);
    /* a lexical error before the 1001st literal ends the count there */
    f = apr_pstrcat(pool, "type IN (''", repeat(",''", 499), ";",
                    repeat(",''", 600), ")", NULL);
    check_err(f, IMC_FILTER_ELITERAL, caret(9), NULL);
}
END_TEST

/* ---- injection attempts ------------------------------------------------- */

#define A(s)                                                                   \
    {                                                                          \
        s, sizeof(s) - 1                                                       \
    }

START_TEST(injections)
{
    static const struct {
        const char *s;
        apr_size_t len;
    } attacks[] = {
        A("site_id='x' OR 1=1"),
        A("site_id='" U1 "' OR 1=1"),
        A("site_id='" U1 "' OR '1'='1'"),
        A("site_id='" U1 "'' OR ''1''=''1'"),
        A("type='serve'; DROP TABLE events"),
        A("type='serve';"),
        A("type='serve' -- comment"),
        A("type='serve'--"),
        A("type='serve' /* comment */"),
        A("type='serve' # comment"),
        A("type='serve\\' OR 1=1 --'"),
        A("type='serve\\\\' OR 1=1 --"),
        A("type='serve' OR type='solve\\' OR 1=1"),
        A("type IN (SELECT type FROM events)"),
        A("site_id = (SELECT site_id FROM events LIMIT 1)"),
        A("type = 'serve' UNION SELECT * FROM system.users"),
        A("type = 'serve' AND sleep(3)"),
        A("type IN file('/etc/passwd')"),
        A("site_id = url('http://127.0.0.1/', CSV, 'a String')"),
        A("day = toDate(now())"),
        A("day IN numbers(10)"),
        A("type = remote('127.0.0.1', system.one)"),
        A("type = \xe2\x80\x99serve\xe2\x80\x99"),
        A("site_id=\xe2\x80\x98" U1 "\xe2\x80\x99"),
        A("type = \xef\xbc\x87serve\xef\xbc\x87"),
        A("\"type\" = 'serve'"),
        A("`type` = 'serve'"),
        A("type = 0x73657276"),
        A("type = $$serve$$"),
        A("type = 'serve' OR system.tables"),
        A("type = 'serve' SETTINGS max_threads=1"),
        A("type = 'serve' FORMAT TSV"),
        A("type = 'serve' OR 1"),
        A("type = 'serve' OR TRUE"),
        A("site_id = '" U1 "'\n; SELECT 1"),
        A("site_id = '" U1 "\x00' OR 1=1"),
        A("type = 's\xc0\xa7"
          "erve'"),
        A("type = 'serve'\\"),
        A("type = concat('ser', 've')"),
        A("type = 'serve' AND type IN ('serve', 'solve') OR ("),
        A("type = 'serve'\0"),
        A("type = 'serve' OR\0 1=1"),
        A("type = 'serve\0' OR 1=1"),
        A("type=:x"),
        A("type=?"),
        A("type = 'serve' OR site_id = site_id"),
        A("day >= '2026-11-01' OR day = '2026-11-01\\' OR \\'1'"),
    };
    size_t i;

    for (i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++) {
        imc_filter_error err;
        const char *sql = compile_n(attacks[i].s, attacks[i].len, &err);

        ck_assert_msg(sql == NULL, "attack [%s] accepted as %s", attacks[i].s,
                      sql);
    }
}
END_TEST

START_TEST(errors_quote_no_filter_bytes)
{
    /* Messages never repeat literals or other input, only column names. */
    static const char *const inputs[] = {
        "type = '<script>'",    "day = '2026-02-30'", "site_id = 'DROP'",
        "type = 'serve' ;DROP", "x<script> = 'y'",    "type = 'a\\b'"};
    size_t i;

    for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        imc_filter_error err;

        ck_assert_ptr_null(compile_n(inputs[i], strlen(inputs[i]), &err));
        ck_assert_ptr_null(strstr(err.message, "script"));
        ck_assert_ptr_null(strstr(err.message, "DROP"));
        ck_assert_ptr_null(strstr(err.message, "2026-02-30"));
        ck_assert_ptr_null(strstr(err.message, "a\\b"));
    }
}
END_TEST

START_TEST(canonical_and_deterministic)
{
    static const char *const same[] = {
        "site_id='" U1 "' AND type<>'solve'",
        "SITE_ID = '0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6' and TYPE != 'solve'",
        "(site_id='0faf8b64-A33D-4db8-AAEE-aa165d13cff6')AND(type!='solve')",
        "\tsite_id\n=\n'" U1 "'\nAND\ntype\n<>\n'solve'\n"};
    const char *first = NULL;
    size_t i;

    for (i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        imc_filter_error err;
        const char *a = compile_n(same[i], strlen(same[i]), &err);
        const char *b = compile_n(same[i], strlen(same[i]), &err);

        ck_assert_ptr_nonnull(a);
        ck_assert_str_eq(a, b);
        if (first) {
            ck_assert_str_eq(a, first);
        }
        first = a;
    }
    ck_assert_str_eq(first, "((site_id = " U1SQL ") AND (type != 'solve'))");
}
END_TEST

/* ---- imc_filter_match ---------------------------------------------------- */

#define SERVE IMC_FILTER_SERVE
#define SOLVE IMC_FILTER_SOLVE

/* The day number of the date s (YYYY-MM-DD). */
static int day_of(const char *s)
{
    apr_int64_t d = -1;

    ck_assert_int_eq(imc_syntax_date_parse(s, strlen(s), &d), APR_SUCCESS);
    return (int)d;
}

/* The parsed filter f, which must be accepted. */
static const imc_filter *parsed(const char *f)
{
    const imc_filter *filter = NULL;
    imc_filter_error err;

    ck_assert_msg(imc_filter_parse(pool, f, strlen(f), &filter, &err) ==
                      APR_SUCCESS,
                  "[%.200s] rejected: %s", f, err.message);
    return filter;
}

/* Whether the event (site, type, day as a date) passes the filter f. */
static int passes(const char *f, const char *site, int type, const char *day)
{
    return imc_filter_match(parsed(f), site, type, day_of(day));
}

#define PASS(f, site, type, day)                                               \
    ck_assert_msg(passes(f, site, type, day), "[%s] refused %s %d %s", f,      \
                  site, type, day)
#define FAIL(f, site, type, day)                                               \
    ck_assert_msg(!passes(f, site, type, day), "[%s] passed %s %d %s", f,      \
                  site, type, day)

/*
 * UUIDs in the order of ORDER BY on a UUID column, as ClickHouse 18.16.1
 * and 26.7.2.1 (chDB) both returned them: by bytes 8..15, then bytes 0..7.
 */
static const char *const ch_order[] = {"00000000-0000-0000-0000-000000000000",
                                       "00000000-0000-0001-0000-000000000000",
                                       "00000001-0000-0000-0000-000000000000",
                                       "7fffffff-ffff-ffff-0000-000000000000",
                                       "80000000-0000-0000-0000-000000000000",
                                       "ffffffff-ffff-ffff-0000-000000000000",
                                       "00000000-0000-0000-0000-000000000001",
                                       "00000000-0000-0000-0000-000100000000",
                                       "00000000-0000-0000-0001-000000000000",
                                       "00000000-0000-0000-7fff-ffffffffffff",
                                       "00000000-0000-0000-8000-000000000000",
                                       "ffffffff-ffff-ffff-8000-000000000000",
                                       "0faf8b64-a33d-4db8-944b-e07fc1f90ae7",
                                       "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                                       "0faf8b64-a33d-4db8-aaee-aa165d13cff6",
                                       "7c9e6679-7425-40de-aaee-aa165d13cff6",
                                       "ffffffff-ffff-fffe-ffff-ffffffffffff",
                                       "ffffffff-ffff-ffff-ffff-ffffffffffff"};

#define N_ORDER ((int)(sizeof(ch_order) / sizeof(ch_order[0])))

/* Filters used by several cases of match_cases. */
#define F_PRECEDENCE "type='serve' OR type='solve' AND day='2026-11-01'"
#define F_GROUPED    "(type='serve' OR type='solve') AND day='2026-11-01'"
#define F_NOT_AND    "NOT type='serve' AND day='2026-11-01'"
#define F_NOT_GROUP  "NOT (type='serve' AND day='2026-11-01')"
#define F_CHAIN                                                                \
    "day >= '2026-11-01' AND day <= '2026-11-30' AND NOT type = 'solve' "      \
    "AND (site_id = '" U1 "' OR site_id = '" U2 "')"
#define F_NESTED                                                               \
    "type='solve' OR day<'2026-01-01' OR site_id='" U2 "' OR "                 \
    "(day='2026-06-01' AND NOT (type='serve' OR site_id='" U1 "'))"
#define F_DAYS_IN  "day IN ('2026-11-03', '2026-11-01')"
#define F_SITES_IN "site_id IN ('" U2 "', '" U1 "', '" U2 "')"
/* ch_order[0] and ch_order[3], which an initializer cannot name */
#define UZERO "00000000-0000-0000-0000-000000000000"
#define UBIG  "7fffffff-ffff-ffff-0000-000000000000"

/* Events (site, type, day) and whether the filter passes each: one case
 * of the loop test match_case a row. */
static const struct {
    const char *filter;
    const char *site;
    int type;
    const char *day;
    int pass;
} match_cases[] = {
    /* the empty filter */
    {"", U1, SERVE, "2026-11-01", 1},
    {" \t\r\n ", U2, SOLVE, "1970-01-01", 1},

    /* type, as ClickHouse 18.16 and 26.7 answered on an Enum8 column */
    {"type < 'serve'", U1, SERVE, "2026-11-01", 0},
    {"type < 'serve'", U1, SOLVE, "2026-11-01", 0},
    {"type < 'solve'", U1, SERVE, "2026-11-01", 1},
    {"type < 'solve'", U1, SOLVE, "2026-11-01", 0},
    {"type <= 'serve'", U1, SERVE, "2026-11-01", 1},
    {"type <= 'serve'", U1, SOLVE, "2026-11-01", 0},
    {"type > 'solve'", U1, SOLVE, "2026-11-01", 0},
    {"type > 'serve'", U1, SOLVE, "2026-11-01", 1},
    {"type > 'serve'", U1, SERVE, "2026-11-01", 0},
    {"type >= 'serve'", U1, SOLVE, "2026-11-01", 1},
    {"type >= 'serve'", U1, SERVE, "2026-11-01", 1},
    {"type >= 'solve'", U1, SOLVE, "2026-11-01", 1},
    {"type >= 'solve'", U1, SERVE, "2026-11-01", 0},

    /* IN lists */
    {"type IN ('serve')", U1, SERVE, "2026-11-01", 1},
    {"type IN ('serve')", U1, SOLVE, "2026-11-01", 0},
    {"type IN ('solve', 'serve', 'solve')", U1, SOLVE, "2026-11-01", 1},
    {"type IN ('solve', 'serve', 'solve')", U1, SERVE, "2026-11-01", 1},
    {"NOT type IN ('solve', 'serve')", U1, SERVE, "2026-11-01", 0},
    {"NOT type IN ('solve')", U1, SERVE, "2026-11-01", 1},
    {F_SITES_IN, U1, SERVE, "2026-11-01", 1},
    {F_SITES_IN, U2, SERVE, "2026-11-01", 1},
    {"site_id IN ('" U2 "', '" U1 "')", UZERO, SERVE, "2026-11-01", 0},
    {"site_id IN ('0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6')", U1, SOLVE,
     "2026-11-01", 1},
    {F_DAYS_IN, U1, SERVE, "2026-11-01", 1},
    {F_DAYS_IN, U1, SERVE, "2026-11-03", 1},
    {F_DAYS_IN, U1, SERVE, "2026-11-02", 0},
    {F_DAYS_IN, U1, SERVE, "2026-11-04", 0},
    {F_DAYS_IN, U1, SERVE, "2026-10-31", 0},

    /* logic: NOT binds tighter than AND, AND tighter than OR */
    {F_PRECEDENCE, U1, SERVE, "2026-11-02", 1},
    {F_PRECEDENCE, U1, SOLVE, "2026-11-01", 1},
    {F_PRECEDENCE, U1, SOLVE, "2026-11-02", 0},
    {F_GROUPED, U1, SERVE, "2026-11-02", 0},
    {F_GROUPED, U1, SERVE, "2026-11-01", 1},
    {F_NOT_AND, U1, SOLVE, "2026-11-01", 1},
    {F_NOT_AND, U1, SERVE, "2026-11-01", 0},
    {F_NOT_AND, U1, SOLVE, "2026-11-02", 0},
    {F_NOT_GROUP, U1, SOLVE, "2026-11-01", 1},
    {F_NOT_GROUP, U1, SERVE, "2026-11-01", 0},
    {F_NOT_GROUP, U1, SERVE, "2026-11-02", 1},
    {"NOT NOT type='serve'", U1, SERVE, "2026-11-01", 1},
    {"NOT NOT NOT type='serve'", U1, SERVE, "2026-11-01", 0},
    /* chains, nested groups */
    {F_CHAIN, U1, SERVE, "2026-11-01", 1},
    {F_CHAIN, U2, SERVE, "2026-11-30", 1},
    {F_CHAIN, U2, SOLVE, "2026-11-30", 0},
    {F_CHAIN, U2, SERVE, "2026-12-01", 0},
    {F_CHAIN, UBIG, SERVE, "2026-11-15", 0},
    {F_NESTED, U1, SOLVE, "2026-06-02", 1},
    {F_NESTED, U1, SERVE, "2025-12-31", 1},
    {F_NESTED, U2, SERVE, "2026-06-02", 1},
    {F_NESTED, U1, SERVE, "2026-06-01", 0},
    {F_NESTED, UZERO, SERVE, "2026-06-01", 0},
    {F_NESTED, UZERO, SERVE, "2026-06-02", 0},

    /* column names in any case */
    {"SITE_ID = '" U1 "' and TYPE = 'serve'", U1, SERVE, "2026-11-02", 1},
    {"Site_Id = '" U1 "' AND Type = 'serve'", U1, SOLVE, "2026-11-02", 0},

    /* UUIDs: the text's order says otherwise */
    {"site_id < '00000000-0000-0000-0000-000000000001'",
     "ffffffff-ffff-ffff-0000-000000000000", SERVE, "2026-11-01", 1},
    /* unsigned halves: a high bit set is above */
    {"site_id > '00000000-0000-0000-7fff-ffffffffffff'",
     "00000000-0000-0000-8000-000000000000", SERVE, "2026-11-01", 1},
    {"site_id > '7fffffff-ffff-ffff-0000-000000000000'",
     "80000000-0000-0000-0000-000000000000", SERVE, "2026-11-01", 1},
    /* upper-case text of the event is read the same */
    {"site_id = '" U1 "'", "0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6", SOLVE,
     "2026-11-01", 1},
};

#define N_MATCH_CASES ((int)(sizeof(match_cases) / sizeof(match_cases[0])))

/* Case _i of match_cases (a loop test over all of them). */
START_TEST(match_case)
{
    const char *f = match_cases[_i].filter, *site = match_cases[_i].site;
    const char *day = match_cases[_i].day;
    int type = match_cases[_i].type;

    ck_assert_msg(passes(f, site, type, day) == match_cases[_i].pass,
                  "case %d: [%s] %s %s %d %s", _i, f,
                  match_cases[_i].pass ? "refused" : "passed", site, type, day);
}
END_TEST

START_TEST(match_empty)
{
    /* the empty filter's events: match_cases */
    ck_assert_int_eq(imc_filter_match(NULL, U1, SERVE, 0), 1);
    ck_assert_int_eq(imc_filter_match(parsed(""), NULL, SOLVE, 5), 1);
}
END_TEST

START_TEST(match_operators)
{
    /* for each operator: whether a value below, equal to, above the
       literal passes */
    static const struct {
        const char *op;
        int below, equal, above;
    } ops[] = {{"=", 0, 1, 0}, {"!=", 1, 0, 1}, {"<>", 1, 0, 1},
               {"<", 1, 0, 0}, {"<=", 1, 1, 0}, {">", 0, 0, 1},
               {">=", 0, 1, 1}};
    size_t i;

    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        const char *d =
            apr_pstrcat(pool, "day", ops[i].op, "'2026-11-15'", NULL);
        const char *t = apr_pstrcat(pool, "type ", ops[i].op, " 'solve'", NULL);
        const char *t2 =
            apr_pstrcat(pool, "type ", ops[i].op, " 'serve'", NULL);
        const char *s =
            apr_pstrcat(pool, "site_id", ops[i].op, "'", U2, "'", NULL);

        ck_assert_int_eq(passes(d, U1, SERVE, "2026-11-14"), ops[i].below);
        ck_assert_int_eq(passes(d, U1, SERVE, "2026-11-15"), ops[i].equal);
        ck_assert_int_eq(passes(d, U1, SERVE, "2026-11-16"), ops[i].above);
        ck_assert_int_eq(passes(d, U1, SOLVE, "1970-01-01"), ops[i].below);
        ck_assert_int_eq(passes(d, U1, SOLVE, "2105-12-31"), ops[i].above);
        /* serve (1) < solve (2) */
        ck_assert_int_eq(passes(t, U1, SERVE, "2026-11-15"), ops[i].below);
        ck_assert_int_eq(passes(t, U1, SOLVE, "2026-11-15"), ops[i].equal);
        ck_assert_int_eq(passes(t2, U1, SERVE, "2026-11-15"), ops[i].equal);
        ck_assert_int_eq(passes(t2, U1, SOLVE, "2026-11-15"), ops[i].above);
        /* U1 (...-aaee-...) is above U2 (...-944b-...): bytes 8..15 first */
        ck_assert_int_eq(passes(s, U2, SERVE, "2026-11-15"), ops[i].equal);
        ck_assert_int_eq(passes(s, U1, SERVE, "2026-11-15"), ops[i].above);
        ck_assert_int_eq(passes(s, "7c9e6679-7425-40de-944b-e07fc1f90ae6",
                                SERVE, "2026-11-15"),
                         ops[i].below);
    }
}
END_TEST

/*
 * Long IN lists, as long as IMC_FILTER_MAX_LEN lets them be: 100 random
 * UUIDs from a pool of 150 (so some repeat, half of the pool sharing the
 * first or the last 8 bytes), 300 days out of 600: every value of the
 * pool passes exactly when it is listed.
 */
START_TEST(match_long_in_list)
{
    enum { POOL = 150, UUIDS = 100, DAYS = 600, DAYS_LISTED = 300 };
    apr_uint64_t state = 0x9e3779b97f4a7c15;
    char uuids[POOL][IMC_SYNTAX_UUID_LEN + 1];
    char listed[DAYS];
    char *f = apr_palloc(pool, IMC_FILTER_MAX_LEN + 1), *at;
    const imc_filter *filter;
    int i, j;

    for (i = 0; i < POOL; i++) {
        apr_uint64_t a = imc_unit_random(&state), b = imc_unit_random(&state);

        if (i % 4 == 1) {
            a = 0x0123456789abcdef;
        } else if (i % 4 == 2) {
            b = 0xfedcba9876543210;
        }
        apr_snprintf(uuids[i], sizeof(uuids[i]),
                     "%08x-%04x-%04x-%04x-%012" APR_UINT64_T_HEX_FMT,
                     (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
                     (unsigned)a & 0xffff, (unsigned)(b >> 48),
                     b & APR_UINT64_C(0xffffffffffff));
    }
    memset(listed, 0, sizeof(listed));
    at = f + sprintf(f, "site_id IN(");
    for (j = 0; j < UUIDS; j++) {
        i = (int)(imc_unit_random(&state) % POOL);
        listed[i] = 1;
        at += sprintf(at, "%s'%s'", j ? "," : "", uuids[i]);
    }
    strcpy(at, ")");
    ck_assert_int_le(strlen(f), IMC_FILTER_MAX_LEN);
    filter = parsed(f);
    for (i = 0; i < POOL; i++) {
        ck_assert_msg(imc_filter_match(filter, uuids[i], SERVE, 0) == listed[i],
                      "%s", uuids[i]);
    }

    memset(listed, 0, sizeof(listed));
    at = f + sprintf(f, "day IN(");
    for (j = 0; j < DAYS_LISTED; j++) {
        char text[IMC_SYNTAX_DAY_TEXT_SIZE];

        i = (int)(imc_unit_random(&state) % DAYS);
        listed[i] = 1;
        imc_syntax_day_text(text, 20000 + i);
        at += sprintf(at, "%s'%s'", j ? "," : "", text);
    }
    strcpy(at, ")");
    ck_assert_int_le(strlen(f), IMC_FILTER_MAX_LEN);
    filter = parsed(f);
    for (i = -1; i <= DAYS; i++) {
        int want = i >= 0 && i < DAYS && listed[i];

        ck_assert_msg(imc_filter_match(filter, NULL, SOLVE, 20000 + i) == want,
                      "day %d", 20000 + i);
    }
}
END_TEST

START_TEST(match_aliases)
{
    static const char *const names[] = {"day", "time", "date",
                                        "DAY", "Time", "dAtE"};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *f =
            apr_pstrcat(pool, names[i], " > '2026-11-01' aNd ", names[i],
                        " IN ('2026-11-02', "
                        "'2026-11-09')",
                        NULL);

        PASS(f, U1, SERVE, "2026-11-02");
        PASS(f, U1, SERVE, "2026-11-09");
        FAIL(f, U1, SERVE, "2026-11-03");
    }
}
END_TEST

/* Every ordering of every pair of ch_order, both ways round. */
START_TEST(match_uuid_order)
{
    int i, j;

    for (i = 0; i < N_ORDER; i++) {
        const char *lt =
            apr_pstrcat(pool, "site_id < '", ch_order[i], "'", NULL);
        const char *le =
            apr_pstrcat(pool, "site_id <= '", ch_order[i], "'", NULL);
        const char *gt =
            apr_pstrcat(pool, "site_id > '", ch_order[i], "'", NULL);
        const char *ge =
            apr_pstrcat(pool, "site_id >= '", ch_order[i], "'", NULL);

        for (j = 0; j < N_ORDER; j++) {
            const char *u = ch_order[j];

            ck_assert_msg(passes(lt, u, SERVE, "2026-11-01") == (j < i),
                          "%s < %s", u, ch_order[i]);
            ck_assert_int_eq(passes(le, u, SERVE, "2026-11-01"), j <= i);
            ck_assert_int_eq(passes(gt, u, SERVE, "2026-11-01"), j > i);
            ck_assert_int_eq(passes(ge, u, SERVE, "2026-11-01"), j >= i);
        }
    }
    /* single cases of UUID order: match_cases */
}
END_TEST

/* The SQL made of a parsed literal is its canonical text (UUIDs with every
 * digit in every place, both types, the first and last days), and an
 * event of that value passes. */
START_TEST(match_literals_round_trip)
{
    static const char *const uuids[] = {"01234567-89ab-cdef-0123-456789abcdef",
                                        "fedcba98-7654-3210-fedc-ba9876543210",
                                        "00000000-0000-0000-0000-000000000000",
                                        "ffffffff-ffff-ffff-ffff-ffffffffffff"};
    size_t i;

    for (i = 0; i < sizeof(uuids) / sizeof(uuids[0]); i++) {
        const char *f = apr_pstrcat(pool, "site_id='", uuids[i], "'", NULL);

        check_ok(
            f, apr_pstrcat(pool, "(site_id = toUUID('", uuids[i], "'))", NULL));
        PASS(f, uuids[i], SERVE, "2026-11-01");
    }
    check_ok("type='serve'", "(type = 'serve')");
    check_ok("type='solve'", "(type = 'solve')");
    check_ok("day='1970-01-01'", "(toDate(time) = toDate('1970-01-01'))");
    check_ok("day='2105-12-31'", "(toDate(time) = toDate('2105-12-31'))");
    ck_assert_int_eq(imc_filter_match(parsed("day='1970-01-01'"), U1, SERVE, 0),
                     1);
    ck_assert_int_eq(imc_filter_match(parsed("day='2105-12-31'"), U1, SERVE,
                                      IMC_SYNTAX_LAST_DAY),
                     1);
    ck_assert_int_eq(
        imc_filter_match(parsed("day<'1970-01-02'"), U1, SERVE, -1), 1);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("imc_filter");
    TCase *ok = tcase_create("accepted");
    TCase *bad = tcase_create("rejected");
    TCase *match = tcase_create("match");

    tcase_add_checked_fixture(ok, setup, teardown);
    tcase_add_checked_fixture(bad, setup, teardown);
    tcase_add_checked_fixture(match, setup, teardown);
    tcase_add_test(ok, empty_filter);
    tcase_add_test(ok, prototype_example);
    tcase_add_test(ok, brief_example);
    tcase_add_test(ok, operators);
    tcase_add_test(ok, in_lists);
    tcase_add_test(ok, precedence);
    tcase_add_test(ok, chains);
    tcase_add_test(ok, parentheses);
    tcase_add_test(ok, case_and_aliases);
    tcase_add_test(ok, white_space);
    tcase_add_test(ok, literal_values);
    tcase_add_test(ok, quote_escapes);
    tcase_add_test(ok, columns_default_and_custom);
    tcase_add_test(ok, length_is_respected);
    tcase_add_test(ok, canonical_and_deterministic);
    tcase_add_test(bad, unknown_columns);
    tcase_add_test(bad, syntax_errors);
    tcase_add_test(bad, nul_bytes);
    tcase_add_test(bad, limit_length);
    tcase_add_test(bad, limit_depth);
    tcase_add_test(bad, limit_literals);
    tcase_add_test(bad, injections);
    tcase_add_test(bad, errors_quote_no_filter_bytes);
    suite_add_tcase(s, ok);
    tcase_add_test(match, match_empty);
    tcase_add_loop_test(match, match_case, 0, N_MATCH_CASES);
    tcase_add_test(match, match_operators);
    tcase_add_test(match, match_long_in_list);
    tcase_add_test(match, match_aliases);
    tcase_add_test(match, match_uuid_order);
    tcase_add_test(match, match_literals_round_trip);
    suite_add_tcase(s, bad);
    suite_add_tcase(s, match);
    return s;
}
