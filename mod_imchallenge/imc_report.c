/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>
#include <string.h>

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <http_protocol.h>
#include <util_filter.h>

#include "imc_private.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_filter.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_rcache.h"
#include "imc_rparams.h"
#include "imc_report.h"
#include "imc_report_buckets.h"
#include "imc_report_client.h"
#include "imc_report_parts.h"
#include "imc_report_private.h"
#include "imc_tenant.h"
#include "imc_slots.h"
#include "imc_syntax.h"
#include "imc_zone.h"
#include "imc_zones.h"

/* The server's report cache (IMChallengeReportCache), in shared memory
 * the parent makes and keeps across restarts (retained data): every
 * child of every generation uses the same. NULL: none. */
static imc_scache *store;
#define RETAINED_KEY "imchallenge-report-cache"
typedef struct {
    apr_shm_t *shm;
} retained_t;
static imc_rcache *cache; /* the process's view of the store, or NULL */
static int listing_told;  /* a refused parts listing was logged */

typedef struct {
    const char *filter; /* URL-decoded */
    apr_size_t filter_len;
    const char *from, *to, *tz;
    int from_day, to_day; /* IMC_RCACHE_NO_DAY: not given */
    int csv;
    const char *procedure;    /* what uniqExact counts (imc_report_client) */
    imc_rparams params;       /* interval, by, metrics, fill, compare */
    const imc_zone *zone;     /* loaded for params other than the default */
    const imc_filter *parsed; /* the filter, for rows of the cache */
    const imc_access_grant *grant; /* the principal's sites; NULL: all */
} report_args;

static int wants_csv(request_rec *r, const char *format)
{
    const char *accept = apr_table_get(r->headers_in, "Accept");

    if (format) {
        return !strcmp(format, "csv");
    }
    return accept && ap_strcasestr(accept, "text/csv") != NULL;
}

/* The URL-decoded value of the query parameter name into *out (NULL when
 * absent). Returns 0 when it is given twice or not validly encoded (%00
 * included): ap_args_to_table would cut "csv%00x" to "csv". A '+' stays a
 * '+' (as in Etc/GMT+5): no valid value holds a space. */
static int query_param(apr_pool_t *p, const char *args, const char *name,
                       const char **out)
{
    apr_size_t n = strlen(name), len, vlen;
    const char *q, *end;

    *out = NULL;
    for (q = args; q && *q; q = end ? end + 1 : NULL) {
        end = strchr(q, '&');
        len = end ? (apr_size_t)(end - q) : strlen(q);
        if (len <= n || strncmp(q, name, n) || q[n] != '=') {
            continue;
        }
        if (*out) {
            return 0;
        }
        *out = imc_http_unescape(p, q + n + 1, len - n - 1, &vlen);
        if (!*out) {
            return 0;
        }
    }
    return 1;
}

/* The day number of the date text (NULL: not given, IMC_RCACHE_NO_DAY)
 * into *day; 0 when text is no date (imc_syntax_date_parse). */
static int date_param(const char *text, int *day)
{
    apr_int64_t n;

    if (!text) {
        *day = IMC_RCACHE_NO_DAY;
        return 1;
    }
    if (imc_syntax_date_parse(text, strlen(text), &n) != APR_SUCCESS) {
        return 0;
    }
    *day = (int)n;
    return 1;
}

static int bad_zone(request_rec *r)
{
    return imc_http_error(r, HTTP_BAD_REQUEST,
                          "tz must be an IANA time zone name such as "
                          "Europe/Paris");
}

/* The 400 (or, for a metric not computed yet, 501) of bad interval, by,
 * metrics, fill or compare parameters. */
static int params_error(request_rec *r, const imc_rparams_error *err)
{
    apr_pool_t *p = r->pool;
    const char *json;
    int i;

    if (err->kind != IMC_RPARAMS_EMETRIC) {
        return imc_http_error(r,
                              err->kind == IMC_RPARAMS_ENOTBUILT
                                  ? HTTP_NOT_IMPLEMENTED
                                  : HTTP_BAD_REQUEST,
                              err->message);
    }
    json =
        apr_pstrcat(p, "{\"error\":\"", imc_http_json_escape(p, err->message),
                    "\",\"metrics\":[", NULL);
    for (i = 0; imc_rparams_metric_names[i]; ++i) {
        json = apr_pstrcat(p, json, i ? ",\"" : "\"",
                           imc_rparams_metric_names[i], "\"", NULL);
    }
    return imc_http_json(r, HTTP_BAD_REQUEST, apr_pstrcat(p, json, "]}", NULL));
}

/* The report's interval, by, metrics, fill and compare into a->params. */
static int parse_params(request_rec *r, report_args *a)
{
    const char *iv, *by, *metrics, *fill, *compare;
    imc_rparams_error err;

    if (!query_param(r->pool, r->args, "interval", &iv) ||
        !query_param(r->pool, r->args, "by", &by) ||
        !query_param(r->pool, r->args, "metrics", &metrics) ||
        !query_param(r->pool, r->args, "fill", &fill) ||
        !query_param(r->pool, r->args, "compare", &compare)) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "interval, by, metrics, fill and compare may "
                              "each be given once, validly URL-encoded");
    }
    if (imc_rparams_parse(&a->params, r->pool, iv, by, metrics, fill, compare,
                          a->from && a->to, a->csv, &err) != APR_SUCCESS) {
        return params_error(r, &err);
    }
    return DECLINED;
}

/* Parses the path and the query string; answers 400 itself on error.
 * httpd has already URL-decoded the path once (and refused bad escapes and
 * %00): the rest of it is the filter as is. Decoding it again would let
 * "%2527" stand for a quote. "%2F", which AllowEncodedSlashes NoDecode
 * keeps, stays as written: '%' and '/' are invalid in a filter anyway. */
static int parse_args(request_rec *r, report_args *a)
{
    const char *format;

    a->filter = imc_config_path_rest(r, "report");
    a->filter_len = strlen(a->filter);
    if (!query_param(r->pool, r->args, "from", &a->from) ||
        !query_param(r->pool, r->args, "to", &a->to) ||
        !query_param(r->pool, r->args, "tz", &a->tz) ||
        !query_param(r->pool, r->args, "format", &format)) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "from, to, tz and format may each be given "
                              "once, validly URL-encoded");
    }
    if (!date_param(a->from, &a->from_day)) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "from must be a date YYYY-MM-DD");
    }
    if (!date_param(a->to, &a->to_day)) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "to must be a date YYYY-MM-DD");
    }
    if (!a->tz || !*a->tz) {
        a->tz = "UTC";
    } else if (!imc_zone_valid_name(a->tz)) {
        return bad_zone(r);
    }
    if (format && strcmp(format, "json") && strcmp(format, "csv")) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "format must be json or csv");
    }
    a->csv = wants_csv(r, format);
    return parse_params(r, a);
}

