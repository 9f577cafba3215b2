/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_filter_compile.
 *
 * For every input: compiling twice gives the same answer. When accepted,
 * the SQL holds only bytes of a small set, its parentheses balance, every
 * quoted literal is exactly one canonical form in its canonical wrapper
 * (toUUID('<lower-case uuid>'), 'serve', 'solve', toDate('YYYY-MM-DD')),
 * and the SQL read back as a filter compiles to itself. When refused, the
 * error is well formed. Any violation aborts.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imc_filter.h"
#include "fuzz_common.h"

#define DAY_SQL "toDate(time)"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *f = (const char *)data;
    const char *sql1 = NULL, *sql2 = NULL, *sql3 = NULL;
    imc_filter_error e1, e2, e3;
    apr_status_t rv1, rv2, rv3;
    char *back;
    size_t blen;

    must(apr_pool_create(&p, root) == APR_SUCCESS);
    rv1 = imc_filter_compile(p, f, size, &cols, &sql1, &e1);
    rv2 = imc_filter_compile(p, f, size, &cols, &sql2, &e2);
    must(rv1 == rv2);
    must(rv1 == APR_SUCCESS || rv1 == APR_EINVAL);
    if (rv1 != APR_SUCCESS) {
        must(sql1 == NULL && sql2 == NULL);
        check_error(&e1, size);
        must(e1.kind == e2.kind && e1.position == e2.position);
        must(strcmp(e1.message, e2.message) == 0);
        must(size <= IMC_FILTER_MAX_LEN || e1.kind == IMC_FILTER_ELIMIT);
        apr_pool_destroy(p);
        return 0;
    }
    must(size <= IMC_FILTER_MAX_LEN);
    must(sql1 != NULL && sql2 != NULL && strcmp(sql1, sql2) == 0);
    check_sql(sql1);
    if (strcmp(sql1, "1") == 0) {
        for (blen = 0; blen < size; blen++) {
            must(strchr(" \t\r\n", f[blen]) != NULL && f[blen] != '\0');
        }
        apr_pool_destroy(p);
        return 0;
    }
    /* the canonical form is a fixed point, within the limits */
    back = sql_to_filter(p, sql1, &blen);
    rv3 = imc_filter_compile(p, back, blen, &cols, &sql3, &e3);
    if (rv3 == APR_SUCCESS) {
        must(strcmp(sql3, sql1) == 0);
    } else {
        must(e3.kind == IMC_FILTER_ELIMIT);
    }
    apr_pool_destroy(p);
    return 0;
}
