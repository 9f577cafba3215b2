/* Licensed under the Apache License, Version 2.0. */

/*
 * Why a thread per child and a lock file rather than a mod_watchdog
 * singleton or an ap_mutex: the spool outlives httpd generations. During a
 * graceful restart the old generation's processes still run beside the new
 * ones, and a mutex created per generation would let two deliverers send
 * the same segment. An flock on a file in the spool directory guards the
 * directory itself, across generations and processes, and the kernel
 * releases it when its holder dies, so a live process takes over the spool
 * of a dead one within a second.
 */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <mpm_common.h>
#include <unistd.h>

#include "imc_private.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_deliver.h"
#include "imc_deliver_policy.h"
#include "imc_metrics.h"
#include "imc_schema.h"
#include "imc_spool.h"

#define POLL_INTERVAL      apr_time_from_msec(50)
#define LOCK_RETRY         apr_time_from_sec(1)
#define PING_INTERVAL      apr_time_from_sec(1)
#define SCHEMA_RETRY       apr_time_from_sec(30)
#define BACKOFF_MIN        apr_time_from_msec(100)
#define BACKOFF_MAX        apr_time_from_sec(30)
#define BACKLOG_LOG        apr_time_from_sec(60)
#define STOP_MARGIN        apr_time_from_sec(1)
#define MAX_CH_RESPONSE    ((apr_size_t)64 * 1024)
#define ALLOCATOR_MAX_FREE ((apr_size_t)4 * 1024 * 1024)

typedef struct {
    server_rec *s; /* the first server that names this spool directory */
    const char *dir, *db, *table;
    const char *stamp;   /* of this destination (imc_spool_stamp) */
    const char *key;     /* the spool's imc_spool_dir_key */
    int slot;            /* of its gauges (imc_metrics_spool_slot) */
    apr_int64_t queued;  /* events queued, as last counted */
    apr_hash_t *foreign; /* stamps of other destinations, told once */
    int create_schema;
    apr_interval_time_t timeout;
    imc_clickhouse_conf chconf;

    apr_pool_t *pool; /* the thread's own, not a child of pchild */
    apr_thread_t *thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;    /* waits on CLOCK_MONOTONIC */
    int stopping, finished; /* under mutex */

    apr_time_t stop_by; /* set with stopping (atomic): end of the patience */

    apr_file_t *lock; /* held: this thread delivers the directory */
    imc_clickhouse *ch;
    imc_schema_features features;
    int schema_ok, features_ok, failures;
    int schema_failures, failing, spool_failing;
    int ping_failed;  /* the last ping got no answer */
    int ping_refused; /* the last ping was refused (told once a streak) */
    int probe_told;   /* a refused feature probe was logged */
    /* on imc_deliver_clock() */
    apr_time_t next_ping, next_schema, next_probe, next_try, next_log;
    apr_time_t next_gauges, next_failed; /* next count of DIR/failed */
    imc_policy *policy;                  /* what to send next */
    apr_uint32_t rand;
} deliverer_t;

/*
 * Intervals (pings, back-off, batch delay, the minute between backlog
 * lines, waits) are measured on CLOCK_MONOTONIC: a step of the wall clock
 * (NTP, an administrator) neither stalls delivery for as long as the step
 * back nor hurries it. The ages of events stay on the wall clock, as their
 * segments' creation times are. apr_thread_cond_timedwait() waits for a
 * wall-clock deadline, hence a pthread condition on the monotonic clock.
 */
apr_time_t imc_deliver_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return apr_time_from_sec(ts.tv_sec) + ts.tv_nsec / 1000;
}

/* Waits on d->cond (mutex held) up to t. */
static void cond_wait_for(deliverer_t *d, apr_interval_time_t t)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(t / APR_USEC_PER_SEC);
    ts.tv_nsec += (long)(t % APR_USEC_PER_SEC) * 1000;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&d->cond, &d->mutex, &ts);
}

/* Batches committed (delivered or quarantined) by this process's
 * deliverers, and the condition that tells ?wait=1 requests so. Made in
 * child_init, before any request thread runs. */
static apr_thread_mutex_t *commit_mutex;
static apr_thread_cond_t *commit_cond;
static apr_uint64_t commits;

static void commit_notify(void)
{
    if (commit_mutex) {
        apr_thread_mutex_lock(commit_mutex);
        __atomic_add_fetch(&commits, 1, __ATOMIC_RELEASE);
        apr_thread_cond_broadcast(commit_cond);
        apr_thread_mutex_unlock(commit_mutex);
    }
}

