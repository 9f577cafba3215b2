/* Licensed under the Apache License, Version 2.0. */

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_uri.h>

#include "imc_private.h"
#include "imc_access.h"
#include "imc_config.h"
#include "imc_cors.h"
#include "imc_units.h"

#define MAX_SIZE     ((apr_off_t)1 << 50)
#define MAX_DURATION apr_time_from_sec(24 * 3600)
#define MAX_COUNT    1000000
#define MAX_REPORTS  4096
#define MAX_PASSWORD 4096

/* IMChallengeMaxReportRows at most. */
#define MAX_REPORT_ROWS 100000000

void *imc_config_create(apr_pool_t *p, server_rec *s)
{
    imc_config *c = apr_pcalloc(p, sizeof(*c));

    (void)s;
    c->spool_limit = -1;
    c->spool_sync = -1;
    c->batch_size = -1;
    c->batch_delay = -1;
    c->timeout = -1;
    c->max_event_size = -1;
    c->max_batch_events = -1;
    c->create_schema = -1;
    c->rate_limit = -1;
    c->rate_burst = -1;
    c->max_reports = -1;
    c->max_report_rows = -1;
    c->solve_window = -1;
    c->report_cache = -1;
    return c;
}

void *imc_config_dir_create(apr_pool_t *p, char *dir)
{
    imc_dir_config *dc = apr_pcalloc(p, sizeof(*dc));

    /* A <Location> path starts with '/'; a <Directory> or regex section
     * gives no usable prefix of the URL. */
    if (dir && dir[0] == '/' && !ap_is_matchexp(dir)) {
        dc->location = apr_pstrdup(p, dir);
    }
    return dc;
}

const char *imc_config_path_rest(request_rec *r, const char *fallback)
{
    const imc_dir_config *dc =
        ap_get_module_config(r->per_dir_config, &imchallenge_module);
    const char *path = r->parsed_uri.path ? r->parsed_uri.path : "";
    const char *rest = NULL;
    apr_size_t n;

    if (dc && dc->location) {
        n = strlen(dc->location);
        while (n > 0 && dc->location[n - 1] == '/') {
            --n;
        }
        if (!strncmp(path, dc->location, n)) {
            rest = path + n;
        }
    }
    if (!rest) {
        const char *seg = NULL, *p = path;

        n = strlen(fallback);
        while ((p = strstr(p, fallback)) != NULL) {
            if (p > path && p[-1] == '/' && (p[n] == '/' || p[n] == '\0')) {
                seg = p + n;
            }
            ++p;
        }
        rest = seg ? seg : "";
    }
    return *rest == '/' ? rest + 1 : rest;
}

#define MERGE_PTR(f) c->f = add->f ? add->f : base->f
#define MERGE_NUM(f) c->f = (add->f != -1) ? add->f : base->f

void *imc_config_merge(apr_pool_t *p, void *basev, void *addv)
{
    const imc_config *base = basev, *add = addv;
    imc_config *c = apr_pcalloc(p, sizeof(*c));

    MERGE_PTR(clickhouse);
    MERGE_PTR(user);
    MERGE_PTR(password_file);
    MERGE_PTR(password);
    MERGE_PTR(database);
    MERGE_PTR(spool_dir);
    MERGE_NUM(spool_limit);
    MERGE_NUM(spool_sync);
    MERGE_NUM(batch_size);
    MERGE_NUM(batch_delay);
    MERGE_NUM(timeout);
    MERGE_NUM(max_event_size);
    MERGE_NUM(max_batch_events);
    MERGE_NUM(create_schema);
    MERGE_PTR(cors);
    MERGE_PTR(site_access_file);
    MERGE_PTR(site_access);
    /* RATE and BURST come from the same directive: merged as one. */
    c->rate_limit = add->rate_limit != -1 ? add->rate_limit : base->rate_limit;
    c->rate_burst = add->rate_limit != -1 ? add->rate_burst : base->rate_burst;
    MERGE_NUM(max_reports);
    MERGE_NUM(max_report_rows);
    MERGE_NUM(solve_window);
    MERGE_NUM(report_cache);
    return c;
}

const imc_config *imc_config_get(server_rec *s)
{
    return ap_get_module_config(s->module_config, &imchallenge_module);
}

static imc_config *cmd_config(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config,
                                &imchallenge_module);
}

static const char *bad_value(cmd_parms *cmd, const char *arg,
                             const char *expected)
{
    return apr_psprintf(cmd->temp_pool, "%s: '%s' is not %s", cmd->cmd->name,
                        arg, expected);
}