static int filter_error(request_rec *r, const imc_filter_error *err)
{
    apr_pool_t *p = r->pool;
    const char *msg = imc_http_json_escape(p, err->message);
    const char *json;
    int i;

    if (err->kind == IMC_FILTER_ECOLUMN) {
        json = apr_pstrcat(p, "{\"error\":\"", msg, "\",\"columns\":[", NULL);
        for (i = 0; imc_filter_column_names[i]; ++i) {
            json = apr_pstrcat(p, json, i ? ",\"" : "\"",
                               imc_filter_column_names[i], "\"", NULL);
        }
        json = apr_pstrcat(p, json, "]}", NULL);
    } else if (err->position >= 0) {
        json = apr_psprintf(p, "{\"error\":\"%s\",\"position\":%d}", msg,
                            err->position);
    } else {
        json = apr_pstrcat(p, "{\"error\":\"", msg, "\"}", NULL);
    }
    return imc_http_json(r, HTTP_BAD_REQUEST, json);
}

/* The SQL expression of the day of an event in the report's zone. */
static const char *day_expr(apr_pool_t *p, const report_args *a)
{
    return apr_psprintf(p, "toDate(time, '%s')", a->tz);
}

/* The condition "the day is in [first, last]" (day numbers, either may be
 * IMC_RCACHE_NO_DAY: open), on the day's number: 18.16 does not read
 * toDate('2106-01-01'), a day that east of UTC holds the last events. It also
 * bounds time, so that ClickHouse skips the months outside, with bounds
 * computed here as plain numbers: a ClickHouse expression such as
 * toDateTime('1970-01-01 00:00:00', tz) - 7200 wraps around to 2106 east of
 * UTC-2 and matches nothing. The day conditions keep it exact. The range is
 * recorded in plan (when not NULL) as one the query covers. */
static const char *days_sql(apr_pool_t *p, const report_args *a,
                            imc_rcache_plan *plan, int first, int last)
{
    const char *day = day_expr(p, a);
    apr_int64_t lo, hi;

    if (!strcmp(a->tz, "UTC")) {
        imc_rcache_utc_day_bounds(first, last, &lo, &hi);
    } else {
        imc_rcache_day_bounds(first, last, &lo, &hi);
    }
    if (plan) {
        imc_rcache_plan_covers(plan, first, last);
    }
    return apr_pstrcat(p, "(1",
                       first != IMC_RCACHE_NO_DAY
                           ? apr_psprintf(p,
                                          " AND toUInt16(%s) >= %d AND time >= "
                                          "toDateTime(%" APR_INT64_T_FMT ")",
                                          day, first < 0 ? 0 : first, lo)
                           : "",
                       last != IMC_RCACHE_NO_DAY
                           ? apr_psprintf(p,
                                          " AND toUInt16(%s) <= %d AND time <= "
                                          "toDateTime(%" APR_INT64_T_FMT ")",
                                          day, last < 0 ? -1 : last, hi)
                           : "",
                       ")", NULL);
}

/* The query: exact distinct correlation ids (as a->procedure counts them)
 * per (day, site) and, with keys, per bucket of the day (whose instant
 * comes last), days as
 * numbers (ClickHouse's Date), over the report's from / to or, when
 * ranges is not NULL, over those day ranges only; the ranges it covers
 * are recorded in plan (when not NULL). (Grouping by the Date and UUID in
 * a subquery and making text of the result rows only measured no faster
 * on 18.16: the distinct counts dominate.) */
static const char *build_sql(apr_pool_t *p, const imc_config *c,
                             const report_args *a, const char *where,
                             const apr_array_header_t *ranges,
                             imc_rcache_plan *plan, const char *keys)
{
    const char *days;
    int i;

    if (!ranges) {
        days = days_sql(p, a, plan, a->from_day, a->to_day);
    } else {
        days = "(0";
        for (i = 0; i < ranges->nelts; ++i) {
            const imc_rcache_range *rg =
                &APR_ARRAY_IDX(ranges, i, imc_rcache_range);

            days = apr_pstrcat(p, days, " OR ",
                               days_sql(p, a, plan, rg->first, rg->last), NULL);
        }
        days = apr_pstrcat(p, days, ")", NULL);
    }
    return apr_pstrcat(
        p, "SELECT toUInt16(", day_expr(p, a), ") AS day, ",
        "toString(site_id) AS site, ", "uniqExactIf(", a->procedure,
        ", type = 'serve') AS served, ", "uniqExactIf(", a->procedure,
        ", type = 'solve') AS solved",
        keys ? ", min(toUInt32(time)) AS bucket_time" : "", " FROM ",
        imc_config_database(c), ".events WHERE (", where, ") AND ", days,
        " GROUP BY day, site", keys ? ", " : "", keys ? keys : "",
        " ORDER BY day, site", keys ? ", bucket_time" : "",
        " FORMAT TabSeparated", NULL);
}

/* The next line of a TabSeparated answer at *pos, cut at its '\n' in
 * place; NULL at the answer's end, or when its last line has no '\n' (it
 * was cut short: *cut is then set). */
static char *next_line(char **pos, int *cut)
{
    char *line = *pos, *nl;

    if (!*line) {
        return NULL;
    }
    if (!(nl = strchr(line, '\n'))) {
        *cut = 1;
        return NULL;
    }
    *nl = '\0';
    *pos = nl + 1;
    return line;
}

/* Splits a TabSeparated line in place into its fields, empty ones
 * included, keeping at most n; returns how many it has. */
static int split_tabs(char *line, char **fields, int n)
{
    char *tab;
    int i = 0;

    for (;;) {
        if (i < n) {
            fields[i] = line;
        }
        ++i;
        if (!(tab = strchr(line, '\t'))) {
            return i;
        }
        *tab = '\0';
        line = tab + 1;
    }
}