apr_uint64_t imc_deliver_commits(void)
{
    return __atomic_load_n(&commits, __ATOMIC_ACQUIRE);
}

int imc_deliver_wait_commit(apr_uint64_t seen, apr_interval_time_t timeout)
{
    int woken = 1;

    if (timeout <= 0) {
        return 0;
    }
    if (!commit_mutex) {
        apr_sleep(timeout);
        return 0;
    }
    apr_thread_mutex_lock(commit_mutex);
    if (commits == seen) {
        /* a spurious wake-up without a commit is no commit */
        woken = apr_thread_cond_timedwait(commit_cond, commit_mutex, timeout) ==
                    APR_SUCCESS &&
                commits != seen;
    }
    apr_thread_mutex_unlock(commit_mutex);
    return woken;
}

/* Sleeps up to t, or until asked to stop. Returns 1 when stopping. */
static int pause_for(deliverer_t *d, apr_interval_time_t t)
{
    int stopping;

    pthread_mutex_lock(&d->mutex);
    if (!d->stopping && t > 0) {
        cond_wait_for(d, t);
    }
    stopping = d->stopping;
    pthread_mutex_unlock(&d->mutex);
    return stopping;
}

/* The status to log with a ClickHouse failure: an answered error is told
 * by its HTTP status and code, not by an APR status APR cannot name. */
static apr_status_t log_status(apr_status_t rv)
{
    return rv == IMC_CLICKHOUSE_EREJECTED ? 0 : rv;
}

/* Capped exponential back-off with jitter: 50..100% of the step. */
static apr_interval_time_t backoff(deliverer_t *d)
{
    apr_interval_time_t t = BACKOFF_MIN;
    int i;

    for (i = 1; i < d->failures && t < BACKOFF_MAX; ++i) {
        t *= 2;
    }
    if (t > BACKOFF_MAX) {
        t = BACKOFF_MAX;
    }
    d->rand ^= d->rand << 13;
    d->rand ^= d->rand >> 17;
    d->rand ^= d->rand << 5;
    return t / 2 + (apr_interval_time_t)(d->rand % (apr_uint32_t)(t / 2 + 1));
}

/* This spool's gauges, not another's. */
static void gauge_set(deliverer_t *d, imc_metric_gauge g, apr_int64_t v)
{
    imc_metrics_spool_set(d->slot, d->key, g, v);
}

/* Whether ClickHouse answers the module's user: an authenticated query,
 * since /ping takes no credentials and answers while every insert is
 * refused. Readiness follows it. */
static void ping(deliverer_t *d, apr_pool_t *p, apr_time_t now)
{
    imc_clickhouse_result res;
    apr_status_t rv = imc_clickhouse_query(d->ch, p, "SELECT 1", NULL, &res);

    if (rv == APR_SUCCESS && strcmp(res.body, "1\n") != 0) {
        rv = IMC_CLICKHOUSE_EREJECTED;
    }
    if (rv == IMC_CLICKHOUSE_EREJECTED && !d->ping_refused) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, d->s,
                     IMC_LOGNO(00600) "ClickHouse at %s refuses the module's "
                                      "queries (HTTP %d, code %d): not "
                                      "ready until it accepts them",
                     res.url ? res.url : "?", res.http_status, res.code);
    }
    d->ping_refused = rv == IMC_CLICKHOUSE_EREJECTED;

    imc_metrics_observe(IMC_H_CLICKHOUSE, res.elapsed);
    gauge_set(d,
              rv == APR_SUCCESS ? IMC_G_CLICKHOUSE_OK : IMC_G_CLICKHOUSE_FAIL,
              imc_deliver_clock());
    d->next_ping = now + PING_INTERVAL;
    /* ClickHouse is back after an outage: deliver now rather than wait
     * out a back-off of up to BACKOFF_MAX. Once per recovery, so a server
     * that answers pings but fails inserts still gets the back-off. */
    if (rv == APR_SUCCESS && d->ping_failed) {
        d->next_try = now;
    }
    d->ping_failed = rv != APR_SUCCESS;
}

/* ClickHouse refused the module's user as such (not one of its grants). */
static int refuses_user(const imc_clickhouse_result *res)
{
    return res->http_status == 401 || res->code == IMC_CH_UNKNOWN_USER ||
           res->code == IMC_CH_WRONG_PASSWORD ||
           res->code == IMC_CH_REQUIRED_PASSWORD ||
           res->code == IMC_CH_AUTHENTICATION_FAILED;
}

/* A feature probe ClickHouse refused (a grant on system.settings
 * missing): told once, at warn, as it changes what the module sends. */
