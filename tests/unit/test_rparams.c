/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_rparams: the report's interval, by, metrics, fill and
 * compare parameters (defaults, every valid value, every error and its
 * kind, the order of the metrics asked), which forms are the default one,
 * the row limit's arithmetic at its edges, and the solve times' arithmetic
 * (seconds, the mean's rounding, nearest ranks).
 */

#include <string.h>

#include <apr_strings.h>

#include "check_main.h"
#include "imc_rparams.h"

/* Parses with from/to given (range) and JSON unless said. */
static apr_status_t parse(imc_rparams *pr, imc_rparams_error *err,
                          const char *iv, const char *by, const char *metrics,
                          const char *fill, const char *compare, int range,
                          int csv)
{
    memset(err, 0, sizeof(*err));
    return imc_rparams_parse(pr, imc_unit_pool, iv, by, metrics, fill, compare,
                             range, csv, err);
}

START_TEST(defaults)
{
    imc_rparams pr;
    imc_rparams_error err;

    ck_assert_int_eq(parse(&pr, &err, NULL, NULL, NULL, NULL, NULL, 0, 0),
                     APR_SUCCESS);
    ck_assert_int_eq(pr.interval, IMC_BUCKET_DAY);
    ck_assert_int_eq(pr.by_site, 1);
    ck_assert_int_eq(pr.fill, 0);
    ck_assert_int_eq(pr.compare, 0);
    ck_assert_int_eq(pr.nmetrics, 3);
    ck_assert_int_eq(pr.metrics[0], IMC_METRIC_SERVED);
    ck_assert_int_eq(pr.metrics[1], IMC_METRIC_SOLVED);
    ck_assert_int_eq(pr.metrics[2], IMC_METRIC_SOLVE_RATE);
    ck_assert(imc_rparams_is_default(&pr));
}
END_TEST

/* The defaults spelt out are the default form; anything else is not. */
START_TEST(explicit_defaults_are_the_default_form)
{
    imc_rparams pr;
    imc_rparams_error err;

    ck_assert_int_eq(parse(&pr, &err, "day", "site", "served,solved,solve_rate",
                           "0", NULL, 0, 1),
                     APR_SUCCESS);
    ck_assert(imc_rparams_is_default(&pr));
    parse(&pr, &err, NULL, NULL, "solved,served,solve_rate", NULL, NULL, 0, 0);
    ck_assert(!imc_rparams_is_default(&pr));
    parse(&pr, &err, NULL, NULL, "served,solved", NULL, NULL, 0, 0);
    ck_assert(!imc_rparams_is_default(&pr));
    parse(&pr, &err, "hour", NULL, NULL, NULL, NULL, 0, 0);
    ck_assert(!imc_rparams_is_default(&pr));
    parse(&pr, &err, NULL, "none", NULL, NULL, NULL, 0, 0);
    ck_assert(!imc_rparams_is_default(&pr));
    parse(&pr, &err, NULL, NULL, NULL, "1", NULL, 1, 0);
    ck_assert(!imc_rparams_is_default(&pr));
    parse(&pr, &err, NULL, NULL, NULL, NULL, "previous_period", 1, 0);
    ck_assert(!imc_rparams_is_default(&pr));
}
END_TEST

START_TEST(every_value)
{
    static const char *const ivs[] = {"minute", "hour",  "day",
                                      "week",   "month", "total"};
    imc_rparams pr;
    imc_rparams_error err;
    int i;

    for (i = 0; i < 6; ++i) {
        ck_assert_int_eq(parse(&pr, &err, ivs[i], "none", "solve_rate", "1",
                               "previous_period", 1, 0),
                         APR_SUCCESS);
        ck_assert_int_eq(pr.interval, (imc_bucket_interval)i);
        ck_assert_int_eq(pr.by_site, 0);
        ck_assert_int_eq(pr.fill, 1);
        ck_assert_int_eq(pr.compare, 1);
        ck_assert_int_eq(pr.nmetrics, 1);
        ck_assert_int_eq(pr.metrics[0], IMC_METRIC_SOLVE_RATE);
    }
}
END_TEST

START_TEST(metrics_keep_the_order_asked)
{
    imc_rparams pr;
    imc_rparams_error err;

    ck_assert_int_eq(parse(&pr, &err, NULL, NULL, "solve_rate,served,solved",
                           NULL, NULL, 0, 0),
                     APR_SUCCESS);
    ck_assert_int_eq(pr.nmetrics, 3);
    ck_assert_int_eq(pr.metrics[0], IMC_METRIC_SOLVE_RATE);
    ck_assert_int_eq(pr.metrics[1], IMC_METRIC_SERVED);
    ck_assert_int_eq(pr.metrics[2], IMC_METRIC_SOLVED);
}
END_TEST

/* Each bad value: 400 (EINVAL) with a message naming the parameter. */
START_TEST(bad_values)
{
    static const char *const cases[][6] = {
        /* interval, by, metrics, fill, compare, word in the message */
        {"year", NULL, NULL, NULL, NULL, "interval"},
        {"Day", NULL, NULL, NULL, NULL, "interval"},
        {"", NULL, NULL, NULL, NULL, "interval"},
        {NULL, "tenant", NULL, NULL, NULL, "by"},
        {NULL, "", NULL, NULL, NULL, "by"},
        {NULL, NULL, "", NULL, NULL, "metrics"},
        {NULL, NULL, "served,", NULL, NULL, "metrics"},
        {NULL, NULL, ",served", NULL, NULL, "metrics"},
        {NULL, NULL, "served,,solved", NULL, NULL, "metrics"},
        {NULL, NULL, "served,served", NULL, NULL, "twice"},
        {NULL, NULL, NULL, "2", NULL, "fill"},
        {NULL, NULL, NULL, "yes", NULL, "fill"},
        {NULL, NULL, NULL, NULL, "previous", "compare"},
        {NULL, NULL, NULL, NULL, "", "compare"}};
    imc_rparams pr;
    imc_rparams_error err;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        ck_assert_int_eq(parse(&pr, &err, cases[i][0], cases[i][1], cases[i][2],
                               cases[i][3], cases[i][4], 1, 0),
                         APR_EINVAL);
        ck_assert_int_eq(err.kind, IMC_RPARAMS_EINVAL);
        ck_assert_msg(strstr(err.message, cases[i][5]) != NULL, "%zu: %s", i,
                      err.message);
    }
}
END_TEST

