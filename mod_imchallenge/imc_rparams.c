/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_rparams: the report's interval, grouping, metrics, fill and
 * comparison parameters. See imc_rparams.h.
 */

#include <string.h>

#include <apr_strings.h>

#include "imc_rparams.h"

const char *const imc_rparams_metric_names[] = {
    "served",         "solved",         "solve_rate",     "unsolved",
    "solve_time_avg", "solve_time_p50", "solve_time_p90", NULL};

static const imc_metric default_metrics[] = {
    IMC_METRIC_SERVED, IMC_METRIC_SOLVED, IMC_METRIC_SOLVE_RATE};

static apr_status_t fail(imc_rparams_error *err, int kind, const char *message,
                         const char *name)
{
    err->kind = kind;
    err->message = message;
    err->name = name;
    return APR_EINVAL;
}

/* The metric named s[0..n) into *m; 0 when there is none of that name. */
static int metric_named(const char *s, apr_size_t n, imc_metric *m)
{
    int i;

    for (i = 0; imc_rparams_metric_names[i]; ++i) {
        if (strlen(imc_rparams_metric_names[i]) == n &&
            !memcmp(imc_rparams_metric_names[i], s, n)) {
            *m = (imc_metric)i;
            return 1;
        }
    }
    return 0;
}

/* metrics=NAME[,NAME...] into out: known names, each once. */
static apr_status_t parse_metrics(imc_rparams *out, apr_pool_t *p,
                                  const char *list, imc_rparams_error *err)
{
    const char *s = list, *comma;
    int seen[IMC_METRIC_COUNT] = {0};
    imc_metric m;

    out->nmetrics = 0;
    for (;;) {
        apr_size_t n;

        comma = strchr(s, ',');
        n = comma ? (apr_size_t)(comma - s) : strlen(s);
        if (n == 0) {
            return fail(err, IMC_RPARAMS_EINVAL,
                        "metrics must be a comma-separated list of names",
                        NULL);
        }
        if (!metric_named(s, n, &m)) {
            const char *name = apr_pstrndup(
                p, s, n < IMC_RPARAMS_MAX_NAME ? n : IMC_RPARAMS_MAX_NAME);

            return fail(err, IMC_RPARAMS_EMETRIC,
                        apr_pstrcat(p, "unknown metric '", name, "'", NULL),
                        name);
        }
        if (seen[m]++) {
            return fail(err, IMC_RPARAMS_EINVAL,
                        apr_pstrcat(p, "metric '", imc_rparams_metric_names[m],
                                    "' is asked twice", NULL),
                        NULL);
        }
        out->metrics[out->nmetrics++] = m;
        if (!comma) {
            return APR_SUCCESS;
        }
        s = comma + 1;
    }
}

/* The values of interval, by, fill and compare. */
static apr_status_t parse_words(imc_rparams *out, const char *interval,
                                const char *by, const char *fill,
                                const char *compare, imc_rparams_error *err)
{
    if (interval &&
        imc_bucket_interval_parse(&out->interval, interval) != APR_SUCCESS) {
        return fail(err, IMC_RPARAMS_EINVAL,
                    "interval must be minute, hour, day, week, month or total",
                    NULL);
    }
    if (by && strcmp(by, "site") && strcmp(by, "none")) {
        return fail(err, IMC_RPARAMS_EINVAL, "by must be site or none", NULL);
    }
    out->by_site = !by || !strcmp(by, "site");
    if (fill && strcmp(fill, "1") && strcmp(fill, "0")) {
        return fail(err, IMC_RPARAMS_EINVAL, "fill must be 1 or 0", NULL);
    }
    out->fill = fill && !strcmp(fill, "1");
    if (compare && strcmp(compare, "previous_period")) {
        return fail(err, IMC_RPARAMS_EINVAL, "compare must be previous_period",
                    NULL);
    }
    out->compare = compare != NULL;
    return APR_SUCCESS;
}

