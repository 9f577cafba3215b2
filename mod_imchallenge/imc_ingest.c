/* Licensed under the Apache License, Version 2.0. */

#include <errno.h>
#include <sys/socket.h>

#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_network_io.h>
#include <apr_portable.h>
#include <apr_strings.h>
#include <ap_mpm.h>
#include <http_connection.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>

#include "imc_private.h"
#include "imc_config.h"
#include "imc_deliver.h"
#include "imc_event.h"
#include "imc_http.h"
#include "imc_ingest.h"
#include "imc_metrics.h"
#include "imc_spool.h"
#include "imc_tenant.h"

/* A request body is never read beyond this, whatever the limits say. */
#define MAX_BODY    ((apr_size_t)64 * 1024 * 1024)
#define SEGMENT_MAX ((apr_off_t)16 * 1024 * 1024)
#define RETRY_AFTER "5"
/* Request body bytes past the first BODY_FREE of each that one process
 * holds at once at most, counted BODY_STEP at a time as they arrive:
 * two of the largest bodies (MAX_BODY), eight of the shipped conf's
 * LimitRequestBody 16M. The first BODY_FREE of each body (small events
 * and batches) never count: threads x BODY_FREE bounds them. */
#define IN_FLIGHT_MAX ((apr_size_t)128 * 1024 * 1024)
#define BODY_FREE     ((apr_size_t)1024 * 1024)
#define BODY_STEP     ((apr_size_t)1024 * 1024)
/* Rows up to this size are made in one buffer and written at once;
 * bigger ones a piece of this size at a time. */
#define ROWS_PIECE ((apr_size_t)1024 * 1024)
/* A ?wait=1 request rechecks its delivery and its client this often
 * when no batch of this process wakes it sooner. */
#define WAIT_RECHECK   apr_time_from_msec(100)
#define FULL_LOG_EVERY apr_time_from_sec(60)
#define BODY_READY     (-1)
#define TEXT_PLAIN     100 /* JSON or NDJSON, told by the body */

/* This process's spool writers, by spool directory. Filled in child_init,
 * read-only afterwards. */
static apr_hash_t *writers;

/* Body bytes that this process's requests hold or may soon hold. */
static apr_size_t in_flight;

/* ?wait=1 requests waiting in this process, and how many may: a quarter
 * of ThreadsPerChild (at least 1), so that waiting clients never hold the
 * threads that /healthz and the other requests need. */
static int waiters, max_waiters = 1;

void imc_ingest_child_init(apr_pool_t *pchild, server_rec *s)
{
    int threads = 0;

    writers = apr_hash_make(pchild);
    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) == APR_SUCCESS &&
        threads / 4 > 1) {
        max_waiters = threads / 4;
    }
    for (; s; s = s->next) {
        const imc_config *c = imc_config_get(s);
        const char *dir = imc_config_spool_dir(c);
        imc_spool *sp = NULL;
        apr_status_t rv;

        if (apr_hash_get(writers, dir, APR_HASH_KEY_STRING)) {
            continue;
        }
        rv = imc_spool_open(&sp, pchild, dir, SEGMENT_MAX,
                            imc_config_spool_sync(c));
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         IMC_LOGNO(00201) "cannot open the spool directory "
                                          "%s: events get 503 until it works",
                         dir);
            continue;
        }
        imc_spool_set_limit(sp, imc_config_spool_limit(c));
        /* so that its deliverer never sends them elsewhere */
        imc_spool_set_stamp(sp,
                            imc_spool_stamp(pchild, imc_config_database(c)));
        apr_hash_set(writers, dir, APR_HASH_KEY_STRING, sp);
    }
}

static int reply_error(request_rec *r, int status, imc_metric_counter m,
                       const char *message)
{
    imc_metrics_add(m, 1);
    /* The body may be partly unread: do not reuse the connection. */
    r->connection->keepalive = AP_CONN_CLOSE;
    return imc_http_error(r, status, message);
}

static int reply_rejected(request_rec *r, const imc_event_error *err)
{
    apr_pool_t *p = r->pool;
    const char *field =
        err->field
            ? apr_pstrcat(p, "\"field\":\"",
                          imc_http_json_escape(p, err->field), "\",", NULL)
            : "";

    imc_metrics_add(err->status == HTTP_REQUEST_ENTITY_TOO_LARGE
                        ? IMC_M_REJECTED_TOO_LARGE
                        : IMC_M_REJECTED_INVALID,
                    1);
    return imc_http_json(
        r, err->status,
        apr_psprintf(p,
                     "{\"status\":\"rejected\",\"errors\":[{\"index\":%d,%s"
                     "\"error\":\"%s\"}]}",
                     err->index, field, imc_http_json_escape(p, err->message)));
}

