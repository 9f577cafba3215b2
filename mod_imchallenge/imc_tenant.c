/* Licensed under the Apache License, Version 2.0. */

#include <apr_global_mutex.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <http_protocol.h>
#include <util_mutex.h>

#include "imc_private.h"
#include "imc_config.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_ratelimit.h"
#include "imc_tenant.h"

/* Buckets in the table, for all servers and keys together: about 24
 * bytes each. */
#define BUCKETS      16384
#define MUTEX_TYPE   "imchallenge-rl"
#define RETAINED_KEY "imchallenge-ratelimit"

typedef struct {
    apr_shm_t *shm;
} retained_t;

static imc_ratelimit *table;      /* NULL: no server limits events */
static apr_global_mutex_t *mutex; /* serialises the table's users */

void imc_tenant_pre_config(apr_pool_t *pconf)
{
    ap_mutex_register(pconf, MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
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
    apr_size_t size = imc_ratelimit_size(BUCKETS);
    unsigned char secret[16];
    apr_status_t rv;

    if (ret == NULL) {
        ret = ap_retained_data_create(RETAINED_KEY, sizeof(*ret));
        ret->shm = NULL;
    }
    if (ret->shm && apr_shm_size_get(ret->shm) >= size &&
        (table = imc_ratelimit_attach(apr_shm_baseaddr_get(ret->shm)))) {
        return APR_SUCCESS;
    }
    if (ret->shm) {
        apr_shm_destroy(ret->shm);
        ret->shm = NULL;
    }
    if ((rv = apr_shm_create(&ret->shm, size, NULL, s->process->pool)) !=
            APR_SUCCESS ||
        (rv = apr_generate_random_bytes(secret, sizeof(secret))) !=
            APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     IMC_LOGNO(01001) "cannot create the shared memory of "
                                      "IMChallengeRateLimit");
        return rv;
    }
    table = imc_ratelimit_init(apr_shm_baseaddr_get(ret->shm), BUCKETS, secret);
    return APR_SUCCESS;
}

apr_status_t imc_tenant_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_status_t rv;

    table = NULL;
    mutex = NULL;
    if (!any_rate_limit(s)) {
        return APR_SUCCESS;
    }
    if ((rv = table_create(s)) != APR_SUCCESS) {
        return rv;
    }
    rv = ap_global_mutex_create(&mutex, NULL, MUTEX_TYPE, NULL, s, pconf, 0);
    if (rv != APR_SUCCESS) {
        table = NULL;
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     IMC_LOGNO(01002) "cannot create the mutex of "
                                      "IMChallengeRateLimit");
    }
    return rv;
}

void imc_tenant_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;

    if (!mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&mutex, apr_global_mutex_lockfile(mutex),
                                     pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     IMC_LOGNO(01003) "cannot attach to the mutex of "
                                      "IMChallengeRateLimit: no rate limit "
                                      "in this process");
        table = NULL;
    }
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
    if ((rv = apr_global_mutex_lock(mutex)) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                      IMC_LOGNO(01005) "cannot lock the rate limit's table: "
                                       "the request is not limited");
        return DECLINED;
    }
    ok =
        imc_ratelimit_take(table, key, klen, imc_config_rate_limit(c),
                           imc_config_rate_burst(c), n, apr_time_now(), &retry);
    apr_global_mutex_unlock(mutex);
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

int imc_tenant_narrow(request_rec *r, const char **where)
{
    const imc_access *acc = imc_config_site_access(imc_config_get(r->server));
    const imc_access_grant *g;
    int rc = DECLINED;

    if (!acc) {
        return DECLINED;
    }
    if (!(g = grant_of(r, acc, &rc))) {
        return rc;
    }
    if (!imc_access_all_sites(g)) {
        *where = apr_pstrcat(r->pool, imc_access_clause(r->pool, g, "site_id"),
                             " AND (", *where, ")", NULL);
    }
    return DECLINED;
}
