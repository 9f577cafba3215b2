/* Licensed under the Apache License, Version 2.0. */

#include <apr_strings.h>
#include <http_protocol.h>
#include <unistd.h>

#include "imc_private.h"
#include "imc_config.h"
#include "imc_deliver.h"
#include "imc_health.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_spool.h"

/* The slot of the gauges of r's server's spool; -1 when it has none (the
 * totals over all spools are used then). */
static int spool_slot(request_rec *r)
{
    const char *dir = imc_config_spool_dir(imc_config_get(r->server));

    return imc_metrics_spool_slot(imc_spool_dir_key(r->pool, dir));
}

static apr_int64_t gauge(int slot, imc_metric_gauge g)
{
    return slot >= 0 ? imc_metrics_spool_get(slot, g) : imc_metrics_get(g);
}

/* The spool's ClickHouse answered a ping or an insert within the ready
 * window. */
static int clickhouse_reachable(int slot, apr_time_t now)
{
    apr_time_t ok = gauge(slot, IMC_G_CLICKHOUSE_OK);

    return ok != 0 && now - ok <= IMC_DELIVER_READY_WINDOW;
}

static int spool_writable(request_rec *r)
{
    const char *dir = imc_config_spool_dir(imc_config_get(r->server));

    return access(dir, W_OK | X_OK) == 0;
}

/* Ready: the spool of the request's server (virtual host) takes events
 * and its ClickHouse answers. */
static int ready(request_rec *r)
{
    apr_time_t now = imc_deliver_clock();

    if (!spool_writable(r)) {
        return imc_http_json(r, HTTP_SERVICE_UNAVAILABLE,
                             "{\"status\":\"not ready\",\"reason\":\"the "
                             "spool directory is not writable\"}");
    }
    if (!clickhouse_reachable(spool_slot(r), now)) {
        return imc_http_json(r, HTTP_SERVICE_UNAVAILABLE,
                             "{\"status\":\"not ready\",\"reason\":"
                             "\"ClickHouse has not answered the module's "
                             "queries recently\"}");
    }
    return imc_http_json(r, HTTP_OK, "{\"status\":\"ready\"}");
}

/* The status of the request's server's spool. */
static int status(request_rec *r)
{
    apr_time_t now = imc_deliver_clock();
    int slot = spool_slot(r);
    apr_int64_t queued = gauge(slot, IMC_G_QUEUED_EVENTS);
    const char *age =
        queued > 0
            ? apr_psprintf(r->pool, "%.3f",
                           (double)gauge(slot, IMC_G_OLDEST_AGE_MS) / 1000.0)
            : "null";

    return imc_http_json(
        r, HTTP_OK,
        apr_psprintf(r->pool,
                     "{\"queued_events\":%" APR_INT64_T_FMT
                     ",\"spool_bytes\":%" APR_INT64_T_FMT
                     ",\"oldest_queued_age_seconds\":%s"
                     ",\"clickhouse_reachable\":%s"
                     ",\"spool_writable\":%s"
                     ",\"quarantined_batches\":%" APR_INT64_T_FMT
                     ",\"quarantined_bytes\":%" APR_INT64_T_FMT "}",
                     queued, gauge(slot, IMC_G_SPOOL_BYTES), age,
                     clickhouse_reachable(slot, now) ? "true" : "false",
                     spool_writable(r) ? "true" : "false",
                     gauge(slot, IMC_G_QUARANTINED_FILES),
                     gauge(slot, IMC_G_QUARANTINED_BYTES)));
}

int imc_health_handler(request_rec *r)
{
    const char *last = strrchr(r->uri, '/');

    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        r->allowed = AP_METHOD_BIT << M_GET;
        return imc_http_error(r, HTTP_METHOD_NOT_ALLOWED, "use GET");
    }
    last = last ? last + 1 : r->uri;
    if (!strcmp(last, "readyz")) {
        return ready(r);
    }
    if (!strcmp(last, "status")) {
        return status(r);
    }
    return imc_http_json(r, HTTP_OK, "{\"status\":\"ok\"}");
}
