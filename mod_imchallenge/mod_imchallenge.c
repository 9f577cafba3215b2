/* Licensed under the Apache License, Version 2.0. */

/*
 * mod_imchallenge: captcha analytics for Apache httpd. Events in over HTTP,
 * acknowledged once they are in the spool, delivered to ClickHouse in
 * batches, reported per day and site. This file is glue only: the module
 * record, the hooks and the handler dispatch.
 */

#define IMC_MODULE_RECORD

#include <apr_file_info.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <ap_mpm.h>
#include <ap_expr.h>
#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <unixd.h>
#include <errno.h>
#include <unistd.h>

#include "imc_private.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_cors.h"
#include "imc_deliver.h"
#include "imc_health.h"
#include "imc_home.h"
#include "imc_ingest.h"
#include "imc_metrics.h"
#include "imc_report.h"
#include "imc_tenant.h"
#include "imc_slots.h"
#include "imc_spool.h"

/* The spool directories must exist and belong to the user the children run
 * as; the parent is still root here. It never follows a symbolic link that
 * others could have planted (imc_spool_dir_prepare): an unsafe spool stops
 * start-up, as a bad directive does. */
static int prepare_spool_dirs(apr_pool_t *ptemp, server_rec *s)
{
    for (; s; s = s->next) {
        const char *dir = imc_config_spool_dir(imc_config_get(s)), *why;
        apr_status_t rv;

        if (geteuid() != 0) {
            rv = apr_dir_make_recursive(dir, APR_FPROT_OS_DEFAULT, ptemp);
            rv = APR_STATUS_IS_EEXIST(rv) ? APR_SUCCESS : rv;
        } else {
            rv = imc_spool_dir_prepare(ptemp, dir, ap_unixd_config.user_id,
                                       ap_unixd_config.group_id, &why);
        }
        if (rv == IMC_SPOOL_EUNSAFE) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         IMC_LOGNO(00900) "IMChallengeSpoolDir %s is not "
                                          "safe to hand to the server's "
                                          "user: %s; choose a directory "
                                          "that only root can change on "
                                          "the way to it",
                         dir, why);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         IMC_LOGNO(00001) "cannot create the spool "
                                          "directory %s or hand it to the "
                                          "server's user",
                         dir);
        }
    }
    return OK;
}

/* Where a server's events go: its spool's deliverer serves the first
 * server that names the spool directory (segments carry the stamp of a
 * database and URLs, not of a user). */
static const char *destination(apr_pool_t *p, const imc_config *c)
{
    const char *user = imc_config_user(c);

    return apr_pstrcat(
        p, imc_config_database(c), " as ", user ? user : "", " at ",
        apr_array_pstrcat(p, imc_config_clickhouse(c), ' '), NULL);
}

/* Servers (virtual hosts) that share a spool directory must deliver to
 * the same database, user and ClickHouse; else one's events would land in
 * the other's. Runs for apache2 -t too. */
static int imc_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *seen = apr_hash_make(ptemp);

    (void)pconf;
    (void)plog;
    for (; s; s = s->next) {
        const imc_config *c = imc_config_get(s);
        const char *dir = imc_config_spool_dir(c), *to = destination(ptemp, c);
        /* one directory however it is written: /x, /x/, a link to it */
        const char *key = imc_spool_dir_key(ptemp, dir);
        const char *first = apr_hash_get(seen, key, APR_HASH_KEY_STRING);

        if (!first) {
            apr_hash_set(seen, key, APR_HASH_KEY_STRING, to);
        } else if (strcmp(first, to) != 0) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         IMC_LOGNO(00004) "IMChallengeSpoolDir %s is shared "
                                          "by servers delivering to %s and "
                                          "to %s: give each its own "
                                          "IMChallengeSpoolDir",
                         dir, first, to);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

static int imc_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    apr_status_t rv;

    (void)plog;
    /* The first pass only checks the configuration: no side effects. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    if ((rv = imc_clickhouse_global_init(pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     IMC_LOGNO(00003) "cannot initialise libcurl");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (imc_metrics_post_config(pconf, s) != APR_SUCCESS ||
        imc_slots_post_config(pconf, s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (imc_tenant_post_config(pconf, s) != APR_SUCCESS ||
        imc_report_post_config(pconf, s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (prepare_spool_dirs(ptemp, s) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* the directories exist now: their keys are their inodes */
    imc_metrics_spools(ptemp, s);
    return OK;
}

static void imc_child_init(apr_pool_t *pchild, server_rec *s)
{
    imc_ingest_child_init(pchild, s);
    imc_deliver_child_init(pchild, s);
    imc_report_child_init(pchild);
}

#define NO_FILE "imchallenge:"
/* The names of the module's handlers (SetHandler imchallenge-event, ...). */
#define HANDLER_PREFIX "imchallenge-"

/* A handler name without HANDLER_PREFIX ("event", "report", ...), or NULL
 * when it is not one of the module's. */
static const char *own_handler(const char *h)
{
    apr_size_t n = sizeof(HANDLER_PREFIX) - 1;

    return h && !strncmp(h, HANDLER_PREFIX, n) ? h + n : NULL;
}

