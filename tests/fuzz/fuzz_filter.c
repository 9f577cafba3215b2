/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_filter_compile, imc_filter_parse and
 * imc_filter_match.
 *
 * For every input: compiling twice gives the same answer, and parsing
 * answers as compiling did (accepted or refused with the same error). When
 * accepted, the SQL holds only bytes of a small set, its parentheses
 * balance, every quoted literal is exactly one canonical form in its
 * canonical wrapper (toUUID('<lower-case uuid>'), 'serve', 'solve',
 * toDate('YYYY-MM-DD')), and the SQL read back as a filter compiles to
 * itself; the filter and its SQL read back pass the same events (the
 * filter's first site literal and sites where the orders of UUIDs and of
 * their text part, both types, the days next to its first day literal),
 * and NOT (filter) passes exactly the others. When refused, the error is
 * well formed. Any violation aborts.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "imc_filter.h"
#include "imc_syntax.h"
#include "fuzz_common.h"

#define DAY_SQL "toDate(time)"

/* Sites where ClickHouse's order of UUIDs and the text's part. */
static const char *const sites[] = {"00000000-0000-0000-0000-000000000000",
                                    "ffffffff-ffff-ffff-0000-000000000000",
                                    "00000000-0000-0000-0000-000000000001",
                                    "00000000-0000-0000-8000-000000000000",
                                    "7fffffff-ffff-ffff-ffff-ffffffffffff"};

static const imc_filter_columns cols = {DAY_SQL, "site_id", "type"};
static int is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int is_uuid(const char *s, size_t n)
{
    size_t i;

    if (n != 36) {
        return 0;
    }
    for (i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;

        if (dash ? s[i] != '-' : !is_hex_lower(s[i])) {
            return 0;
        }
    }
    return 1;
}

static int is_date(const char *s, size_t n)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, m, d, i, leap;

    if (n != 10 || s[4] != '-' || s[7] != '-') {
        return 0;
    }
    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) {
            return 0;
        }
    }
    y = atoi(s);
    m = atoi(s + 5);
    d = atoi(s + 8);
    leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || y > 2105 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) {
        return 0;
    }
    return !(m == 2 && d == 29 && !leap);
}

/*
 * Check the literal whose opening quote is sql[q]; returns the offset of
 * its closing quote.
 */
static size_t check_literal(const char *sql, size_t q)
{
    const char *s = sql + q + 1;
    const char *e = strchr(s, '\'');
    size_t n;
    int uuid, date, type;

    must(e != NULL);
    n = (size_t)(e - s);
    uuid = is_uuid(s, n);
    date = is_date(s, n);
    type = (n == 5 && (!memcmp(s, "serve", 5) || !memcmp(s, "solve", 5)));
    must(uuid + date + type == 1);
    if (uuid) {
        must(q >= 7 && !memcmp(sql + q - 7, "toUUID(", 7) && e[1] == ')');
    } else if (date) {
        must(q >= 7 && !memcmp(sql + q - 7, "toDate(", 7) && e[1] == ')');
    } else {
        must(q == 0 || sql[q - 1] == ' ' || sql[q - 1] == '(');
    }
    return (size_t)(e - sql);
}