apr_status_t imc_rparams_parse(imc_rparams *out, apr_pool_t *p,
                               const char *interval, const char *by,
                               const char *metrics, const char *fill,
                               const char *compare, int has_range, int csv,
                               imc_rparams_error *err)
{
    apr_status_t rv;
    int i;

    memset(out, 0, sizeof(*out));
    out->interval = IMC_BUCKET_DAY;
    if ((rv = parse_words(out, interval, by, fill, compare, err)) !=
        APR_SUCCESS) {
        return rv;
    }
    if (metrics) {
        if ((rv = parse_metrics(out, p, metrics, err)) != APR_SUCCESS) {
            return rv;
        }
    } else {
        memcpy(out->metrics, default_metrics, sizeof(default_metrics));
        out->nmetrics = 3;
    }
    if (out->fill && !has_range) {
        return fail(err, IMC_RPARAMS_EINVAL, "fill=1 needs from and to", NULL);
    }
    if (out->compare && !has_range) {
        return fail(err, IMC_RPARAMS_EINVAL,
                    "compare=previous_period needs from and to", NULL);
    }
    if (out->compare && csv) {
        return fail(err, IMC_RPARAMS_EINVAL,
                    "compare=previous_period is not available as CSV", NULL);
    }
    for (i = 0; i < out->nmetrics; ++i) {
        if (!imc_rparams_metric_built(out->metrics[i])) {
            const char *name = imc_rparams_metric_names[out->metrics[i]];

            err->kind = IMC_RPARAMS_ENOTBUILT;
            err->name = name;
            err->message = apr_pstrcat(p, "metric '", name,
                                       "' is not available yet", NULL);
            return APR_EINVAL;
        }
    }
    return APR_SUCCESS;
}

/* Every metric is computed: kept so that a metric added to the names
 * before it is computed answers 501. */
int imc_rparams_metric_built(imc_metric m)
{
    return m >= IMC_METRIC_SERVED && m < IMC_METRIC_COUNT;
}

int imc_rparams_needs_window(const imc_rparams *params)
{
    int i;

    for (i = 0; i < params->nmetrics; ++i) {
        if (params->metrics[i] >= IMC_METRIC_UNSOLVED) {
            return 1;
        }
    }
    return 0;
}

int imc_rparams_needs_times(const imc_rparams *params)
{
    int i;

    for (i = 0; i < params->nmetrics; ++i) {
        if (params->metrics[i] >= IMC_METRIC_SOLVE_TIME_AVG) {
            return 1;
        }
    }
    return 0;
}

const char *imc_rparams_seconds(apr_pool_t *p, apr_uint64_t ms)
{
    return apr_psprintf(p, "%" APR_UINT64_T_FMT ".%03u", ms / 1000,
                        (unsigned)(ms % 1000));
}

apr_uint64_t imc_rparams_mean_ms(apr_uint64_t sum_ms, apr_uint64_t n)
{
    apr_uint64_t q, r;

    if (!n) {
        return 0;
    }
    q = sum_ms / n;
    r = sum_ms % n;
    return q + (r >= n - r); /* 2r >= n: half up */
}

const char *imc_rparams_rank_sql(apr_pool_t *p, unsigned tenths, const char *n)
{
    return apr_psprintf(p, "intDiv(%u * %s + 9, 10)", tenths, n);
}

apr_uint64_t imc_rparams_rank(unsigned tenths, apr_uint64_t n)
{
    return (tenths * n + 9) / 10;
}

int imc_rparams_is_default(const imc_rparams *params)
{
    return params->interval == IMC_BUCKET_DAY && params->by_site &&
           !params->fill && !params->compare && params->nmetrics == 3 &&
           !memcmp(params->metrics, default_metrics, sizeof(default_metrics));
}

int imc_rparams_over_limit(apr_uint64_t buckets, apr_uint64_t groups,
                           apr_uint64_t max)
{
    if (!buckets || !groups) {
        return 0;
    }
    return buckets > max || groups > max / buckets;
}