static void probe_refused(deliverer_t *d, const imc_clickhouse_result *res)
{
    if (d->features.refused && !d->probe_told) {
        d->probe_told = 1;
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, d->s,
                     IMC_LOGNO(00601) "ClickHouse at %s refused a probe of "
                                      "its release or system.settings "
                                      "(HTTP %d, code %d): deliveries go "
                                      "without deduplication token and "
                                      "async_insert=0",
                     res->url ? res->url : "?", res->http_status, res->code);
    }
}

static void apply_schema(deliverer_t *d, apr_pool_t *p, apr_time_t now)
{
    imc_clickhouse_result res;
    apr_status_t rv = imc_schema_apply(d->ch, p, d->db, &d->features, &res);
    int level;

    /* Unreachable: soon again; refused: in a while. */
    d->next_schema = now + (res.http_status ? SCHEMA_RETRY : PING_INTERVAL);
    if (rv == APR_SUCCESS) {
        d->schema_ok = d->features_ok = 1;
        d->schema_failures = 0;
        probe_refused(d, &res);
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, d->s,
                     IMC_LOGNO(00301) "schema of database %s is in place "
                                      "(deduplication token: %s)",
                     d->db, d->features.dedup_token ? "yes" : "no");
        return;
    }
    /* (not in the macro's arguments: it reads the level twice) */
    level = d->schema_failures++ ? APLOG_DEBUG : APLOG_WARNING;
    ap_log_error(APLOG_MARK, level, log_status(rv), d->s,
                 IMC_LOGNO(00302) "cannot apply the schema to %s "
                                  "(HTTP %d, code %d); retrying later",
                 res.url ? res.url : "ClickHouse", res.http_status, res.code);
}

/* A spool operation failed: told once per streak of failures. */
static apr_status_t spool_failed(deliverer_t *d, apr_status_t rv)
{
    if (!d->spool_failing++) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, d->s,
                     IMC_LOGNO(00306) "cannot read the spool %s or record "
                                      "delivery progress in it; retrying "
                                      "with back-off",
                     d->dir);
    }
    return rv;
}

/* A failed INSERT is told when a streak of failures starts and then every
 * minute, with the backlog; the end of the streak is told too. */
static void log_failure(deliverer_t *d, apr_status_t rv,
                        const imc_clickhouse_result *res, int lines)
{
    apr_time_t now = imc_deliver_clock();
    int loud = !d->failing || now >= d->next_log;

    if (loud) {
        d->next_log = now + BACKLOG_LOG;
    }
    d->failing = 1;
    ap_log_error(
        APLOG_MARK, loud ? APLOG_WARNING : APLOG_DEBUG, log_status(rv), d->s,
        IMC_LOGNO(00304) "delivery of %d events to %s failed (HTTP "
                         "%d, code %d); %" APR_INT64_T_FMT
                         " events (%" APR_INT64_T_FMT
                         " bytes) queued, the oldest %.1f s old; "
                         "retrying with back-off",
        lines, res->url ? res->url : "ClickHouse", res->http_status, res->code,
        d->queued, imc_metrics_spool_get(d->slot, IMC_G_SPOOL_BYTES),
        (double)imc_metrics_spool_get(d->slot, IMC_G_OLDEST_AGE_MS) / 1000.0);
}

static void log_recovery(deliverer_t *d, const imc_clickhouse_result *res)
{
    if (d->failing) {
        d->failing = 0;
        ap_log_error(
            APLOG_MARK, APLOG_NOTICE, 0, d->s,
            IMC_LOGNO(00307) "delivery to %s works again; %" APR_INT64_T_FMT
                             " events queued",
            res->url ? res->url : "ClickHouse", d->queued);
    }
}

/* Copies [from, end) of seg to DIR/failed and goes past it. */
static apr_status_t quarantine(deliverer_t *d, apr_pool_t *p,
                               imc_spool_segment *seg, apr_off_t from,
                               apr_off_t end, apr_uint64_t lines, int code)
{
    apr_status_t rv;

    ap_log_error(APLOG_MARK, APLOG_ERR, 0, d->s,
                 IMC_LOGNO(00303) "ClickHouse rejected %" APR_UINT64_T_FMT
                                  " events of %s for good (code %d); they "
                                  "are kept in %s/failed",
                 lines, seg->name, code, d->dir);
    imc_metrics_add(IMC_M_BATCHES_QUARANTINED, 1);
    rv = imc_spool_quarantine(p, d->dir, seg, from, end);
    d->next_failed = 0; /* counted again with the next gauges */
    commit_notify();
    return rv ? spool_failed(d, rv) : APR_SUCCESS;
}