static const char *set_clickhouse(cmd_parms *cmd, void *dc, const char *arg)
{
    imc_config *c = cmd_config(cmd);
    apr_uri_t uri;

    (void)dc;
    if (apr_uri_parse(cmd->pool, arg, &uri) != APR_SUCCESS || !uri.scheme ||
        (strcasecmp(uri.scheme, "http") && strcasecmp(uri.scheme, "https")) ||
        !uri.hostname || !*uri.hostname || uri.query || uri.fragment ||
        uri.user || uri.password) {
        /* Never echo a password written into the URL: in userinfo that
         * apr_uri_parse may not see as such ("http:/u:pw@h") or in a query
         * (?password=). A value with neither '@' nor '?' nor '#' holds
         * none and is shown. */
        return bad_value(
            cmd,
            strpbrk(arg, "@?#") ? "(not shown: it may hold credentials)" : arg,
            "an http:// or https:// URL without credentials "
            "or query, such as http://127.0.0.1:8123/");
    }
    if (!c->clickhouse) {
        c->clickhouse = apr_array_make(cmd->pool, 2, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->clickhouse, const char *) = arg;
    return NULL;
}

static const char *set_user(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    if (!*arg || strpbrk(arg, "\r\n:") != NULL) {
        return bad_value(cmd, arg, "a ClickHouse user name");
    }
    cmd_config(cmd)->user = arg;
    return NULL;
}

/* Reads the password now, while httpd still runs as root, so the file can
 * be readable by root only. Its content never appears in a message. */
static const char *set_password_file(cmd_parms *cmd, void *dc, const char *arg)
{
    imc_config *c = cmd_config(cmd);
    const char *path = ap_server_root_relative(cmd->pool, arg);
    apr_file_t *f;
    char buf[MAX_PASSWORD + 2];
    apr_size_t len = sizeof(buf) - 1;
    apr_status_t rv;

    (void)dc;
    if (!path) {
        return bad_value(cmd, arg, "a valid path");
    }
    rv = apr_file_open(&f, path, APR_FOPEN_READ, APR_OS_DEFAULT, cmd->pool);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(cmd->temp_pool, "%s: cannot read '%s' (%pm)",
                            cmd->cmd->name, path, &rv);
    }
    rv = apr_file_read_full(f, buf, len, &len);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        return apr_psprintf(cmd->temp_pool, "%s: cannot read '%s' (%pm)",
                            cmd->cmd->name, path, &rv);
    }
    if (len > MAX_PASSWORD) {
        return apr_psprintf(cmd->temp_pool, "%s: '%s' is too long",
                            cmd->cmd->name, path);
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        --len;
    }
    c->password_file = path;
    c->password = apr_pstrmemdup(cmd->pool, buf, len);
    return NULL;
}

static const char *set_database(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *p;

    (void)dc;
    for (p = arg; *p; ++p) {
        if (!apr_isalnum(*p) && *p != '_') {
            break;
        }
    }
    if (!*arg || *p || apr_isdigit(*arg) || strlen(arg) > 64) {
        return bad_value(cmd, arg,
                         "a database name of letters, digits and '_'");
    }
    cmd_config(cmd)->database = arg;
    return NULL;
}

static const char *set_spool_dir(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *path = ap_server_root_relative(cmd->pool, arg);

    (void)dc;
    if (!path || !*arg) {
        return bad_value(cmd, arg, "a valid directory path");
    }
    cmd_config(cmd)->spool_dir = path;
    return NULL;
}

static const char *set_size(cmd_parms *cmd, const char *arg, apr_off_t min,
                            apr_off_t max, apr_off_t *field)
{
    apr_off_t v;

    if (imc_units_parse_size(arg, max, &v) != APR_SUCCESS || v < min) {
        return apr_psprintf(cmd->temp_pool,
                            "%s: '%s' is not a SIZE between %" APR_OFF_T_FMT
                            " and %" APR_OFF_T_FMT
                            " bytes (a number with k, M or G)",
                            cmd->cmd->name, arg, min, max);
    }
    *field = v;
    return NULL;
}

/* One cache for the whole server: the main server's value counts. */
static const char *set_report_cache(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    if (cmd->server->is_virtual) {
        return apr_psprintf(cmd->temp_pool,
                            "%s: one cache serves the whole server: set it "
                            "in the main server config, not in <VirtualHost>",
                            cmd->cmd->name);
    }
    if (!strcmp(arg, "0")) {
        cmd_config(cmd)->report_cache = 0;
        return NULL;
    }
    return set_size(cmd, arg, IMC_MIN_REPORT_CACHE, IMC_MAX_REPORT_CACHE,
                    &cmd_config(cmd)->report_cache);
}

