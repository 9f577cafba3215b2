/* Licensed under the Apache License, Version 2.0. */

#include <errno.h>
#include <pthread.h>

#include <apr_shm.h>
#include <apr_strings.h>
#include <http_protocol.h>

#include "imc_private.h"
#include "imc_config.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_ratelimit.h"
#include "imc_tenant.h"

/* Buckets in the table, for all servers and keys together: about 24
 * bytes each. */
#define BUCKETS 16384
/* The segment: the lock, then the table at this offset. */
#define TABLE_OFFSET 128
#define RETAINED_KEY "imchallenge-ratelimit"

typedef struct {
    apr_shm_t *shm;
} retained_t;

static imc_ratelimit *table; /* NULL: no server limits events */
/*
 * Serialises the table's users, in the segment itself: a process-shared,
 * robust mutex without priority inheritance. APR's process mutexes on
 * Linux are pthread mutexes with priority inheritance, whose contended
 * lock and unlock go through the kernel's rt-mutex: with every request
 * of a principal on one bucket, that cost a fifth of the event rate
 * (measured, README "Performance"). Robust: a process killed while
 * holding it hands it on (EOWNERDEAD); the bucket it was changing is at
 * worst a few tokens off.
 */
static pthread_mutex_t *lock;

static apr_status_t lock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int e;

    if ((e = pthread_mutexattr_init(&attr)) != 0) {
        return APR_FROM_OS_ERROR(e);
    }
    if ((e = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) ==
            0 &&
        (e = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) == 0) {
        e = pthread_mutex_init(m, &attr);
    }
    pthread_mutexattr_destroy(&attr);
    return e ? APR_FROM_OS_ERROR(e) : APR_SUCCESS;
}

static apr_status_t lock_take(void)
{
    int e = pthread_mutex_lock(lock);

    if (e == EOWNERDEAD) { /* its holder died: the table stays usable */
        e = pthread_mutex_consistent(lock);
    }
    return e ? APR_FROM_OS_ERROR(e) : APR_SUCCESS;
}

static int any_rate_limit(server_rec *s)
{
    for (; s; s = s->next) {
        if (imc_config_rate_limit(imc_config_get(s)) > 0) {
            return 1;
        }
    }
    return 0;
}

/* The table's segment is the parent's and found again through retained
 * data, so buckets (and the hash secret) survive restarts. */
static apr_status_t table_create(server_rec *s)
{
    retained_t *ret = ap_retained_data_get(RETAINED_KEY);
    apr_size_t size = TABLE_OFFSET + imc_ratelimit_size(BUCKETS);
    unsigned char secret[16];
    apr_status_t rv;

    if (ret == NULL) {
        ret = ap_retained_data_create(RETAINED_KEY, sizeof(*ret));
        ret->shm = NULL;
    }
    if (ret->shm && apr_shm_size_get(ret->shm) >= size &&
        (table = imc_ratelimit_attach((char *)apr_shm_baseaddr_get(ret->shm) +
                                      TABLE_OFFSET))) {
        lock = apr_shm_baseaddr_get(ret->shm);
        return APR_SUCCESS;
    }
    if (ret->shm) {
        apr_shm_destroy(ret->shm);
        ret->shm = NULL;
    }
    if ((rv = apr_shm_create(&ret->shm, size, NULL, s->process->pool)) !=
            APR_SUCCESS ||
        (rv = apr_generate_random_bytes(secret, sizeof(secret))) !=
            APR_SUCCESS ||
        (rv = lock_init(apr_shm_baseaddr_get(ret->shm))) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     IMC_LOGNO(01001) "cannot create the shared memory of "
                                      "IMChallengeRateLimit");
        return rv;
    }
    lock = apr_shm_baseaddr_get(ret->shm);
    table = imc_ratelimit_init(
        (char *)apr_shm_baseaddr_get(ret->shm) + TABLE_OFFSET, BUCKETS, secret);
    return APR_SUCCESS;
}

apr_status_t imc_tenant_post_config(apr_pool_t *pconf, server_rec *s)
{
    (void)pconf;
    table = NULL;
    lock = NULL;
    return any_rate_limit(s) ? table_create(s) : APR_SUCCESS;
}

static int forbidden(request_rec *r, const char *message)
{
    /* The body may be unread: do not reuse the connection. */
    r->connection->keepalive = AP_CONN_CLOSE;
    return imc_http_error(r, HTTP_FORBIDDEN, message);
}