/*
 * ClickHouse refused [from, end) of seg for good; the policy says what
 * follows (imc_policy_refused). A batch of several rows is sent again in
 * halves (the intent is dropped: nothing of it was stored), halving again
 * while refused, so that the rows refused on their own are all that goes
 * to DIR/failed and the good rows around them are delivered. *gone: the
 * rows that left the queue.
 */
static apr_status_t reject_for_good(deliverer_t *d, apr_pool_t *p,
                                    imc_spool_segment *seg, imc_policy_seg *st,
                                    apr_off_t from, apr_off_t end, int lines,
                                    int code, apr_uint64_t *gone)
{
    apr_off_t to;
    apr_status_t rv;

    switch (imc_policy_refused(st, lines, end)) {
        case IMC_POLICY_SPLIT:
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, d->s,
                         IMC_LOGNO(00308) "ClickHouse rejected a batch of %d "
                                          "events of %s for good (code %d); "
                                          "sending it in smaller batches to "
                                          "keep the events it takes",
                         lines, seg->name, code);
            /* fall through */
        case IMC_POLICY_HALVE:
            rv = imc_spool_intent(p, d->dir, seg, seg->done);
            return rv ? spool_failed(d, rv) : APR_SUCCESS;
        case IMC_POLICY_ALONE:
            *gone = 1;
            return quarantine(d, p, seg, from, end, 1, code);
        case IMC_POLICY_THE_REST:
            break;
    }
    to = imc_policy_split_end(st);
    if ((rv = imc_spool_count_lines(p, d->dir, seg, from, to, gone))) {
        *gone = 0;
        return spool_failed(d, rv);
    }
    return quarantine(d, p, seg, from, to, *gone, code);
}

/* Sends [from, from+len) of seg, recording the intent first so that a
 * resend after a crash is the same batch with the same token. *gone: the
 * rows that left the queue (delivered or quarantined). */
static apr_status_t send_batch(deliverer_t *d, apr_pool_t *p,
                               imc_spool_segment *seg, imc_policy_seg *st,
                               apr_off_t from, const char *buf, apr_size_t len,
                               int lines, int resend, apr_uint64_t *gone)
{
    apr_off_t end = from + (apr_off_t)len;
    const char *token =
        d->features.dedup_token
            ? apr_psprintf(p, "%s-%" APR_OFF_T_FMT "-%" APR_OFF_T_FMT,
                           seg->name, from, end)
            : NULL;
    imc_clickhouse_result res;
    apr_status_t rv;

    *gone = 0;
    if (!resend && (rv = imc_spool_intent(p, d->dir, seg, end))) {
        return spool_failed(d, rv);
    }
    if (resend) {
        imc_metrics_add(IMC_M_BATCHES_RETRIED, 1);
    }
    /* Synchronous where the server could do otherwise: an asynchronous
     * insert may answer before its rows are parsed or stored. */
    rv = imc_clickhouse_insert(
        d->ch, p, d->table, buf, len, token,
        d->features.async_insert ? "&async_insert=0" : NULL, &res);
    imc_metrics_observe(IMC_H_CLICKHOUSE, res.elapsed);
    if (rv == APR_SUCCESS) {
        gauge_set(d, IMC_G_CLICKHOUSE_OK, imc_deliver_clock());
        imc_metrics_add(IMC_M_BATCHES_SENT, 1);
        imc_metrics_add(IMC_M_DELIVERED, (apr_uint64_t)lines);
        log_recovery(d, &res);
        rv = imc_spool_commit(p, d->dir, seg, end);
        commit_notify();
        *gone = rv ? 0 : (apr_uint64_t)lines;
        return rv ? spool_failed(d, rv) : APR_SUCCESS;
    }
    imc_metrics_add(IMC_M_BATCHES_FAILED, 1);
    if (rv == IMC_CLICKHOUSE_EREJECTED &&
        imc_clickhouse_is_permanent(res.code, d->features.version)) {
        return reject_for_good(d, p, seg, st, from, end, lines, res.code, gone);
    }
    if (rv == IMC_CLICKHOUSE_EREJECTED &&
        (res.code == IMC_CH_UNKNOWN_TABLE ||
         res.code == IMC_CH_UNKNOWN_DATABASE)) {
        d->schema_ok = 0; /* unknown table or database */
        d->next_schema = 0;
    }
    log_failure(d, rv, &res, lines);
    return rv;
}