/* A decimal number of at most max into *out; 0 unless s is only digits. */
static int parse_uint(const char *s, apr_uint64_t max, apr_uint64_t *out)
{
    apr_uint64_t v = 0;

    if (!*s) {
        return 0;
    }
    for (; *s; ++s) {
        if (*s < '0' || *s > '9' || v > (max - (apr_uint64_t)(*s - '0')) / 10) {
            return 0;
        }
        v = v * 10 + (apr_uint64_t)(*s - '0');
    }
    *out = v;
    return 1;
}

/* A site_id as ClickHouse writes a UUID: 36 lower-case hex digits and
 * dashes. */
static int parse_site(const char *s)
{
    apr_size_t i;

    for (i = 0; s[i]; ++i) {
        if (!(i == 8 || i == 13 || i == 18 || i == 23
                  ? s[i] == '-'
                  : apr_isdigit(s[i]) || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return i == IMC_RCACHE_SITE_LEN;
}

/* An answer of ClickHouse that is not what the query asks for: a line
 * that does not parse, as when an exception is written into a 200 answer
 * after its first rows, or an answer cut short. Never shown, never kept. */
#define EMALFORMED IMC_REPORT_EMALFORMED

/* Logs the malformed line lineno of an answer (its text with the tabs
 * split_tabs took out, for the log only) and returns EMALFORMED. */
static apr_status_t malformed(request_rec *r, const char *what, int lineno,
                              char *line, const char *end)
{
    char *c;

    for (c = line; end && c < end; ++c) {
        if (!*c) {
            *c = '\t';
        }
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                  IMC_LOGNO(00420) "report: malformed line %d in "
                                   "ClickHouse's answer to the %s: %.200s",
                  lineno, what, line ? line : "(cut short)");
    return EMALFORMED;
}

/* Parses ClickHouse's TabSeparated answer: day (a number), site, served,
 * solved and, when timed, an instant of the row's bucket, into *rows. Any
 * line that does not parse fails it all. */
static apr_status_t parse_rows(request_rec *r, char *body, int timed,
                               apr_array_header_t **rows)
{
    char *pos = body, *line, *f[5];
    int lineno = 0, cut = 0, n = timed ? 5 : 4;
    apr_uint64_t day, t = 0;

    *rows = apr_array_make(r->pool, 64, sizeof(imc_rcache_row));
    while ((line = next_line(&pos, &cut)) != NULL) {
        imc_rcache_row *row = apr_array_push(*rows);
        char *end = line + strlen(line);

        ++lineno;
        if (split_tabs(line, f, 5) != n || !parse_uint(f[0], 65535, &day) ||
            !parse_site(f[1]) ||
            !parse_uint(f[2], APR_UINT64_MAX, &row->served) ||
            !parse_uint(f[3], APR_UINT64_MAX, &row->solved) ||
            (timed && !parse_uint(f[4], IMC_RCACHE_TIME_MAX, &t))) {
            return malformed(r, "report query", lineno, line, end);
        }
        row->day = (int)day;
        row->site = f[1];
        row->time = (apr_uint32_t)t;
    }
    return cut ? malformed(r, "report query", lineno + 1, NULL, NULL)
               : APR_SUCCESS;
}

static const char *rate(apr_pool_t *p, apr_uint64_t served, apr_uint64_t solved,
                        const char *none)
{
    return served ? apr_psprintf(p, "%.4f", (double)solved / (double)served)
                  : none;
}

static void render_json(request_rec *r, apr_array_header_t *rows)
{
    apr_uint64_t served = 0, solved = 0;
    apr_pool_t *p = r->pool;
    int i;

    ap_set_content_type(r, IMC_JSON_TYPE);
    ap_rputs("{\"rows\":[", r);
    for (i = 0; i < rows->nelts; ++i) {
        const imc_rcache_row *row = &APR_ARRAY_IDX(rows, i, imc_rcache_row);

        ap_rprintf(
            r,
            "%s{\"day\":\"%s\",\"site_id\":\"%s\",\"served\":%" APR_UINT64_T_FMT
            ",\"solved\":%" APR_UINT64_T_FMT ",\"solve_rate\":%s}",
            i ? "," : "", imc_rcache_day_text(p, row->day),
            imc_http_json_escape(p, row->site), row->served, row->solved,
            rate(p, row->served, row->solved, "null"));
        served += row->served;
        solved += row->solved;
    }
    ap_rprintf(r,
               "],\"totals\":{\"served\":%" APR_UINT64_T_FMT
               ",\"solved\":%" APR_UINT64_T_FMT ",\"solve_rate\":%s}}",
               served, solved, rate(p, served, solved, "null"));
}

static void render_csv(request_rec *r, apr_array_header_t *rows)
{
    int i;

    ap_set_content_type(r, "text/csv; charset=utf-8; header=present");
    ap_rputs("day,site_id,served,solved,solve_rate\r\n", r);
    for (i = 0; i < rows->nelts; ++i) {
        const imc_rcache_row *row = &APR_ARRAY_IDX(rows, i, imc_rcache_row);

        ap_rprintf(
            r, "%s,%s,%" APR_UINT64_T_FMT ",%" APR_UINT64_T_FMT ",%s\r\n",
            imc_rcache_day_text(r->pool, row->day), row->site, row->served,
            row->solved, rate(r->pool, row->served, row->solved, ""));
    }
}

/* Maps a ClickHouse failure to the client's status; its text is logged,
 * never sent. */
static int clickhouse_error(request_rec *r, apr_status_t rv,
                            const imc_clickhouse_result *res)
{
    int status;

    if (rv == EMALFORMED) { /* logged by malformed() */
        return imc_http_error(r, HTTP_BAD_GATEWAY,
                              "the database's answer could not be read");
    }
    /* ClickHouse ends a query at max_execution_time with TIMEOUT_EXCEEDED:
     * the same "not in time" as curl giving up. */
    status = APR_STATUS_IS_TIMEUP(rv) || (rv == IMC_CLICKHOUSE_EREJECTED &&
                                          res->code == IMC_CH_TIMEOUT_EXCEEDED)
                 ? HTTP_GATEWAY_TIME_OUT
             : rv == APR_ECONNREFUSED         ? HTTP_SERVICE_UNAVAILABLE
             : rv == IMC_CLICKHOUSE_EREJECTED ? HTTP_BAD_GATEWAY
                                              : HTTP_SERVICE_UNAVAILABLE;

    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                  IMC_LOGNO(00401) "report query failed (HTTP %d, code %d): "
                                   "%.300s",
                  res->http_status, res->code, res->body ? res->body : "");
    return imc_http_error(
        r, status,
        status == HTTP_GATEWAY_TIME_OUT ? "the database did not answer in time"
        : status == HTTP_BAD_GATEWAY ? "the database could not run the report"
                                     : "the database is unreachable");
}

/* Runs the report's query over ranges (NULL: from / to) into *rows, per
 * bucket too with keys (imc_report_buckets_cell_keys); plan (when not
 * NULL) learns which days it covered. */
static apr_status_t query_rows(request_rec *r, const imc_config *c,
                               const report_args *a, imc_clickhouse *ch,
                               const char *where,
                               const apr_array_header_t *ranges,
                               imc_rcache_plan *plan, const char *keys,
                               apr_array_header_t **rows,
                               imc_clickhouse_result *res)
{
    apr_status_t rv = imc_clickhouse_query(
        ch, r->pool, build_sql(r->pool, c, a, where, ranges, plan, keys), NULL,
        res);

    imc_metrics_observe(IMC_H_CLICKHOUSE, res->elapsed);
    if (rv == APR_SUCCESS) {
        rv = parse_rows(r, (char *)res->body, keys != NULL, rows);
    }
    return rv;
}

/* Everything the rows of a day of every site depend on but the events:
 * the database, the user, the servers and the zone. The filter is not
 * part of it: the rows kept are unfiltered (filter_rows). */
static const char *cache_key(request_rec *r, const imc_config *c,
                             const report_args *a)
{
    return apr_pstrcat(
        r->pool, imc_config_database(c), "\n",
        imc_config_user(c) ? imc_config_user(c) : "", "\n",
        apr_array_pstrcat(r->pool, imc_config_clickhouse(c), ' '), "\n", a->tz,
        NULL);
}

/* The cells a report asks the cache for: every site's per day, or per
 * bucket of the days of form (imc_report_buckets_by_cells), over the days
 * [from, to] (either may be IMC_RCACHE_NO_DAY: open). */
typedef struct {
    const imc_report_form *form; /* NULL: per day */
    int from, to;
    const apr_array_header_t *parts; /* listed already (NULL: list them) */
    int listed_at;                   /* the endpoint that listed parts */
    apr_array_header_t *rows;        /* out: imc_rcache_row, in day order; NULL
                                      * when the cache cannot be used */
    int asked;                       /* out: ClickHouse computed some */
} cells_ask;

/* The GROUP BY keys of the cells' buckets within days for the instants of
 * ranges (NULL: per day). */
static const char *cells_keys(apr_pool_t *p, const cells_ask *ask,
                              const apr_array_header_t *ranges)
{
    apr_int64_t lo, hi, unused;

    if (!ask->form || !ranges->nelts) {
        return NULL;
    }
    imc_rcache_day_bounds(APR_ARRAY_IDX(ranges, 0, imc_rcache_range).first,
                          APR_ARRAY_IDX(ranges, 0, imc_rcache_range).first, &lo,
                          &unused);
    imc_rcache_day_bounds(
        APR_ARRAY_IDX(ranges, ranges->nelts - 1, imc_rcache_range).last,
        APR_ARRAY_IDX(ranges, ranges->nelts - 1, imc_rcache_range).last,
        &unused, &hi);
    return imc_report_buckets_cell_keys(p, ask->form, lo, hi);
}

/* The cells of ask through the cache: the parts list, then the queries
 * of every site's cells for the days whose parts changed, if any, each
 * of at most IMC_REPORT_QUERY_ROWS events (imc_rcache_plan_batches). */
static apr_status_t cached_rows(request_rec *r, const imc_config *c,
                                const report_args *a, imc_clickhouse *ch,
                                cells_ask *ask, imc_clickhouse_result *res)
{
    const apr_array_header_t *parts = ask->parts;
    apr_array_header_t *fresh, *batches, *listed;
    imc_rcache_plan *plan;
    const char *key = cache_key(r, c, a);
    apr_status_t rv;
    int cached, listed_at = ask->listed_at, i;

    ask->rows = NULL;
    ask->asked = 0;
    if (!parts && ((rv = imc_report_parts_list(r, c, a->tz, ch, &listed,
                                               res)) != APR_SUCCESS ||
                   !(parts = listed))) {
        if (rv == APR_SUCCESS && res->http_status && res->http_status != 200 &&
            !listing_told) {
            listing_told = 1; /* once per process: not per report */
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                          IMC_LOGNO(00602) "ClickHouse refused the report's "
                                           "listing of system.parts (HTTP "
                                           "%d, code %d): reports run "
                                           "without the cache",
                          res->http_status, res->code);
        }
        return rv;
    }
    if (!ask->parts) {
        listed_at = res->endpoint;
    }
    if (ask->form && ask->form->params->interval != IMC_BUCKET_DAY) {
        key = apr_pstrcat(r->pool, key, "\n",
                          imc_bucket_interval_name(ask->form->params->interval),
                          NULL);
    }
    plan = imc_rcache_plan_make(cache, r->pool, key,
                                (const imc_rcache_part *)parts->elts,
                                parts->nelts, ask->from, ask->to);
    cached = imc_rcache_plan_cached_days(plan);
    batches = imc_rcache_plan_batches(plan, IMC_REPORT_QUERY_ROWS);
    fresh = apr_array_make(r->pool, 64, sizeof(imc_rcache_row));
    ask->asked = batches->nelts > 0;
    for (i = 0; i < batches->nelts; ++i) {
        const apr_array_header_t *ranges =
            APR_ARRAY_IDX(batches, i, apr_array_header_t *);
        apr_array_header_t *rows;

        if ((rv = query_rows(r, c, a, ch, "1", ranges, plan,
                             cells_keys(r->pool, ask, ranges), &rows, res)) !=
            APR_SUCCESS) {
            return rv;
        }
        if (res->endpoint != listed_at) {
            /* Failed over between the listing and the query: the rows
             * are of another server than the fingerprints. Nothing is
             * kept; the caller asks the one that answered for every day. */
            return APR_SUCCESS;
        }
        apr_array_cat(fresh, rows); /* batches in day order */
    }
    imc_metrics_add(IMC_M_REPORT_DAYS_CACHED, (apr_uint64_t)cached);
    imc_metrics_add(IMC_M_REPORT_DAYS_QUERIED,
                    (apr_uint64_t)imc_rcache_plan_stale_days(plan));
    ask->rows = imc_rcache_complete(cache, plan, fresh);
    imc_metrics_add(IMC_M_REPORT_CELLS_CACHED,
                    (apr_uint64_t)(ask->rows->nelts - fresh->nelts));
    imc_metrics_add(IMC_M_REPORT_CELLS_QUERIED, (apr_uint64_t)fresh->nelts);
    return APR_SUCCESS;
}

/* The rows of every site cut to the report's filter and the principal's
 * sites, as the filtered query would answer: a count the filter does not
 * pass is 0, and a row with no count left is not one of the report's. */
static apr_array_header_t *filter_rows(request_rec *r, const report_args *a,
                                       const apr_array_header_t *all)
{
    apr_array_header_t *out =
        apr_array_make(r->pool, all->nelts + 1, sizeof(imc_rcache_row));
    int i;

    for (i = 0; i < all->nelts; ++i) {
        const imc_rcache_row *row = &APR_ARRAY_IDX(all, i, imc_rcache_row);
        imc_rcache_row kept = *row;

        if (a->grant && !imc_access_may(a->grant, row->site)) {
            continue;
        }
        if (!imc_filter_match(a->parsed, row->site, IMC_FILTER_SERVE,
                              row->day)) {
            kept.served = 0;
        }
        if (!imc_filter_match(a->parsed, row->site, IMC_FILTER_SOLVE,
                              row->day)) {
            kept.solved = 0;
        }
        if (kept.served || kept.solved) {
            *(imc_rcache_row *)apr_array_push(out) = kept;
        }
    }
    return out;
}

int imc_report_too_many_rows(request_rec *r, int max)
{
    return imc_http_json(
        r, HTTP_BAD_REQUEST,
        apr_psprintf(r->pool,
                     "{\"error\":\"the report would have more than %d rows "
                     "(IMChallengeMaxReportRows): ask for fewer days, a "
                     "longer interval or a narrower filter\",\"limit\":%d}",
                     max, max));
}

/* The filter compiled and narrowed to the principal's sites into *where,
 * and parsed for rows of the cache into a; DECLINED, or the error
 * answered. */
static int report_where(request_rec *r, report_args *a, const char **where)
{
    imc_filter_columns cols;
    imc_filter_error ferr;

    cols.day = day_expr(r->pool, a);
    cols.site_id = "site_id";
    cols.type = "type";
    if (imc_filter_compile(r->pool, a->filter, a->filter_len, &cols, where,
                           &ferr) != APR_SUCCESS) {
        return filter_error(r, &ferr);
    }
    if (imc_filter_parse(r->pool, a->filter, a->filter_len, &a->parsed,
                         &ferr) != APR_SUCCESS) {
        return filter_error(r, &ferr);
    }
    /* The forms' cache keys hold where: the narrowed one keeps tenants
     * apart; the days' rows are cut to a->grant. */
    return imc_tenant_narrow(r, where, &a->grant);
}

static void give_back(imc_report_client *client, imc_slot *slot)
{
    imc_report_client_give_back(client);
    imc_slots_give_back(slot);
}

/* A report slot and a ClickHouse client for the report, whose zone the
 * server must know; DECLINED, or the error answered. */
static int take_client(request_rec *r, const imc_config *c, report_args *a,
                       imc_slot *slot, imc_report_client **client)
{
    if (imc_slots_take(r->server, slot) != APR_SUCCESS) {
        apr_table_setn(r->headers_out, "Retry-After", "1");
        return imc_http_error(r, HTTP_SERVICE_UNAVAILABLE,
                              "too many reports are running: retry later");
    }
    if (!(*client = imc_report_client_take(c))) {
        imc_slots_give_back(slot);
        return imc_http_error(r, HTTP_SERVICE_UNAVAILABLE,
                              "the database client could not start");
    }
    a->procedure = (*client)->procedure;
    if (!imc_zones_known(r->pool, c, (*client)->ch, a->tz)) {
        give_back(*client, slot);
        return bad_zone(r);
    }
    return DECLINED;
}

/* The report per day and site with served, solved and solve_rate: the
 * form without interval, by, metrics, fill or compare, through the cache. */
static int day_report(request_rec *r, const imc_config *c, report_args *a,
                      const char *where)
{
    imc_clickhouse_result res;
    imc_report_client *client;
    imc_slot slot;
    apr_array_header_t *rows = NULL;
    apr_status_t rv = APR_SUCCESS;
    int rc, max = imc_config_max_report_rows(c);

    if (a->from && a->to &&
        imc_rcache_day_number(a->to) - imc_rcache_day_number(a->from) >= max) {
        return imc_report_too_many_rows(r, max);
    }
    if ((rc = take_client(r, c, a, &slot, &client)) != DECLINED) {
        return rc;
    }
    if (cache) {
        cells_ask ask = {NULL, a->from_day, a->to_day, NULL, 0, NULL, 0};

        if ((rv = cached_rows(r, c, a, client->ch, &ask, &res)) ==
                APR_SUCCESS &&
            ask.rows) {
            rows = filter_rows(r, a, ask.rows);
        }
    }
    if (rv == APR_SUCCESS && !rows) {
        rv = query_rows(r, c, a, client->ch, where, NULL, NULL, NULL, &rows,
                        &res);
    }
    give_back(client, &slot);
    if (rv != APR_SUCCESS) {
        return clickhouse_error(r, rv, &res);
    }
    if (rows->nelts > max) {
        return imc_report_too_many_rows(r, max);
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (a->csv) {
        render_csv(r, rows);
    } else {
        render_json(r, rows);
    }
    return OK;
}

/* The seconds past a serve that the form's metrics look at: the solve
 * window for unsolved and the solve times (part of the key, and of the
 * days whose parts the answer depends on), 0 for served, solved and
 * solve_rate, which read only the buckets' own events. */
static apr_int64_t form_window(const imc_rparams *pr, const imc_config *c)
{
    int i;

    for (i = 0; i < pr->nmetrics; ++i) {
        if (pr->metrics[i] != IMC_METRIC_SERVED &&
            pr->metrics[i] != IMC_METRIC_SOLVED &&
            pr->metrics[i] != IMC_METRIC_SOLVE_RATE) {
            return apr_time_sec(imc_config_solve_window(c));
        }
    }
    return 0;
}

/* Everything a form's answer depends on but the events: the day report's
 * key, the form's parameters as parsed, JSON or CSV, from / to, the row
 * limit, what uniqExact counts and the solve window. */
static const char *form_key(request_rec *r, const imc_config *c,
                            const report_args *a, const imc_report_form *f,
                            apr_int64_t window)
{
    const imc_rparams *pr = f->params;
    const char *metrics = "";
    int i;

    for (i = 0; i < pr->nmetrics; ++i) {
        metrics = apr_psprintf(r->pool, "%s%d,", metrics, (int)pr->metrics[i]);
    }
    return apr_psprintf(
        r->pool,
        "%s\n%s\ninterval=%d by_site=%d metrics=%s fill=%d compare=%d csv=%d "
        "from=%d to=%d max_rows=%d window=%" APR_INT64_T_FMT "\n%s",
        cache_key(r, c, a), f->where, (int)pr->interval, pr->by_site, metrics,
        pr->fill, pr->compare, f->csv, f->from, f->to, f->max_rows, window,
        f->procedure);
}

/* A form's answer looked up in the cache: key NULL when it
 * cannot be kept (no usable parts list, or a metric the key does not
 * cover). */
typedef struct {
    const char *key;
    apr_uint64_t fp;
    int keep;      /* no part of the database's current second */
    int listed_at; /* the endpoint that listed the parts */
    const apr_array_header_t *parts; /* the listing; NULL: no cache */
    char *kept; /* the answer kept: its content type, NUL, its body */
    apr_size_t size;
} form_lookup;

/* The parts list and the answer kept of form f, if any, into *look. */
static apr_status_t form_lookup_run(request_rec *r, const imc_config *c,
                                    const report_args *a, imc_clickhouse *ch,
                                    const imc_report_form *f, form_lookup *look,
                                    imc_clickhouse_result *res)
{
    apr_int64_t window = form_window(f->params, c);
    apr_array_header_t *parts;
    apr_status_t rv;
    int first, last, recent;

    memset(look, 0, sizeof(*look));
    if (!cache) {
        return APR_SUCCESS;
    }
    if ((rv = imc_report_parts_list(r, c, a->tz, ch, &parts, res)) !=
            APR_SUCCESS ||
        !parts) {
        return rv;
    }
    imc_rcache_forms_days(f->from, f->to, f->params->compare, window, &first,
                          &last);
    look->fp = imc_rcache_fingerprint((const imc_rcache_part *)parts->elts,
                                      parts->nelts, first, last, &recent);
    look->key = form_key(r, c, a, f, window);
    look->keep = !recent;
    look->listed_at = res->endpoint;
    look->parts = parts;
    look->kept =
        imc_rcache_forms_get(cache, r->pool, look->key, look->fp, &look->size);
    if (look->kept && !memchr(look->kept, '\0', look->size)) {
        look->kept = NULL; /* not one this file kept */
    }
    return APR_SUCCESS;
}

/* Sends the answer kept: its content type and its bytes. */
static int form_send_kept(request_rec *r, const form_lookup *look)
{
    apr_size_t n = strlen(look->kept) + 1;

    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_type(r, look->kept);
    ap_rwrite(look->kept + n, (int)(look->size - n), r);
    return OK;
}

/* What the keeping filter collects of an answer on its way out: the
 * bytes of its buckets, copied (buckets go once passed on). */
typedef struct {
    const char *key;
    apr_uint64_t fp;
    apr_array_header_t *pieces; /* imc_rcache_piece: the content type
                                 * and its NUL, then the body */
    apr_size_t len;
    int done; /* kept, or not to be */
} form_keeper;

/* Keeps the answer collected: its content type, NUL, its body. */
static void keeper_put(request_rec *r, form_keeper *k)
{
    imc_rcache_piece *type = &APR_ARRAY_IDX(k->pieces, 0, imc_rcache_piece);

    if (r->status != HTTP_OK || !r->content_type) {
        return;
    }
    type->data = r->content_type;
    type->len = strlen(r->content_type) + 1;
    imc_rcache_forms_putv(cache, k->key, k->fp,
                          (const imc_rcache_piece *)k->pieces->elts,
                          k->pieces->nelts);
}

/* Copies n bytes of the answer; 0 past what may be kept. */
static int keeper_append(apr_pool_t *p, form_keeper *k, const char *data,
                         apr_size_t n)
{
    imc_rcache_piece *piece;

    if (n > imc_rcache_forms_max(cache, k->key) - k->len) {
        return 0;
    }
    piece = apr_array_push(k->pieces);
    piece->data = apr_pmemdup(p, data, n);
    piece->len = n;
    k->len += n;
    return 1;
}

/* The output filter that keeps a form's answer as it is sent: its bytes
 * as rendered, kept at the end of the stream (imc_rcache_forms_putv). */
static apr_status_t keep_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    form_keeper *k = f->ctx;
    apr_bucket *b;

    for (b = APR_BRIGADE_FIRST(bb); !k->done && b != APR_BRIGADE_SENTINEL(bb);
         b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t n;

        if (APR_BUCKET_IS_EOS(b)) {
            k->done = 1;
            keeper_put(f->r, k);
        } else if (!APR_BUCKET_IS_METADATA(b) &&
                   (apr_bucket_read(b, &data, &n, APR_BLOCK_READ) !=
                        APR_SUCCESS ||
                    !keeper_append(f->r->pool, k, data, n))) {
            k->done = 1;
        }
    }
    return ap_pass_brigade(f->next, bb);
}

static ap_filter_rec_t *keep_filter_handle;

void imc_report_register_hooks(apr_pool_t *p)
{
    (void)p;
    keep_filter_handle = ap_register_output_filter(
        "IMC_REPORT_KEEP", keep_filter, NULL, AP_FTYPE_RESOURCE);
}

/* Has the answer about to be rendered kept as it goes out, unless a part
 * is of the database's current second or the query failed over to
 * another server than the parts list's. */
static void form_keep(request_rec *r, const form_lookup *look, int endpoint)
{
    form_keeper *k;

    if (!look->key || !look->keep || endpoint != look->listed_at ||
        !keep_filter_handle) {
        return;
    }
    k = apr_pcalloc(r->pool, sizeof(*k));
    k->key = look->key;
    k->fp = look->fp;
    k->pieces = apr_array_make(r->pool, 64, sizeof(imc_rcache_piece));
    apr_array_push(k->pieces); /* the content type, once known */
    ap_add_output_filter_handle(keep_filter_handle, k, r, r->connection);
}

/* A form whose rows add up from cells (imc_report_buckets_by_cells)
 * from the cache's cells of every site over its days (and the previous
 * period's with compare), cut to the filter and the principal's sites,
 * into *b; NULL when the cache cannot answer it so. look holds the
 * parts listed; *asked is set when ClickHouse computed cells. */
static apr_status_t cells_form(request_rec *r, const imc_config *c,
                               const report_args *a, imc_clickhouse *ch,
                               const imc_report_form *f,
                               const form_lookup *look, imc_report_buckets **b,
                               int *asked, imc_clickhouse_result *res)
{
    cells_ask ask = {f, f->from, f->to, look->parts, look->listed_at, NULL, 0};
    apr_status_t rv;
    int to;

    *b = NULL;
    if (!imc_report_buckets_by_cells(f)) {
        return APR_SUCCESS;
    }
    if (f->params->compare) { /* from and to are given */
        imc_report_form_previous(f, &ask.from, &to);
    }
    if ((ask.from == IMC_RCACHE_NO_DAY || ask.from < 1) &&
        imc_zone_offset(f->zone, 0) < 0) {
        /* West of UTC the first hours after the epoch are of 1969-12-31,
         * which the forms report in buckets of 1969 but ClickHouse's Date
         * (the cells' day) puts on 1970-01-01. */
        return APR_SUCCESS;
    }
    if ((rv = cached_rows(r, c, a, ch, &ask, res)) != APR_SUCCESS) {
        return rv;
    }
    *asked = ask.asked;
    if (ask.rows) { /* else failed over: ClickHouse answers with the filter */
        *b = imc_report_buckets_from_cells(r->pool, f,
                                           filter_rows(r, a, ask.rows));
    }
    return APR_SUCCESS;
}

/* A span's rows of every site (imc_report_buckets_by_spans) as kept, or
 * have 0 when there are none to use: more than the row limit, or asked
 * of another server than the parts' (failed over). */
typedef struct {
    void *blob;
    apr_size_t size;
    int have;
} span_kept;

/* The rows of every site of f's buckets over the local days [from, to],
 * from the cache while the parts holding those days (and one more on
 * each side) are the same, else asked of ClickHouse and kept; *asked is
 * set when ClickHouse was asked. */
static apr_status_t span_get(request_rec *r, const imc_config *c,
                             const report_args *a, imc_clickhouse *ch,
                             const imc_report_form *f,
                             const apr_array_header_t *parts, int listed_at,
                             int from, int to, span_kept *sp, int *asked,
                             imc_clickhouse_result *res)
{
    apr_int64_t window = form_window(f->params, c);
    const char *key = apr_psprintf(
        r->pool, "%s\nspan interval=%d from=%d to=%d window=%" APR_INT64_T_FMT,
        cache_key(r, c, a), (int)f->params->interval, from, to, window);
    int first, last, recent;
    apr_uint64_t fp;
    apr_status_t rv;

    imc_rcache_forms_days(from, to, 0, window, &first, &last);
    fp = imc_rcache_fingerprint((const imc_rcache_part *)parts->elts,
                                parts->nelts, first, last, &recent);
    if ((sp->blob = imc_rcache_forms_get(cache, r->pool, key, fp, &sp->size))) {
        sp->have = 1;
        return APR_SUCCESS;
    }
    *asked = 1;
    if ((rv = imc_report_buckets_span_query(r, c, ch, f, from, to, &sp->blob,
                                            &sp->size, res)) != APR_SUCCESS ||
        !sp->blob || res->endpoint != listed_at) {
        return rv;
    }
    sp->have = 1;
    if (!recent) {
        imc_rcache_forms_put(cache, key, fp, sp->blob, sp->size);
    }
    return APR_SUCCESS;
}

/* Whether the solve times of f's range may fit in a record of the cache:
 * at most one a procedure solved, of two events at least (4 bytes each),
 * as the parts' rows tell. Past that a span could not be kept, and asking
 * for every time would cost more than asking for f's figures. */
static int times_fit(const form_lookup *look, const imc_report_form *f)
{
    const imc_rcache_part *parts = (const imc_rcache_part *)look->parts->elts;
    apr_uint64_t rows = 0;
    int i, first, last;

    imc_rcache_forms_days(f->from, f->to, f->params->compare, 0, &first, &last);
    for (i = 0; i < look->parts->nelts; ++i) {
        if ((first == IMC_RCACHE_NO_DAY || parts[i].last >= first) &&
            (last == IMC_RCACHE_NO_DAY || parts[i].first <= last)) {
            rows += parts[i].rows;
        }
    }
    return rows / 2 * sizeof(apr_uint32_t) <=
           imc_rcache_forms_max(cache, look->key);
}

/* A form of spans (imc_report_buckets_by_spans: weeks, months, totals,
 * or the solve window's metrics, with a filter that names no day) from
 * the rows of every site of its range (and of the previous period with
 * compare), into *b; NULL when the cache cannot answer it so (look and
 * *asked as for cells_form). */
static apr_status_t spans_form(request_rec *r, const imc_config *c,
                               const report_args *a, imc_clickhouse *ch,
                               const imc_report_form *f,
                               const form_lookup *look, imc_report_buckets **b,
                               int *asked, imc_clickhouse_result *res)
{
    span_kept sp[2];
    apr_status_t rv;
    int from, to;

    *b = NULL;
    memset(sp, 0, sizeof(sp));
    if (!imc_report_buckets_by_spans(f, a->parsed) ||
        (imc_rparams_needs_window(f->params) && !times_fit(look, f))) {
        return APR_SUCCESS;
    }
    if ((rv = span_get(r, c, a, ch, f, look->parts, look->listed_at, f->from,
                       f->to, &sp[0], asked, res)) != APR_SUCCESS ||
        !sp[0].have) {
        return rv;
    }
    if (f->params->compare) {
        imc_report_form_previous(f, &from, &to);
    }
    if (f->params->compare && to >= 0 && /* else before 1970: no span */
        ((rv = span_get(r, c, a, ch, f, look->parts, look->listed_at,
                        from < 0 ? 0 : from, to, &sp[1], asked, res)) !=
             APR_SUCCESS ||
         !sp[1].have)) {
        return rv;
    }
    *b = imc_report_buckets_from_spans(r->pool, f, a->parsed, a->grant,
                                       sp[0].blob, sp[0].size, sp[1].blob,
                                       sp[1].size);
    return APR_SUCCESS;
}

/* The report with interval, by, metrics, fill or compare
 * (imc_report_buckets), through the cache: the answer kept while the
 * parts its events can be in are the same, else from its cells where the
 * form adds up from them, or from its spans where the filter names no
 * day, else ClickHouse's; an answer computed is kept as it is sent. */
static int bucket_report(request_rec *r, const imc_config *c, report_args *a,
                         const char *where)
{
    imc_clickhouse_result res;
    imc_report_client *client;
    imc_report_buckets *b = NULL;
    imc_report_form f;
    form_lookup look;
    imc_slot slot;
    apr_status_t rv;
    int rc, asked = 0;

    if (imc_zones_load(&a->zone, r->pool, a->tz) != APR_SUCCESS) {
        return bad_zone(r);
    }
    f.where = where;
    f.zone = a->zone;
    f.from = a->from_day;
    f.to = a->to_day;
    f.params = &a->params;
    f.csv = a->csv;
    f.max_rows = imc_config_max_report_rows(c);
    if (imc_report_buckets_too_many(&f)) {
        return imc_report_too_many_rows(r, f.max_rows);
    }
    if ((rc = take_client(r, c, a, &slot, &client)) != DECLINED) {
        return rc;
    }
    f.procedure = a->procedure;
    rv = form_lookup_run(r, c, a, client->ch, &f, &look, &res);
    if (rv == APR_SUCCESS && look.parts && !look.kept &&
        (rv = cells_form(r, c, a, client->ch, &f, &look, &b, &asked, &res)) ==
            APR_SUCCESS &&
        !b) {
        rv = spans_form(r, c, a, client->ch, &f, &look, &b, &asked, &res);
    }
    if (rv == APR_SUCCESS && !b && !look.kept) {
        rv = imc_report_buckets_query(&b, r, c, client->ch, &f, &res);
        asked = 1;
    }
    give_back(client, &slot);
    if (rv != APR_SUCCESS) {
        return clickhouse_error(r, rv, &res);
    }
    if (look.parts) { /* counted where the cache could be used */
        imc_metrics_add(
            asked ? IMC_M_REPORT_FORM_ASKED : IMC_M_REPORT_FORM_CACHED, 1);
    }
    if (look.kept) {
        return form_send_kept(r, &look);
    }
    if (imc_report_buckets_over(b)) {
        return imc_report_too_many_rows(r, f.max_rows);
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    form_keep(r, &look, res.endpoint);
    imc_report_buckets_render(r, b);
    return OK;
}

static int run_report(request_rec *r, const imc_config *c, report_args *a)
{
    const char *where;
    int rc;

    if ((rc = report_where(r, a, &where)) != DECLINED) {
        return rc;
    }
    return imc_rparams_is_default(&a->params) ? day_report(r, c, a, where)
                                              : bucket_report(r, c, a, where);
}

apr_status_t imc_report_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_size_t size = imc_config_report_cache(imc_config_get(s));
    retained_t *ret = ap_retained_data_get(RETAINED_KEY);
    apr_status_t rv;

    (void)pconf;
    store = NULL;
    if (!ret) {
        ret = ap_retained_data_create(RETAINED_KEY, sizeof(*ret));
        ret->shm = NULL;
    }
    /* Kept as it is across restarts of the same size: what it holds is
     * checked against the parts at every report anyway. */
    if (ret->shm && apr_shm_size_get(ret->shm) == size &&
        (store = imc_scache_attach(apr_shm_baseaddr_get(ret->shm), size))) {
        return APR_SUCCESS;
    }
    if (ret->shm) { /* children of older generations keep their mapping */
        apr_shm_destroy(ret->shm);
        ret->shm = NULL;
    }
    if (size == 0) {
        return APR_SUCCESS;
    }
    if ((rv = apr_shm_create(&ret->shm, size, NULL, s->process->pool)) !=
            APR_SUCCESS ||
        (rv = imc_scache_format(&store, apr_shm_baseaddr_get(ret->shm),
                                size)) != APR_SUCCESS) {
        ap_log_error(
            APLOG_MARK, APLOG_ERR, rv, s,
            IMC_LOGNO(00430) "cannot make the report cache's %" APR_SIZE_T_FMT
                             " bytes of shared memory "
                             "(IMChallengeReportCache): reports run "
                             "without it",
            size);
        store = NULL;
    }
    return APR_SUCCESS;
}

int imc_report_cache_stats(imc_scache_stats *st)
{
    if (!store) {
        return 0;
    }
    imc_scache_stats_get(store, st);
    return 1;
}

void imc_report_child_init(apr_pool_t *pchild)
{
    imc_zones_child_init(pchild); /* on failure, zones are not remembered */
    imc_report_parts_child_init(pchild); /* likewise the engines */
    cache = NULL;
    if (store) {
        imc_rcache_attach(&cache, pchild, store);
    }
    imc_report_client_child_init(pchild);
}

int imc_report_handler(request_rec *r)
{
    const imc_config *c = imc_config_get(r->server);
    apr_time_t start = apr_time_now();
    report_args a;
    int rc;

    memset(&a, 0, sizeof(a));
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        r->allowed = AP_METHOD_BIT << M_GET;
        rc = imc_http_error(r, HTTP_METHOD_NOT_ALLOWED, "use GET");
    } else if ((rc = parse_args(r, &a)) == DECLINED) {
        rc = run_report(r, c, &a);
    }
    imc_metrics_add(IMC_M_REPORTS, 1);
    if (r->status >= 400) {
        imc_metrics_add(IMC_M_REPORT_ERRORS, 1);
    }
    imc_metrics_observe(IMC_H_REPORT, apr_time_now() - start);
    return rc;
}

/* What imc_report_buckets shares (imc_report_private.h). */

char *imc_report_next_line(char **pos, int *cut)
{
    return next_line(pos, cut);
}

int imc_report_split_tabs(char *line, char **fields, int n)
{
    return split_tabs(line, fields, n);
}

int imc_report_parse_uint(const char *s, apr_uint64_t max, apr_uint64_t *out)
{
    return parse_uint(s, max, out);
}

int imc_report_parse_site(const char *s)
{
    return parse_site(s);
}

apr_status_t imc_report_malformed(request_rec *r, const char *what, int lineno,
                                  char *line, const char *end)
{
    return malformed(r, what, lineno, line, end);
}

const char *imc_report_rate(apr_pool_t *p, apr_uint64_t served,
                            apr_uint64_t solved, const char *none)
{
    return rate(p, served, solved, none);
}

int imc_report_clickhouse_error(request_rec *r, apr_status_t rv,
                                const imc_clickhouse_result *res)
{
    return clickhouse_error(r, rv, res);
}