static void check_sql(const char *sql)
{
    size_t i;
    int depth = 0, literals = 0;

    for (i = 0; sql[i]; i++) {
        char c = sql[i];

        if (c == '\'') {
            i = check_literal(sql, i);
            literals++;
            continue;
        }
        must((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9') || strchr(" (),-=!<>_", c) != NULL);
        if (c == '(') {
            depth++;
        } else if (c == ')') {
            must(--depth >= 0);
        }
    }
    must(depth == 0);
    must(literals <= IMC_FILTER_MAX_LITERALS);
    must(strcmp(sql, "1") == 0 || sql[0] == '(');
}

static void check_error(const imc_filter_error *err, size_t size)
{
    const char *m;

    must(err->message != NULL && err->message[0] != '\0');
    must(err->kind >= IMC_FILTER_ESYNTAX && err->kind <= IMC_FILTER_ELIMIT);
    must(err->position >= -1 && (size_t)(err->position + 1) <= size + 1);
    for (m = err->message; *m; m++) {
        must(*m >= 0x20 && *m < 0x7f);
    }
    if (err->kind == IMC_FILTER_ECOLUMN) {
        must(err->column != NULL && err->column[0] != '\0');
        must(strlen(err->column) <= IMC_FILTER_MAX_COLUMN);
        for (m = err->column; *m; m++) {
            must((*m >= 'a' && *m <= 'z') || (*m >= 'A' && *m <= 'Z') ||
                 (*m >= '0' && *m <= '9') || *m == '_');
        }
    } else {
        must(err->column == NULL);
    }
}

/* The SQL read back as a filter: drop the wrappers, name the day column. */
static char *sql_to_filter(apr_pool_t *p, const char *sql, size_t *len)
{
    char *out = apr_palloc(p, strlen(sql) + 1);
    size_t n = 0;

    while (*sql) {
        if (!strncmp(sql, DAY_SQL, strlen(DAY_SQL))) {
            memcpy(out + n, "day", 3);
            n += 3;
            sql += strlen(DAY_SQL);
        } else if (!strncmp(sql, "toUUID('", 8) ||
                   !strncmp(sql, "toDate('", 8)) {
            const char *e = strchr(sql + 8, '\'');

            memcpy(out + n, sql + 7, (size_t)(e - sql) - 6);
            n += (size_t)(e - sql) - 6;
            sql = e + 2;
        } else {
            out[n++] = *sql++;
        }
    }
    out[n] = '\0';
    *len = n;
    return out;
}

/* The parse of f[0..n), which compile accepted. */
static const imc_filter *parse_ok(apr_pool_t *p, const char *f, size_t n)
{
    const imc_filter *filter = NULL;

    must(imc_filter_parse(p, f, n, &filter, NULL) == APR_SUCCESS);
    must(filter != NULL);
    return filter;
}

/* The first site literal of sql (or else a fixed one) into out (37). */
static void literal_site(const char *sql, char *out)
{
    const char *at = strstr(sql, "toUUID('");

    memcpy(out, at ? at + 8 : sites[0], 36);
    out[36] = '\0';
}

/* The day of the first day literal of sql (or else 20000). */
static int literal_day(const char *sql)
{
    const char *at = strstr(sql, "toDate('");
    apr_int64_t day = 20000;

    if (at) {
        must(imc_syntax_date_parse(at + 8, IMC_SYNTAX_DATE_LEN, &day) ==
             APR_SUCCESS);
    }
    return (int)day;
}

/*
 * f (as filter), its SQL read back (as back) and NOT (f) (as neg, NULL
 * when over the limits) over some events: the same answers, neg the
 * opposite ones; every answer 0 or 1.
 */
static void check_match(const imc_filter *filter, const imc_filter *back,
                        const imc_filter *neg, const char *sql)
{
    char site[37];
    int s, t, dd, day = literal_day(sql);

    literal_site(sql, site);
    for (s = -1; s < (int)(sizeof(sites) / sizeof(sites[0])); s++) {
        const char *u = s < 0 ? site : sites[s];

        for (t = 1; t <= 2; t++) {
            for (dd = -1; dd <= 1; dd++) {
                int a = imc_filter_match(filter, u, t, day + dd);

                must(a == 0 || a == 1);
                must(imc_filter_match(back, u, t, day + dd) == a);
                must(!neg || imc_filter_match(neg, u, t, day + dd) == !a);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *f = (const char *)data;
    const char *sql1 = NULL, *sql2 = NULL, *sql3 = NULL;
    const imc_filter *filter = NULL, *neg = NULL;
    imc_filter_error e1, e2, e3, e4;
    apr_status_t rv1, rv2, rv3, rv4;
    char *back, *negated;
    size_t blen;

    must(apr_pool_create(&p, root) == APR_SUCCESS);
    rv1 = imc_filter_compile(p, f, size, &cols, &sql1, &e1);
    rv2 = imc_filter_compile(p, f, size, &cols, &sql2, &e2);
    rv4 = imc_filter_parse(p, f, size, &filter, &e4);
    must(rv1 == rv2 && rv1 == rv4);
    must(rv1 == APR_SUCCESS || rv1 == APR_EINVAL);
    if (rv1 != APR_SUCCESS) {
        must(sql1 == NULL && sql2 == NULL && filter == NULL);
        check_error(&e1, size);
        must(e1.kind == e2.kind && e1.position == e2.position);
        must(strcmp(e1.message, e2.message) == 0);
        must(e1.kind == e4.kind && e1.position == e4.position);
        must(strcmp(e1.message, e4.message) == 0);
        must(e1.column ? e4.column && !strcmp(e1.column, e4.column)
                       : !e4.column);
        must(size <= IMC_FILTER_MAX_LEN || e1.kind == IMC_FILTER_ELIMIT);
        apr_pool_destroy(p);
        return 0;
    }
    must(filter != NULL);
    must(size <= IMC_FILTER_MAX_LEN);
    must(sql1 != NULL && sql2 != NULL && strcmp(sql1, sql2) == 0);
    check_sql(sql1);
    if (strcmp(sql1, "1") == 0) {
        for (blen = 0; blen < size; blen++) {
            must(strchr(" \t\r\n", f[blen]) != NULL && f[blen] != '\0');
        }
        must(imc_filter_match(filter, NULL, 1, 0) == 1);
        apr_pool_destroy(p);
        return 0;
    }
    /* the canonical form is a fixed point, within the limits */
    back = sql_to_filter(p, sql1, &blen);
    rv3 = imc_filter_compile(p, back, blen, &cols, &sql3, &e3);
    if (rv3 == APR_SUCCESS) {
        must(strcmp(sql3, sql1) == 0);
        negated =
            apr_pstrcat(p, "NOT (", apr_pstrmemdup(p, f, size), ")", NULL);
        rv4 = imc_filter_parse(p, negated, strlen(negated), &neg, &e4);
        must(rv4 == APR_SUCCESS || e4.kind == IMC_FILTER_ELIMIT);
        check_match(filter, parse_ok(p, back, blen), neg, sql1);
    } else {
        must(e3.kind == IMC_FILTER_ELIMIT);
    }
    apr_pool_destroy(p);
    return 0;
}
