/* Licensed under the Apache License, Version 2.0. */

/* imc_clickhouse's reading of ClickHouse's answers (SPEC section 11): an
 * exception written into a 200, the codes that refuse rows for good by
 * release, version() text. */

#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "imc_clickhouse.h"

static int body_code(const char *body)
{
    return imc_clickhouse_body_exception(body, strlen(body));
}

START_TEST(exception_in_a_200)
{
    /* 18.16 and older releases */
    ck_assert_int_eq(
        body_code("17000\t1f0c\t3\t1\nCode: 159, e.displayText() = "
                  "DB::Exception: Timeout exceeded: elapsed 1.0 seconds, "
                  "e.what() = DB::Exception\n"),
        159);
    /* releases before 25.11 */
    ck_assert_int_eq(body_code("1\n2\nCode: 241. DB::Exception: Memory limit "
                               "(for query) exceeded. (MEMORY_LIMIT_EXCEEDED) "
                               "(version 24.8.4.13)\n"),
                     241);
    /* 25.11 on: the tagged form that ends a chunked stream */
    ck_assert_int_eq(body_code("1\n2\n__exception__PU1FNUFH98\nCode: 395. "
                               "DB::Exception: Value passed to 'throwIf' "
                               "function is non-zero. "
                               "(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)\n"
                               "120 PU1FNUFH98__exception__\n"),
                     395);
    /* the marker whose message is not ClickHouse's usual one */
    ck_assert_int_eq(
        body_code("1\n__exception__X\nBig bam\n7 X__exception__\n"), -1);
    /* at the very start, without a newline at the end */
    ck_assert_int_eq(body_code("Code: 60. DB::Exception: Table x.events does "
                               "not exist"),
                     60);
}
END_TEST

START_TEST(no_exception)
{
    ck_assert_int_eq(body_code(""), 0);
    ck_assert_int_eq(body_code("Ok.\n"), 0);
    ck_assert_int_eq(body_code("1\n"), 0);
    ck_assert_int_eq(body_code("20000\tCode: 1. DB::Exception\t1\t1\n"), 0);
    ck_assert_int_eq(body_code("Code: x. DB::Exception\n"), 0);
    ck_assert_int_eq(body_code("Code: 12 DB::Exception\n"), 0);
    ck_assert_int_eq(body_code("x__exception__\n"), 0);
    /* only the first len bytes count */
    ck_assert_int_eq(
        imc_clickhouse_body_exception("1\nCode: 6. DB::Exception: x", 2), 0);
}
END_TEST

START_TEST(versions)
{
    imc_clickhouse_version v = imc_clickhouse_parse_version("18.16.1\n");

    ck_assert_int_eq(v.major, 18);
    ck_assert_int_eq(v.minor, 16);
    v = imc_clickhouse_parse_version("26.7.2.1");
    ck_assert_int_eq(v.major, 26);
    ck_assert_int_eq(v.minor, 7);
    v = imc_clickhouse_parse_version("");
    ck_assert_int_eq(v.major, 0);
    v = imc_clickhouse_parse_version("Code: 1. DB::Exception");
    ck_assert_int_eq(v.major, 0);
    v = imc_clickhouse_parse_version(NULL);
    ck_assert_int_eq(v.major, 0);
}
END_TEST

START_TEST(permanent_by_release)
{
    static const imc_clickhouse_version v18 = {18, 16}, v20 = {20, 2},
                                        v23 = {23, 3}, v234 = {23, 4},
                                        v26 = {26, 7}, unknown = {0, 0};
    static const int parse[] = {6,   25,  26,  27,  32,  33,  38,  41,
                                53,  69,  70,  72,  117, 130, 131, 349,
                                376, 441, 467, 563, 632, 675, 676, 691};
    static const int transient[] = {0,   60,  81,  115, 159, 164, 192, 193,
                                    202, 210, 241, 252, 497, 516, 1000};
    size_t i;

    for (i = 0; i < sizeof(parse) / sizeof(parse[0]); ++i) {
        ck_assert_msg(imc_clickhouse_is_permanent(parse[i], v26), "%d",
                      parse[i]);
        ck_assert_msg(imc_clickhouse_is_permanent(parse[i], v18), "%d",
                      parse[i]);
        ck_assert_msg(imc_clickhouse_is_permanent(parse[i], unknown), "%d",
                      parse[i]);
    }
    for (i = 0; i < sizeof(transient) / sizeof(transient[0]); ++i) {
        ck_assert_msg(!imc_clickhouse_is_permanent(transient[i], v26), "%d",
                      transient[i]);
        ck_assert_msg(!imc_clickhouse_is_permanent(transient[i], v18), "%d",
                      transient[i]);
    }
    /* LOGICAL_ERROR: an unknown Enum element on 18.16, a bug since */
    ck_assert(imc_clickhouse_is_permanent(IMC_CH_LOGICAL_ERROR, v18));
    ck_assert(!imc_clickhouse_is_permanent(IMC_CH_LOGICAL_ERROR, v20));
    ck_assert(!imc_clickhouse_is_permanent(IMC_CH_LOGICAL_ERROR, v26));
    ck_assert(!imc_clickhouse_is_permanent(IMC_CH_LOGICAL_ERROR, unknown));
    /* BAD_ARGUMENTS: an unknown Enum element from 20.2 to 23.3 only */
    ck_assert(!imc_clickhouse_is_permanent(IMC_CH_BAD_ARGUMENTS, v18));
    ck_assert(imc_clickhouse_is_permanent(IMC_CH_BAD_ARGUMENTS, v20));
    ck_assert(imc_clickhouse_is_permanent(IMC_CH_BAD_ARGUMENTS, v23));
    ck_assert(!imc_clickhouse_is_permanent(IMC_CH_BAD_ARGUMENTS, v234));
    ck_assert(!imc_clickhouse_is_permanent(IMC_CH_BAD_ARGUMENTS, v26));
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("clickhouse");
    TCase *tc = tcase_create("answers");

    tcase_add_test(tc, exception_in_a_200);
    tcase_add_test(tc, no_exception);
    tcase_add_test(tc, versions);
    tcase_add_test(tc, permanent_by_release);
    suite_add_tcase(s, tc);
    return s;
}
