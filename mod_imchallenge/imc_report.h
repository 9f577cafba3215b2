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

int imc_report_handler(request_rec *r);

/* Creates the process's report cache (imc_rcache). */
void imc_report_child_init(apr_pool_t *pchild);

/* Registers the output filter that keeps answers of the report's other
 * forms as they are sent (register_hooks). */
void imc_report_register_hooks(apr_pool_t *p);

#endif /* IMC_REPORT_H */
