/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_access: parsing the site-access file (errors name the
 * file and line), looking principals up, what each may write, and the
 * clause that narrows a report.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "check_main.h"
#include "imc_access.h"

#define S1 "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
#define S2 "5c22c469-63e9-48fd-a4d4-748ca3c77ebf"
#define S3 "7c9e6679-7425-40de-944b-e07fc1f90ae7"

static apr_pool_t *pool;

static void setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static imc_access *parse_ok(const char *text)
{
    imc_access *acc = NULL;
    const char *why = NULL;

    ck_assert_msg(imc_access_parse(&acc, pool, "f", text, strlen(text), &why) ==
                      APR_SUCCESS,
                  "refused: %s", why ? why : "");
    return acc;
}

static const char *parse_error(const char *text)
{
    imc_access *acc = NULL;
    const char *why = NULL;

    ck_assert_int_eq(
        imc_access_parse(&acc, pool, "sites.txt", text, strlen(text), &why),
        APR_EINVAL);
    ck_assert_ptr_nonnull(why);
    return why;
}

START_TEST(principals_and_their_sites)
{
    imc_access *acc =
        parse_ok("# principal sites\n\nacme  " S1 " " S2 "\n"
                 "  globex\t" S3 "   # a comment\ncaptcha-svc *\n");
    const imc_access_grant *g;

    ck_assert_int_eq(imc_access_count(acc), 3);
    g = imc_access_lookup(acc, "acme");
    ck_assert_ptr_nonnull(g);
    ck_assert(imc_access_may(g, S1));
    ck_assert(imc_access_may(g, S2));
    ck_assert(!imc_access_may(g, S3));
    ck_assert(!imc_access_all_sites(g));
    g = imc_access_lookup(acc, "globex");
    ck_assert(imc_access_may(g, S3));
    ck_assert(!imc_access_may(g, S1));
    g = imc_access_lookup(acc, "captcha-svc");
    ck_assert(imc_access_all_sites(g));
    ck_assert(imc_access_may(g, S1));
    ck_assert_ptr_null(imc_access_lookup(acc, "Acme"));
    ck_assert_ptr_null(imc_access_lookup(acc, "acm"));
    ck_assert_ptr_null(imc_access_lookup(acc, ""));
    ck_assert_ptr_null(imc_access_lookup(acc, NULL));
}
END_TEST

START_TEST(uuids_are_kept_canonical_sorted_and_once)
{
    imc_access *acc =
        parse_ok("acme 5C22C469-63E9-48FD-A4D4-748CA3C77EBF " S1 " " S2 "\r\n");
    const imc_access_grant *g = imc_access_lookup(acc, "acme");

    ck_assert(imc_access_may(g, S2));
    ck_assert_str_eq(imc_access_clause(pool, g, "site_id"),
                     "(site_id IN (toUUID('" S1 "'), toUUID('" S2 "')))");
    ck_assert_str_eq(
        imc_access_clause(pool, imc_access_lookup(parse_ok("x *"), "x"), "c"),
        "1");
}
END_TEST

START_TEST(errors_name_file_and_line)
{
    ck_assert_str_eq(parse_error("acme " S1 "\n\nglobex 0faf8b64-nope\n"),
                     "sites.txt:3: a site must be a UUID such as "
                     "0faf8b64-a33d-4db8-aaee-aa165d13cff6, or *");
    ck_assert_str_eq(parse_error("acme " S1 "\n# x\nacme " S2 "\n"),
                     "sites.txt:3: the principal is already granted sites "
                     "on an earlier line");
    ck_assert_str_eq(parse_error("acme\n"),
                     "sites.txt:1: the principal has no sites (UUIDs or *)");
    ck_assert_str_eq(parse_error("a * " S1 "\n"),
                     "sites.txt:1: '*' must be the only site of a line");
    ck_assert_str_eq(parse_error("a " S1 " *\n"),
                     "sites.txt:1: '*' must be the only site of a line");
    ck_assert_str_eq(parse_error("a " S1 "x\n"),
                     "sites.txt:1: a site must be a UUID such as "
                     "0faf8b64-a33d-4db8-aaee-aa165d13cff6, or *");
}
END_TEST

START_TEST(errors_quote_no_byte_of_the_file)
{
    const char *why = parse_error("x '\"<script> {" S1 "}\n");

    ck_assert_ptr_null(strstr(why, "script"));
    ck_assert_ptr_null(strchr(why, '"'));
}
END_TEST

START_TEST(a_nul_in_a_principal_is_refused)
{
    static const char text[] = "ac\0me " S1 "\n";
    imc_access *acc;
    const char *why = NULL;

    ck_assert_int_eq(
        imc_access_parse(&acc, pool, "f", text, sizeof(text) - 1, &why),
        APR_EINVAL);
    ck_assert_str_eq(why, "f:1: the principal holds a NUL byte");
}
END_TEST

START_TEST(load_reads_a_file_and_names_an_unreadable_one)
{
    char path[] = "/tmp/imc-access-XXXXXX";
    int fd = mkstemp(path);
    const char *why = NULL;
    imc_access *acc;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "acme " S1 "\n", 42), 42);
    close(fd);
    ck_assert_int_eq(imc_access_load(&acc, pool, path, &why), APR_SUCCESS);
    ck_assert(imc_access_may(imc_access_lookup(acc, "acme"), S1));
    unlink(path);
    ck_assert_int_ne(imc_access_load(&acc, pool, path, &why), APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(why, path));
    ck_assert_ptr_nonnull(strstr(why, "cannot read the file"));
    ck_assert_int_ne(imc_access_load(&acc, pool, "/tmp", &why), APR_SUCCESS);
}
END_TEST

START_TEST(a_long_file_loads)
{
    apr_size_t n = 100000, i, len = 0;
    char *text = apr_palloc(pool, n * 60), *o = text;
    imc_access *acc;
    const char *why = NULL;

    for (i = 0; i < n; ++i) {
        o += sprintf(o, "p%zu %08zx-0000-4000-8000-000000000000\n", i, i);
    }
    len = (apr_size_t)(o - text);
    ck_assert_int_eq(imc_access_parse(&acc, pool, "f", text, len, &why),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_access_count(acc), 100000);
    ck_assert(imc_access_may(imc_access_lookup(acc, "p99999"),
                             "0001869f-0000-4000-8000-000000000000"));
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("access");
    TCase *tc = tcase_create("parse");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, principals_and_their_sites);
    tcase_add_test(tc, uuids_are_kept_canonical_sorted_and_once);
    tcase_add_test(tc, errors_name_file_and_line);
    tcase_add_test(tc, errors_quote_no_byte_of_the_file);
    tcase_add_test(tc, a_nul_in_a_principal_is_refused);
    tcase_add_test(tc, load_reads_a_file_and_names_an_unreadable_one);
    tcase_add_test(tc, a_long_file_loads);
    suite_add_tcase(s, tc);
    return s;
}
