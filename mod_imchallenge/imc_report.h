/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report: the imchallenge-report handler (SPEC section 5): arguments,
 * the filter compiled by imc_filter, the SQL sent to ClickHouse, and the
 * answer rendered as JSON or CSV.
 */
#ifndef IMC_REPORT_H
#define IMC_REPORT_H

#include <httpd.h>

int imc_report_handler(request_rec *r);

#endif /* IMC_REPORT_H */
