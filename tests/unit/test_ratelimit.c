/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_ratelimit: token buckets that fill at a rate and hold
 * a burst, Retry-After, batches, keys apart, and the bounded table whose
 * pushed-out keys never come back with a fresh burst.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>

#include "check_main.h"
#include "imc_ratelimit.h"

#define SEC APR_USEC_PER_SEC
#define T0  ((apr_time_t)1700000000 * SEC)

static unsigned char mem[1 << 20];
static const unsigned char secret[16] = {1, 2,  3,  4,  5,  6,  7,  8,
                                         9, 10, 11, 12, 13, 14, 15, 16};

static int take(imc_ratelimit *t, const char *key, double rate, double burst,
                int n, apr_time_t now, int *retry)
{
    return imc_ratelimit_take(t, key, strlen(key), rate, burst, n, now, retry);
}

START_TEST(siphash_matches_the_reference)
{
    unsigned char key[16], msg[15];
    int i;

    for (i = 0; i < 16; ++i) {
        key[i] = (unsigned char)i;
    }
    for (i = 0; i < 15; ++i) {
        msg[i] = (unsigned char)i;
    }
    /* The reference implementation's vectors[0] and vectors[15]. */
    ck_assert_uint_eq(imc_ratelimit_siphash(key, msg, 0),
                      0x726fdb47dd0e0e31ULL);
    ck_assert_uint_eq(imc_ratelimit_siphash(key, msg, 15),
                      0xa129ca6149be45e5ULL);
}
END_TEST

START_TEST(a_burst_passes_then_the_rate)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, 1024, secret);
    int i, retry = 0;

    for (i = 0; i < 5; ++i) {
        ck_assert(take(t, "a", 1, 5, 1, T0, &retry));
    }
    ck_assert(!take(t, "a", 1, 5, 1, T0, &retry));
    ck_assert_int_eq(retry, 1);
    ck_assert(!take(t, "a", 1, 5, 1, T0 + SEC / 2, &retry));
    ck_assert(take(t, "a", 1, 5, 1, T0 + SEC, &retry));
    ck_assert(!take(t, "a", 1, 5, 1, T0 + SEC, &retry));
    /* Ten seconds of rest fill the bucket to its burst, not beyond. */
    for (i = 0; i < 5; ++i) {
        ck_assert(take(t, "a", 1, 5, 1, T0 + 11 * SEC, &retry));
    }
    ck_assert(!take(t, "a", 1, 5, 1, T0 + 11 * SEC, &retry));
}
END_TEST

START_TEST(keys_are_apart)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, 1024, secret);
    int retry;

    ck_assert(take(t, "a", 1, 2, 2, T0, &retry));
    ck_assert(!take(t, "a", 1, 2, 1, T0, &retry));
    ck_assert(take(t, "b", 1, 2, 2, T0, &retry));
    ck_assert(imc_ratelimit_take(t, "a\0x", 3, 1, 2, 1, T0, &retry));
}
END_TEST

START_TEST(retry_after_counts_the_missing_events)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, 1024, secret);
    int retry = 0;

    ck_assert(take(t, "a", 2, 10, 10, T0, &retry));
    ck_assert(!take(t, "a", 2, 10, 7, T0, &retry));
    ck_assert_int_eq(retry, 4); /* 7 events at 2 a second */
    ck_assert(!take(t, "a", 0.1, 10, 1, T0, &retry));
    ck_assert_int_eq(retry, 10);
}
END_TEST

START_TEST(a_batch_passes_whole_or_not_at_all)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, 1024, secret);
    int retry;

    ck_assert(take(t, "a", 1, 10, 8, T0, &retry));
    ck_assert(!take(t, "a", 1, 10, 3, T0, &retry));
    /* The refused batch took nothing: two single events still pass. */
    ck_assert(take(t, "a", 1, 10, 1, T0, &retry));
    ck_assert(take(t, "a", 1, 10, 1, T0, &retry));
    ck_assert(!take(t, "a", 1, 10, 1, T0, &retry));
}
END_TEST