/* The principal's grant; NULL with *rc set after a 403. */
static const imc_access_grant *grant_of(request_rec *r, const imc_access *acc,
                                        int *rc)
{
    const imc_access_grant *g;

    if (!r->user) {
        *rc = forbidden(r, "this server grants sites to authenticated users "
                           "only");
        return NULL;
    }
    if (!(g = imc_access_lookup(acc, r->user))) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      IMC_LOGNO(01004) "user '%s' is not in "
                                       "IMChallengeSiteAccess",
                      ap_escape_logitem(r->pool, r->user));
        *rc = forbidden(r, "this user is granted no sites");
    }
    return g;
}

int imc_tenant_admit(request_rec *r, const imc_access_grant **g)
{
    const imc_access *acc = imc_config_site_access(imc_config_get(r->server));
    int rc = DECLINED;

    *g = NULL;
    if (acc && !(*g = grant_of(r, acc, &rc))) {
        imc_metrics_add(IMC_M_REJECTED_FORBIDDEN, 1);
    }
    return rc;
}

static int not_allowed(request_rec *r, int index)
{
    imc_metrics_add(IMC_M_REJECTED_FORBIDDEN, 1);
    return imc_http_json(
        r, HTTP_FORBIDDEN,
        apr_psprintf(r->pool,
                     "{\"status\":\"rejected\",\"errors\":[{\"index\":%d,"
                     "\"field\":\"site_id\",\"error\":\"site not allowed\"}]}",
                     index));
}

/* The bucket's key: the server (virtual hosts limit on their own), then
 * the principal or, without one, the client's address. */
static const char *limit_key(request_rec *r, apr_size_t *len)
{
    server_rec *s = r->server;
    const char *who = r->user ? r->user : r->useragent_ip;
    const char *srv =
        apr_psprintf(r->pool, "%s:%u", s->defn_name ? s->defn_name : "",
                     s->defn_line_number);
    apr_size_t a = strlen(srv), b = who ? strlen(who) : 0;
    char *key = apr_palloc(r->pool, a + b + 2);

    memcpy(key, srv, a);
    key[a] = '\0';
    key[a + 1] = r->user ? 'u' : 'a';
    memcpy(key + a + 2, who ? who : "", b);
    *len = a + b + 2;
    return key;
}

static int rate_limited(request_rec *r, const imc_config *c, int n)
{
    apr_size_t klen;
    const char *key;
    apr_status_t rv;
    int ok, retry = 1;

    if (!table || imc_config_rate_limit(c) <= 0) {
        return DECLINED;
    }
    key = limit_key(r, &klen);
    if ((rv = lock_take()) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                      IMC_LOGNO(01005) "cannot lock the rate limit's table: "
                                       "the request is not limited");
        return DECLINED;
    }
    ok =
        imc_ratelimit_take(table, key, klen, imc_config_rate_limit(c),
                           imc_config_rate_burst(c), n, apr_time_now(), &retry);
    pthread_mutex_unlock(lock);
    if (ok) {
        return DECLINED;
    }
    imc_metrics_add(IMC_M_REJECTED_RATE, 1);
    apr_table_setn(r->err_headers_out, "Retry-After", apr_itoa(r->pool, retry));
    return imc_http_error(r, HTTP_TOO_MANY_REQUESTS,
                          "too many events: retry after the seconds "
                          "Retry-After says");
}

int imc_tenant_admit_events(request_rec *r, const imc_access_grant *g,
                            const imc_event_batch *b)
{
    int i, n = imc_event_batch_count(b);

    for (i = 0; g && !imc_access_all_sites(g) && i < n; ++i) {
        if (!imc_access_may(g, imc_event_batch_site(b, i))) {
            return not_allowed(r, i);
        }
    }
    return rate_limited(r, imc_config_get(r->server), n);
}

int imc_tenant_narrow(request_rec *r, const char **where,
                      const imc_access_grant **grant)
{
    const imc_access *acc = imc_config_site_access(imc_config_get(r->server));
    const imc_access_grant *g;
    int rc = DECLINED;

    *grant = NULL;
    if (!acc) {
        return DECLINED;
    }
    if (!(g = grant_of(r, acc, &rc))) {
        return rc;
    }
    if (!imc_access_all_sites(g)) {
        *where = apr_pstrcat(r->pool, imc_access_clause(r->pool, g, "site_id"),
                             " AND (", *where, ")", NULL);
        *grant = g;
    }
    return DECLINED;
}
