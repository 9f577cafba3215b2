/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_metrics: counters, gauges and histograms in anonymous shared memory
 * created once by the parent (post_config) and kept across graceful
 * restarts, so every httpd process adds to the same numbers and a restart
 * neither resets nor double counts them. Prometheus text exposition.
 */
#ifndef IMC_METRICS_H
#define IMC_METRICS_H

#include <httpd.h>

typedef enum {
    IMC_M_ACCEPTED,             /* events acknowledged (202/201) */
    IMC_M_REJECTED_INVALID,     /* requests answered 400 */
    IMC_M_REJECTED_TOO_LARGE,   /* requests answered 413 */
    IMC_M_REJECTED_MEDIA,       /* requests answered 415 */
    IMC_M_REJECTED_METHOD,      /* requests answered 405 */
    IMC_M_REJECTED_SPOOL,       /* requests answered 503 (spool) */
    IMC_M_DELIVERED,            /* events confirmed by ClickHouse */
    IMC_M_BATCHES_SENT,         /* INSERTs confirmed */
    IMC_M_BATCHES_FAILED,       /* INSERTs that failed */
    IMC_M_BATCHES_RETRIED,      /* INSERTs sent again after a failure */
    IMC_M_BATCHES_QUARANTINED,  /* batches moved to spool/failed */
    IMC_M_REPORTS,              /* report requests answered */
    IMC_M_REPORT_ERRORS,        /* report requests answered 4xx/5xx */
    IMC_M_REPORT_DAYS_CACHED,   /* report days answered from the cache */
    IMC_M_REPORT_DAYS_QUERIED,  /* report days asked of ClickHouse */
    IMC_M_REJECTED_FORBIDDEN,   /* event requests answered 403 */
    IMC_M_REJECTED_RATE,        /* event requests answered 429 */
    IMC_M_REPORT_FORM_CACHED,   /* other report forms from the cache */
    IMC_M_REPORT_FORM_ASKED,    /* other report forms asked of ClickHouse */
    IMC_M_REPORT_CELLS_CACHED,  /* (day, site) rows from the cache */
    IMC_M_REPORT_CELLS_QUERIED, /* (day, site) rows from ClickHouse */
    IMC_M_COUNTERS
} imc_metric_counter;

typedef enum {
    IMC_G_QUEUED_EVENTS,     /* events in the spool not yet delivered */
    IMC_G_SPOOL_BYTES,       /* bytes in the spool not yet delivered */
    IMC_G_OLDEST_AGE_MS,     /* age of the oldest queued event, ms */
    IMC_G_CLICKHOUSE_OK,     /* imc_deliver_clock() of the last answer */
    IMC_G_CLICKHOUSE_FAIL,   /* imc_deliver_clock() of the last failed ping */
    IMC_G_QUARANTINED_FILES, /* batches in spool/failed, never retried */
    IMC_G_QUARANTINED_BYTES, /* their bytes, not counted in the limit */
    IMC_G_GAUGES
} imc_metric_gauge;

typedef enum {
    IMC_H_CLICKHOUSE, /* ClickHouse request latency */
    IMC_H_REPORT,     /* report request latency */
    IMC_H_HISTOGRAMS
} imc_metric_histogram;

/* Create (first start) or find (restarts) the shared memory. */
apr_status_t imc_metrics_post_config(apr_pool_t *pconf, server_rec *s);

void imc_metrics_add(imc_metric_counter c, apr_uint64_t n);

/*
 * The gauges are per spool directory: each spool's deliverer publishes its
 * own, in a slot of the shared memory named by the spool's key
 * (imc_spool_dir_key). The parent gives every spool of the configuration a
 * slot at each (re)start (imc_metrics_spools, after the directories exist)
 * and frees the slots of spools no longer configured; there are
 * IMC_METRICS_SPOOLS of them (-1: none, the spool's gauges are not kept).
 */
#define IMC_METRICS_SPOOLS 32

apr_status_t imc_metrics_spools(apr_pool_t *ptemp, server_rec *s);

/* The slot of the spool whose key is key, -1 when it has none. */
int imc_metrics_spool_slot(const char *key);

/* A spool's gauge; setting one of a slot that is not key's does
 * nothing (a process of an older generation whose spool went away). */
void imc_metrics_spool_set(int slot, const char *key, imc_metric_gauge g,
                           apr_int64_t v);
apr_int64_t imc_metrics_spool_get(int slot, imc_metric_gauge g);

/* Over all spools: queued events and bytes summed, the oldest age the
 * largest, the last ClickHouse answer the least recent (all reachable),
 * the last failed ping the most recent. */
apr_int64_t imc_metrics_get(imc_metric_gauge g);
void imc_metrics_observe(imc_metric_histogram h, apr_interval_time_t t);

/* The imchallenge-metrics handler. */
int imc_metrics_handler(request_rec *r);

#endif /* IMC_METRICS_H */
