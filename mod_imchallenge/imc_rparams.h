/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_rparams: the report's interval, grouping, metrics, fill and
 * comparison parameters (README "Report"): their values parsed and checked
 * together, and the row limit (IMChallengeMaxReportRows). APR only, no
 * httpd headers.
 *
 * Parameters (each NULL when absent):
 *
 *     interval  minute | hour | day | week | month | total   (default day)
 *     by        site | none                                   (default site)
 *     metrics   NAME[,NAME...] of imc_rparams_metric_names, each once, in
 *               the order asked            (default served,solved,solve_rate)
 *     fill      1 (or 0: off); needs from and to
 *     compare   previous_period; needs from and to, not with CSV
 *
 * Errors are 400s but for a known metric that this build does not compute
 * (IMC_RPARAMS_ENOTBUILT, a 501; this build computes every one); validity
 * is checked before that.
 *
 * The solve-window metrics (unsolved, solve_time_avg/p50/p90) are computed
 * by ClickHouse from millisecond times; the arithmetic of their answer is
 * here: seconds with 3 decimals, the mean rounded to the millisecond.
 */
#ifndef IMC_RPARAMS_H
#define IMC_RPARAMS_H

#include <apr_pools.h>

#include "imc_bucket.h"

typedef enum {
    IMC_METRIC_SERVED,
    IMC_METRIC_SOLVED,
    IMC_METRIC_SOLVE_RATE,
    IMC_METRIC_UNSOLVED,
    IMC_METRIC_SOLVE_TIME_AVG,
    IMC_METRIC_SOLVE_TIME_P50,
    IMC_METRIC_SOLVE_TIME_P90,
    IMC_METRIC_COUNT
} imc_metric;

/* The metric names, in imc_metric order, then NULL. */
extern const char *const imc_rparams_metric_names[];

/* Longest metric name echoed in an unknown-metric error, in bytes. */
#define IMC_RPARAMS_MAX_NAME 64

/* Kinds of error (imc_rparams_error.kind). */
#define IMC_RPARAMS_EINVAL    1 /* 400: message says which parameter */
#define IMC_RPARAMS_EMETRIC   2 /* 400: unknown metric, name holds it */
#define IMC_RPARAMS_ENOTBUILT 3 /* 501: a known metric not computed yet */

typedef struct {
    int kind;
    const char *message; /* one sentence, no trailing period */
    const char *name;    /* the metric for EMETRIC / ENOTBUILT, else NULL */
} imc_rparams_error;

typedef struct {
    imc_bucket_interval interval;
    int by_site;                          /* by=site */
    imc_metric metrics[IMC_METRIC_COUNT]; /* as asked */
    int nmetrics;
    int fill;    /* fill=1 */
    int compare; /* compare=previous_period */
} imc_rparams;

/*
 * Parses the parameters (NULL: absent) into *out; has_range says whether
 * both from and to are given, csv whether the answer is CSV. APR_EINVAL
 * with *err filled (strings from p) when they are not valid together.
 */
apr_status_t imc_rparams_parse(imc_rparams *out, apr_pool_t *p,
                               const char *interval, const char *by,
                               const char *metrics, const char *fill,
                               const char *compare, int has_range, int csv,
                               imc_rparams_error *err);

/* Whether the metric is computed by this build. */
int imc_rparams_metric_built(imc_metric m);

/* Whether params ask for a metric of the solve window (unsolved or a
 * solve time), and for a solve time. */
int imc_rparams_needs_window(const imc_rparams *params);
int imc_rparams_needs_times(const imc_rparams *params);

/* Milliseconds as seconds with 3 decimals ("0.001", "600.000"). */
const char *imc_rparams_seconds(apr_pool_t *p, apr_uint64_t ms);

/* The mean of n solve times adding up to sum_ms, in milliseconds rounded
 * half up (0 when n is 0); exact in integers, without overflow. */
apr_uint64_t imc_rparams_mean_ms(apr_uint64_t sum_ms, apr_uint64_t n);

/* The SQL of the nearest rank of the quantile tenths/10 among n (an SQL
 * expression) sorted values, 1-based: the ceiling of tenths * n / 10 in
 * integers, intDiv(tenths * n + 9, 10) (0 when n is 0). */
const char *imc_rparams_rank_sql(apr_pool_t *p, unsigned tenths, const char *n);

/* The same rank computed here, for n values. */
apr_uint64_t imc_rparams_rank(unsigned tenths, apr_uint64_t n);

/* Whether params ask for the report as it is without any of them (per
 * day and site, served, solved, solve_rate; no fill, no comparison). */
int imc_rparams_is_default(const imc_rparams *params);

/* Whether a report of buckets x groups rows has more than max rows
 * (computed without overflow). */
int imc_rparams_over_limit(apr_uint64_t buckets, apr_uint64_t groups,
                           apr_uint64_t max);

#endif /* IMC_RPARAMS_H */