/* Sends the next batch of seg; *more = 1 when rows are left for another. */
static apr_status_t deliver_next(deliverer_t *d, apr_pool_t *p,
                                 imc_spool_segment *seg, apr_time_t now,
                                 int *more)
{
    imc_policy_seg *st = imc_policy_seg_get(d->policy, seg);
    int resend = seg->intent_end > seg->done, lines, max_rows;
    apr_off_t from = seg->done;
    apr_uint64_t gone;
    apr_size_t len, max_bytes;
    const char *buf;
    apr_status_t rv;

    *more = 0;
    imc_policy_batch(d->policy, st, seg, &max_rows, &max_bytes);
    rv = imc_spool_read(p, d->dir, seg, seg->done, max_rows, max_bytes, &buf,
                        &len, &lines);
    if (rv == APR_SUCCESS && lines == 0 && seg->sealed) {
        rv = imc_spool_commit(p, d->dir, seg, seg->done);
    }
    if (rv != APR_SUCCESS || lines == 0) {
        return rv ? spool_failed(d, rv) : APR_SUCCESS;
    }
    if ((rv =
             send_batch(d, p, seg, st, from, buf, len, lines, resend, &gone))) {
        return rv;
    }
    if (seg->done == from) {
        *more = 1; /* refused for good: in halves, at once */
        return APR_SUCCESS;
    }
    /* The spool has advanced seg->done past the batch. */
    imc_policy_advanced(d->policy, st, gone, now);
    *more = seg->done < seg->ready_end;
    return APR_SUCCESS;
}

/* Counts the new complete lines of every segment and publishes the
 * queue's gauges (now on imc_deliver_clock(); ages on the wall clock). */
static void update_gauges(deliverer_t *d, apr_pool_t *p,
                          apr_array_header_t *segs, apr_time_t now)
{
    apr_time_t wall = apr_time_now();
    apr_int64_t lines = 0, bytes = 0;
    apr_time_t oldest = 0, head;
    int i;

    for (i = 0; i < segs->nelts; ++i) {
        imc_spool_segment *seg = &APR_ARRAY_IDX(segs, i, imc_spool_segment);
        imc_policy_seg *st = imc_policy_seg_get(d->policy, seg);
        apr_off_t from = imc_policy_count_from(st);
        apr_uint64_t n = 0;

        if (seg->ready_end > from &&
            imc_spool_count_lines(p, d->dir, seg, from, seg->ready_end, &n) ==
                APR_SUCCESS) {
            imc_policy_counted(st, seg, n, now, wall);
        }
        imc_policy_seen(st);
        if (imc_policy_queued(st) > 0) {
            head = imc_policy_head(st, seg);
            lines += imc_policy_queued(st);
            bytes += seg->size - seg->done;
            if (head && (!oldest || head < oldest)) {
                oldest = head;
            }
        }
    }
    if (now >= d->next_failed) { /* a directory scan: once a second */
        apr_int64_t files, qbytes;

        if (imc_spool_quarantined(p, d->dir, &files, &qbytes) == APR_SUCCESS) {
            gauge_set(d, IMC_G_QUARANTINED_FILES, files);
            gauge_set(d, IMC_G_QUARANTINED_BYTES, qbytes);
        }
        d->next_failed = now + PING_INTERVAL;
    }
    d->queued = lines;
    gauge_set(d, IMC_G_QUEUED_EVENTS, lines);
    gauge_set(d, IMC_G_SPOOL_BYTES, bytes);
    gauge_set(d, IMC_G_OLDEST_AGE_MS,
              oldest ? apr_time_as_msec(wall - oldest) : 0);
    d->next_gauges = now + PING_INTERVAL;
}

/*
 * Leaves out of segs the segments stamped for another destination: accepted
 * when this spool delivered to another database, they are
 * kept for it and never sent here. Told once per destination. Segments
 * from before stamps are this destination's.
 */
