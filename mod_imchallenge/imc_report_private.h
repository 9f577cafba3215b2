/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report_private: what the report's files share (imc_report.c,
 * imc_report_buckets.c, imc_report_parts.c): reading ClickHouse's
 * TabSeparated answers, the rate as written, and ClickHouse failures
 * mapped to the client's status.
 */
#ifndef IMC_REPORT_PRIVATE_H
#define IMC_REPORT_PRIVATE_H

#include <httpd.h>

#include "imc_clickhouse.h"

/* An answer of ClickHouse that is not what the query asks for: a line
 * that does not parse, as when an exception is written into a 200 answer
 * after its first rows, or an answer cut short. Never shown, never kept. */
#define IMC_REPORT_EMALFORMED (APR_OS_START_USERERR + 40)

/* The next line of a TabSeparated answer at *pos, cut at its '\n' in
 * place; NULL at the answer's end, or when its last line has no '\n' (it
 * was cut short: *cut is then set). */
char *imc_report_next_line(char **pos, int *cut);

/* Splits a TabSeparated line in place into its fields, empty ones
 * included, keeping at most n; returns how many it has. */
int imc_report_split_tabs(char *line, char **fields, int n);

/* A decimal number of at most max into *out; 0 unless s is only digits. */
int imc_report_parse_uint(const char *s, apr_uint64_t max, apr_uint64_t *out);

/* Whether s is a site_id as ClickHouse writes a UUID. */
int imc_report_parse_site(const char *s);

/* Logs the malformed line lineno of an answer and returns
 * IMC_REPORT_EMALFORMED. */
apr_status_t imc_report_malformed(request_rec *r, const char *what, int lineno,
                                  char *line, const char *end);

/* solved / served with 4 decimals, none when nothing was served. */
const char *imc_report_rate(apr_pool_t *p, apr_uint64_t served,
                            apr_uint64_t solved, const char *none);

/* Maps a ClickHouse failure to the client's status and answers it; its
 * text is logged, never sent. */
int imc_report_clickhouse_error(request_rec *r, apr_status_t rv,
                                const imc_clickhouse_result *res);

/* The 400 of a report over IMChallengeMaxReportRows. */
int imc_report_too_many_rows(request_rec *r, int max);

#endif /* IMC_REPORT_PRIVATE_H */