START_TEST(a_batch_over_the_burst_leaves_a_debt)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, 1024, secret);
    int retry;

    ck_assert(take(t, "a", 1, 10, 30, T0, &retry));
    ck_assert(!take(t, "a", 1, 10, 1, T0 + 20 * SEC, &retry));
    ck_assert_int_eq(retry, 1);
    ck_assert(take(t, "a", 1, 10, 1, T0 + 21 * SEC, &retry));
}
END_TEST

/* One set of eight buckets: the ninth key pushes one out. */
START_TEST(a_pushed_out_key_gets_no_fresh_burst)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, IMC_RATELIMIT_WAYS, secret);
    char key[16];
    int i, retry, passed = 0;

    ck_assert(take(t, "victim", 1, 100, 100, T0, &retry));
    /* Seven keys spend their bursts; then every new key pushes out one
     * empty bucket, and starts empty itself. */
    for (i = 0; i < 50; ++i) {
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert(take(t, key, 1, 100, 100, T0, &retry) == (i < 7));
    }
    /* Back after being pushed out, still at T0: its bucket was empty. */
    for (i = 0; i < 100; ++i) {
        passed += take(t, "victim", 1, 100, 1, T0, &retry);
    }
    ck_assert_int_eq(passed, 0);
    /* Time fills it again, at the rate. */
    passed = 0;
    for (i = 0; i < 100; ++i) {
        passed += take(t, "victim", 1, 100, 1, T0 + 10 * SEC, &retry);
    }
    ck_assert_int_eq(passed, 10);
}
END_TEST

START_TEST(full_buckets_are_pushed_out_first)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, IMC_RATELIMIT_WAYS, secret);
    char key[16];
    int i, retry;

    /* Seven idle keys (full buckets) and one spent one. */
    ck_assert(take(t, "spent", 1, 10, 10, T0, &retry));
    for (i = 0; i < 7; ++i) {
        snprintf(key, sizeof(key), "idle%d", i);
        ck_assert(take(t, key, 1, 10, 0, T0, &retry));
    }
    /* New keys take the idle ones' buckets and start full. */
    for (i = 0; i < 7; ++i) {
        snprintf(key, sizeof(key), "new%d", i);
        ck_assert(take(t, key, 1, 10, 10, T0 + SEC, &retry));
        ck_assert(take(t, key, 1, 10, 0, T0 + SEC, &retry));
    }
}
END_TEST

START_TEST(a_table_is_found_again)
{
    imc_ratelimit *t = imc_ratelimit_init(mem, 64, secret);
    int retry;

    ck_assert(take(t, "a", 1, 1, 1, T0, &retry));
    t = imc_ratelimit_attach(mem);
    ck_assert_ptr_nonnull(t);
    ck_assert(!take(t, "a", 1, 1, 1, T0, &retry));
    memset(mem, 0, 64);
    ck_assert_ptr_null(imc_ratelimit_attach(mem));
    ck_assert_uint_ge(imc_ratelimit_size(16384), 16384 * 24);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("buckets");

    tcase_add_test(tc, siphash_matches_the_reference);
    tcase_add_test(tc, a_burst_passes_then_the_rate);
    tcase_add_test(tc, keys_are_apart);
    tcase_add_test(tc, retry_after_counts_the_missing_events);
    tcase_add_test(tc, a_batch_passes_whole_or_not_at_all);
    tcase_add_test(tc, a_batch_over_the_burst_leaves_a_debt);
    tcase_add_test(tc, a_pushed_out_key_gets_no_fresh_burst);
    tcase_add_test(tc, full_buckets_are_pushed_out_first);
    tcase_add_test(tc, a_table_is_found_again);
    suite_add_tcase(s, tc);
    return s;
}