/* The GET form: the event is the URL-encoded JSON object that forms the
 * rest of the path, from its first '{' (raw or %7B) on. httpd decodes
 * r->parsed_uri.path in place (all but %2F), so the path is taken from the
 * request target as the client sent it and decoded here exactly once:
 * "%25" stays '%' and an encoded '/' inside the event survives. */
static const char *event_from_path(request_rec *r, apr_size_t *len)
{
    const char *uri = r->unparsed_uri ? r->unparsed_uri : "";
    const char *end = uri + strcspn(uri, "?#");
    const char *start;

    for (start = uri; start < end; ++start) {
        if (*start == '{' ||
            (end - start >= 3 && !strncasecmp(start, "%7b", 3))) {
            break;
        }
    }
    if (start == end || start == uri || start[-1] != '/') {
        return NULL;
    }
    return imc_http_unescape(r->pool, start, (apr_size_t)(end - start), len);
}

/* The event format of a POST, from its media type; -1 if unsupported. */
static int post_format(request_rec *r)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    apr_size_t n;

    if (!ct) {
        return -1;
    }
    n = strcspn(ct, "; \t");
    if (n == 16 && !strncasecmp(ct, "application/json", n)) {
        return IMC_EVENT_JSON;
    }
    if ((n == 20 && !strncasecmp(ct, "application/x-ndjson", n)) ||
        (n == 18 && !strncasecmp(ct, "application/ndjson", n))) {
        return IMC_EVENT_NDJSON;
    }
    if (n == 10 && !strncasecmp(ct, "text/plain", n)) {
        return TEXT_PLAIN; /* navigator.sendBeacon with a string */
    }
    return -1;
}

/* Whether the body's Content-Encoding can be read: none (or identity),
 * or gzip with mod_deflate's input filter on the request (the shipped
 * conf sets it on the event URL when mod_deflate is loaded). */
static int encoding_readable(request_rec *r)
{
    const char *ce = apr_table_get(r->headers_in, "Content-Encoding");
    ap_filter_t *f;

    if (!ce || !*ce || !strcasecmp(ce, "identity")) {
        return 1;
    }
    if (strcasecmp(ce, "gzip") != 0) {
        return 0;
    }
    for (f = r->input_filters; f; f = f->next) {
        if (f->frec && f->frec->name && !strcasecmp(f->frec->name, "deflate")) {
            return 1;
        }
    }
    return 0;
}

/* The largest body a request may have: room for the largest batch, and
 * no more than LimitRequestBody when that is lower. */
static apr_size_t body_limit(request_rec *r, const imc_config *c)
{
    apr_uint64_t max = (apr_uint64_t)imc_config_max_batch_events(c) *
                           (imc_config_max_event_size(c) + 2) +
                       16;
    apr_off_t core = ap_get_limit_req_body(r);

    if (core > 0 && (apr_uint64_t)core < max) {
        max = (apr_uint64_t)core;
    }
    return max < MAX_BODY ? (apr_size_t)max : MAX_BODY;
}

/* The Content-Length the client announced, or -1 (none, or chunked). */
static apr_off_t declared_length(request_rec *r)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    char *end = NULL;
    apr_off_t n;

    if (!cl || apr_strtoff(&n, cl, &end, 10) != APR_SUCCESS || *end || n < 0) {
        return -1;
    }
    return n;
}

static int spool_refused(request_rec *r, const imc_config *c, apr_status_t rv);
static int full_log_due(apr_time_t *last);

static imc_spool *writer_of(const imc_config *c)
{
    return apr_hash_get(writers, imc_config_spool_dir(c), APR_HASH_KEY_STRING);
}

/* The body bytes one request counts against IN_FLIGHT_MAX. */
typedef struct {
    apr_size_t held;
} body_budget;

static apr_status_t in_flight_release(void *data)
{
    __atomic_sub_fetch(&in_flight, ((body_budget *)data)->held,
                       __ATOMIC_RELAXED);
    return APR_SUCCESS;
}

/* imc_http_budget_fn: counts the body's bytes past BODY_FREE against
 * IN_FLIGHT_MAX until the request ends; 0 when the process holds too
 * much already. */
