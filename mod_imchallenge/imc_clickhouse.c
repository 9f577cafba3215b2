/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>
#include <strings.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <curl/curl.h>

#include "imc_clickhouse.h"

struct imc_clickhouse {
    CURL *curl;
    imc_clickhouse_conf conf;
    int current;         /* index of the endpoint that answered last */
    int header_code;     /* X-ClickHouse-Exception-Code of the answer */
    apr_time_t abort_at; /* 0, or when requests are cut (atomic) */
    char errbuf[CURL_ERROR_SIZE];
};

/* Where an answer accumulates, in the caller's pool, up to a cap. */
typedef struct {
    apr_pool_t *pool;
    char *data;
    apr_size_t len, cap, max;
    int too_big;
} sink_t;

/* A request body read by curl from memory. */
typedef struct {
    const char *data;
    apr_size_t len, off;
} source_t;

apr_status_t imc_clickhouse_global_init(apr_pool_t *pconf)
{
    (void)pconf;
    return curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK ? APR_SUCCESS
                                                         : APR_EGENERAL;
}

static apr_status_t client_cleanup(void *data)
{
    imc_clickhouse *ch = data;

    if (ch->curl) {
        curl_easy_cleanup(ch->curl);
        ch->curl = NULL;
    }
    return APR_SUCCESS;
}

apr_status_t imc_clickhouse_create(imc_clickhouse **pch, apr_pool_t *p,
                                   const imc_clickhouse_conf *conf)
{
    imc_clickhouse *ch = apr_pcalloc(p, sizeof(*ch));

    ch->conf = *conf;
    ch->curl = curl_easy_init();
    if (!ch->curl) {
        return APR_ENOMEM;
    }
    apr_pool_cleanup_register(p, ch, client_cleanup, apr_pool_cleanup_null);
    *pch = ch;
    return APR_SUCCESS;
}

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sink_t *s = userdata;
    apr_size_t n = size * nmemb;

    if (s->len + n > s->max) {
        s->too_big = 1;
        return 0;
    }
    if (s->len + n + 1 > s->cap) {
        apr_size_t cap = s->cap ? s->cap : 1024;
        char *data;

        while (cap < s->len + n + 1) {
            cap *= 2;
        }
        data = apr_palloc(s->pool, cap);
        if (s->len) {
            memcpy(data, s->data, s->len);
        }
        s->data = data;
        s->cap = cap;
    }
    memcpy(s->data + s->len, ptr, n);
    s->len += n;
    s->data[s->len] = '\0';
    return n;
}

static size_t source_read(char *buf, size_t size, size_t nitems, void *userdata)
{
    source_t *src = userdata;
    apr_size_t n = size * nitems;

    if (n > src->len - src->off) {
        n = src->len - src->off;
    }
    memcpy(buf, src->data + src->off, n);
    src->off += n;
    return n;
}

/* Lets curl send a body again on a fresh connection when a reused one
 * turned out to be closed before anything was answered. */
