/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report_buckets: the report with interval, by, metrics, fill or
 * compare (README "Report"): its rows computed by ClickHouse per final
 * bucket (distinct procedures do not add up across finer buckets), the
 * buckets being calendar units of the report's zone (imc_bucket), labelled
 * here and rendered as JSON or CSV.
 *
 * The local time of an event is its UTC seconds plus the zone's offset at
 * that instant, which the module knows (imc_zone) and writes into the
 * query as a multiIf over the transitions of the report's range (from/to,
 * else the events' first and last times, asked first): ClickHouse's own
 * toStartOfHour merges the two hours of a fold on some releases. Minute
 * and hour buckets are grouped by local unit and offset, so that the two
 * hours of a fold stay apart; days, ISO weeks and months by the local day
 * number. Each row carries an instant of its bucket (its first event's),
 * from which imc_bucket gives the label and the order.
 */
#ifndef IMC_REPORT_BUCKETS_H
#define IMC_REPORT_BUCKETS_H

#include <httpd.h>

#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_rparams.h"
#include "imc_zone.h"

typedef struct {
    const char *where;     /* the compiled (and narrowed) filter */
    const imc_zone *zone;  /* the report's zone */
    int from, to;          /* day numbers; IMC_RCACHE_NO_DAY: absent */
    const char *procedure; /* what uniqExact counts (imc_report_client) */
    const imc_rparams *params;
    int csv;
    int max_rows; /* IMChallengeMaxReportRows */
} imc_report_form;

typedef struct imc_report_buckets imc_report_buckets;

/* Whether the buckets of from..to alone are more than max_rows: decided
 * before ClickHouse is asked (0 without both from and to). */
int imc_report_buckets_too_many(const imc_report_form *f);

/* Asks ClickHouse (ch) for the report's rows, and for the previous
 * period's with compare, into *out. */
apr_status_t imc_report_buckets_query(imc_report_buckets **out, request_rec *r,
                                      const imc_config *c, imc_clickhouse *ch,
                                      const imc_report_form *f,
                                      imc_clickhouse_result *res);

/* Whether the rows are more than max_rows. */
int imc_report_buckets_over(const imc_report_buckets *b);

/* Answers the rows as JSON or CSV. */
void imc_report_buckets_render(request_rec *r, const imc_report_buckets *b);

#endif /* IMC_REPORT_BUCKETS_H */