static const char *set_duration(cmd_parms *cmd, const char *arg,
                                apr_interval_time_t min,
                                apr_interval_time_t max,
                                apr_interval_time_t *field)
{
    apr_interval_time_t v;

    if (imc_units_parse_duration(arg, max, &v) != APR_SUCCESS || v < min) {
        return apr_psprintf(
            cmd->temp_pool,
            "%s: '%s' is not a DURATION between %" APR_TIME_T_FMT
            "ms and %" APR_TIME_T_FMT "s (a number with ms, s or m)",
            cmd->cmd->name, arg, apr_time_as_msec(min), apr_time_sec(max));
    }
    *field = v;
    return NULL;
}

static const char *set_count(cmd_parms *cmd, const char *arg, int *field)
{
    long v;

    if (imc_units_parse_int(arg, 1, MAX_COUNT, &v) != APR_SUCCESS) {
        return apr_psprintf(cmd->temp_pool,
                            "%s: '%s' is not a whole number between 1 and %d",
                            cmd->cmd->name, arg, MAX_COUNT);
    }
    *field = (int)v;
    return NULL;
}

static const char *set_spool_limit(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return set_size(cmd, arg, 64 * 1024, MAX_SIZE,
                    &cmd_config(cmd)->spool_limit);
}

static const char *set_max_event_size(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return set_size(cmd, arg, 256, 16 * 1024 * 1024,
                    &cmd_config(cmd)->max_event_size);
}

static const char *set_batch_delay(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return set_duration(cmd, arg, apr_time_from_msec(10), MAX_DURATION,
                        &cmd_config(cmd)->batch_delay);
}

static const char *set_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return set_duration(cmd, arg, apr_time_from_msec(100), MAX_DURATION,
                        &cmd_config(cmd)->timeout);
}

static const char *set_solve_window(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return set_duration(cmd, arg, 0, MAX_DURATION,
                        &cmd_config(cmd)->solve_window);
}

static const char *set_batch_size(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    return set_count(cmd, arg, &cmd_config(cmd)->batch_size);
}

static const char *set_max_batch_events(cmd_parms *cmd, void *dc,
                                        const char *arg)
{
    (void)dc;
    return set_count(cmd, arg, &cmd_config(cmd)->max_batch_events);
}

static const char *set_max_reports(cmd_parms *cmd, void *dc, const char *arg)
{
    long v;

    (void)dc;
    if (imc_units_parse_int(arg, 1, MAX_REPORTS, &v) != APR_SUCCESS) {
        return apr_psprintf(cmd->temp_pool,
                            "%s: '%s' is not a whole number between 1 and %d",
                            cmd->cmd->name, arg, MAX_REPORTS);
    }
    cmd_config(cmd)->max_reports = (int)v;
    return NULL;
}

static const char *set_max_report_rows(cmd_parms *cmd, void *dc,
                                       const char *arg)
{
    long v;

    (void)dc;
    if (imc_units_parse_int(arg, 1, MAX_REPORT_ROWS, &v) != APR_SUCCESS) {
        return apr_psprintf(cmd->temp_pool,
                            "%s: '%s' is not a whole number between 1 and %d",
                            cmd->cmd->name, arg, MAX_REPORT_ROWS);
    }
    cmd_config(cmd)->max_report_rows = (int)v;
    return NULL;
}

static const char *set_spool_sync(cmd_parms *cmd, void *dc, int on)
{
    (void)dc;
    cmd_config(cmd)->spool_sync = on;
    return NULL;
}

static const char *set_create_schema(cmd_parms *cmd, void *dc, int on)
{
    (void)dc;
    cmd_config(cmd)->create_schema = on;
    return NULL;
}