static int source_seek(void *userdata, curl_off_t offset, int origin)
{
    source_t *src = userdata;

    if (origin != SEEK_SET || offset < 0 || (apr_size_t)offset > src->len) {
        return CURL_SEEKFUNC_CANTSEEK;
    }
    src->off = (apr_size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static apr_time_t abort_time(const imc_clickhouse *ch)
{
    return __atomic_load_n(&ch->abort_at, __ATOMIC_ACQUIRE);
}

void imc_clickhouse_abort_at(imc_clickhouse *ch, apr_time_t when)
{
    __atomic_store_n(&ch->abort_at, when, __ATOMIC_RELEASE);
}

/* curl calls this often while a transfer runs, and about once a second
 * while it waits: non-zero ends the transfer. */
static int progress(void *data, curl_off_t dltotal, curl_off_t dlnow,
                    curl_off_t ultotal, curl_off_t ulnow)
{
    apr_time_t at = abort_time(data);

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return at != 0 && apr_time_now() >= at;
}

/* Notes X-ClickHouse-Exception-Code, which releases from 20.3 send with
 * an error found before the answer began (and, from 22.6, with one after
 * progress headers were sent). */
static size_t header_seen(char *buf, size_t size, size_t nitems, void *data)
{
    static const char name[] = "x-clickhouse-exception-code:";
    imc_clickhouse *ch = data;
    size_t n = size * nitems;

    if (n > sizeof(name) && !strncasecmp(buf, name, sizeof(name) - 1)) {
        char num[16];
        size_t k = n - (sizeof(name) - 1);

        if (k >= sizeof(num)) {
            k = sizeof(num) - 1;
        }
        memcpy(num, buf + sizeof(name) - 1, k);
        num[k] = '\0';
        ch->header_code = atoi(num);
    } else if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        ch->header_code = 0; /* a new answer (after a 100 Continue) */
    }
    return n;
}

#define SETOPT(opt, val)                                                       \
    if (curl_easy_setopt(ch->curl, opt, val) != CURLE_OK) {                    \
        return APR_EGENERAL;                                                   \
    }

/* Options every request has; the timeout ends at the abort time, if any. */
static apr_status_t set_common(imc_clickhouse *ch, sink_t *sink)
{
    apr_interval_time_t t = ch->conf.timeout;
    apr_time_t at = abort_time(ch);
    long ms;

    if (at != 0 && at - apr_time_now() < t) {
        t = at - apr_time_now();
    }
    ms = t > 1000 ? (long)apr_time_as_msec(t) : 1L;
    curl_easy_reset(ch->curl);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_TIMEOUT_MS, ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, ms);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_XFERINFOFUNCTION, progress);
    SETOPT(CURLOPT_XFERINFODATA, ch);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    /* No proxy from http_proxy, ALL_PROXY...: the module's requests carry
     * its ClickHouse credentials and go where IMChallengeClickHouse says,
     * whatever httpd's environment holds. */
    SETOPT(CURLOPT_PROXY, "");
    SETOPT(CURLOPT_NOPROXY, "*");
    SETOPT(CURLOPT_HEADERFUNCTION, header_seen);
    SETOPT(CURLOPT_HEADERDATA, ch);
    SETOPT(CURLOPT_WRITEFUNCTION, sink_write);
    SETOPT(CURLOPT_WRITEDATA, sink);
    SETOPT(CURLOPT_ERRORBUFFER, ch->errbuf);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    if (ch->conf.user) {
        SETOPT(CURLOPT_USERNAME, ch->conf.user);
        SETOPT(CURLOPT_PASSWORD, ch->conf.password ? ch->conf.password : "");
        SETOPT(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    }
    return APR_SUCCESS;
}

static apr_status_t map_curl_error(CURLcode cc, const sink_t *sink)
{
    switch (cc) {
        case CURLE_OK:
            return APR_SUCCESS;
        case CURLE_OPERATION_TIMEDOUT:
            return APR_TIMEUP;
        case CURLE_ABORTED_BY_CALLBACK:
            return APR_ECONNABORTED;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
            return APR_ECONNREFUSED;
        case CURLE_WRITE_ERROR:
            return sink->too_big ? IMC_CLICKHOUSE_ETOOBIG : APR_EGENERAL;
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
            return APR_ECONNRESET;
        default:
            return APR_EGENERAL;
    }
}

/* ClickHouse's error answers start "Code: N, e.displayText() = ..." (older
 * releases) or "Code: N. DB::Exception: ..." (current ones). */
static int exception_code(const char *body)
{
    const char *p = body ? strstr(body, "Code: ") : NULL;

    return p ? atoi(p + 6) : 0;
}

/* The code of an exception line at s (up to end), 0 if s is none. */
static int exception_line(const char *s, const char *end)
{
    const char *q = s + 6;
    int code = 0;

    if (end - s < 8 || memcmp(s, "Code: ", 6) || !apr_isdigit(*q)) {
        return 0;
    }
    while (q < end && apr_isdigit(*q) && code < 100000) {
        code = code * 10 + (*q++ - '0');
    }
    if ((end - q >= 15 && !memcmp(q, ". DB::Exception", 15)) ||
        (end - q >= 16 && !memcmp(q, ", e.displayText()", 16))) {
        return code ? code : -1;
    }
    return 0;
}

