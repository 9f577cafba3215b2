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

/* ClickHouse answered a ping or an insert within the ready window. */
static int clickhouse_reachable(apr_time_t now)
{
    apr_time_t ok = imc_metrics_get(IMC_G_CLICKHOUSE_OK);

    return ok != 0 && now - ok <= IMC_DELIVER_READY_WINDOW;
}

static int spool_writable(request_rec *r)
{
    const char *dir = imc_config_spool_dir(imc_config_get(r->server));

    return access(dir, W_OK | X_OK) == 0;
}

static int ready(request_rec *r)
{
    apr_time_t now = imc_deliver_clock();

    if (!spool_writable(r)) {
        return imc_http_json(r, HTTP_SERVICE_UNAVAILABLE,
                             "{\"status\":\"not ready\",\"reason\":\"the "
                             "spool directory is not writable\"}");
    }
    if (!clickhouse_reachable(now)) {
        return imc_http_json(r, HTTP_SERVICE_UNAVAILABLE,
                             "{\"status\":\"not ready\",\"reason\":"
                             "\"ClickHouse has not answered recently\"}");
    }
    return imc_http_json(r, HTTP_OK, "{\"status\":\"ready\"}");
}

static int status(request_rec *r)
{
    apr_time_t now = imc_deliver_clock();
    apr_int64_t queued = imc_metrics_get(IMC_G_QUEUED_EVENTS);
    const char *age =
        queued > 0 ? apr_psprintf(r->pool, "%.3f",
                                  (double)imc_metrics_get(IMC_G_OLDEST_AGE_MS) /
                                      1000.0)
                   : "null";

    return imc_http_json(
        r, HTTP_OK,
        apr_psprintf(r->pool,
                     "{\"queued_events\":%" APR_INT64_T_FMT
                     ",\"spool_bytes\":%" APR_INT64_T_FMT
                     ",\"oldest_queued_age_seconds\":%s"
                     ",\"clickhouse_reachable\":%s"
                     ",\"spool_writable\":%s}",
                     queued, imc_metrics_get(IMC_G_SPOOL_BYTES), age,
                     clickhouse_reachable(now) ? "true" : "false",
                     spool_writable(r) ? "true" : "false"));
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