START_TEST(fill_and_compare_need_a_range)
{
    imc_rparams pr;
    imc_rparams_error err;

    ck_assert_int_eq(parse(&pr, &err, NULL, NULL, NULL, "1", NULL, 0, 0),
                     APR_EINVAL);
    ck_assert_str_eq(err.message, "fill=1 needs from and to");
    ck_assert_int_eq(parse(&pr, &err, NULL, NULL, NULL, "0", NULL, 0, 0),
                     APR_SUCCESS);
    ck_assert_int_eq(
        parse(&pr, &err, NULL, NULL, NULL, NULL, "previous_period", 0, 0),
        APR_EINVAL);
    ck_assert_str_eq(err.message, "compare=previous_period needs from and to");
    ck_assert_int_eq(
        parse(&pr, &err, NULL, NULL, NULL, NULL, "previous_period", 1, 1),
        APR_EINVAL);
    ck_assert(strstr(err.message, "CSV") != NULL);
    ck_assert_int_eq(parse(&pr, &err, NULL, NULL, NULL, "1", NULL, 1, 1),
                     APR_SUCCESS);
}
END_TEST

START_TEST(unknown_metric_is_named)
{
    imc_rparams pr;
    imc_rparams_error err;
    char longname[200];

    ck_assert_int_eq(
        parse(&pr, &err, NULL, NULL, "served,visits", NULL, NULL, 0, 0),
        APR_EINVAL);
    ck_assert_int_eq(err.kind, IMC_RPARAMS_EMETRIC);
    ck_assert_str_eq(err.name, "visits");
    ck_assert_str_eq(err.message, "unknown metric 'visits'");
    /* A long name is cut in the message. */
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    parse(&pr, &err, NULL, NULL, longname, NULL, NULL, 0, 0);
    ck_assert_int_eq(err.kind, IMC_RPARAMS_EMETRIC);
    ck_assert_uint_eq(strlen(err.name), IMC_RPARAMS_MAX_NAME);
    /* Validity comes first: an unknown name wins over one not built. */
    parse(&pr, &err, NULL, NULL, "unsolved,visits", NULL, NULL, 0, 0);
    ck_assert_int_eq(err.kind, IMC_RPARAMS_EMETRIC);
}
END_TEST

START_TEST(every_metric_is_built)
{
    imc_rparams pr;
    imc_rparams_error err;
    int i;

    for (i = 0; imc_rparams_metric_names[i]; ++i) {
        apr_status_t rv = parse(&pr, &err, "hour", NULL,
                                imc_rparams_metric_names[i], NULL, NULL, 0, 0);

        ck_assert_int_eq(rv, APR_SUCCESS);
        ck_assert(imc_rparams_metric_built((imc_metric)i));
        ck_assert_int_eq(imc_rparams_needs_window(&pr),
                         i >= IMC_METRIC_UNSOLVED);
        ck_assert_int_eq(imc_rparams_needs_times(&pr),
                         i >= IMC_METRIC_SOLVE_TIME_AVG);
    }
    ck_assert_int_eq(i, IMC_METRIC_COUNT);
    ck_assert(!imc_rparams_metric_built(IMC_METRIC_COUNT));
    parse(&pr, &err, NULL, NULL, "served,solve_time_p90,solved", NULL, NULL, 0,
          0);
    ck_assert(imc_rparams_needs_window(&pr) && imc_rparams_needs_times(&pr));
    parse(&pr, &err, NULL, NULL, NULL, NULL, NULL, 0, 0);
    ck_assert(!imc_rparams_needs_window(&pr));
    /* A 400 of another parameter still comes first. */
    parse(&pr, &err, "year", NULL, "unsolved", NULL, NULL, 0, 0);
    ck_assert_int_eq(err.kind, IMC_RPARAMS_EINVAL);
    parse(&pr, &err, NULL, NULL, "unsolved", "1", NULL, 0, 0);
    ck_assert_int_eq(err.kind, IMC_RPARAMS_EINVAL);
}
END_TEST

