/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report_client: the report's ClickHouse clients. Each httpd process
 * keeps a few idle between reports, so that a report reuses a connection;
 * each has a pool of its own and serves one server's configuration, and a
 * thread takes one out of the list while it works. Report queries sent
 * through them carry the limits that bound them on the server too
 * (readonly=2, max_execution_time from IMChallengeTimeout, a memory cap,
 * cancel on close where the server knows it), and count distinct
 * procedures the way the server's release does fastest.
 */
#ifndef IMC_REPORT_CLIENT_H
#define IMC_REPORT_CLIENT_H

#include <apr_pools.h>

#include "imc_clickhouse.h"
#include "imc_config.h"

/* Memory one report query may take on the ClickHouse server
 * (max_memory_usage). */
#define IMC_REPORT_QUERY_MEMORY ((apr_uint64_t)1024 * 1024 * 1024)

/* Events one query of the report's cells reads at most, as the parts'
 * rows tell (imc_rcache_plan_batches): ClickHouse holds the distinct ids
 * of every (day, site) of a query at once, about 90 bytes an event over
 * the UUID's halves on 18.16 (2.7 GB for 30M events in one query, past
 * IMC_REPORT_QUERY_MEMORY), about 360 MB for this many. */
#define IMC_REPORT_QUERY_ROWS ((apr_uint64_t)4000000)

/* A procedure's correlation id as two UInt64s, for uniqExact on releases
 * that hash a UUID slowly. */
#define IMC_REPORT_UUID_HALVES                                                 \
    "reinterpretAsUInt64(reinterpretAsString(correlation_id)), "               \
    "reinterpretAsUInt64(substring(reinterpretAsString(correlation_id), 9, "   \
    "8))"

typedef struct imc_report_client {
    struct imc_report_client *next; /* in the idle list */
    const imc_config *config;
    imc_clickhouse *ch;
    apr_pool_t *pool;
    /* What uniqExact counts for distinct procedures on this server:
     * "correlation_id", or IMC_REPORT_UUID_HALVES where that is faster. */
    const char *procedure;
} imc_report_client;

/* The process's idle list, emptied when pchild is. */
void imc_report_client_child_init(apr_pool_t *pchild);

/* A client for c's ClickHouse: an idle one, or a new one (NULL when it
 * cannot start). */
imc_report_client *imc_report_client_take(const imc_config *c);

/* Keeps client for the next report, or frees it when enough are kept. */
void imc_report_client_give_back(imc_report_client *client);

#endif /* IMC_REPORT_CLIENT_H */