/* One origin of IMChallengeCORS, or '*' for any origin. */
static const char *set_cors(cmd_parms *cmd, void *dc, const char *arg)
{
    imc_config *c = cmd_config(cmd);
    const char *origin = IMC_CORS_ANY;

    (void)dc;
    if (strcmp(arg, IMC_CORS_ANY) != 0 &&
        imc_cors_origin_canonical(cmd->pool, arg, &origin) != APR_SUCCESS) {
        return bad_value(cmd, arg,
                         "'*' or an origin such as https://www.example.com "
                         "(scheme, host and port only, no path)");
    }
    if (!c->cors) {
        c->cors = apr_array_make(cmd->pool, 2, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->cors, const char *) = origin;
    return NULL;
}

/* Reads the file now, at start-up and at every restart: a bad line stops
 * the server (and apache2 -t) with the file's name and the line. */
static const char *set_site_access(cmd_parms *cmd, void *dc, const char *arg)
{
    imc_config *c = cmd_config(cmd);
    const char *path = ap_server_root_relative(cmd->pool, arg), *why = NULL;
    imc_access *acc;

    (void)dc;
    if (!path || !*arg) {
        return bad_value(cmd, arg, "a valid path");
    }
    if (imc_access_load(&acc, cmd->pool, path, &why) != APR_SUCCESS) {
        return apr_psprintf(cmd->temp_pool, "%s: %s", cmd->cmd->name, why);
    }
    c->site_access_file = path;
    c->site_access = acc;
    return NULL;
}

/* RATE events a second (a decimal number, or Off), BURST whole events
 * (default: RATE rounded up, at least 1). */
static const char *set_rate_limit(cmd_parms *cmd, void *dc, const char *rate,
                                  const char *burst)
{
    imc_config *c = cmd_config(cmd);
    char *end = NULL;
    double v;
    long b;

    (void)dc;
    if (!strcasecmp(rate, "off") && !burst) {
        c->rate_limit = 0;
        c->rate_burst = 0;
        return NULL;
    }
    v = strtod(rate, &end);
    if (!apr_isdigit(*rate) || *end || !(v >= 0.001 && v <= MAX_COUNT)) {
        return bad_value(cmd, rate,
                         "a RATE of events a second between 0.001 and "
                         "1000000, or Off");
    }
    if (burst) {
        if (imc_units_parse_int(burst, 1, MAX_COUNT, &b) != APR_SUCCESS) {
            return bad_value(cmd, burst,
                             "a BURST of events between 1 and 1000000");
        }
    } else {
        b = (long)v;
        b += (double)b < v;
    }
    c->rate_limit = v;
    c->rate_burst = (double)(b > 0 ? b : 1);
    return NULL;
}

#define SRV_CONF RSRC_CONF

const command_rec imc_config_cmds[] = {
    AP_INIT_ITERATE("IMChallengeClickHouse", set_clickhouse, NULL, SRV_CONF,
                    "ClickHouse HTTP endpoints; later ones are fail-over"),
    AP_INIT_TAKE1("IMChallengeClickHouseUser", set_user, NULL, SRV_CONF,
                  "ClickHouse user name (default 'default')"),
    AP_INIT_TAKE1("IMChallengeClickHousePasswordFile", set_password_file, NULL,
                  SRV_CONF, "file holding the ClickHouse password"),
    AP_INIT_TAKE1("IMChallengeDatabase", set_database, NULL, SRV_CONF,
                  "ClickHouse database (default 'imchallenge')"),
    AP_INIT_TAKE1("IMChallengeSpoolDir", set_spool_dir, NULL, SRV_CONF,
                  "directory where accepted events wait for delivery"),
    AP_INIT_TAKE1("IMChallengeSpoolLimit", set_spool_limit, NULL, SRV_CONF,
                  "SIZE of queued events above which new ones get 503"),
    AP_INIT_FLAG("IMChallengeSpoolSync", set_spool_sync, NULL, SRV_CONF,
                 "On: fdatasync the spool before acknowledging"),
    AP_INIT_TAKE1("IMChallengeBatchSize", set_batch_size, NULL, SRV_CONF,
                  "events per INSERT at most"),
    AP_INIT_TAKE1("IMChallengeBatchDelay", set_batch_delay, NULL, SRV_CONF,
                  "DURATION an accepted event waits for its batch at most"),
    AP_INIT_TAKE1("IMChallengeTimeout", set_timeout, NULL, SRV_CONF,
                  "DURATION of a ClickHouse request at most"),
    AP_INIT_TAKE1("IMChallengeMaxEventSize", set_max_event_size, NULL, SRV_CONF,
                  "SIZE of one event's JSON at most"),
    AP_INIT_TAKE1("IMChallengeMaxBatchEvents", set_max_batch_events, NULL,
                  SRV_CONF, "events in one request at most"),
    AP_INIT_FLAG("IMChallengeCreateSchema", set_create_schema, NULL, SRV_CONF,
                 "On: create the database and tables at start-up"),
    AP_INIT_ITERATE("IMChallengeCORS", set_cors, NULL, SRV_CONF,
                    "origins allowed to call the event and report URLs from "
                    "a browser, or '*'"),
    AP_INIT_TAKE1("IMChallengeSiteAccess", set_site_access, NULL, SRV_CONF,
                  "file granting sites to principals (r->user)"),
    AP_INIT_TAKE12("IMChallengeRateLimit", set_rate_limit, NULL, SRV_CONF,
                   "RATE [BURST]: events a second per principal or client "
                   "address, or Off"),
    AP_INIT_TAKE1("IMChallengeMaxReports", set_max_reports, NULL, SRV_CONF,
                  "reports running at once at most, across all processes"),
    AP_INIT_TAKE1("IMChallengeMaxReportRows", set_max_report_rows, NULL,
                  SRV_CONF, "rows in one report at most"),
    AP_INIT_TAKE1("IMChallengeReportCache", set_report_cache, NULL, RSRC_CONF,
                  "SIZE of the report cache all processes share; 0: none"),
    AP_INIT_TAKE1("IMChallengeSolveWindow", set_solve_window, NULL, SRV_CONF,
                  "DURATION from a serve to its solve counted as solved in "
                  "time at most"),
    {NULL}};

const apr_array_header_t *imc_config_clickhouse(const imc_config *c)
{
    static const char *dflt = IMC_DEFAULT_CLICKHOUSE;
    static apr_array_header_t dflt_arr = {NULL, sizeof(const char *), 1, 1,
                                          (char *)&dflt};

    return c->clickhouse ? c->clickhouse : &dflt_arr;
}

const char *imc_config_user(const imc_config *c)
{
    return c->user ? c->user : IMC_DEFAULT_USER;
}

const char *imc_config_password(const imc_config *c)
{
    return c->password;
}

const char *imc_config_database(const imc_config *c)
{
    return c->database ? c->database : IMC_DEFAULT_DATABASE;
}

const char *imc_config_spool_dir(const imc_config *c)
{
    return c->spool_dir ? c->spool_dir : IMC_DEFAULT_SPOOL_DIR;
}

apr_off_t imc_config_spool_limit(const imc_config *c)
{
    return c->spool_limit != -1 ? c->spool_limit : IMC_DEFAULT_SPOOL_LIMIT;
}

int imc_config_spool_sync(const imc_config *c)
{
    return c->spool_sync == 1;
}

int imc_config_batch_size(const imc_config *c)
{
    return c->batch_size != -1 ? c->batch_size : IMC_DEFAULT_BATCH_SIZE;
}

apr_interval_time_t imc_config_batch_delay(const imc_config *c)
{
    return c->batch_delay != -1 ? c->batch_delay : IMC_DEFAULT_BATCH_DELAY;
}

apr_interval_time_t imc_config_timeout(const imc_config *c)
{
    return c->timeout != -1 ? c->timeout : IMC_DEFAULT_TIMEOUT;
}

apr_size_t imc_config_max_event_size(const imc_config *c)
{
    return (apr_size_t)(c->max_event_size != -1 ? c->max_event_size
                                                : IMC_DEFAULT_EVENT_SIZE);
}

int imc_config_max_batch_events(const imc_config *c)
{
    return c->max_batch_events != -1 ? c->max_batch_events
                                     : IMC_DEFAULT_MAX_EVENTS;
}

int imc_config_create_schema(const imc_config *c)
{
    return c->create_schema != 0;
}

const apr_array_header_t *imc_config_cors(const imc_config *c)
{
    return c->cors;
}

const struct imc_access *imc_config_site_access(const imc_config *c)
{
    return c->site_access;
}

double imc_config_rate_limit(const imc_config *c)
{
    return c->rate_limit > 0 ? c->rate_limit : 0;
}

double imc_config_rate_burst(const imc_config *c)
{
    return c->rate_limit > 0 ? c->rate_burst : 0;
}

int imc_config_max_report_rows(const imc_config *c)
{
    return c->max_report_rows != -1 ? c->max_report_rows
                                    : IMC_DEFAULT_MAX_REPORT_ROWS;
}

apr_interval_time_t imc_config_solve_window(const imc_config *c)
{
    return c->solve_window != -1 ? c->solve_window : IMC_DEFAULT_SOLVE_WINDOW;
}

apr_size_t imc_config_report_cache(const imc_config *c)
{
    return (apr_size_t)(c->report_cache != -1 ? c->report_cache
                                              : IMC_DEFAULT_REPORT_CACHE);
}

int imc_config_max_reports(const imc_config *c)
{
    return c->max_reports != -1 ? c->max_reports : IMC_DEFAULT_MAX_REPORTS;
}