static void keep_own(deliverer_t *d, apr_pool_t *p, apr_array_header_t *segs)
{
    apr_hash_t *counts = NULL;
    apr_hash_index_t *hi;
    int i, kept = 0;

    for (i = 0; i < segs->nelts; ++i) {
        imc_spool_segment *seg = &APR_ARRAY_IDX(segs, i, imc_spool_segment);
        int *n;

        if (!*seg->stamp || !strcmp(seg->stamp, d->stamp)) {
            APR_ARRAY_IDX(segs, kept++, imc_spool_segment) = *seg;
            continue;
        }
        if (apr_hash_get(d->foreign, seg->stamp, APR_HASH_KEY_STRING)) {
            continue;
        }
        counts = counts ? counts : apr_hash_make(p);
        if (!(n = apr_hash_get(counts, seg->stamp, APR_HASH_KEY_STRING))) {
            n = apr_pcalloc(p, sizeof(*n));
            apr_hash_set(counts, seg->stamp, APR_HASH_KEY_STRING, n);
        }
        ++*n;
    }
    segs->nelts = kept;
    for (hi = counts ? apr_hash_first(p, counts) : NULL; hi;
         hi = apr_hash_next(hi)) {
        const char *stamp = apr_hash_this_key(hi);

        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, d->s,
                     IMC_LOGNO(00901) "%d segments of %s were accepted for "
                                      "another destination (stamp %s; this "
                                      "server delivers to database %s, stamp "
                                      "%s): kept, not delivered here; set "
                                      "that IMChallengeDatabase again, or "
                                      "move "
                                      "the files named *-%s.seg* into the "
                                      "spool of a server that delivers there",
                     *(int *)apr_hash_this_val(hi), d->dir, stamp, d->db,
                     d->stamp, stamp);
        apr_hash_set(d->foreign, apr_pstrdup(d->pool, stamp),
                     APR_HASH_KEY_STRING, d->foreign);
    }
}

/* The queue's gauges, when no pass published them within a second. */
static void refresh_gauges(deliverer_t *d, apr_pool_t *p, apr_time_t now)
{
    apr_array_header_t *segs;

    if (now < d->next_gauges ||
        imc_spool_list(p, d->dir, &segs) != APR_SUCCESS) {
        return;
    }
    keep_own(d, p, segs);
    imc_policy_prune(d->policy, segs);
    update_gauges(d, p, segs, now);
}

/*
 * Whether ClickHouse knows insert_deduplication_token decides the token of
 * every batch from its first send on, so nothing is sent before this is
 * known; its release decides which codes refuse rows for good. A
 * ClickHouse that answers with an error cannot tell: no token, no
 * async_insert, a current release. Unreachable, it fails the delivery of
 * the whole queue.
 */
static void probe_features(deliverer_t *d, apr_pool_t *p, apr_time_t now)
{
    imc_clickhouse_result res;
    apr_int64_t queued;
    apr_status_t rv = imc_schema_probe(d->ch, p, &d->features, &res);

    /* Refused credentials say nothing of the features: asked again, as
     * when unreachable. */
    if (rv == APR_SUCCESS ||
        (rv == IMC_CLICKHOUSE_EREJECTED && !refuses_user(&res))) {
        d->features_ok = 1;
        probe_refused(d, &res);
        return;
    }
    d->next_probe = now + PING_INTERVAL;
    refresh_gauges(d, p, now);
    if ((queued = d->queued) > 0) {
        log_failure(d, rv, &res, (int)queued);
    }
}

static int past_stop(deliverer_t *d)
{
    apr_time_t by = __atomic_load_n(&d->stop_by, __ATOMIC_ACQUIRE);

    return by != 0 && apr_time_now() >= by;
}

/*
 * One pass over the spool: batch after batch, each from the due segment
 * whose oldest row is the oldest, until nothing is due. Segments filled
 * side by side by several processes thus leave in the order of their
 * events' age (to about a second), each segment strictly in order. Each
 * batch has its own pool.
 */
static apr_status_t deliver_pass(deliverer_t *d, apr_pool_t *p, int flush)
{
    apr_time_t now = imc_deliver_clock();
    apr_array_header_t *segs;
    apr_pool_t *bp;
    apr_status_t rv;
    char *over;
    int i, more, sent = 0;

    if ((rv = imc_spool_list(p, d->dir, &segs)) != APR_SUCCESS) {
        return spool_failed(d, rv);
    }
    keep_own(d, p, segs);
    imc_policy_prune(d->policy, segs);
    update_gauges(d, p, segs, now);
    over = apr_pcalloc(p, (apr_size_t)segs->nelts + 1);
    apr_pool_create(&bp, p);
    while (rv == APR_SUCCESS && !past_stop(d) &&
           (i = imc_policy_oldest_due(d->policy, segs, over, flush, now)) >=
               0) {
        apr_pool_clear(bp);
        rv = deliver_next(d, bp, &APR_ARRAY_IDX(segs, i, imc_spool_segment),
                          now, &more);
        over[i] = !more;
        if (++sent % 16 == 0) { /* a long backlog: keep the gauges current */
            update_gauges(d, p, segs, imc_deliver_clock());
        }
    }
    apr_pool_destroy(bp);
    if (rv == APR_SUCCESS) {
        d->spool_failing = 0;
    }
    return rv;
}

