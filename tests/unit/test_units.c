/* Licensed under the Apache License, Version 2.0. */

/* SIZE, DURATION and count values of the directives (README "Directives"). */

#include <stdlib.h>

#include "check_main.h"
#include "imc_units.h"

#define MAX_SIZE ((apr_off_t)1 << 50)
#define MAX_DUR  apr_time_from_sec(86400)

START_TEST(size_good)
{
    static const struct {
        const char *in;
        apr_off_t out;
    } cases[] = {{"0", 0},
                 {"1", 1},
                 {"512", 512},
                 {"16k", 16384},
                 {"16K", 16384},
                 {"3M", 3 * 1024 * 1024},
                 {"1G", (apr_off_t)1024 * 1024 * 1024},
                 {"2g", (apr_off_t)2 * 1024 * 1024 * 1024}};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        apr_off_t v = -1;

        ck_assert_int_eq(imc_units_parse_size(cases[i].in, MAX_SIZE, &v),
                         APR_SUCCESS);
        ck_assert_int_eq(v, cases[i].out);
    }
}
END_TEST

START_TEST(size_bad)
{
    static const char *cases[] = {"",    "k",    "-1",  "1.5M",
                                  "1 M", "1MB",  "1T",  " 1",
                                  "1k ", "0x10", "ten", "99999999999999999999"};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        apr_off_t v = 42;

        ck_assert_msg(imc_units_parse_size(cases[i], MAX_SIZE, &v) ==
                          APR_EINVAL,
                      "'%s' accepted", cases[i]);
        ck_assert_int_eq(v, 42);
    }
}
END_TEST

START_TEST(size_max)
{
    apr_off_t v;

    ck_assert_int_eq(imc_units_parse_size("1024", 1024, &v), APR_SUCCESS);
    ck_assert_int_eq(imc_units_parse_size("1025", 1024, &v), APR_EINVAL);
    ck_assert_int_eq(imc_units_parse_size("1k", 1024, &v), APR_SUCCESS);
    ck_assert_int_eq(imc_units_parse_size("2k", 1024, &v), APR_EINVAL);
    ck_assert_int_eq(imc_units_parse_size("17179869184G", MAX_SIZE, &v),
                     APR_EINVAL);
}
END_TEST

START_TEST(duration_good)
{
    static const struct {
        const char *in;
        apr_interval_time_t out;
    } cases[] = {{"1", APR_USEC_PER_SEC},
                 {"10s", 10 * APR_USEC_PER_SEC},
                 {"250ms", 250000},
                 {"0ms", 0},
                 {"2m", 120 * APR_USEC_PER_SEC}};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        apr_interval_time_t v = -1;

        ck_assert_int_eq(imc_units_parse_duration(cases[i].in, MAX_DUR, &v),
                         APR_SUCCESS);
        ck_assert_int_eq(v, cases[i].out);
    }
}
END_TEST

START_TEST(duration_bad)
{
    static const char *cases[] = {"",     "s",   "ms",    "-1s",  "1.5s",
                                  "1 s",  "1h",  "1S",    "1MS",  "1sec",
                                  "1mss", "25h", "1441m", "86401"};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        apr_interval_time_t v = 42;

        ck_assert_msg(imc_units_parse_duration(cases[i], MAX_DUR, &v) ==
                          APR_EINVAL,
                      "'%s' accepted", cases[i]);
        ck_assert_int_eq(v, 42);
    }
}
END_TEST

START_TEST(count_range)
{
    long v = 0;

    ck_assert_int_eq(imc_units_parse_int("1", 1, 10, &v), APR_SUCCESS);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(imc_units_parse_int("10", 1, 10, &v), APR_SUCCESS);
    ck_assert_int_eq(v, 10);
    ck_assert_int_eq(imc_units_parse_int("0", 1, 10, &v), APR_EINVAL);
    ck_assert_int_eq(imc_units_parse_int("11", 1, 10, &v), APR_EINVAL);
    ck_assert_int_eq(imc_units_parse_int("5k", 1, 10, &v), APR_EINVAL);
    ck_assert_int_eq(imc_units_parse_int("", 1, 10, &v), APR_EINVAL);
    ck_assert_int_eq(imc_units_parse_int("-3", -5, 10, &v), APR_EINVAL);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("units");
    TCase *tc = tcase_create("parse");

    tcase_add_test(tc, size_good);
    tcase_add_test(tc, size_bad);
    tcase_add_test(tc, size_max);
    tcase_add_test(tc, duration_good);
    tcase_add_test(tc, duration_bad);
    tcase_add_test(tc, count_range);
    suite_add_tcase(s, tc);
    return s;
}
