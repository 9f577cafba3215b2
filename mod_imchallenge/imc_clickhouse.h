/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_clickhouse: the module's ClickHouse client over its HTTP interface.
 * The only file that includes curl.h. A client is used by one thread at a
 * time; its connection is kept between requests. No httpd headers.
 */
#ifndef IMC_CLICKHOUSE_H
#define IMC_CLICKHOUSE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

/* ClickHouse answered, but with an error (see imc_clickhouse_result). */
#define IMC_CLICKHOUSE_EREJECTED (APR_OS_START_USERERR + 1)
/* The answer was larger than the client's cap. */
#define IMC_CLICKHOUSE_ETOOBIG (APR_OS_START_USERERR + 2)

typedef struct imc_clickhouse imc_clickhouse;

typedef struct {
    const apr_array_header_t *urls; /* const char *, fail-over order */
    const char *user;
    const char *password;        /* NULL: none */
    apr_interval_time_t timeout; /* connect + transfer */
    apr_size_t max_response;     /* bytes of an answer at most */
} imc_clickhouse_conf;

typedef struct {
    int http_status;  /* 0 when no answer came */
    int code;         /* ClickHouse's exception code, 0 if none */
    const char *body; /* NUL-terminated answer (ClickHouse's own text on an
                         error: for logs, never for clients) */
    apr_size_t len;
    const char *url; /* the endpoint that answered or failed last */
    apr_interval_time_t elapsed;
} imc_clickhouse_result;

/* Call once per process before any thread exists (post_config). */
apr_status_t imc_clickhouse_global_init(apr_pool_t *pconf);

/* A client whose handle is released with p. conf is copied. */
apr_status_t imc_clickhouse_create(imc_clickhouse **ch, apr_pool_t *p,
                                   const imc_clickhouse_conf *conf);

/* GET /ping on the endpoints until one answers "Ok." */
apr_status_t imc_clickhouse_ping(imc_clickhouse *ch, apr_pool_t *p,
                                 imc_clickhouse_result *res);

/*
 * Run sql (sent as the POST body). params are extra URL parameters already
 * encoded, starting with '&' (may be NULL). Returns APR_SUCCESS on HTTP 200,
 * IMC_CLICKHOUSE_EREJECTED when ClickHouse answered an error, APR_TIMEUP,
 * APR_ECONNREFUSED when no endpoint could be reached, APR_ECONNRESET when a
 * connection broke mid-way, APR_ECONNABORTED after imc_clickhouse_abort_at,
 * IMC_CLICKHOUSE_ETOOBIG, or APR_EGENERAL. An endpoint that cannot be
 * reached or times out passes the request on to the next one.
 */
apr_status_t imc_clickhouse_query(imc_clickhouse *ch, apr_pool_t *p,
                                  const char *sql, const char *params,
                                  imc_clickhouse_result *res);

/*
 * INSERT rows (JSONEachRow) into table ("db.table"); token, when not NULL,
 * is sent as insert_deduplication_token. Same returns as query.
 */
apr_status_t imc_clickhouse_insert(imc_clickhouse *ch, apr_pool_t *p,
                                   const char *table, const char *rows,
                                   apr_size_t len, const char *token,
                                   imc_clickhouse_result *res);

/*
 * From when on requests end (0: never), for a stop with bounded patience.
 * Thread-safe: a request in flight on another thread is cut within about
 * a second, and later ones fail at once, with APR_ECONNABORTED.
 */
void imc_clickhouse_abort_at(imc_clickhouse *ch, apr_time_t when);

/* Encode s for a URL query parameter value. */
const char *imc_clickhouse_escape(apr_pool_t *p, const char *s);

#endif /* IMC_CLICKHOUSE_H */
