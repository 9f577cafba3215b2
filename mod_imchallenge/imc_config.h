/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_config: the IMChallenge* directives (README "Directives"), the server
 * configuration with unset markers, its merge and typed getters that apply
 * the defaults.
 */
#ifndef IMC_CONFIG_H
#define IMC_CONFIG_H

#include <httpd.h>
#include <http_config.h>

#define IMC_DEFAULT_CLICKHOUSE  "http://127.0.0.1:8123/"
#define IMC_DEFAULT_USER        "default"
#define IMC_DEFAULT_DATABASE    "imchallenge"
#define IMC_DEFAULT_SPOOL_DIR   "/var/spool/imchallenge"
#define IMC_DEFAULT_SPOOL_LIMIT ((apr_off_t)1024 * 1024 * 1024)
#define IMC_DEFAULT_BATCH_SIZE  10000
#define IMC_DEFAULT_BATCH_DELAY apr_time_from_sec(1)
#define IMC_DEFAULT_TIMEOUT     apr_time_from_sec(10)
#define IMC_DEFAULT_EVENT_SIZE  ((apr_off_t)16 * 1024)
#define IMC_DEFAULT_MAX_EVENTS  10000
#define IMC_DEFAULT_MAX_REPORTS 8

/* Longest serve-to-solve time counted as solved in time
 * (IMChallengeSolveWindow). */
#define IMC_DEFAULT_SOLVE_WINDOW apr_time_from_sec(600)
/* IMChallengeReportCache: the default, and the bounds of any other than 0. */
#define IMC_DEFAULT_REPORT_CACHE ((apr_off_t)64 * 1024 * 1024)
#define IMC_MIN_REPORT_CACHE     ((apr_off_t)64 * 1024)
#define IMC_MAX_REPORT_CACHE     ((apr_off_t)16 * 1024 * 1024 * 1024)

/* Rows in one report at most (IMChallengeMaxReportRows). */
#define IMC_DEFAULT_MAX_REPORT_ROWS 100000

/* Server configuration as written; -1 / NULL mean "not set here". */
typedef struct {
    apr_array_header_t *clickhouse; /* const char * URLs, fail-over order */
    const char *user;
    const char *password_file;
    const char *password; /* read from password_file while configuring */
    const char *database;
    const char *spool_dir;
    apr_off_t spool_limit;
    int spool_sync;
    int batch_size;
    apr_interval_time_t batch_delay;
    apr_interval_time_t timeout;
    apr_off_t max_event_size;
    int max_batch_events;
    int create_schema;
    apr_array_header_t *cors;             /* canonical origins and/or "*" */
    const char *site_access_file;         /* IMChallengeSiteAccess */
    const struct imc_access *site_access; /* its grants, read at start-up */
    double rate_limit;                    /* events/s; 0: off */
    double rate_burst;
    int max_reports;
    int max_report_rows;              /* IMChallengeMaxReportRows */
    apr_interval_time_t solve_window; /* IMChallengeSolveWindow */
    apr_off_t report_cache;           /* IMChallengeReportCache; 0: none */
} imc_config;

/* Per-directory configuration: only where the handler is mapped. */
typedef struct {
    const char *location; /* the <Location> path, NULL elsewhere */
} imc_dir_config;

extern const command_rec imc_config_cmds[];

void *imc_config_dir_create(apr_pool_t *p, char *dir);

/*
 * The rest of r's path (as httpd decoded it, but for %2F) after the <Location>
 * that maps the handler, without its leading '/'; "" when there is none. Where
 * the handler is not mapped by a plain <Location>, the rest after the last
 * path segment named fallback ("report" for .../report/<filter>).
 */
const char *imc_config_path_rest(request_rec *r, const char *fallback);

void *imc_config_create(apr_pool_t *p, server_rec *s);
void *imc_config_merge(apr_pool_t *p, void *basev, void *addv);

/* The configuration of s (never NULL). */
const imc_config *imc_config_get(server_rec *s);

/* Typed getters, with the defaults of README "Directives" for what is unset. */
const apr_array_header_t *imc_config_clickhouse(const imc_config *c);
const char *imc_config_user(const imc_config *c);
const char *imc_config_password(const imc_config *c); /* NULL: none */
const char *imc_config_database(const imc_config *c);
const char *imc_config_spool_dir(const imc_config *c);
apr_off_t imc_config_spool_limit(const imc_config *c);
int imc_config_spool_sync(const imc_config *c);
int imc_config_batch_size(const imc_config *c);
apr_interval_time_t imc_config_batch_delay(const imc_config *c);
apr_interval_time_t imc_config_timeout(const imc_config *c);
apr_size_t imc_config_max_event_size(const imc_config *c);
int imc_config_max_batch_events(const imc_config *c);
int imc_config_create_schema(const imc_config *c);
const apr_array_header_t *imc_config_cors(const imc_config *c); /* NULL: off */
/* NULL: no IMChallengeSiteAccess, every site for everyone. */
const struct imc_access *imc_config_site_access(const imc_config *c);
/* Events a second and the burst; 0 when IMChallengeRateLimit is off. */
double imc_config_rate_limit(const imc_config *c);
double imc_config_rate_burst(const imc_config *c);
int imc_config_max_reports(const imc_config *c);
int imc_config_max_report_rows(const imc_config *c);
apr_interval_time_t imc_config_solve_window(const imc_config *c);
apr_size_t imc_config_report_cache(const imc_config *c);

#endif /* IMC_CONFIG_H */
