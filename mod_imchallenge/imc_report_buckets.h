/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report_buckets: the report with interval, by, metrics, fill or
 * compare (README "Report"): its rows computed by ClickHouse per final
 * bucket (distinct procedures do not add up across finer buckets), or
 * made here from the cache's cells (hours and days) or spans (every
 * site's rows of a range), the buckets being calendar units of the
 * report's zone (imc_bucket), labelled here and rendered as JSON or CSV.
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

#include "imc_access.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_filter.h"
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

/* The previous period of compare (from and to given): as many days,
 * ending the day before from, into *from and *to (day numbers; before
 * 1970 where from is that early). */
void imc_report_form_previous(const imc_report_form *f, int *from, int *to);

/* Whether the buckets of from..to alone are more than max_rows: decided
 * before ClickHouse is asked (0 without both from and to). */
int imc_report_buckets_too_many(const imc_report_form *f);

/* Asks ClickHouse (ch) for the report's rows, and for the previous
 * period's with compare, into *out. */
apr_status_t imc_report_buckets_query(imc_report_buckets **out, request_rec *r,
                                      const imc_config *c, imc_clickhouse *ch,
                                      const imc_report_form *f,
                                      imc_clickhouse_result *res);

/*
 * Whether the form's rows add up from cells of the cache: per day (or
 * hour) and site, served and solved. A procedure is a (site, correlation
 * id) pair, so the distinct procedures of a bucket over all sites are
 * the sum of its sites'; and a day or an hour lies within one local day.
 * Not for minutes (a day's cells of every site would be many times what
 * a filtered report reads), weeks, months, totals (distinct over days),
 * or the solve window's metrics.
 */
int imc_report_buckets_by_cells(const imc_report_form *f);

/* The GROUP BY keys (besides day and site) of the form's cells for
 * events within the instants [lo, hi]: the hours' (NULL for days). */
const char *imc_report_buckets_cell_keys(apr_pool_t *p,
                                         const imc_report_form *f,
                                         apr_int64_t lo, apr_int64_t hi);

/* The form's answer from cells (imc_rcache_row, each an instant of its
 * bucket in time for hours) already cut to the filter and the principal's
 * sites, of the form's days and, with compare, of the previous period's. */
imc_report_buckets *
imc_report_buckets_from_cells(apr_pool_t *p, const imc_report_form *f,
                              const apr_array_header_t *cells);

/*
 * Whether the form's rows come from spans: the rows of every site of its
 * weeks, months or total over from..to, asked of ClickHouse without the
 * filter and kept under the range (not the filter). A filter that names
 * no day admits all of a (bucket, site, type)'s events or none, so it is
 * applied to those rows (imc_filter_match); over all sites they add up
 * as procedures are (site, correlation id) pairs. Not with a day in the
 * filter, nor for the solve window's metrics.
 */
int imc_report_buckets_by_spans(const imc_report_form *f,
                                const imc_filter *parsed);

/* The rows of every site of the form's buckets over the local days
 * [from, to] (either may be IMC_RCACHE_NO_DAY), unfiltered, packed as
 * they are kept (*blob, *size); *blob NULL when there are more than the
 * form's max_rows. */
apr_status_t imc_report_buckets_span_query(request_rec *r, const imc_config *c,
                                           imc_clickhouse *ch,
                                           const imc_report_form *f, int from,
                                           int to, void **blob,
                                           apr_size_t *size,
                                           imc_clickhouse_result *res);

/* The form's answer from the packed rows of its range (cur) and, with
 * compare, of the previous period (prev), cut to the filter and to the
 * principal's sites (grant, NULL: all). */
imc_report_buckets *imc_report_buckets_from_spans(
    apr_pool_t *p, const imc_report_form *f, const imc_filter *parsed,
    const imc_access_grant *grant, const void *cur, apr_size_t cur_size,
    const void *prev, apr_size_t prev_size);

/* Whether the rows are more than max_rows. */
int imc_report_buckets_over(const imc_report_buckets *b);

/* Answers the rows as JSON or CSV. */
void imc_report_buckets_render(request_rec *r, const imc_report_buckets *b);

#endif /* IMC_REPORT_BUCKETS_H */