static int in_flight_take(void *ctx, apr_size_t total)
{
    body_budget *b = ctx;

    while (total > BODY_FREE + b->held) {
        apr_size_t now = __atomic_load_n(&in_flight, __ATOMIC_RELAXED);

        do {
            if (now > IN_FLIGHT_MAX - BODY_STEP) {
                return 0;
            }
        } while (!__atomic_compare_exchange_n(&in_flight, &now, now + BODY_STEP,
                                              1, __ATOMIC_RELAXED,
                                              __ATOMIC_RELAXED));
        b->held += BODY_STEP;
    }
    return 1;
}

/* 503 + Retry-After: the bodies in flight in this process are at
 * IN_FLIGHT_MAX (or their memory ran out). */
static int busy(request_rec *r)
{
    static apr_time_t logged;

    if (full_log_due(&logged)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      IMC_LOGNO(00802) "request bodies in this process are "
                                       "at %" APR_SIZE_T_FMT " MB: refusing "
                                       "uploads until they are done",
                      IN_FLIGHT_MAX >> 20);
    }
    apr_table_setn(r->err_headers_out, "Retry-After", RETRY_AFTER);
    return reply_error(r, HTTP_SERVICE_UNAVAILABLE, IMC_M_REJECTED_SPOOL,
                       "the server is busy with other uploads; retry later");
}

/* Reads a POST body. Returns BODY_READY, or what the handler returns
 * when the request has been answered (here, or by an input filter).
 * Before a byte of it is read, a body announced too large is refused with
 * 413 and one the spool would refuse with 503; while it is read, one that
 * takes the process's bodies past IN_FLIGHT_MAX with 503. */
static int read_post(request_rec *r, const imc_config *c, const char **body,
                     apr_size_t *len, int *fmt)
{
    apr_size_t max = body_limit(r, c);
    apr_off_t declared = declared_length(r);
    imc_spool *sp = writer_of(c);
    body_budget *budget;
    apr_status_t rv = APR_ENOSPC;
    int status = 0;

    if ((*fmt = post_format(r)) < 0) {
        return reply_error(r, HTTP_UNSUPPORTED_MEDIA_TYPE, IMC_M_REJECTED_MEDIA,
                           "Content-Type must be application/json or "
                           "application/x-ndjson (or text/plain)");
    }
    if (!encoding_readable(r)) {
        /* RFC 7694: say which content codings would be read. */
        apr_table_setn(r->err_headers_out, "Accept-Encoding", "identity");
        return reply_error(r, HTTP_UNSUPPORTED_MEDIA_TYPE, IMC_M_REJECTED_MEDIA,
                           "this Content-Encoding cannot be read here: send "
                           "the body uncompressed (gzip needs mod_deflate's "
                           "input filter on this URL)");
    }
    if (declared <= (apr_off_t)max) {
        rv = sp ? imc_spool_admit(sp, declared > 0 ? (apr_size_t)declared : 0)
                : APR_ENOENT;
        if (rv != APR_SUCCESS) {
            return spool_refused(r, c, rv);
        }
        budget = apr_pcalloc(r->pool, sizeof(*budget));
        apr_pool_cleanup_register(r->pool, budget, in_flight_release,
                                  apr_pool_cleanup_null);
        rv = imc_http_read_body(r, max, in_flight_take, budget, body, len,
                                &status);
    }
    if (APR_STATUS_IS_ENOMEM(rv)) {
        return busy(r);
    }
    if (status == AP_FILTER_ERROR) {
        /* An input filter answered (LimitRequestBody, a bad chunk). */
        imc_metrics_add(r->status == HTTP_REQUEST_ENTITY_TOO_LARGE
                            ? IMC_M_REJECTED_TOO_LARGE
                            : IMC_M_REJECTED_INVALID,
                        1);
        return AP_FILTER_ERROR;
    }
    if (APR_STATUS_IS_ENOSPC(rv)) {
        return reply_error(r, HTTP_REQUEST_ENTITY_TOO_LARGE,
                           IMC_M_REJECTED_TOO_LARGE,
                           "the request body is too large");
    }
    if (rv != APR_SUCCESS) {
        return reply_error(r, status, IMC_M_REJECTED_INVALID,
                           "the request body could not be read");
    }
    if (*fmt == TEXT_PLAIN) {
        *fmt = imc_event_text_format(*body, *len);
    }
    return BODY_READY;
}

/* Whether the client has gone: the connection was aborted, or its socket
 * reads end-of-file (a peek: pipelined bytes stay where they are). A
 * client that half-closes after its request counts as gone. */
