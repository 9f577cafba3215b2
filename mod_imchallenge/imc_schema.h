/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_schema: conf/schema.sql, embedded at build time, applied to
 * ClickHouse for the configured database. No httpd headers.
 */
#ifndef IMC_SCHEMA_H
#define IMC_SCHEMA_H

#include "imc_clickhouse.h"

/* What the server supports, learnt while applying the schema or by
 * imc_schema_probe. */
typedef struct {
    int dedup_token;     /* knows insert_deduplication_token */
    int async_insert;    /* knows async_insert */
    int cancel_on_close; /* knows cancel_http_readonly_queries_on_client_close
                          */
    imc_clickhouse_version version;
    int refused; /* ClickHouse refused a probe: features taken as absent */
} imc_schema_features;

/* What an events table made before time_ms needs (conf/schema.sql). */
#define IMC_SCHEMA_ADD_MS "ADD COLUMN time_ms UInt16 DEFAULT 0 AFTER time"

/* The statements of schema.sql for database db, in order. */
apr_array_header_t *imc_schema_statements(apr_pool_t *p, const char *db);

/*
 * The server's release and the settings above it knows (system.settings).
 * APR_SUCCESS when both were read; IMC_CLICKHOUSE_EREJECTED when ClickHouse
 * refused either (e.g. no grant on system.settings): what could not be
 * read is taken as absent; other statuses: not reachable, nothing known.
 */
apr_status_t imc_schema_probe(imc_clickhouse *ch, apr_pool_t *p,
                              imc_schema_features *features,
                              imc_clickhouse_result *res);

/*
 * Apply every statement (each is idempotent), add time_ms to a MergeTree
 * events table made without it (in place; a Distributed one is left
 * alone), and probe the server's features. On failure res holds
 * ClickHouse's answer (for the log).
 */
apr_status_t imc_schema_apply(imc_clickhouse *ch, apr_pool_t *p, const char *db,
                              imc_schema_features *features,
                              imc_clickhouse_result *res);

#endif /* IMC_SCHEMA_H */
