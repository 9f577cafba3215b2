/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report_buckets: the report per interval, grouping and metrics. See
 * imc_report_buckets.h.
 */

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <apr_hash.h>
#include <apr_strings.h>
#include <http_protocol.h>

#include "imc_private.h"
#include "imc_bucket.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_rcache.h"
#include "imc_report_buckets.h"
#include "imc_report_client.h"
#include "imc_report_private.h"

#define DAY 86400
/* Local seconds are shifted by this in the query so that they are never
 * negative (no offset is below -26 hours): intDiv then rounds down. */
#define SHIFT (2 * DAY)

/* A site_id as two UInt64s, beside IMC_REPORT_UUID_HALVES. */
#define SITE_HALVES                                                            \
    "reinterpretAsUInt64(reinterpretAsString(site_id)), "                      \
    "reinterpretAsUInt64(substring(reinterpretAsString(site_id), 9, 8))"

/* A procedure's event time in milliseconds (conf/schema.sql: time_ms). */
#define MS_SQL "(toUInt64(time) * 1000 + time_ms)"

/* The figures a row's metrics are computed from: distinct procedures
 * served and solved; of those served, how many are not solved in time,
 * and over those solved in time, how many, their solve times added and
 * the nearest-rank p50 and p90 (milliseconds). */
typedef struct {
    apr_uint64_t served, solved, unsolved;
    apr_uint64_t timed, sum_ms, p50_ms, p90_ms;
} bk_counts;

typedef struct {
    apr_int64_t start; /* the bucket's first instant: the rows' order */
    const char *label; /* imc_bucket_label; "" for total */
    const char *site;  /* NULL with by=none */
    bk_counts n;
    /* A span's row with the solve window's metrics (imc_report_buckets_
     * by_spans): the procedures served, and the solve times (ms, sorted)
     * of those solved in time. */
    apr_uint64_t procs;
    apr_array_header_t *times; /* apr_uint32_t; NULL: none */
} bk_row;

struct imc_report_buckets {
    const imc_report_form *form;
    apr_array_header_t *rows; /* bk_row, in order */
    int over;                 /* more rows than max_rows */
    bk_counts totals;
    int has_previous;
    int prev_from, prev_to; /* day numbers */
    bk_counts previous;
};

/* The instants [lo, hi] a report looks at; empty when none. */
typedef struct {
    apr_int64_t lo, hi;
    int empty;
} bk_span;

static apr_int64_t clamp_time(apr_int64_t t)
{
    return t < 0 ? 0 : t > IMC_RCACHE_TIME_MAX ? IMC_RCACHE_TIME_MAX : t;
}

/* The instants of the local days [from, to] (either IMC_RCACHE_NO_DAY:
 * open), within ClickHouse's DateTime. */
static bk_span days_span(const imc_zone *z, int from, int to)
{
    apr_int64_t lo = from == IMC_RCACHE_NO_DAY
                         ? 0
                         : imc_zone_local_to_utc(z, (apr_int64_t)from * DAY);
    apr_int64_t hi =
        to == IMC_RCACHE_NO_DAY
            ? IMC_RCACHE_TIME_MAX
            : imc_zone_local_to_utc(z, ((apr_int64_t)to + 1) * DAY) - 1;
    bk_span s;

    s.empty = lo > hi || hi < 0 || lo > IMC_RCACHE_TIME_MAX;
    s.lo = clamp_time(lo);
    s.hi = clamp_time(hi);
    return s;
}

/* The events the report counts: the filter's, within the span. */
static const char *span_where(apr_pool_t *p, const char *where,
                              const bk_span *s)
{
    return apr_psprintf(p,
                        "(%s) AND time >= toDateTime(%" APR_INT64_T_FMT
                        ") AND time <= toDateTime(%" APR_INT64_T_FMT ")",
                        where, s->lo, s->hi);
}

static apr_status_t run_query(request_rec *r, imc_clickhouse *ch,
                              const char *sql, imc_clickhouse_result *res)
{
    apr_status_t rv = imc_clickhouse_query(ch, r->pool, sql, NULL, res);

    imc_metrics_observe(IMC_H_CLICKHOUSE, res->elapsed);
    return rv;
}

/* Narrows *s to the first and last times of the events it admits (one
 * query): the zone's transitions are written out only for those. */
static apr_status_t data_span(request_rec *r, const imc_config *c,
                              imc_clickhouse *ch, const char *where, bk_span *s,
                              imc_clickhouse_result *res)
{
    const char *sql = apr_pstrcat(
        r->pool,
        "SELECT toUInt32(min(time)), toUInt32(max(time)), count() FROM ",
        imc_config_database(c), ".events WHERE ", span_where(r->pool, where, s),
        " FORMAT TabSeparated", NULL);
    apr_uint64_t lo, hi, n;
    apr_status_t rv;
    char *pos, *line, *f[3], *end;
    int cut = 0;

    if ((rv = run_query(r, ch, sql, res)) != APR_SUCCESS) {
        return rv;
    }
    pos = (char *)res->body;
    line = imc_report_next_line(&pos, &cut);
    end = line ? line + strlen(line) : NULL;
    if (!line || *pos || imc_report_split_tabs(line, f, 3) != 3 ||
        !imc_report_parse_uint(f[0], IMC_RCACHE_TIME_MAX, &lo) ||
        !imc_report_parse_uint(f[1], IMC_RCACHE_TIME_MAX, &hi) ||
        !imc_report_parse_uint(f[2], APR_UINT64_MAX, &n)) {
        return imc_report_malformed(r, "span query", 1, line, end);
    }
    s->empty = n == 0;
    s->lo = (apr_int64_t)lo;
    s->hi = (apr_int64_t)hi;
    return APR_SUCCESS;
}

/* The zone's offset at an event's time over the span, as SQL: one
 * number, or a multiIf over the transitions inside the span. */
static const char *offset_sql(apr_pool_t *p, const imc_zone *z,
                              const bk_span *s)
{
    apr_array_header_t *parts = apr_array_make(p, 8, sizeof(const char *));
    apr_int64_t since, until;
    int off = imc_zone_span(z, s->lo, &since, &until);

    while (until <= s->hi) {
        APR_ARRAY_PUSH(parts, const char *) = apr_psprintf(
            p, "toUInt32(time) < %" APR_INT64_T_FMT ", %d, ", until, off);
        off = imc_zone_span(z, until, &since, &until);
    }
    if (!parts->nelts) {
        return apr_psprintf(p, "%d", off);
    }
    return apr_psprintf(p, "multiIf(%s%d)", apr_array_pstrcat(p, parts, 0),
                        off);
}

