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

/* ClickHouse's exception codes the module acts on, with ClickHouse's names
 * (src/Common/ErrorCodes.cpp). */
enum imc_clickhouse_code {
    IMC_CH_CANNOT_PARSE_TEXT = 6,
    IMC_CH_CANNOT_PARSE_ESCAPE_SEQUENCE = 25,
    IMC_CH_CANNOT_PARSE_QUOTED_STRING = 26,
    IMC_CH_CANNOT_PARSE_INPUT_ASSERTION_FAILED = 27,
    IMC_CH_ATTEMPT_TO_READ_AFTER_EOF = 32,
    IMC_CH_CANNOT_READ_ALL_DATA = 33,
    IMC_CH_BAD_ARGUMENTS = 36,
    IMC_CH_CANNOT_PARSE_DATE = 38,
    IMC_CH_CANNOT_PARSE_DATETIME = 41,
    IMC_CH_LOGICAL_ERROR = 49,
    IMC_CH_TYPE_MISMATCH = 53,
    IMC_CH_UNKNOWN_TABLE = 60,
    IMC_CH_ARGUMENT_OUT_OF_BOUND = 69,
    IMC_CH_CANNOT_CONVERT_TYPE = 70,
    IMC_CH_CANNOT_PARSE_NUMBER = 72,
    IMC_CH_UNKNOWN_DATABASE = 81,
    IMC_CH_UNKNOWN_SETTING = 115,
    IMC_CH_INCORRECT_DATA = 117,
    IMC_CH_CANNOT_READ_ARRAY_FROM_TEXT = 130,
    IMC_CH_TOO_LARGE_STRING_SIZE = 131,
    IMC_CH_TIMEOUT_EXCEEDED = 159,
    IMC_CH_READONLY = 164,
    IMC_CH_UNKNOWN_USER = 192,
    IMC_CH_WRONG_PASSWORD = 193,
    IMC_CH_REQUIRED_PASSWORD = 194,
    IMC_CH_MEMORY_LIMIT_EXCEEDED = 241,
    IMC_CH_CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN = 349,
    IMC_CH_CANNOT_PARSE_UUID = 376,
    IMC_CH_CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING = 441,
    IMC_CH_CANNOT_PARSE_BOOL = 467,
    IMC_CH_ACCESS_DENIED = 497,
    IMC_CH_AUTHENTICATION_FAILED = 516,
    IMC_CH_CANNOT_READ_MAP_FROM_TEXT = 563,
    IMC_CH_UNEXPECTED_DATA_AFTER_PARSED_VALUE = 632,
    IMC_CH_CANNOT_PARSE_IPV4 = 675,
    IMC_CH_CANNOT_PARSE_IPV6 = 676,
    IMC_CH_UNKNOWN_ELEMENT_OF_ENUM = 691
};

/* A release as version() tells it; 0.0 when not known. */
typedef struct {
    int major, minor;
} imc_clickhouse_version;

typedef struct imc_clickhouse imc_clickhouse;

typedef struct {
    const apr_array_header_t *urls; /* const char *, fail-over order */
    const char *user;
    const char *password;        /* NULL: none */
    apr_interval_time_t timeout; /* connect + transfer */
    apr_size_t max_response;     /* bytes of an answer at most */
    const char *query_params;    /* added to every query's URL, encoded,
                                    starting with '&' (NULL: none) */
} imc_clickhouse_conf;

typedef struct {
    int http_status;  /* 0 when no answer came */
    int code;         /* ClickHouse's exception code, 0 if none */
    const char *body; /* NUL-terminated answer (ClickHouse's own text on an
                         error: for logs, never for clients) */
    apr_size_t len;
    const char *url; /* the endpoint that answered or failed last */
    int endpoint;    /* its index in the configured URLs */
    int late;        /* the exception came in the body of a 200 */
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
 * Run sql (sent as the POST body) with wait_end_of_query=1, so that an
 * error while the result is made comes as an HTTP error and not after a
 * 200 that began. params are extra URL parameters already encoded,
 * starting with '&' (may be NULL), after the client's query_params.
 * Returns APR_SUCCESS on HTTP 200 whose body holds no exception,
 * IMC_CLICKHOUSE_EREJECTED when ClickHouse answered an error (also one
 * written into a 200: res->late), APR_TIMEUP,
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
 * is sent as insert_deduplication_token; params as with query (the
 * client's query_params are not sent). Fields the table has no column for
 * are left out (input_format_skip_unknown_fields=1): a table made before a
 * column was added (time_ms) takes the rows without it. Same returns as
 * query: a 200 whose body holds an exception is not a delivery.
 */
apr_status_t imc_clickhouse_insert(imc_clickhouse *ch, apr_pool_t *p,
                                   const char *table, const char *rows,
                                   apr_size_t len, const char *token,
                                   const char *params,
                                   imc_clickhouse_result *res);

/* The endpoint (its index in the configured URLs) the next request tries
 * first: the one that answered last. */
int imc_clickhouse_current(const imc_clickhouse *ch);

/* Replaces the client's query_params (kept as given: p must outlive it). */
void imc_clickhouse_set_query_params(imc_clickhouse *ch, const char *params);

/*
 * Whether an answer body holds a ClickHouse exception: a line that starts
 * "Code: N. DB::Exception" (current releases) or "Code: N, e.displayText()"
 * (older ones), or the "__exception__" marker with which releases from
 * 25.11 end a stream that failed. Returns its code (-1 when the marker has
 * none), 0 when there is no exception.
 */
int imc_clickhouse_body_exception(const char *body, apr_size_t len);

/*
 * Whether ClickHouse version v answering code to an INSERT refused the rows
 * for good (parse and type errors, which a resend cannot cure), rather
 * than failing in a way worth a retry. An unknown element of an Enum is
 * LOGICAL_ERROR before 20.2, BAD_ARGUMENTS before 23.4, and
 * UNKNOWN_ELEMENT_OF_ENUM since; LOGICAL_ERROR is otherwise a server bug.
 */
int imc_clickhouse_is_permanent(int code, imc_clickhouse_version v);

/* Parses version()'s answer ("18.16.1", "26.7.2.1"). */
imc_clickhouse_version imc_clickhouse_parse_version(const char *text);

/*
 * From when on requests end (0: never), for a stop with bounded patience.
 * Thread-safe: a request in flight on another thread is cut within about
 * a second, and later ones fail at once, with APR_ECONNABORTED.
 */
void imc_clickhouse_abort_at(imc_clickhouse *ch, apr_time_t when);

/* Encode s for a URL query parameter value. */
const char *imc_clickhouse_escape(apr_pool_t *p, const char *s);

#endif /* IMC_CLICKHOUSE_H */