/* The deliverer's turn: ping, schema, and a pass when not backing off. */
static void deliver_turn(deliverer_t *d, apr_pool_t *p)
{
    apr_time_t now = imc_deliver_clock();

    if (now >= d->next_ping) {
        ping(d, p, now);
    }
    if (!d->schema_ok && d->create_schema && now >= d->next_schema) {
        apply_schema(d, p, now);
    }
    if (!d->features_ok && now >= d->next_probe) {
        probe_features(d, p, now);
    }
    if (!d->features_ok || now < d->next_try) {
        refresh_gauges(d, p, now);
        return;
    }
    if (deliver_pass(d, p, 0) == APR_SUCCESS) {
        d->failures = 0;
    } else {
        ++d->failures;
        d->next_try = imc_deliver_clock() + backoff(d);
    }
}

/* On the way out: send what is pending, whatever its age, until done, an
 * error, or the end of the patience. What remains waits in the spool. */
static void drain(deliverer_t *d, apr_pool_t *p)
{
    while (d->features_ok && d->failures == 0 && !past_stop(d)) {
        apr_pool_clear(p);
        if (deliver_pass(d, p, 1) != APR_SUCCESS) {
            break;
        }
        if (d->queued == 0) { /* this spool's: not another's */
            break;
        }
    }
}

static void *APR_THREAD_FUNC deliver_main(apr_thread_t *thread, void *data)
{
    deliverer_t *d = data;
    apr_pool_t *p;

    apr_pool_create(&p, d->pool);
    while (!pause_for(d, d->lock ? POLL_INTERVAL : 0)) {
        apr_pool_clear(p);
        if (!d->lock && imc_spool_lock_deliverer(&d->lock, d->pool, d->dir) !=
                            APR_SUCCESS) {
            d->lock = NULL;
            if (pause_for(d, LOCK_RETRY)) {
                break;
            }
            continue;
        }
        deliver_turn(d, p);
    }
    if (d->lock) {
        drain(d, p);
        apr_file_close(d->lock);
    }
    apr_pool_destroy(p);
    pthread_mutex_lock(&d->mutex);
    d->finished = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mutex);
    /* A plain return, not apr_thread_exit(): pthread_exit() skips the
     * compiler's end of this frame, which ASan then reports. */
    (void)thread;
    return NULL;
}

/*
 * How long a stopping child may deliver: GracefulShutdownTimeout less a
 * margin for a request in flight to notice the end (curl looks about once
 * a second) and one for the join, as httpd stops waiting for its children
 * then; the ClickHouse timeout when that is unlimited (0), since the same
 * exit path serves hard stops, where httpd is much less patient.
 */
static apr_interval_time_t stop_patience(const deliverer_t *d)
{
    apr_interval_time_t t =
        ap_graceful_shutdown_timeout > 0
            ? apr_time_from_sec(ap_graceful_shutdown_timeout) - 2 * STOP_MARGIN
            : d->timeout;

    return t > 0 ? t : 0;
}

/* Child exit: ask the thread to stop and wait for it with bounded
 * patience; a request in flight is cut when the patience ends. A thread
 * stuck past that is left behind with its own pool. */
static apr_status_t deliver_stop(void *data)
{
    deliverer_t *d = data;
    apr_time_t stop_by = apr_time_now() + stop_patience(d);
    apr_time_t wait_by = imc_deliver_clock() + stop_patience(d) + STOP_MARGIN;
    apr_status_t trv;
    int finished;

    imc_clickhouse_abort_at(d->ch, stop_by);
    pthread_mutex_lock(&d->mutex);
    __atomic_store_n(&d->stop_by, stop_by, __ATOMIC_RELEASE);
    d->stopping = 1;
    pthread_cond_broadcast(&d->cond);
    while (!d->finished && imc_deliver_clock() < wait_by) {
        cond_wait_for(d, apr_time_from_msec(100));
    }
    finished = d->finished;
    pthread_mutex_unlock(&d->mutex);
    if (finished) {
        apr_thread_join(&trv, d->thread);
        apr_pool_destroy(d->pool);
    } else {
        /* Its pool stays with it: the process ends around it. What it
         * was sending stays in the spool for the next deliverer. */
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, d->s,
                     IMC_LOGNO(00309) "the delivery thread for %s did not "
                                      "stop within %" APR_TIME_T_FMT " ms: "
                                      "left behind; its batch stays in the "
                                      "spool",
                     d->dir, apr_time_as_msec(stop_patience(d) + STOP_MARGIN));
    }
    return APR_SUCCESS;
}

