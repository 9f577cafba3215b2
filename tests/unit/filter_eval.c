/* Licensed under the Apache License, Version 2.0. */

/*
 * filter_eval: imc_filter_compile and imc_filter_match side by side, for
 * tests that ask ClickHouse the same question (tests/integration/
 * test_filter_eval.py).
 *
 *     build/filter_eval DAY_SQL ROWS < FILTERS
 *
 * DAY_SQL is the SQL of the day column (e.g. "toDate(time, 'UTC')");
 * site_id and type are themselves. ROWS holds one event a line: its site
 * (canonical UUID text), its type (serve or solve) and its day (days since
 * 1970-01-01), separated by tabs. FILTERS holds one filter a line, in
 * hexadecimal (so that any byte may be in it). For each filter one line
 * is written:
 *
 *     ok <TAB> SQL <TAB> indexes of the rows that pass, space-separated
 *     error <TAB> kind <TAB> position <TAB> message
 *
 * imc_filter_parse must answer as imc_filter_compile did (the same status,
 * the same error): when it does not, the program says so and exits 2.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "imc_filter.h"

typedef struct {
    char site[40];
    int type;
    int day;
} row;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "filter_eval: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    exit(2);
}

static apr_array_header_t *read_rows(apr_pool_t *p, const char *path)
{
    apr_array_header_t *rows = apr_array_make(p, 256, sizeof(row));
    FILE *in = fopen(path, "r");
    char type[8], line[256];

    if (!in) {
        die("cannot open", path);
    }
    while (fgets(line, sizeof(line), in)) {
        row *r = apr_array_push(rows);

        if (sscanf(line, "%36s\t%7s\t%d", r->site, type, &r->day) != 3) {
            die("bad row", line);
        }
        if (strcmp(type, "serve") == 0) {
            r->type = IMC_FILTER_SERVE;
        } else if (strcmp(type, "solve") == 0) {
            r->type = IMC_FILTER_SOLVE;
        } else {
            die("bad type", type);
        }
    }
    fclose(in);
    return rows;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    die("bad hexadecimal filter", NULL);
    return 0;
}

/* The filter of the hexadecimal line s (n bytes) into out; its length. */
static size_t unhex(const char *s, size_t n, char *out)
{
    size_t i;

    if (n % 2) {
        die("odd hexadecimal filter", NULL);
    }
    for (i = 0; i < n / 2; i++) {
        out[i] = (char)(hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]));
    }
    return n / 2;
}

static int same_error(const imc_filter_error *a, const imc_filter_error *b)
{
    return a->kind == b->kind && a->position == b->position &&
           strcmp(a->message, b->message) == 0 &&
           (a->column ? b->column && strcmp(a->column, b->column) == 0
                      : !b->column);
}

/* Compile and parse one filter; write its line. */
static void one_filter(apr_pool_t *p, const imc_filter_columns *cols,
                       const apr_array_header_t *rows, const char *f,
                       size_t len)
{
    const imc_filter *filter = NULL;
    const char *sql = NULL;
    imc_filter_error e1, e2;
    apr_status_t rv1, rv2;
    int i, first = 1;

    rv1 = imc_filter_compile(p, f, len, cols, &sql, &e1);
    rv2 = imc_filter_parse(p, f, len, &filter, &e2);
    if (rv1 != rv2) {
        die("compile and parse disagree on acceptance", NULL);
    }
    if (rv1 != APR_SUCCESS) {
        if (!same_error(&e1, &e2) || filter) {
            die("compile and parse disagree on the error", e1.message);
        }
        printf("error\t%d\t%d\t%s\n", e1.kind, e1.position, e1.message);
        return;
    }
    printf("ok\t%s\t", sql);
    for (i = 0; i < rows->nelts; i++) {
        const row *r = &APR_ARRAY_IDX(rows, i, row);

        if (imc_filter_match(filter, r->site, r->type, r->day)) {
            printf(first ? "%d" : " %d", i);
            first = 0;
        }
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    apr_pool_t *p, *sub;
    apr_array_header_t *rows;
    imc_filter_columns cols;
    char *line = NULL, *f;
    size_t cap = 0;
    ssize_t n;

    if (argc != 3) {
        die("usage: filter_eval DAY_SQL ROWS < FILTERS", NULL);
    }
    if (apr_initialize() != APR_SUCCESS ||
        apr_pool_create(&p, NULL) != APR_SUCCESS ||
        apr_pool_create(&sub, p) != APR_SUCCESS) {
        die("cannot initialise APR", NULL);
    }
    cols.day = argv[1];
    cols.site_id = "site_id";
    cols.type = "type";
    rows = read_rows(p, argv[2]);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n && line[n - 1] == '\n') {
            n--;
        }
        f = apr_palloc(sub, (size_t)n / 2 + 1);
        one_filter(sub, &cols, rows, f, unhex(line, (size_t)n, f));
        apr_pool_clear(sub);
    }
    free(line);
    fflush(stdout);
    apr_terminate();
    return ferror(stdout) ? 2 : 0;
}
