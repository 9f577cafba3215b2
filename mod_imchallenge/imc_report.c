/* Licensed under the Apache License, Version 2.0. */

#include <string.h>

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <http_protocol.h>

#include "imc_private.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_filter.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_report.h"

#define MAX_RESPONSE ((apr_size_t)64 * 1024 * 1024)
#define MAX_TZ       64
#define ZONEINFO     "/usr/share/zoneinfo/"

typedef struct {
    const char *filter; /* URL-decoded */
    apr_size_t filter_len;
    const char *from, *to, *tz;
    int csv;
} report_args;

typedef struct {
    const char *day, *site;
    apr_uint64_t served, solved;
} report_row;

/* An IANA zone name this machine knows: safe characters only (it is quoted
 * into SQL), no "..", and a compiled zone file (magic "TZif") in the zone
 * database, so that text files such as leapseconds are no zones. The
 * right/ variants count leap seconds, which ClickHouse cannot load. */
static int valid_tz(apr_pool_t *p, const char *tz)
{
    const char *c;
    apr_file_t *f;
    char magic[4];
    apr_size_t n = 0;
    apr_status_t rv;

    if (!*tz || strlen(tz) > MAX_TZ || tz[0] == '/' || strstr(tz, "..") ||
        !strncmp(tz, "right/", 6)) {
        return 0;
    }
    for (c = tz; *c; ++c) {
        if (!apr_isalnum(*c) && !strchr("/_+-", *c)) {
            return 0;
        }
    }
    if (!strcmp(tz, "UTC")) {
        return 1;
    }
    if (apr_file_open(&f, apr_pstrcat(p, ZONEINFO, tz, NULL), APR_FOPEN_READ,
                      APR_FPROT_OS_DEFAULT, p) != APR_SUCCESS) {
        return 0;
    }
    rv = apr_file_read_full(f, magic, sizeof(magic), &n);
    apr_file_close(f);
    return rv == APR_SUCCESS && n == sizeof(magic) &&
           !memcmp(magic, "TZif", sizeof(magic));
}

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
    if (a->from && !imc_filter_valid_date(a->from, strlen(a->from))) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "from must be a date YYYY-MM-DD");
    }
    if (a->to && !imc_filter_valid_date(a->to, strlen(a->to))) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "to must be a date YYYY-MM-DD");
    }
    if (!a->tz || !*a->tz) {
        a->tz = "UTC";
    } else if (!valid_tz(r->pool, a->tz)) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "tz must be an IANA time zone name such as "
                              "Europe/Paris");
    }
    if (format && strcmp(format, "json") && strcmp(format, "csv")) {
        return imc_http_error(r, HTTP_BAD_REQUEST,
                              "format must be json or csv");
    }
    a->csv = wants_csv(r, format);
    return DECLINED;
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

/* The query: exact distinct correlation ids per (day, site). from and to
 * also bound time, with a margin for zone offsets and DST, so ClickHouse
 * skips the months outside; the day conditions keep it exact. (Grouping by
 * the Date and UUID in a subquery and making text of the result rows only
 * measured no faster on 18.16: the distinct counts dominate.) */
static const char *build_sql(apr_pool_t *p, const imc_config *c,
                             const report_args *a, const char *where)
{
    const char *day = day_expr(p, a);

    return apr_pstrcat(
        p, "SELECT toString(", day, ") AS day, toString(site_id) AS site, ",
        "uniqExactIf(correlation_id, type = 'serve') AS served, ",
        "uniqExactIf(correlation_id, type = 'solve') AS solved FROM ",
        imc_config_database(c), ".events WHERE ", where,
        a->from ? apr_pstrcat(p, " AND ", day, " >= toDate('", a->from,
                              "') AND time >= toDateTime('", a->from,
                              " 00:00:00', '", a->tz, "') - 7200", NULL)
                : "",
        a->to ? apr_pstrcat(p, " AND ", day, " <= toDate('", a->to,
                            "') AND time < toDateTime('", a->to,
                            " 00:00:00', '", a->tz, "') + 97200", NULL)
              : "",
        " GROUP BY day, site ORDER BY day, site FORMAT TabSeparated", NULL);
}