/* The GROUP BY keys of the interval's buckets from the offset's SQL: the
 * local unit (NULL for total) and, for minute and hour buckets, the offset
 * too where it changes in the span (else NULL): a constant offset is no
 * key (a number alone in GROUP BY is a column's position on current
 * releases). */
static const char *key_parts(apr_pool_t *p, imc_bucket_interval iv,
                             const char *off, const char **by_off)
{
    const char *ls =
        apr_psprintf(p, "(toInt64(toUInt32(time)) + (%s) + %d)", off, SHIFT);
    const char *day = apr_psprintf(p, "intDiv(%s, %d)", ls, DAY);

    *by_off = NULL;
    switch (iv) {
        case IMC_BUCKET_MINUTE:
        case IMC_BUCKET_HOUR:
            *by_off = strncmp(off, "multiIf(", 8) ? NULL : off;
            return apr_psprintf(p, "intDiv(%s, %d)", ls,
                                iv == IMC_BUCKET_MINUTE ? 60 : 3600);
        case IMC_BUCKET_DAY:
            return day;
        case IMC_BUCKET_WEEK: /* day + 1: 1969-12-29, a Monday, is 0 */
            return apr_psprintf(p, "intDiv(%s + 1, 7)", day);
        case IMC_BUCKET_MONTH: /* 1969-12 west of UTC: before any Date */
            return apr_psprintf(
                p,
                "if(%s < 2, -1, toInt32(toUInt16(toStartOfMonth("
                "toDate(toUInt16(%s - 2))))))",
                day, day);
        default:
            return NULL;
    }
}

/* The GROUP BY keys of the interval's buckets (NULL for total). */
static const char *keys_sql(apr_pool_t *p, imc_bucket_interval iv,
                            const char *off)
{
    const char *by_off, *unit = key_parts(p, iv, off, &by_off);

    return unit && by_off ? apr_pstrcat(p, unit, ", ", by_off, NULL) : unit;
}

/* What uniqExact counts for distinct procedures: (site, correlation id)
 * pairs over all sites, the correlation id within a site. */
static const char *procedure_sql(const imc_report_form *f)
{
    if (f->params->by_site) {
        return f->procedure;
    }
    return !strcmp(f->procedure, IMC_REPORT_UUID_HALVES)
               ? SITE_HALVES ", " IMC_REPORT_UUID_HALVES
               : "site_id, correlation_id";
}

static const char *build_sql(apr_pool_t *p, const imc_config *c,
                             const imc_report_form *f, const char *where,
                             const bk_span *s)
{
    const imc_rparams *pr = f->params;
    const char *keys = keys_sql(p, pr->interval, offset_sql(p, f->zone, s));
    const char *proc = procedure_sql(f);
    const char *group = NULL;

    if (keys && pr->by_site) {
        group = apr_pstrcat(p, keys, ", site_id", NULL);
    } else {
        group = keys ? keys : pr->by_site ? "site_id" : NULL;
    }
    return apr_pstrcat(p, "SELECT min(toUInt32(time)), ",
                       pr->by_site ? "toString(site_id), " : "", "uniqExactIf(",
                       proc, ", type = 'serve'), uniqExactIf(", proc,
                       ", type = 'solve') FROM ", imc_config_database(c),
                       ".events WHERE ", span_where(p, where, s),
                       group ? " GROUP BY " : "", group ? group : "",
                       apr_psprintf(p, " LIMIT %d", f->max_rows + 1),
                       " FORMAT TabSeparated", NULL);
}

/* One line of the answer into row; 0 when it does not parse. */
static int parse_row(apr_pool_t *p, const imc_report_form *f, char *line,
                     bk_row *row)
{
    int by_site = f->params->by_site, n = by_site ? 4 : 3;
    imc_bucket_interval iv = f->params->interval;
    apr_uint64_t t;
    char *fl[4], *label;

    memset(row, 0, sizeof(*row));
    if (imc_report_split_tabs(line, fl, 4) != n ||
        !imc_report_parse_uint(fl[0], IMC_RCACHE_TIME_MAX, &t) ||
        (by_site && !imc_report_parse_site(fl[1])) ||
        !imc_report_parse_uint(fl[n - 2], APR_UINT64_MAX, &row->n.served) ||
        !imc_report_parse_uint(fl[n - 1], APR_UINT64_MAX, &row->n.solved)) {
        return 0;
    }
    label = apr_palloc(p, IMC_BUCKET_LABEL_SIZE);
    imc_bucket_label(label, f->zone, iv, (apr_int64_t)t);
    row->label = label;
    row->start = imc_bucket_start(f->zone, iv, (apr_int64_t)t);
    row->site = by_site ? fl[1] : NULL;
    return 1;
}

/* Rows of the answer in body into rows. A row without events (the one
 * row of an aggregate without GROUP BY over nothing) is none. */
static apr_status_t parse_rows(request_rec *r, const imc_report_form *f,
                               char *body, apr_array_header_t *rows)
{
    char *pos = body, *line;
    int lineno = 0, cut = 0;

    while ((line = imc_report_next_line(&pos, &cut)) != NULL) {
        bk_row row;
        char *end = line + strlen(line);

        ++lineno;
        if (!parse_row(r->pool, f, line, &row)) {
            return imc_report_malformed(r, "report query", lineno, line, end);
        }
        if (row.n.served || row.n.solved) {
            *(bk_row *)apr_array_push(rows) = row;
        }
    }
    return cut ? imc_report_malformed(r, "report query", lineno + 1, NULL, NULL)
               : APR_SUCCESS;
}

static int row_order(const void *a, const void *b)
{
    const bk_row *x = a, *y = b;

    if (x->start != y->start) {
        return x->start < y->start ? -1 : 1;
    }
    return x->site && y->site ? strcmp(x->site, y->site) : 0;
}

/* ------------------------------------------------------ solve window */

/* Whether the window's query has a GROUP BY: only for rows (per_row),
 * and not for one row over everything it admits. */
static int window_grouped(const imc_report_form *f, int per_row)
{
    return per_row &&
           (f->params->interval != IMC_BUCKET_TOTAL || f->params->by_site);
}