static int client_gone(request_rec *r)
{
    apr_socket_t *sock = ap_get_conn_socket(r->connection);
    apr_os_sock_t fd;
    ssize_t n;
    char b;

    if (r->connection->aborted) {
        return 1;
    }
    /* An HTTP/2 stream's connection (mod_http2 sets its master) has no
     * socket of its own to peek at: its aborted flag says it all. */
    if (r->connection->master || !sock ||
        apr_os_sock_get(&fd, sock) != APR_SUCCESS) {
        return 0;
    }
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 ||
           (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Takes one of the process's waiting places; 0 when all are taken. */
static int waiter_enter(void)
{
    int n = __atomic_load_n(&waiters, __ATOMIC_RELAXED);

    do {
        if (n >= max_waiters) {
            return 0;
        }
    } while (!__atomic_compare_exchange_n(&waiters, &n, n + 1, 1,
                                          __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return 1;
}

/*
 * ?wait=1: wait until the events are stored in ClickHouse, the timeout,
 * or the client leaves. Woken by this process's deliverer when it commits
 * a batch; rechecks every WAIT_RECHECK for a batch another process
 * delivered and for the client. Past the process's waiting places it
 * does not wait at all (202: not delivered in time).
 */
static int wait_delivered(request_rec *r, const imc_config *c,
                          const imc_spool_pos *pos)
{
    apr_time_t now = apr_time_now(), deadline = now + imc_config_timeout(c);
    apr_pool_t *p;
    int done = 0;

    if (!waiter_enter()) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      IMC_LOGNO(00800) "%d requests already wait for "
                                       "delivery in this process: answering "
                                       "202 at once",
                      max_waiters);
        return 0;
    }
    apr_pool_create(&p, r->pool);
    for (;;) {
        apr_uint64_t seen = imc_deliver_commits();

        apr_pool_clear(p);
        if (imc_spool_is_delivered(p, imc_config_spool_dir(c), pos, &done) !=
                APR_SUCCESS ||
            done || (now = apr_time_now()) >= deadline) {
            break;
        }
        if (client_gone(r)) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                          IMC_LOGNO(00801) "the client left while waiting "
                                           "for delivery");
            break;
        }
        if (imc_deliver_wait_commit(seen, deadline - now < WAIT_RECHECK
                                              ? deadline - now
                                              : WAIT_RECHECK)) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                          IMC_LOGNO(00803) "woken by a batch this process "
                                           "delivered");
        }
    }
    apr_pool_destroy(p);
    __atomic_sub_fetch(&waiters, 1, __ATOMIC_ACQ_REL);
    return done;
}

static int wants_wait(request_rec *r)
{
    const char *q = r->args;

    while (q && *q) {
        if (!strncmp(q, "wait=", 5)) {
            return q[5] == '1' || !strncasecmp(q + 5, "true", 4);
        }
        q = strchr(q, '&');
        q = q ? q + 1 : NULL;
    }
    return 0;
}

/* Whether a line about a full spool is due, *last being when the last
 * one of its kind was written (shared by the process's threads): one a
 * minute, for as long as requests keep being refused. */
static int full_log_due(apr_time_t *last)
{
    apr_time_t now = apr_time_now(),
               then = __atomic_load_n(last, __ATOMIC_RELAXED);

    return now - then >= FULL_LOG_EVERY &&
           __atomic_compare_exchange_n(last, &then, now, 0, __ATOMIC_RELAXED,
                                       __ATOMIC_RELAXED);
}

/* 503 + Retry-After for events the spool did not take, saying why: the
 * spool at IMChallengeSpoolLimit (back-pressure while ClickHouse lags), a
 * full disk, or a spool that cannot be written. */
static int spool_refused(request_rec *r, const imc_config *c, apr_status_t rv)
{
    static apr_time_t over_limit_logged, disk_full_logged;
    const char *why = "the event queue cannot be written; retry later";

    if (rv == IMC_SPOOL_EOVERLIMIT) {
        why = "the event queue is full (IMChallengeSpoolLimit); retry later";
        if (full_log_due(&over_limit_logged)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                          IMC_LOGNO(00203) "spool %s at IMChallengeSpoolLimit: "
                                           "refusing events until delivery "
                                           "frees room",
                          imc_config_spool_dir(c));
        }
    } else if (APR_STATUS_IS_ENOSPC(rv)) {
        why = "the event queue's disk is full; retry later";
        if (full_log_due(&disk_full_logged)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                          IMC_LOGNO(00204) "the disk of spool %s is full: "
                                           "refusing events",
                          imc_config_spool_dir(c));
        }
    } else {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                      IMC_LOGNO(00202) "cannot write to the spool");
    }
    apr_table_setn(r->err_headers_out, "Retry-After", RETRY_AFTER);
    return reply_error(r, HTTP_SERVICE_UNAVAILABLE, IMC_M_REJECTED_SPOOL, why);
}

