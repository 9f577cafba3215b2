/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_schema: conf/schema.sql, embedded at build time, applied to
 * ClickHouse for the configured database. No httpd headers.
 */
#ifndef IMC_SCHEMA_H
#define IMC_SCHEMA_H

#include "imc_clickhouse.h"

/* What the server supports, learnt while applying the schema. */
typedef struct {
    int dedup_token; /* knows insert_deduplication_token */
} imc_schema_features;

/* The statements of schema.sql for database db, in order. */
apr_array_header_t *imc_schema_statements(apr_pool_t *p, const char *db);

/*
 * Apply every statement (each is idempotent) and probe the server's
 * features. On failure res holds ClickHouse's answer (for the log).
 */
apr_status_t imc_schema_apply(imc_clickhouse *ch, apr_pool_t *p, const char *db,
                              imc_schema_features *features,
                              imc_clickhouse_result *res);

#endif /* IMC_SCHEMA_H */