/* The solve window's query (README "Report"), without a join. Per
 * procedure (one GROUP BY: ClickHouse spills it to disk past half the
 * query's memory, where a join's table cannot spill): its serves as
 * sorted (bucket keys, ms, instant) tuples (imc_sv), its solves' times
 * sorted (imc_vs). The first tuple of each bucket (imc_f) gives S, the
 * bucket's earliest serve (imc_s), and the row's instant (imc_t); the
 * first solve at or after S (imc_i) solves it in time when it is within
 * the window (imc_ok), after imc_d milliseconds. Both kinds are the
 * events the report admits. Then per row (per_row), over all the rows
 * together (totals), or both (WITH TOTALS): procedures served, solved in
 * time, their times added, and the nearest-rank p50 and p90 of the
 * sorted times (imc_rparams_rank_sql's integer ceiling). */
static const char *window_sql(apr_pool_t *p, const imc_config *c,
                              const imc_report_form *f, const bk_span *s,
                              int per_row, int totals, int values)
{
    const char *by_off, *unit = key_parts(p, f->params->interval,
                                          offset_sql(p, f->zone, s), &by_off);
    int nkeys = unit ? by_off ? 2 : 1 : 0, by_site = f->params->by_site;
    const char *keys = "", *names = "", *group = NULL, *first, *each;
    const char *ts = "arraySort(groupArrayIf(imc_d, imc_ok))";

    if (nkeys) {
        keys = apr_pstrcat(p, unit, ", ", by_off ? by_off : "",
                           by_off ? ", " : "", NULL);
        names = nkeys == 2 ? "imc_f.1 AS imc_k0, imc_f.2 AS imc_k1, "
                           : "imc_f.1 AS imc_k0, ";
    }
    /* a serve opens its bucket when it is the first tuple or its keys
     * differ from the tuple before it */
    first = nkeys == 0   ? "imc_j = 1"
            : nkeys == 1 ? "imc_j = 1 OR imc_x.1 != imc_sv[imc_j - 1].1"
                         : "imc_j = 1 OR imc_x.1 != imc_sv[imc_j - 1].1 OR "
                           "imc_x.2 != imc_sv[imc_j - 1].2";
    if (window_grouped(f, per_row)) {
        group = nkeys == 2 ? "imc_k0, imc_k1" : nkeys ? "imc_k0" : "";
        group = apr_pstrcat(
            p, " GROUP BY ", group, nkeys && by_site ? ", " : "",
            by_site ? "site_id" : "", totals ? " WITH TOTALS" : "", NULL);
    }
    each = apr_pstrcat(
        p, "SELECT ", names, "site_id, ",
        apr_psprintf(p, "imc_f.%d AS imc_s, imc_f.%d AS imc_t, ", nkeys + 1,
                     nkeys + 2),
        "arrayFirstIndex(imc_v -> imc_v >= imc_s, imc_vs) AS imc_i, "
        "imc_i > 0 AND imc_vs[imc_i] <= imc_s + ",
        apr_psprintf(
            p, "%" APR_UINT64_T_FMT,
            (apr_uint64_t)apr_time_as_msec(imc_config_solve_window(c))),
        " AS imc_ok, imc_vs[imc_i] - imc_s AS imc_d FROM (SELECT site_id, "
        "arraySort(groupArrayIf((",
        keys, MS_SQL,
        ", toUInt32(time)), type = 'serve')) AS imc_sv, "
        "arraySort(groupArrayIf(",
        MS_SQL, ", type = 'solve')) AS imc_vs FROM ", imc_config_database(c),
        ".events WHERE ", span_where(p, f->where, s),
        " GROUP BY site_id, correlation_id HAVING notEmpty(imc_sv)) "
        "ARRAY JOIN arrayFilter((imc_x, imc_j) -> ",
        first, ", imc_sv, arrayEnumerate(imc_sv)) AS imc_f", NULL);
    return apr_pstrcat(
        p, "SELECT min(imc_t), ", group && by_site ? "toString(site_id), " : "",
        values ? apr_pstrcat(p, "count(), ", ts, NULL)
               : apr_pstrcat(
                     p,
                     "count(), countIf(imc_ok), sumIf(imc_d, "
                     "imc_ok), ",
                     ts, "[", imc_rparams_rank_sql(p, 5, "countIf(imc_ok)"),
                     "], ", ts, "[",
                     imc_rparams_rank_sql(p, 9, "countIf(imc_ok)"), "]", NULL),
        " FROM (", each, ")", group ? group : "",
        apr_psprintf(p, " LIMIT %d", f->max_rows + 1),
        apr_psprintf(p,
                     " SETTINGS max_bytes_before_external_group_by = "
                     "%" APR_UINT64_T_FMT,
                     IMC_REPORT_QUERY_MEMORY / 2),
        " FORMAT TabSeparated", NULL);
}

/* The five figures of a window line (procedures, solved in time, sum,
 * p50, p90) into n; 0 when they do not parse. */
static int parse_window(char **fl, bk_counts *n)
{
    apr_uint64_t procs;

    if (!imc_report_parse_uint(fl[0], APR_UINT64_MAX, &procs) ||
        !imc_report_parse_uint(fl[1], procs, &n->timed) ||
        !imc_report_parse_uint(fl[2], APR_UINT64_MAX, &n->sum_ms) ||
        !imc_report_parse_uint(fl[3], APR_UINT64_MAX, &n->p50_ms) ||
        !imc_report_parse_uint(fl[4], APR_UINT64_MAX, &n->p90_ms)) {
        return 0;
    }
    n->unsolved = procs - n->timed;
    return 1;
}

/* The window's figures of each bucket (and site) into the row of rows
 * (unless NULL) with its label (and site). A bucket has a line only where
 * something was served, and then a row: one that has none (an event that
 * arrived between the two queries) is left out. With totals (not NULL), the
 * figures over all the rows' procedures together go there too: the
 * totals line that follows an empty one, or the one line of a query
 * without GROUP BY (an answer without lines admitted nothing: they stay
 * as they are). */
