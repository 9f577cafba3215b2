/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report: the imchallenge-report handler (README "Report"): arguments,
 * the filter compiled by imc_filter, the SQL sent to ClickHouse, the
 * per-day results kept by imc_rcache, and the answer rendered as JSON or
 * CSV.
 */
#ifndef IMC_REPORT_H
#define IMC_REPORT_H

#include <httpd.h>

#include "imc_scache.h"

int imc_report_handler(request_rec *r);

/* Makes (or finds again, across restarts) the server's report cache:
 * IMChallengeReportCache bytes of shared memory (imc_scache). */
apr_status_t imc_report_post_config(apr_pool_t *pconf, server_rec *s);

/* The report cache's figures into *st; 0 when there is none. */
int imc_report_cache_stats(imc_scache_stats *st);

/* The process's views of the report cache (imc_rcache). */
void imc_report_child_init(apr_pool_t *pchild);

/* Registers the output filter that keeps answers of the report's other
 * forms as they are sent (register_hooks). */
void imc_report_register_hooks(apr_pool_t *p);

#endif /* IMC_REPORT_H */