static deliverer_t *deliverer_make(apr_pool_t *pchild, server_rec *s,
                                   const imc_config *c)
{
    apr_allocator_t *alloc;
    deliverer_t *d;
    apr_pool_t *pool;

    if (apr_allocator_create(&alloc) != APR_SUCCESS ||
        apr_pool_create_unmanaged_ex(&pool, NULL, alloc) != APR_SUCCESS) {
        return NULL;
    }
    apr_allocator_owner_set(alloc, pool);
    /* Batches come and go: give the memory of a big one back. */
    apr_allocator_max_free_set(alloc, ALLOCATOR_MAX_FREE);
    d = apr_pcalloc(pool, sizeof(*d));
    d->pool = pool;
    d->s = s;
    d->dir = imc_config_spool_dir(c);
    d->db = imc_config_database(c);
    d->table = apr_pstrcat(pool, d->db, ".events", NULL);
    d->stamp = imc_spool_stamp(pool, d->db);
    d->key = imc_spool_dir_key(pool, d->dir);
    d->slot = imc_metrics_spool_slot(d->key);
    d->foreign = apr_hash_make(pool);
    d->timeout = imc_config_timeout(c);
    d->create_schema = imc_config_create_schema(c);
    d->chconf.urls = imc_config_clickhouse(c);
    d->chconf.user = imc_config_user(c);
    d->chconf.password = imc_config_password(c);
    d->chconf.timeout = d->timeout;
    d->chconf.max_response = MAX_CH_RESPONSE;
    d->rand = (apr_uint32_t)(apr_time_now() ^ (apr_time_t)getpid()) | 1;
    d->policy = imc_policy_create(pool, imc_config_batch_size(c),
                                  imc_config_batch_delay(c));
    (void)pchild;
    return d;
}

static apr_status_t sync_cleanup(void *data)
{
    deliverer_t *d = data;

    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mutex);
    return APR_SUCCESS;
}

/* d->mutex and d->cond, the condition on CLOCK_MONOTONIC. */
static apr_status_t sync_create(deliverer_t *d)
{
    pthread_condattr_t attr;
    int e;

    if ((e = pthread_condattr_init(&attr)) != 0) {
        return APR_FROM_OS_ERROR(e);
    }
    if ((e = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)) == 0 &&
        (e = pthread_cond_init(&d->cond, &attr)) == 0 &&
        (e = pthread_mutex_init(&d->mutex, NULL)) != 0) {
        pthread_cond_destroy(&d->cond);
    }
    pthread_condattr_destroy(&attr);
    if (e == 0) {
        apr_pool_cleanup_register(d->pool, d, sync_cleanup,
                                  apr_pool_cleanup_null);
    }
    return e ? APR_FROM_OS_ERROR(e) : APR_SUCCESS;
}

static apr_status_t deliverer_start(apr_pool_t *pchild, deliverer_t *d)
{
    apr_threadattr_t *attr;
    apr_status_t rv;

    if ((rv = imc_clickhouse_create(&d->ch, d->pool, &d->chconf)) ||
        (rv = sync_create(d)) || (rv = apr_threadattr_create(&attr, d->pool)) ||
        (rv = apr_thread_create(&d->thread, attr, deliver_main, d, d->pool))) {
        return rv;
    }
    apr_pool_pre_cleanup_register(pchild, d, deliver_stop);
    return APR_SUCCESS;
}

void imc_deliver_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_hash_t *dirs = apr_hash_make(pchild);

    if (apr_thread_mutex_create(&commit_mutex, APR_THREAD_MUTEX_DEFAULT,
                                pchild) != APR_SUCCESS ||
        apr_thread_cond_create(&commit_cond, pchild) != APR_SUCCESS) {
        commit_mutex = NULL; /* waiters then sleep their timeout */
    }

    for (; s; s = s->next) {
        const imc_config *c = imc_config_get(s);
        const char *dir = imc_config_spool_dir(c);
        const char *key = imc_spool_dir_key(pchild, dir); /* /x is /x/ */
        deliverer_t *d;
        apr_status_t rv;

        if (apr_hash_get(dirs, key, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(dirs, key, APR_HASH_KEY_STRING, dir);
        d = deliverer_make(pchild, s, c);
        rv = d ? deliverer_start(pchild, d) : APR_ENOMEM;
        if (rv != APR_SUCCESS && d) {
            apr_pool_destroy(d->pool); /* unmanaged: nothing else frees it */
        }
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                         IMC_LOGNO(00305) "cannot start the delivery thread "
                                          "for %s",
                         dir);
        }
    }
}