/* Parses ClickHouse's TabSeparated answer: day, site, served, solved. */
static apr_array_header_t *parse_rows(apr_pool_t *p, char *body)
{
    apr_array_header_t *rows = apr_array_make(p, 64, sizeof(report_row));
    char *line, *last;

    for (line = apr_strtok(body, "\n", &last); line;
         line = apr_strtok(NULL, "\n", &last)) {
        report_row *row = apr_array_push(rows);
        char *f, *flast;

        row->day = apr_strtok(line, "\t", &flast);
        row->site = apr_strtok(NULL, "\t", &flast);
        f = apr_strtok(NULL, "\t", &flast);
        row->served = f ? apr_strtoi64(f, NULL, 10) : 0;
        f = apr_strtok(NULL, "\t", &flast);
        row->solved = f ? apr_strtoi64(f, NULL, 10) : 0;
        if (!row->day || !row->site) {
            apr_array_pop(rows);
        }
    }
    return rows;
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
        const report_row *row = &APR_ARRAY_IDX(rows, i, report_row);

        ap_rprintf(
            r,
            "%s{\"day\":\"%s\",\"site_id\":\"%s\",\"served\":%" APR_UINT64_T_FMT
            ",\"solved\":%" APR_UINT64_T_FMT ",\"solve_rate\":%s}",
            i ? "," : "", imc_http_json_escape(p, row->day),
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
        const report_row *row = &APR_ARRAY_IDX(rows, i, report_row);

        ap_rprintf(r,
                   "%s,%s,%" APR_UINT64_T_FMT ",%" APR_UINT64_T_FMT ",%s\r\n",
                   row->day, row->site, row->served, row->solved,
                   rate(r->pool, row->served, row->solved, ""));
    }
}

/* Maps a ClickHouse failure to the client's status; its text is logged,
 * never sent. */
static int clickhouse_error(request_rec *r, apr_status_t rv,
                            const imc_clickhouse_result *res)
{
    int status = APR_STATUS_IS_TIMEUP(rv)         ? HTTP_GATEWAY_TIME_OUT
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

static int run_report(request_rec *r, const imc_config *c, const report_args *a)
{
    imc_filter_columns cols;
    imc_filter_error ferr;
    imc_clickhouse_conf chconf;
    imc_clickhouse_result res;
    imc_clickhouse *ch;
    const char *where;
    apr_status_t rv;

    cols.day = day_expr(r->pool, a);
    cols.site_id = "site_id";
    cols.type = "type";
    if (imc_filter_compile(r->pool, a->filter, a->filter_len, &cols, &where,
                           &ferr) != APR_SUCCESS) {
        return filter_error(r, &ferr);
    }
    chconf.urls = imc_config_clickhouse(c);
    chconf.user = imc_config_user(c);
    chconf.password = imc_config_password(c);
    chconf.timeout = imc_config_timeout(c);
    chconf.max_response = MAX_RESPONSE;
    if ((rv = imc_clickhouse_create(&ch, r->pool, &chconf)) != APR_SUCCESS) {
        return imc_http_error(r, HTTP_SERVICE_UNAVAILABLE,
                              "the database client could not start");
    }
    rv = imc_clickhouse_query(ch, r->pool, build_sql(r->pool, c, a, where),
                              NULL, &res);
    imc_metrics_observe(IMC_H_CLICKHOUSE, res.elapsed);
    if (rv != APR_SUCCESS) {
        return clickhouse_error(r, rv, &res);
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (a->csv) {
        render_csv(r, parse_rows(r->pool, (char *)res.body));
    } else {
        render_json(r, parse_rows(r->pool, (char *)res.body));
    }
    return OK;
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