static apr_size_t fill_rows(void *ctx, char *buf, apr_size_t cap)
{
    return imc_event_batch_fill(ctx, buf, cap);
}

/* Writes the batch's rows to the spool: in one buffer and one write when
 * they are small, else a piece of ROWS_PIECE (or the longest row) at a
 * time, so that a big request never holds its rows besides its body. */
static apr_status_t append_rows(request_rec *r, imc_spool *sp,
                                imc_event_batch *b, imc_spool_pos *pos)
{
    apr_size_t bound = imc_event_batch_bound(b), cap;
    char *buf;

    if (bound <= ROWS_PIECE) {
        buf = apr_palloc(r->pool, bound);
        return imc_spool_append(sp, buf, imc_event_batch_fill(b, buf, bound),
                                pos);
    }
    cap = imc_event_batch_row_max(b) > ROWS_PIECE ? imc_event_batch_row_max(b)
                                                  : ROWS_PIECE;
    buf = apr_palloc(r->pool, cap);
    return imc_spool_append_pieces(sp, bound, fill_rows, b, buf, cap, pos);
}

static int store(request_rec *r, const imc_config *c, imc_event_batch *b)
{
    imc_spool *sp = writer_of(c);
    int count = imc_event_batch_count(b), stored;
    imc_spool_pos pos;
    apr_status_t rv;

    rv = sp ? append_rows(r, sp, b, &pos) : APR_ENOENT;
    if (rv != APR_SUCCESS) {
        return spool_refused(r, c, rv);
    }
    imc_metrics_add(IMC_M_ACCEPTED, (apr_uint64_t)count);
    stored = wants_wait(r) && wait_delivered(r, c, &pos);
    return imc_http_json(r, stored ? HTTP_CREATED : HTTP_ACCEPTED,
                         apr_psprintf(r->pool,
                                      "{\"status\":\"%s\",\"accepted\":%d}",
                                      stored ? "stored" : "accepted", count));
}

static int method_not_allowed(request_rec *r)
{
    apr_table_setn(r->headers_out, "Allow", "GET, POST");
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST);
    return reply_error(r, HTTP_METHOD_NOT_ALLOWED, IMC_M_REJECTED_METHOD,
                       "use POST (or GET with the event in the path)");
}

int imc_ingest_handler(request_rec *r)
{
    const imc_config *c = imc_config_get(r->server);
    const imc_access_grant *grant;
    imc_event_limits limits;
    imc_event_batch *batch;
    imc_event_error err;
    const char *body;
    apr_size_t len;
    int fmt, status;
    apr_status_t rv;

    limits.max_event_size = imc_config_max_event_size(c);
    limits.max_events = imc_config_max_batch_events(c);
    if (r->header_only) {
        /* HEAD is a GET that must not change anything: the GET form
         * would store its event, so HEAD is not offered at all. */
        return method_not_allowed(r);
    }
    if ((status = imc_tenant_admit(r, &grant)) != DECLINED) {
        return status;
    }
    if (r->method_number == M_GET) {
        body = event_from_path(r, &len);
        if (!body) {
            return reply_error(r, HTTP_BAD_REQUEST, IMC_M_REJECTED_INVALID,
                               "GET needs one URL-encoded JSON event in the "
                               "path: /api/event/<event>");
        }
        fmt = IMC_EVENT_SINGLE;
    } else if (r->method_number == M_POST) {
        if ((status = read_post(r, c, &body, &len, &fmt)) != BODY_READY) {
            return status;
        }
    } else {
        return method_not_allowed(r);
    }
    rv = imc_event_parse_batch(r->pool, body, len, (imc_event_format_e)fmt,
                               &limits, r->request_time, &batch, &err);
    if (rv != APR_SUCCESS) {
        return reply_rejected(r, &err);
    }
    if ((status = imc_tenant_admit_events(r, grant, batch)) != DECLINED) {
        return status;
    }
    return store(r, c, batch);
}