int imc_clickhouse_body_exception(const char *body, apr_size_t len)
{
    static const char tag[] = "__exception__";
    const char *s = body, *end = body + len, *nl;
    int code;

    for (; s && s < end; s = nl ? nl + 1 : NULL) {
        nl = memchr(s, '\n', (apr_size_t)(end - s));
        if ((apr_size_t)(end - s) >= sizeof(tag) - 1 &&
            !memcmp(s, tag, sizeof(tag) - 1)) {
            /* __exception__TAG, the message, "<size> TAG__exception__" */
            const char *m = nl ? nl + 1 : end;

            code = m < end ? exception_line(m, end) : 0;
            return code ? code : -1;
        }
        if ((code = exception_line(s, nl ? nl : end)) != 0) {
            return code;
        }
    }
    return 0;
}

imc_clickhouse_version imc_clickhouse_parse_version(const char *text)
{
    imc_clickhouse_version v = {0, 0};
    char *end;
    long major = text ? strtol(text, &end, 10) : 0;

    if (text && end != text && *end == '.' && major > 0 && major < 1000) {
        long minor = strtol(end + 1, NULL, 10);

        if (minor >= 0 && minor < 1000) {
            v.major = (int)major;
            v.minor = (int)minor;
        }
    }
    return v;
}

static int version_before(imc_clickhouse_version v, int major, int minor)
{
    return v.major < major || (v.major == major && v.minor < minor);
}

int imc_clickhouse_is_permanent(int code, imc_clickhouse_version v)
{
    int known = v.major > 0;

    switch (code) {
        /* What current releases call parse errors (src/Formats/
         * ParseError.cpp), and the type errors of a row. */
        case IMC_CH_CANNOT_PARSE_TEXT:
        case IMC_CH_CANNOT_PARSE_ESCAPE_SEQUENCE:
        case IMC_CH_CANNOT_PARSE_QUOTED_STRING:
        case IMC_CH_CANNOT_PARSE_INPUT_ASSERTION_FAILED:
        case IMC_CH_ATTEMPT_TO_READ_AFTER_EOF:
        case IMC_CH_CANNOT_READ_ALL_DATA:
        case IMC_CH_CANNOT_PARSE_DATE:
        case IMC_CH_CANNOT_PARSE_DATETIME:
        case IMC_CH_TYPE_MISMATCH:
        case IMC_CH_ARGUMENT_OUT_OF_BOUND:
        case IMC_CH_CANNOT_CONVERT_TYPE:
        case IMC_CH_CANNOT_PARSE_NUMBER:
        case IMC_CH_INCORRECT_DATA:
        case IMC_CH_CANNOT_READ_ARRAY_FROM_TEXT:
        case IMC_CH_TOO_LARGE_STRING_SIZE:
        case IMC_CH_CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN:
        case IMC_CH_CANNOT_PARSE_UUID:
        case IMC_CH_CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING:
        case IMC_CH_CANNOT_PARSE_BOOL:
        case IMC_CH_CANNOT_READ_MAP_FROM_TEXT:
        case IMC_CH_UNEXPECTED_DATA_AFTER_PARSED_VALUE:
        case IMC_CH_CANNOT_PARSE_IPV4:
        case IMC_CH_CANNOT_PARSE_IPV6:
        case IMC_CH_UNKNOWN_ELEMENT_OF_ENUM:
            return 1;
        /* An unknown Enum element, by release (ClickHouse pull requests
         * 8896 and 48133); otherwise a server bug or a bad query. An
         * unknown release is taken as a current one: retried. */
        case IMC_CH_LOGICAL_ERROR:
            return known && version_before(v, 20, 2);
        case IMC_CH_BAD_ARGUMENTS:
            return known && !version_before(v, 20, 2) &&
                   version_before(v, 23, 4);
        default:
            return 0;
    }
}