START_TEST(seconds_with_three_decimals)
{
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, 0), "0.000");
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, 1), "0.001");
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, 999), "0.999");
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, 1000), "1.000");
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, 600000), "600.000");
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, 86400001), "86400.001");
    ck_assert_str_eq(imc_rparams_seconds(imc_unit_pool, APR_UINT64_MAX),
                     "18446744073709551.615");
}
END_TEST

START_TEST(mean_rounds_half_up_to_the_millisecond)
{
    ck_assert_uint_eq(imc_rparams_mean_ms(0, 0), 0);
    ck_assert_uint_eq(imc_rparams_mean_ms(7, 1), 7);
    ck_assert_uint_eq(imc_rparams_mean_ms(3, 2), 2);  /* 1.5 */
    ck_assert_uint_eq(imc_rparams_mean_ms(5, 4), 1);  /* 1.25 */
    ck_assert_uint_eq(imc_rparams_mean_ms(7, 4), 2);  /* 1.75 */
    ck_assert_uint_eq(imc_rparams_mean_ms(1, 3), 0);  /* 0.333 */
    ck_assert_uint_eq(imc_rparams_mean_ms(2, 3), 1);  /* 0.667 */
    ck_assert_uint_eq(imc_rparams_mean_ms(10, 4), 3); /* 2.5 */
    /* No overflow where 2 * sum would: the mean of n times the maximum. */
    ck_assert_uint_eq(imc_rparams_mean_ms(APR_UINT64_MAX, 1), APR_UINT64_MAX);
    ck_assert_uint_eq(imc_rparams_mean_ms(APR_UINT64_MAX - 1, 2),
                      APR_UINT64_MAX / 2);
    ck_assert_uint_eq(imc_rparams_mean_ms(APR_UINT64_MAX, 2),
                      APR_UINT64_MAX / 2 + 1);
}
END_TEST

/* The nearest rank (imc_rparams_rank) and its SQL, against the ceiling in exact
 * rationals: n * q <= rank and (rank - 1) < n * q, for every n to 1000 and
 * every tenth (ClickHouse's intDiv of UInt64 is this integer division). */
START_TEST(nearest_rank)
{
    apr_uint64_t n, k;
    unsigned t;

    ck_assert_str_eq(imc_rparams_rank_sql(imc_unit_pool, 5, "count()"),
                     "intDiv(5 * count() + 9, 10)");
    ck_assert_str_eq(imc_rparams_rank_sql(imc_unit_pool, 9, "n"),
                     "intDiv(9 * n + 9, 10)");
    for (n = 0; n <= 1000; ++n) {
        for (t = 1; t <= 10; ++t) {
            k = imc_rparams_rank(t, n);
            if (!n) {
                ck_assert_uint_eq(k, 0);
                continue;
            }
            ck_assert(n * t <= 10 * k && 10 * (k - 1) < n * t);
            ck_assert(k >= 1 && k <= n);
        }
    }
}
END_TEST

START_TEST(row_limit)
{
    const apr_uint64_t big = APR_UINT64_C(1) << 40;

    ck_assert(!imc_rparams_over_limit(100000, 1, 100000));
    ck_assert(imc_rparams_over_limit(100001, 1, 100000));
    ck_assert(!imc_rparams_over_limit(1000, 100, 100000));
    ck_assert(imc_rparams_over_limit(1000, 101, 100000));
    ck_assert(imc_rparams_over_limit(317, 317, 100000)); /* 100489 */
    ck_assert(!imc_rparams_over_limit(316, 316, 100000));
    ck_assert(!imc_rparams_over_limit(0, big, 1));
    ck_assert(!imc_rparams_over_limit(big, 0, 1));
    ck_assert(imc_rparams_over_limit(big, big, APR_UINT64_MAX / 2));
    ck_assert(!imc_rparams_over_limit(1, APR_UINT64_MAX, APR_UINT64_MAX));
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("rparams");
    TCase *tc = tcase_create("rparams");

    tcase_add_checked_fixture(tc, imc_unit_setup, imc_unit_teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, explicit_defaults_are_the_default_form);
    tcase_add_test(tc, every_value);
    tcase_add_test(tc, metrics_keep_the_order_asked);
    tcase_add_test(tc, bad_values);
    tcase_add_test(tc, fill_and_compare_need_a_range);
    tcase_add_test(tc, unknown_metric_is_named);
    tcase_add_test(tc, every_metric_is_built);
    tcase_add_test(tc, seconds_with_three_decimals);
    tcase_add_test(tc, mean_rounds_half_up_to_the_millisecond);
    tcase_add_test(tc, nearest_rank);
    tcase_add_test(tc, row_limit);
    suite_add_tcase(s, tc);
    return s;
}
