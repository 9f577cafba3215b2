/* Licensed under the Apache License, Version 2.0. */

#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "imc_private.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_report_client.h"
#include "imc_schema.h"

/* Configurations whose server's settings each process remembers. */
#define PROBED_CONFIGS 8
#define PROBE_PAUSE    apr_time_from_sec(30)

/* Clients kept between reports, so that a report reuses a connection to
 * ClickHouse. Each has a pool of its own and serves one server's
 * configuration; a thread takes one out of the list while it works. */
#define IDLE_CLIENTS 8
/* The most a report may read of an answer. */
#define MAX_RESPONSE ((apr_size_t)64 * 1024 * 1024)

static apr_thread_mutex_t *clients_lock;
static imc_report_client *idle; /* under clients_lock */
static int nidle;
/* What report queries may use of a server. */
typedef struct {
    int cancel_on_close; /* cancel_http_readonly_queries_on_client_close */
    int uuid_halves;     /* count UUIDs as their two UInt64 halves */
} server_traits;

/* What a configuration's ClickHouse allows, once asked (under
 * clients_lock). */
static struct {
    const imc_config *config;
    server_traits traits;
    apr_time_t until; /* 0: for good; else an unanswered probe's pause */
} probed[PROBED_CONFIGS];
static int nprobed;

/* c's server's traits into *t; 0 when not known (yet). */
static int traits_known(const imc_config *c, server_traits *t)
{
    apr_time_t now = apr_time_now();
    int i, known = 0;

    if (clients_lock) {
        apr_thread_mutex_lock(clients_lock);
        for (i = 0; i < nprobed; ++i) {
            if (probed[i].config == c &&
                (!probed[i].until || now < probed[i].until)) {
                *t = probed[i].traits;
                known = 1;
            }
        }
        apr_thread_mutex_unlock(clients_lock);
    }
    return known;
}

/* Notes what c's server answered; for a while only when it did not
 * answer, so that an outage does not cost every report a probe. */
static void traits_learnt(const imc_config *c, const server_traits *t,
                          int for_good)
{
    int i;

    if (clients_lock) {
        apr_thread_mutex_lock(clients_lock);
        for (i = 0; i < nprobed && probed[i].config != c; ++i) {
        }
        if (i < PROBED_CONFIGS) {
            probed[i].config = c;
            probed[i].traits = *t;
            probed[i].until = for_good ? 0 : apr_time_now() + PROBE_PAUSE;
            nprobed = i == nprobed ? nprobed + 1 : nprobed;
        }
        apr_thread_mutex_unlock(clients_lock);
    }
}

/*
 * Asks client's server, once per process and configuration, what report
 * queries may use: cancel-on-close where it knows the setting; and how to
 * count distinct procedures fastest. ClickHouse before 20 hashes a UUID
 * slowly in uniqExact (measured on 18.16: 9.4 s at 10M events, against
 * 0.63 s over the UUID's two UInt64 halves, the same counts); current
 * releases are faster with the UUID itself (26.7: 0.45 s against 0.77 s).
 * An unknown release gets the UUID itself, exact either way.
 */
static void probe_traits(imc_report_client *client, server_traits *t)
{
    const imc_config *c = client->config;

    if (!traits_known(c, t)) {
        apr_status_t rv;
        imc_schema_features f;
        imc_clickhouse_result res;
        apr_pool_t *tmp;

        apr_pool_create(&tmp, client->pool);
        rv = imc_schema_probe(client->ch, tmp, &f, &res);
        t->cancel_on_close = rv == APR_SUCCESS && f.cancel_on_close;
        t->uuid_halves = f.version.major > 0 && f.version.major < 20;
        /* refused (no grant on system.settings): without, for good */
        traits_learnt(c, t,
                      rv == APR_SUCCESS || rv == IMC_CLICKHOUSE_EREJECTED);
        apr_pool_destroy(tmp);
    }
}