static apr_status_t window_rows(request_rec *r, const imc_config *c,
                                imc_clickhouse *ch, const imc_report_form *f,
                                const bk_span *s, apr_array_header_t *rows,
                                bk_counts *totals, imc_clickhouse_result *res)
{
    int grouped = window_grouped(f, rows != NULL), in_totals = 0;
    int by_site = grouped && f->params->by_site, n = by_site ? 7 : 6;
    int lineno = 0, cut = 0;
    apr_hash_t *cells = apr_hash_make(r->pool);
    char *pos, *line, *fl[7], label[IMC_BUCKET_LABEL_SIZE];
    apr_status_t rv;
    apr_uint64_t t;
    int i;

    for (i = 0; rows && i < rows->nelts; ++i) {
        bk_row *row = &APR_ARRAY_IDX(rows, i, bk_row);

        apr_hash_set(cells,
                     apr_pstrcat(r->pool, row->label, "\t",
                                 row->site ? row->site : "", NULL),
                     APR_HASH_KEY_STRING, row);
    }
    if ((rv = run_query(
             r, ch,
             window_sql(r->pool, c, f, s, rows != NULL, totals != NULL, 0),
             res)) != APR_SUCCESS) {
        return rv;
    }
    pos = (char *)res->body;
    while ((line = imc_report_next_line(&pos, &cut)) != NULL) {
        char *end = line + strlen(line);
        bk_counts w;
        bk_row *row;

        ++lineno;
        if (!*line && totals && grouped && !in_totals) {
            in_totals = 1; /* the totals line comes next, and last */
            continue;
        }
        memset(&w, 0, sizeof(w));
        if (in_totals > 1 || imc_report_split_tabs(line, fl, 7) != n ||
            !imc_report_parse_uint(fl[0], IMC_RCACHE_TIME_MAX, &t) ||
            (by_site && !imc_report_parse_site(fl[1])) ||
            !parse_window(fl + n - 5, &w)) {
            return imc_report_malformed(r, "solve window query", lineno, line,
                                        end);
        }
        if (in_totals) {
            *totals = w;
            in_totals = 2;
            continue;
        }
        if (totals && !grouped) {
            *totals = w;
        }
        if (!rows) {
            continue;
        }
        imc_bucket_label(label, f->zone, f->params->interval, (apr_int64_t)t);
        row = apr_hash_get(
            cells,
            apr_pstrcat(r->pool, label, "\t", by_site ? fl[1] : "", NULL),
            APR_HASH_KEY_STRING);
        if (row) {
            w.served = row->n.served;
            w.solved = row->n.solved;
            row->n = w;
        }
    }
    if (!cut && totals && grouped && lineno && in_totals != 2) {
        cut = 1; /* rows without their totals line: the answer ended early */
    }
    return cut ? imc_report_malformed(r, "solve window query", lineno + 1, NULL,
                                      NULL)
               : APR_SUCCESS;
}

/* An array of ClickHouse's TabSeparated text ("[1,2,3]") of numbers of
 * at most max into *out (apr_uint32_t); 0 when it does not parse. */
static int parse_times(apr_pool_t *p, const char *s, apr_uint64_t max,
                       apr_array_header_t **out)
{
    apr_uint64_t v;
    const char *q;
    char *num;

    *out = apr_array_make(p, 16, sizeof(apr_uint32_t));
    if (*s++ != '[') {
        return 0;
    }
    if (*s == ']') {
        return !s[1];
    }
    for (;;) {
        for (q = s; *q >= '0' && *q <= '9'; ++q) {
        }
        num = apr_pstrmemdup(p, s, (apr_size_t)(q - s));
        if (!imc_report_parse_uint(num, max, &v) || (*q != ',' && *q != ']')) {
            return 0;
        }
        APR_ARRAY_PUSH(*out, apr_uint32_t) = (apr_uint32_t)v;
        if (*q == ']') {
            return !q[1];
        }
        s = q + 1;
    }
}

/* The solve window's procedures and sorted solve times of each bucket and
 * site into the rows (by site) of rows, for spans (values kept). */
static apr_status_t values_rows(request_rec *r, const imc_config *c,
                                imc_clickhouse *ch, const imc_report_form *f,
                                const bk_span *s, apr_array_header_t *rows,
                                imc_clickhouse_result *res)
{
    apr_uint64_t window =
        (apr_uint64_t)apr_time_as_msec(imc_config_solve_window(c));
    apr_hash_t *cells = apr_hash_make(r->pool);
    char *pos, *line, *fl[4], label[IMC_BUCKET_LABEL_SIZE];
    int lineno = 0, cut = 0, i;
    apr_uint64_t t, procs;
    apr_status_t rv;

    for (i = 0; i < rows->nelts; ++i) {
        bk_row *row = &APR_ARRAY_IDX(rows, i, bk_row);

        apr_hash_set(cells,
                     apr_pstrcat(r->pool, row->label, "\t", row->site, NULL),
                     APR_HASH_KEY_STRING, row);
    }
    if ((rv = run_query(r, ch, window_sql(r->pool, c, f, s, 1, 0, 1), res)) !=
        APR_SUCCESS) {
        return rv;
    }
    pos = (char *)res->body;
    while ((line = imc_report_next_line(&pos, &cut)) != NULL) {
        char *end = line + strlen(line);
        apr_array_header_t *times;
        bk_row *row;

        ++lineno;
        if (imc_report_split_tabs(line, fl, 4) != 4 ||
            !imc_report_parse_uint(fl[0], IMC_RCACHE_TIME_MAX, &t) ||
            !imc_report_parse_site(fl[1]) ||
            !imc_report_parse_uint(fl[2], APR_UINT64_MAX, &procs) ||
            !parse_times(r->pool, fl[3], window, &times) ||
            (apr_uint64_t)times->nelts > procs) {
            return imc_report_malformed(r, "solve window query", lineno, line,
                                        end);
        }
        imc_bucket_label(label, f->zone, f->params->interval, (apr_int64_t)t);
        row =
            apr_hash_get(cells, apr_pstrcat(r->pool, label, "\t", fl[1], NULL),
                         APR_HASH_KEY_STRING);
        if (row) {
            row->procs = procs;
            row->times = times;
        }
    }
    return cut ? imc_report_malformed(r, "solve window query", lineno + 1, NULL,
                                      NULL)
               : APR_SUCCESS;
}

/* The rows of the local days [from, to] (either may be open) into rows,
 * in order; *over when ClickHouse had more than max_rows. With win, the
 * rows carry the solve window's figures; with wtotals (not NULL), the
 * window's figures over all the rows go there (left alone when nothing
 * is admitted). */
static apr_status_t period_rows(request_rec *r, const imc_config *c,
                                imc_clickhouse *ch, const imc_report_form *f,
                                int from, int to, int win, bk_counts *wtotals,
                                int values, apr_array_header_t **rows,
                                int *over, imc_clickhouse_result *res)
{
    bk_span s = days_span(f->zone, from, to);
    apr_status_t rv;

    *rows = apr_array_make(r->pool, 64, sizeof(bk_row));
    *over = 0;
    if (!s.empty && (from == IMC_RCACHE_NO_DAY || to == IMC_RCACHE_NO_DAY) &&
        (rv = data_span(r, c, ch, f->where, &s, res)) != APR_SUCCESS) {
        return rv;
    }
    if (s.empty) {
        return APR_SUCCESS;
    }
    rv = run_query(r, ch, build_sql(r->pool, c, f, f->where, &s), res);
    if (rv == APR_SUCCESS) {
        rv = parse_rows(r, f, (char *)res->body, *rows);
    }
    if (rv == APR_SUCCESS && (*rows)->nelts > f->max_rows) {
        *over = 1;
    }
    qsort((*rows)->elts, (size_t)(*rows)->nelts, sizeof(bk_row), row_order);
    if (rv == APR_SUCCESS && !*over && values && (*rows)->nelts) {
        rv = values_rows(r, c, ch, f, &s, *rows, res);
    } else if (rv == APR_SUCCESS && !*over && (win || wtotals) &&
               (*rows)->nelts) {
        rv = window_rows(r, c, ch, f, &s, win ? *rows : NULL, wtotals, res);
    }
    return rv;
}