/* The handler SetHandler chose for r's URL, as own_handler() names it.
 * Known once the <Location> walk is done. httpd copies SetHandler into
 * r->handler only in its fixups, after translate_name, map_to_storage and
 * header_parser, which need it earlier; the directive's value is kept in
 * core_dir_config, which http_core.h declares for modules (mod_proxy and
 * mod_rewrite read it too). This is the one place that reads it. */
static const char *mapped_handler(request_rec *r)
{
    core_dir_config *d = ap_get_core_module_config(r->per_dir_config);
    const char *h, *err = NULL;

    if (!d || !d->expr_handler) {
        return NULL;
    }
    h = ap_expr_str_exec(r, d->expr_handler, &err);
    return err ? NULL : own_handler(h);
}

/* The module's handlers serve no file. For their URLs, name no file (as
 * mod_proxy does for its requests) and skip the directory and file walk,
 * so a long GET event or report filter is not refused as a file name that
 * is too long. The <Location> walk tells which handler SetHandler chose. */
static int imc_translate_name(request_rec *r)
{
    const char *h;

    if (ap_location_walk(r) != OK || !(h = mapped_handler(r))) {
        return DECLINED;
    }
    r->filename = apr_pstrcat(r->pool, NO_FILE, h, NULL);
    return OK;
}

/* The methods of the URLs that browsers may call across origins, NULL
 * for the module's other URLs. */
static const char *cors_methods(const char *h)
{
    if (h && !strcmp(h, "event")) {
        return "GET, POST";
    }
    if (h && !strcmp(h, "report")) {
        return "GET, HEAD";
    }
    return NULL;
}

/* IMChallengeCORS, for the event and report URLs. Runs before access
 * control, so that a 401 or 403 reaches the page too; the headers go to
 * err_headers_out, kept on every answer, errors included. */
static int imc_header_parser(request_rec *r)
{
    const apr_array_header_t *allowed =
        imc_config_cors(imc_config_get(r->server));
    const char *methods, *origin;

    if (!allowed || !(methods = cors_methods(mapped_handler(r)))) {
        return DECLINED;
    }
    origin = apr_table_get(r->headers_in, "Origin");
    if (!imc_cors_headers(r->pool, allowed, origin, 0, methods,
                          r->err_headers_out) &&
        origin && APLOGrdebug(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      IMC_LOGNO(00700) "Origin %s is not in IMChallengeCORS: "
                                       "no CORS headers",
                      origin);
    }
    return DECLINED;
}

/* A CORS preflight from an allowed origin: 204 with the preflight's
 * headers; it never reaches the handler (nor ClickHouse or the spool).
 * DECLINED for every other request. */
static int cors_preflight(request_rec *r, const char *h)
{
    const apr_array_header_t *allowed =
        imc_config_cors(imc_config_get(r->server));
    const char *methods = cors_methods(h),
               *origin = apr_table_get(r->headers_in, "Origin");

    if (!allowed || !methods ||
        !imc_cors_is_preflight(
            r->method, origin,
            apr_table_get(r->headers_in, "Access-Control-Request-Method"))) {
        return DECLINED;
    }
    if (!imc_cors_headers(r->pool, allowed, origin, 1, methods,
                          r->err_headers_out)) {
        return DECLINED;
    }
    apr_table_unset(r->err_headers_out, "Access-Control-Expose-Headers");
    r->status = HTTP_NO_CONTENT;
    return OK;
}

static int imc_map_to_storage(request_rec *r)
{
    return r->filename && !strncmp(r->filename, NO_FILE, sizeof(NO_FILE) - 1)
               ? OK
               : DECLINED;
}

static int imc_handler(request_rec *r)
{
    const char *h = own_handler(r->handler);

    if (!h) {
        return DECLINED;
    }
    if (cors_preflight(r, h) == OK) {
        return OK;
    }
    if (!strcmp(h, "event")) {
        return imc_ingest_handler(r);
    }
    if (!strcmp(h, "report")) {
        return imc_report_handler(r);
    }
    if (!strcmp(h, "home")) {
        return imc_home_handler(r);
    }
    if (!strcmp(h, "metrics")) {
        return imc_metrics_handler(r);
    }
    if (!strcmp(h, "health")) {
        return imc_health_handler(r);
    }
    return DECLINED;
}

static void imc_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_check_config(imc_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(imc_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(imc_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(imc_translate_name, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_map_to_storage(imc_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_header_parser(imc_header_parser, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(imc_handler, NULL, NULL, APR_HOOK_MIDDLE);
    imc_report_register_hooks(p);
}

AP_DECLARE_MODULE(imchallenge) = {
    STANDARD20_MODULE_STUFF,
    imc_config_dir_create, /* per-directory config: the handler's path */
    NULL,                  /* merge per-directory config */
    imc_config_create,     /* per-server config */
    imc_config_merge,      /* merge per-server config */
    imc_config_cmds,       /* directives */
    imc_register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_ALWAYS_MERGE
#endif
};