/* One request to one endpoint: path+query appended to its base URL. */
static apr_status_t perform(imc_clickhouse *ch, apr_pool_t *p, const char *base,
                            const char *path, const char *body, apr_size_t len,
                            imc_clickhouse_result *res)
{
    sink_t sink = {p, NULL, 0, 0, ch->conf.max_response, 0};
    source_t src = {body, len, 0};
    apr_size_t blen = strlen(base);
    const char *url;
    apr_time_t start = apr_time_now();
    long status = 0;
    apr_status_t rv;
    CURLcode cc;

    url = apr_pstrcat(p, base, (blen && base[blen - 1] == '/') ? "" : "/", path,
                      NULL);
    if ((rv = set_common(ch, &sink)) != APR_SUCCESS) {
        return rv;
    }
    SETOPT(CURLOPT_URL, url);
    if (body) {
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_READFUNCTION, source_read);
        SETOPT(CURLOPT_READDATA, &src);
        SETOPT(CURLOPT_SEEKFUNCTION, source_seek);
        SETOPT(CURLOPT_SEEKDATA, &src);
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    ch->errbuf[0] = '\0';
    ch->header_code = 0;
    cc = curl_easy_perform(ch->curl);
    curl_easy_getinfo(ch->curl, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = (int)status;
    res->body = sink.data ? sink.data : "";
    res->len = sink.len;
    res->url = base;
    res->elapsed = apr_time_now() - start;
    res->code = 0;
    res->late = 0;
    rv = map_curl_error(cc, &sink);
    if (rv == APR_SUCCESS && status != 200) {
        res->code = exception_code(res->body);
        rv = IMC_CLICKHOUSE_EREJECTED;
    } else if (rv == APR_SUCCESS && (ch->header_code > 0 ||
                                     (res->code = imc_clickhouse_body_exception(
                                          res->body, res->len)))) {
        /* A 200 whose body ends in an exception: never a result. */
        if (ch->header_code > 0) {
            res->code = ch->header_code;
        }
        res->late = 1;
        rv = IMC_CLICKHOUSE_EREJECTED;
    }
    return rv;
}

/* Tries the endpoints, starting with the one that answered last, and moves
 * on only when one could not be reached or timed out. */
static apr_status_t request(imc_clickhouse *ch, apr_pool_t *p, const char *path,
                            const char *body, apr_size_t len,
                            imc_clickhouse_result *res)
{
    const apr_array_header_t *urls = ch->conf.urls;
    apr_status_t rv = APR_ECONNREFUSED;
    int i;

    memset(res, 0, sizeof(*res));
    if (abort_time(ch) != 0 && apr_time_now() >= abort_time(ch)) {
        return APR_ECONNABORTED;
    }
    for (i = 0; i < urls->nelts; ++i) {
        int n = (ch->current + i) % urls->nelts;

        rv = perform(ch, p, APR_ARRAY_IDX(urls, n, const char *), path, body,
                     len, res);
        res->endpoint = n;
        if (rv != APR_ECONNREFUSED && rv != APR_TIMEUP) {
            ch->current = n;
            break;
        }
    }
    return rv;
}

apr_status_t imc_clickhouse_ping(imc_clickhouse *ch, apr_pool_t *p,
                                 imc_clickhouse_result *res)
{
    apr_status_t rv = request(ch, p, "ping", NULL, 0, res);

    if (rv == APR_SUCCESS && strncmp(res->body, "Ok.", 3) != 0) {
        rv = IMC_CLICKHOUSE_EREJECTED;
    }
    return rv;
}

const char *imc_clickhouse_escape(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = apr_palloc(p, strlen(s) * 3 + 1), *o = out;

    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;

        if (apr_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

void imc_clickhouse_set_query_params(imc_clickhouse *ch, const char *params)
{
    ch->conf.query_params = params;
}

int imc_clickhouse_current(const imc_clickhouse *ch)
{
    return ch->current;
}

apr_status_t imc_clickhouse_query(imc_clickhouse *ch, apr_pool_t *p,
                                  const char *sql, const char *params,
                                  imc_clickhouse_result *res)
{
    const char *path =
        apr_pstrcat(p, "?wait_end_of_query=1",
                    ch->conf.query_params ? ch->conf.query_params : "",
                    params ? params : "", NULL);

    return request(ch, p, path, sql, strlen(sql), res);
}

apr_status_t imc_clickhouse_insert(imc_clickhouse *ch, apr_pool_t *p,
                                   const char *table, const char *rows,
                                   apr_size_t len, const char *token,
                                   const char *params,
                                   imc_clickhouse_result *res)
{
    const char *sql =
        apr_pstrcat(p, "INSERT INTO ", table, " FORMAT JSONEachRow", NULL);
    /* Every release from 18.16 on knows the setting; without it, a field
     * the table lacks is INCORRECT_DATA, which would quarantine the rows. */
    const char *path = apr_pstrcat(p, "?query=", imc_clickhouse_escape(p, sql),
                                   "&input_format_skip_unknown_fields=1",
                                   token ? "&insert_deduplication_token=" : "",
                                   token ? imc_clickhouse_escape(p, token) : "",
                                   params ? params : "", NULL);

    return request(ch, p, path, rows, len, res);
}