/* The solve times of w (a window's figures over all) into n. */
static void take_times(bk_counts *n, const bk_counts *w)
{
    n->timed = w->timed;
    n->sum_ms = w->sum_ms;
    n->p50_ms = w->p50_ms;
    n->p90_ms = w->p90_ms;
}

static void add_counts(bk_counts *sum, const bk_counts *n)
{
    sum->served += n->served;
    sum->solved += n->solved;
    sum->unsolved += n->unsolved;
}

static bk_counts sum_rows(const apr_array_header_t *rows)
{
    bk_counts sum;
    int i;

    memset(&sum, 0, sizeof(sum));
    for (i = 0; i < rows->nelts; ++i) {
        add_counts(&sum, &APR_ARRAY_IDX(rows, i, bk_row).n);
    }
    return sum;
}

static int site_order(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sites of rows, sorted, each once (one NULL with by=none). */
static apr_array_header_t *sites_of(apr_pool_t *p, const imc_report_form *f,
                                    const apr_array_header_t *rows,
                                    apr_hash_t *cells)
{
    apr_array_header_t *sites = apr_array_make(p, 8, sizeof(const char *));
    apr_hash_t *seen = apr_hash_make(p);
    int i;

    for (i = 0; i < rows->nelts; ++i) {
        const bk_row *row = &APR_ARRAY_IDX(rows, i, bk_row);
        const char *site = row->site ? row->site : "";

        apr_hash_set(cells, apr_pstrcat(p, row->label, "\t", site, NULL),
                     APR_HASH_KEY_STRING, row);
        if (!apr_hash_get(seen, site, APR_HASH_KEY_STRING)) {
            apr_hash_set(seen, site, APR_HASH_KEY_STRING, site);
            APR_ARRAY_PUSH(sites, const char *) = row->site;
        }
    }
    if (f->params->by_site) {
        qsort(sites->elts, (size_t)sites->nelts, sizeof(const char *),
              site_order);
    } else if (!sites->nelts) {
        APR_ARRAY_PUSH(sites, const char *) = NULL;
    }
    return sites;
}

/* fill=1: a row for every bucket of from..to and every site of the rows
 * (zero counts where nothing happened). */
static apr_array_header_t *fill_rows(apr_pool_t *p, const imc_report_form *f,
                                     const apr_array_header_t *rows, int *over)
{
    apr_hash_t *cells = apr_hash_make(p);
    apr_array_header_t *sites = sites_of(p, f, rows, cells), *buckets, *out;
    int i, j;

    if (f->from > f->to) {
        return apr_array_make(p, 1, sizeof(bk_row));
    }
    if (imc_bucket_range(&buckets, p, f->zone, f->params->interval, f->from,
                         f->to, (apr_size_t)f->max_rows) != APR_SUCCESS ||
        imc_rparams_over_limit((apr_uint64_t)buckets->nelts,
                               (apr_uint64_t)sites->nelts,
                               (apr_uint64_t)f->max_rows)) {
        *over = 1;
        return apr_array_make(p, 1, sizeof(bk_row));
    }
    out = apr_array_make(p, buckets->nelts * sites->nelts + 1, sizeof(bk_row));
    for (i = 0; i < buckets->nelts; ++i) {
        const imc_bucket *b = &APR_ARRAY_IDX(buckets, i, imc_bucket);

        for (j = 0; j < sites->nelts; ++j) {
            const char *site = APR_ARRAY_IDX(sites, j, const char *);
            const bk_row *had = apr_hash_get(
                cells, apr_pstrcat(p, b->label, "\t", site ? site : "", NULL),
                APR_HASH_KEY_STRING);
            bk_row *row = apr_array_push(out);

            memset(row, 0, sizeof(*row));
            row->start = b->start;
            row->label = b->label;
            row->site = site;
            if (had) {
                row->n = had->n;
            }
        }
    }
    return out;
}

void imc_report_form_previous(const imc_report_form *f, int *from, int *to)
{
    *to = f->from - 1;
    *from = f->from - (f->to - f->from + 1);
}

int imc_report_buckets_too_many(const imc_report_form *f)
{
    apr_size_t max = (apr_size_t)f->max_rows;

    if (f->from == IMC_RCACHE_NO_DAY || f->to == IMC_RCACHE_NO_DAY ||
        f->from > f->to) {
        return 0;
    }
    return imc_bucket_count(f->zone, f->params->interval, f->from, f->to,
                            max + 1) > max;
}

apr_status_t imc_report_buckets_query(imc_report_buckets **out, request_rec *r,
                                      const imc_config *c, imc_clickhouse *ch,
                                      const imc_report_form *f,
                                      imc_clickhouse_result *res)
{
    imc_report_buckets *b = apr_pcalloc(r->pool, sizeof(*b));
    int win = imc_rparams_needs_window(f->params);
    int times = imc_rparams_needs_times(f->params), over = 0;
    apr_array_header_t *prev;
    bk_counts wt;
    apr_status_t rv;

    *out = b;
    b->form = f;
    memset(&wt, 0, sizeof(wt));
    rv = period_rows(r, c, ch, f, f->from, f->to, win, times ? &wt : NULL, 0,
                     &b->rows, &b->over, res);
    if (rv != APR_SUCCESS || b->over) {
        return rv;
    }
    if (f->params->fill) {
        b->rows = fill_rows(r->pool, f, b->rows, &b->over);
    }
    b->totals = sum_rows(b->rows);
    take_times(&b->totals, &wt);
    if (!f->params->compare) {
        return APR_SUCCESS;
    }
    b->has_previous = 1;
    imc_report_form_previous(f, &b->prev_from, &b->prev_to);
    if (b->prev_to < 0) {
        return APR_SUCCESS; /* before 1970: no events */
    }
    memset(&wt, 0, sizeof(wt));
    rv = period_rows(r, c, ch, f, b->prev_from < 0 ? 0 : b->prev_from,
                     b->prev_to, 0, win ? &wt : NULL, 0, &prev, &over, res);
    b->over = b->over || over;
    b->previous = sum_rows(prev);
    b->previous.unsolved = wt.unsolved;
    take_times(&b->previous, &wt);
    return rv;
}

/* ------------------------------------------------------------ cells */

int imc_report_buckets_by_cells(const imc_report_form *f)
{
    imc_bucket_interval iv = f->params->interval;

    return (iv == IMC_BUCKET_DAY || iv == IMC_BUCKET_HOUR) &&
           !imc_rparams_needs_window(f->params);
}

const char *imc_report_buckets_cell_keys(apr_pool_t *p,
                                         const imc_report_form *f,
                                         apr_int64_t lo, apr_int64_t hi)
{
    bk_span s;

    if (f->params->interval != IMC_BUCKET_HOUR) {
        return NULL;
    }
    s.lo = clamp_time(lo);
    s.hi = clamp_time(hi);
    s.empty = 0;
    return keys_sql(p, IMC_BUCKET_HOUR, offset_sql(p, f->zone, &s));
}

/* A cell as a row of the form: its bucket (days ordered by their number),
 * its site (NULL with by=none), its counts. */
static void cell_row(apr_pool_t *p, const imc_report_form *f,
                     const imc_rcache_row *cell, bk_row *row)
{
    imc_bucket_interval iv = f->params->interval;

    memset(row, 0, sizeof(*row));
    if (iv == IMC_BUCKET_DAY) {
        row->start = (apr_int64_t)cell->day * DAY;
        row->label = imc_rcache_day_text(p, cell->day);
    } else {
        char *label = apr_palloc(p, IMC_BUCKET_LABEL_SIZE);

        imc_bucket_label(label, f->zone, iv, (apr_int64_t)cell->time);
        row->label = label;
        row->start = imc_bucket_start(f->zone, iv, (apr_int64_t)cell->time);
    }
    row->site = f->params->by_site ? cell->site : NULL;
    row->n.served = cell->served;
    row->n.solved = cell->solved;
}

/* The rows of the cells of days [from, to], in order: by=none adds the
 * sites' counts of a bucket into one row. */
static apr_array_header_t *cells_rows(apr_pool_t *p, const imc_report_form *f,
                                      const apr_array_header_t *cells, int from,
                                      int to)
{
    apr_array_header_t *rows =
        apr_array_make(p, cells->nelts + 1, sizeof(bk_row));
    apr_hash_t *at = apr_hash_make(p); /* by=none: start -> index + 1 */
    int i;

    for (i = 0; i < cells->nelts; ++i) {
        const imc_rcache_row *cell = &APR_ARRAY_IDX(cells, i, imc_rcache_row);
        apr_int64_t *start;
        bk_row row;
        apr_size_t had;

        if (cell->day < from || cell->day > to) {
            continue;
        }
        cell_row(p, f, cell, &row);
        if (!f->params->by_site &&
            (had = (apr_size_t)apr_hash_get(at, &row.start,
                                            sizeof(row.start))) != 0) {
            add_counts(&APR_ARRAY_IDX(rows, had - 1, bk_row).n, &row.n);
            continue;
        }
        *(bk_row *)apr_array_push(rows) = row;
        if (!f->params->by_site) {
            start = apr_pmemdup(p, &row.start, sizeof(row.start));
            apr_hash_set(at, start, sizeof(*start),
                         (void *)(apr_size_t)rows->nelts);
        }
    }
    qsort(rows->elts, (size_t)rows->nelts, sizeof(bk_row), row_order);
    return rows;
}

static void total_times(apr_pool_t *p, const apr_array_header_t *rows,
                        bk_counts *n);

/* The answer of f from its rows made here (from cells or spans) and,
 * with compare, the previous period's (prev): the row limit, fill, the
 * totals (the solve times over all the rows' procedures together). */
static imc_report_buckets *assemble(apr_pool_t *p, const imc_report_form *f,
                                    apr_array_header_t *rows,
                                    const apr_array_header_t *prev)
{
    imc_report_buckets *b = apr_pcalloc(p, sizeof(*b));

    b->form = f;
    b->rows = rows;
    if ((b->over = rows->nelts > f->max_rows)) {
        return b;
    }
    if (f->params->fill) {
        b->rows = fill_rows(p, f, rows, &b->over);
    }
    b->totals = sum_rows(b->rows);
    total_times(p, rows, &b->totals);
    if (f->params->compare) {
        b->has_previous = 1;
        imc_report_form_previous(f, &b->prev_from, &b->prev_to);
        b->over = b->over || prev->nelts > f->max_rows;
        b->previous = sum_rows(prev);
        total_times(p, prev, &b->previous);
    }
    return b;
}

imc_report_buckets *
imc_report_buckets_from_cells(apr_pool_t *p, const imc_report_form *f,
                              const apr_array_header_t *cells)
{
    int from = f->from == IMC_RCACHE_NO_DAY ? INT_MIN : f->from;
    int to = f->to == IMC_RCACHE_NO_DAY ? INT_MAX : f->to;
    int prev_from, prev_to;

    if (!f->params->compare) {
        return assemble(p, f, cells_rows(p, f, cells, from, to), NULL);
    }
    imc_report_form_previous(f, &prev_from, &prev_to);
    return assemble(p, f, cells_rows(p, f, cells, from, to),
                    cells_rows(p, f, cells, prev_from, prev_to));
}

/* ------------------------------------------------------------ spans */

/* A span as kept: a bk_span_head, its cells, then the solve times of
 * every cell (in the cells' order). A cell is a row of every site: its
 * bucket's start, its site, its counts and, with the solve window's
 * metrics, its procedures served and how many solve times are its. */
typedef struct {
    apr_uint64_t ncells, ntimes;
} bk_span_head;

typedef struct {
    apr_int64_t start;
    char site[IMC_RCACHE_SITE_LEN];
    apr_uint32_t ntimes;
    apr_uint64_t served, solved, procs;
} bk_cell;

int imc_report_buckets_by_spans(const imc_report_form *f,
                                const imc_filter *parsed)
{
    imc_bucket_interval iv = f->params->interval;

    return iv != IMC_BUCKET_MINUTE &&
           (iv == IMC_BUCKET_WEEK || iv == IMC_BUCKET_MONTH ||
            iv == IMC_BUCKET_TOTAL || imc_rparams_needs_window(f->params)) &&
           !imc_filter_names_day(parsed);
}

apr_status_t imc_report_buckets_span_query(request_rec *r, const imc_config *c,
                                           imc_clickhouse *ch,
                                           const imc_report_form *f, int from,
                                           int to, void **blob,
                                           apr_size_t *size,
                                           imc_clickhouse_result *res)
{
    int values = imc_rparams_needs_window(f->params), over, i;
    imc_rparams params = *f->params;
    imc_report_form all = *f;
    apr_array_header_t *rows;
    apr_size_t ntimes = 0, k;
    apr_uint32_t *times;
    bk_span_head *head;
    bk_cell *cells;
    apr_status_t rv;

    *blob = NULL;
    *size = 0;
    params.by_site = 1;
    all.params = &params;
    all.where = "1";
    if ((rv = period_rows(r, c, ch, &all, from, to, 0, NULL, values, &rows,
                          &over, res)) != APR_SUCCESS ||
        over) {
        return rv;
    }
    for (i = 0; i < rows->nelts; ++i) {
        const bk_row *row = &APR_ARRAY_IDX(rows, i, bk_row);

        ntimes += row->times ? (apr_size_t)row->times->nelts : 0;
    }
    *size = sizeof(*head) + sizeof(*cells) * (apr_size_t)rows->nelts +
            sizeof(*times) * ntimes;
    head = apr_pcalloc(r->pool, *size);
    head->ncells = (apr_uint64_t)rows->nelts;
    head->ntimes = ntimes;
    cells = (bk_cell *)(head + 1);
    times = (apr_uint32_t *)(cells + rows->nelts);
    for (i = 0, k = 0; i < rows->nelts; ++i) {
        const bk_row *row = &APR_ARRAY_IDX(rows, i, bk_row);

        cells[i].start = row->start;
        memcpy(cells[i].site, row->site, IMC_RCACHE_SITE_LEN);
        cells[i].served = row->n.served;
        cells[i].solved = row->n.solved;
        cells[i].procs = row->procs;
        if (row->times) {
            cells[i].ntimes = (apr_uint32_t)row->times->nelts;
            memcpy(times + k, row->times->elts,
                   sizeof(*times) * (apr_size_t)row->times->nelts);
            k += (apr_size_t)row->times->nelts;
        }
    }
    *blob = head;
    return APR_SUCCESS;
}

static int time_order(const void *a, const void *b)
{
    apr_uint32_t x = *(const apr_uint32_t *)a, y = *(const apr_uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* The solve-time figures of n from times (sorted when sorted, else
 * sorted here): how many, their sum, the nearest-rank p50 and p90 (the
 * values at ranks ceil(q n), imc_rparams_rank). */
static void times_figures(apr_array_header_t *times, int sorted, bk_counts *n)
{
    const apr_uint32_t *v = (const apr_uint32_t *)times->elts;
    apr_uint64_t count = (apr_uint64_t)times->nelts, k;
    int i;

    if (!sorted) {
        qsort(times->elts, (size_t)times->nelts, sizeof(apr_uint32_t),
              time_order);
    }
    n->timed = count;
    n->sum_ms = 0;
    for (i = 0; i < times->nelts; ++i) {
        n->sum_ms += v[i];
    }
    k = imc_rparams_rank(5, count);
    n->p50_ms = k ? v[k - 1] : 0;
    k = imc_rparams_rank(9, count);
    n->p90_ms = k ? v[k - 1] : 0;
}

/* Whether blob (size bytes) is a span as span_query packs it; not NULL,
 * the previous period's of a report from 1970-01-01. */
static int span_whole(const void *blob, apr_size_t size)
{
    const bk_span_head *head = blob;
    const bk_cell *cells;
    apr_uint64_t i, ntimes = 0;

    if (!blob || size < sizeof(*head) ||
        head->ncells > (size - sizeof(*head)) / sizeof(bk_cell) ||
        head->ntimes > size / sizeof(apr_uint32_t) ||
        size != sizeof(*head) + head->ncells * sizeof(bk_cell) +
                    head->ntimes * sizeof(apr_uint32_t)) {
        return 0;
    }
    cells = (const bk_cell *)(head + 1);
    for (i = 0; i < head->ncells; ++i) {
        ntimes += cells[i].ntimes;
    }
    return ntimes == head->ntimes;
}

/* The packed rows of a span cut to the filter and grant, as the form's
 * rows in order (by=none: the sites of a bucket added up), each with its
 * solve times (when kept) in its times. */
static apr_array_header_t *span_rows(apr_pool_t *p, const imc_report_form *f,
                                     const imc_filter *parsed,
                                     const imc_access_grant *grant,
                                     const void *blob, apr_size_t size)
{
    const bk_span_head *head = blob;
    apr_array_header_t *rows = apr_array_make(p, 16, sizeof(bk_row));
    imc_bucket_interval iv = f->params->interval;
    apr_size_t i, n, used;
    const apr_uint32_t *times;
    const bk_cell *cells;

    if (!span_whole(blob, size)) {
        return rows; /* none: span_query's blobs are whole */
    }
    cells = (const bk_cell *)(head + 1);
    n = (apr_size_t)head->ncells;
    times = (const apr_uint32_t *)(cells + n);
    for (i = 0, used = 0; i < n; used += cells[i++].ntimes) {
        char *site = apr_pstrmemdup(p, cells[i].site, IMC_RCACHE_SITE_LEN);
        int serve = imc_filter_match(parsed, site, IMC_FILTER_SERVE, 0);
        int solve = imc_filter_match(parsed, site, IMC_FILTER_SOLVE, 0);
        bk_row *last =
            rows->nelts ? &APR_ARRAY_IDX(rows, rows->nelts - 1, bk_row) : NULL;
        char *label;
        bk_row row;

        if (grant && !imc_access_may(grant, site)) {
            continue;
        }
        memset(&row, 0, sizeof(row));
        row.start = cells[i].start;
        row.site = f->params->by_site ? site : NULL;
        row.n.served = serve ? cells[i].served : 0;
        row.n.solved = solve ? cells[i].solved : 0;
        if (!row.n.served && !row.n.solved) {
            continue;
        }
        row.procs = serve ? cells[i].procs : 0;
        row.times = apr_array_make(p, 1, sizeof(apr_uint32_t));
        if (serve && solve && cells[i].ntimes) {
            row.times->elts = (char *)(times + used);
            row.times->nelts = row.times->nalloc = (int)cells[i].ntimes;
        }
        if (!row.site && last && last->start == row.start) {
            add_counts(&last->n, &row.n); /* kept in bucket order */
            last->procs += row.procs;
            apr_array_cat(last->times, row.times);
            continue;
        }
        if (!row.site && row.times->nelts) { /* others may join it */
            row.times = apr_array_copy(p, row.times);
        }
        label = apr_palloc(p, IMC_BUCKET_LABEL_SIZE);
        imc_bucket_label(label, f->zone, iv, row.start);
        row.label = label;
        *(bk_row *)apr_array_push(rows) = row;
    }
    for (i = 0; i < (apr_size_t)rows->nelts; ++i) {
        bk_row *row = &APR_ARRAY_IDX(rows, (int)i, bk_row);

        times_figures(row->times, row->site != NULL, &row->n);
        row->n.unsolved = row->procs - row->n.timed;
    }
    return rows;
}

/* The solve-time figures over all of rows' procedures together into n
 * (the totals': not from the rows' own figures). */
static void total_times(apr_pool_t *p, const apr_array_header_t *rows,
                        bk_counts *n)
{
    apr_array_header_t *all = apr_array_make(p, 64, sizeof(apr_uint32_t));
    int i;

    for (i = 0; i < rows->nelts; ++i) {
        const bk_row *row = &APR_ARRAY_IDX(rows, i, bk_row);

        if (row->times) {
            apr_array_cat(all, row->times);
        }
    }
    times_figures(all, 0, n);
}

imc_report_buckets *imc_report_buckets_from_spans(
    apr_pool_t *p, const imc_report_form *f, const imc_filter *parsed,
    const imc_access_grant *grant, const void *cur, apr_size_t cur_size,
    const void *prev, apr_size_t prev_size)
{
    return assemble(p, f, span_rows(p, f, parsed, grant, cur, cur_size),
                    f->params->compare
                        ? span_rows(p, f, parsed, grant, prev, prev_size)
                        : NULL);
}

int imc_report_buckets_over(const imc_report_buckets *b)
{
    return b->over;
}

/* ------------------------------------------------------------ render */

/* A metric's value as the answer writes it. */
static const char *metric_text(apr_pool_t *p, imc_metric m, const bk_counts *n,
                               int csv)
{
    switch (m) {
        case IMC_METRIC_SERVED:
            return apr_psprintf(p, "%" APR_UINT64_T_FMT, n->served);
        case IMC_METRIC_SOLVED:
            return apr_psprintf(p, "%" APR_UINT64_T_FMT, n->solved);
        case IMC_METRIC_SOLVE_RATE:
            return imc_report_rate(p, n->served, n->solved, csv ? "" : "null");
        case IMC_METRIC_UNSOLVED:
            return apr_psprintf(p, "%" APR_UINT64_T_FMT, n->unsolved);
        default:
            break;
    }
    if (!n->timed) {
        return csv ? "" : "null";
    }
    switch (m) {
        case IMC_METRIC_SOLVE_TIME_AVG:
            return imc_rparams_seconds(
                p, imc_rparams_mean_ms(n->sum_ms, n->timed));
        case IMC_METRIC_SOLVE_TIME_P50:
            return imc_rparams_seconds(p, n->p50_ms);
        default:
            return imc_rparams_seconds(p, n->p90_ms);
    }
}

/* The metrics of n as JSON members ("served":1,...) or CSV fields. */
static const char *metrics_text(apr_pool_t *p, const imc_rparams *pr,
                                const bk_counts *n, int csv)
{
    const char *s = "";
    int i;

    for (i = 0; i < pr->nmetrics; ++i) {
        const char *v = metric_text(p, pr->metrics[i], n, csv);

        s = csv ? apr_pstrcat(p, s, i ? "," : "", v, NULL)
                : apr_pstrcat(p, s, i ? ",\"" : "\"",
                              imc_rparams_metric_names[pr->metrics[i]],
                              "\":", v, NULL);
    }
    return s;
}

/* The name of the rows' time field: NULL for total. */
static const char *time_field(imc_bucket_interval iv)
{
    return iv == IMC_BUCKET_TOTAL ? NULL
           : iv == IMC_BUCKET_DAY ? "day"
                                  : "bucket";
}

static void render_json(request_rec *r, const imc_report_buckets *b)
{
    const imc_rparams *pr = b->form->params;
    const char *tf = time_field(pr->interval);
    apr_pool_t *p = r->pool;
    int i;

    ap_set_content_type(r, IMC_JSON_TYPE);
    ap_rputs("{\"rows\":[", r);
    for (i = 0; i < b->rows->nelts; ++i) {
        const bk_row *row = &APR_ARRAY_IDX(b->rows, i, bk_row);

        ap_rputs(i ? ",{" : "{", r);
        if (tf) {
            ap_rprintf(r, "\"%s\":\"%s\",", tf, row->label);
        }
        if (row->site) {
            ap_rprintf(r, "\"site_id\":\"%s\",", row->site);
        }
        ap_rputs(metrics_text(p, pr, &row->n, 0), r);
        ap_rputs("}", r);
    }
    ap_rprintf(r, "],\"totals\":{%s}", metrics_text(p, pr, &b->totals, 0));
    if (b->has_previous) {
        ap_rprintf(r,
                   ",\"previous\":{\"from\":\"%s\",\"to\":\"%s\","
                   "\"totals\":{%s}}",
                   imc_rcache_day_text(p, b->prev_from),
                   imc_rcache_day_text(p, b->prev_to),
                   metrics_text(p, pr, &b->previous, 0));
    }
    ap_rputs("}", r);
}

static void render_csv(request_rec *r, const imc_report_buckets *b)
{
    const imc_rparams *pr = b->form->params;
    const char *tf = time_field(pr->interval);
    int i;

    ap_set_content_type(r, "text/csv; charset=utf-8; header=present");
    ap_rprintf(r, "%s%s%s", tf ? tf : "", tf ? "," : "",
               pr->by_site ? "site_id," : "");
    for (i = 0; i < pr->nmetrics; ++i) {
        ap_rprintf(r, "%s%s", i ? "," : "",
                   imc_rparams_metric_names[pr->metrics[i]]);
    }
    ap_rputs("\r\n", r);
    for (i = 0; i < b->rows->nelts; ++i) {
        const bk_row *row = &APR_ARRAY_IDX(b->rows, i, bk_row);

        ap_rprintf(r, "%s%s%s%s%s\r\n", tf ? row->label : "", tf ? "," : "",
                   row->site ? row->site : "", row->site ? "," : "",
                   metrics_text(r->pool, pr, &row->n, 1));
    }
}

void imc_report_buckets_render(request_rec *r, const imc_report_buckets *b)
{
    if (b->form->csv) {
        render_csv(r, b);
    } else {
        render_json(r, b);
    }
}