/*
 * The settings that bound a report query on the server too: read-only,
 * the time IMChallengeTimeout allows (whole seconds, at least one, so
 * that ClickHouse stops the query no later than the module gives up on
 * it), a memory cap, a GROUP BY that goes to disk past half of it rather
 * than fail (a report the cache cannot cut into smaller queries: a filter
 * over many days of many events; slower, but answered), and, where the
 * server knows it, an end when the connection closes.
 */
static const char *query_limits(imc_report_client *client,
                                const server_traits *t)
{
    long secs = (long)apr_time_sec(imc_config_timeout(client->config));

    return apr_psprintf(
        client->pool,
        "&readonly=2&max_execution_time=%ld"
        "&max_memory_usage=%" APR_UINT64_T_FMT
        "&max_bytes_before_external_group_by=%" APR_UINT64_T_FMT "%s",
        secs > 0 ? secs : 1L, IMC_REPORT_QUERY_MEMORY,
        IMC_REPORT_QUERY_MEMORY / 2,
        t->cancel_on_close ? "&cancel_http_readonly_queries_on_client_close=1"
                           : "");
}

/* A client for c's ClickHouse: an idle one, or a new one. */
imc_report_client *imc_report_client_take(const imc_config *c)
{
    imc_report_client **pp, *client = NULL;
    imc_clickhouse_conf chconf;
    server_traits traits;
    apr_pool_t *pool;

    if (clients_lock) {
        apr_thread_mutex_lock(clients_lock);
        pp = &idle;
        while (*pp && (*pp)->config != c) {
            pp = &(*pp)->next;
        }
        if ((client = *pp) != NULL) {
            *pp = client->next;
            --nidle;
        }
        apr_thread_mutex_unlock(clients_lock);
    }
    if (client ||
        apr_pool_create_unmanaged_ex(&pool, NULL, NULL) != APR_SUCCESS) {
        return client;
    }
    client = apr_pcalloc(pool, sizeof(*client));
    client->config = c;
    client->pool = pool;
    chconf.urls = imc_config_clickhouse(c);
    chconf.user = imc_config_user(c);
    chconf.password = imc_config_password(c);
    chconf.timeout = imc_config_timeout(c);
    chconf.max_response = MAX_RESPONSE;
    chconf.query_params = NULL;
    if (imc_clickhouse_create(&client->ch, pool, &chconf) != APR_SUCCESS) {
        apr_pool_destroy(pool);
        return NULL;
    }
    probe_traits(client, &traits);
    imc_clickhouse_set_query_params(client->ch, query_limits(client, &traits));
    client->procedure =
        traits.uuid_halves ? IMC_REPORT_UUID_HALVES : "correlation_id";
    return client;
}

/* Keeps client for the next report, or frees it when enough are kept. */
void imc_report_client_give_back(imc_report_client *client)
{
    int kept = 0;

    if (clients_lock) {
        apr_thread_mutex_lock(clients_lock);
        if ((kept = nidle < IDLE_CLIENTS)) {
            client->next = idle;
            idle = client;
            ++nidle;
        }
        apr_thread_mutex_unlock(clients_lock);
    }
    if (!kept) {
        apr_pool_destroy(client->pool);
    }
}

/* At the process's end: the idle clients close their connections. */
static apr_status_t clients_cleanup(void *data)
{
    (void)data;
    while (idle) {
        imc_report_client *client = idle;

        idle = client->next;
        apr_pool_destroy(client->pool);
    }
    nidle = 0;
    return APR_SUCCESS;
}

void imc_report_client_child_init(apr_pool_t *pchild)
{
    if (apr_thread_mutex_create(&clients_lock, APR_THREAD_MUTEX_DEFAULT,
                                pchild) != APR_SUCCESS) {
        clients_lock = NULL; /* a client per report */
    }
    apr_pool_cleanup_register(pchild, NULL, clients_cleanup,
                              apr_pool_cleanup_null);
}
