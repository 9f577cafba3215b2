/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_scache: values kept under key and tag, the ring's bounds and order
 * of eviction, sharing between processes, and a process killed in the
 * middle of a write.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_strings.h>

#include "check_main.h"
#include "imc_scache.h"

#define SIZE ((apr_size_t)256 * 1024)

static void *shared_block(apr_size_t size)
{
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    ck_assert_ptr_ne(mem, MAP_FAILED);
    return mem;
}

static imc_scache *new_cache(apr_size_t size)
{
    imc_scache *c;

    ck_assert_int_eq(imc_scache_format(&c, shared_block(size), size),
                     APR_SUCCESS);
    return c;
}

static int put(imc_scache *c, const char *key, apr_uint64_t tag,
               const void *value, apr_size_t len)
{
    imc_scache_piece piece;

    piece.data = value;
    piece.len = len;
    return imc_scache_put(c, key, strlen(key), tag, &piece, 1);
}

static const char *get(imc_scache *c, const char *key, apr_uint64_t tag)
{
    apr_size_t len;

    return imc_scache_get(c, imc_unit_pool, key, strlen(key), tag, &len);
}

START_TEST(a_value_is_found_under_its_key_and_tag_only)
{
    imc_scache *c = new_cache(SIZE);
    imc_scache_piece pieces[2] = {{"hello ", 6}, {"world", 5}};
    apr_size_t len;
    const char *v;

    ck_assert_ptr_null(get(c, "a", 1));
    ck_assert(imc_scache_put(c, "a", 1, 7, pieces, 2));
    v = imc_scache_get(c, imc_unit_pool, "a", 1, 7, &len);
    ck_assert_uint_eq(len, 11);
    ck_assert_str_eq(v, "hello world");
    ck_assert_ptr_null(get(c, "a", 8)); /* another fingerprint */
    ck_assert_ptr_null(get(c, "b", 7));
    ck_assert_ptr_null(imc_scache_get(c, imc_unit_pool, "a", 2, 7, &len));
    ck_assert(put(c, "a", 8, "new", 3)); /* replaces */
    ck_assert_ptr_null(get(c, "a", 7));
    ck_assert_str_eq(get(c, "a", 8), "new");
}
END_TEST

START_TEST(the_ring_stays_within_its_size_and_drops_the_oldest)
{
    imc_scache *c = new_cache(SIZE);
    imc_scache_stats st;
    char key[32], value[1000];
    int i, found = 0;

    memset(value, 'v', sizeof(value));
    for (i = 0; i < 2000; ++i) {
        apr_snprintf(key, sizeof(key), "k%d", i);
        ck_assert(
            put(c, key, (apr_uint64_t)i, value, 200 + (apr_size_t)i % 700));
        imc_scache_stats_get(c, &st);
        ck_assert_uint_le(st.bytes, SIZE);
    }
    ck_assert_uint_gt(st.evictions, 1000);
    ck_assert_ptr_nonnull(get(c, "k1999", 1999));
    ck_assert_ptr_null(get(c, "k0", 0));
    for (i = 0; i < 2000; ++i) {
        apr_snprintf(key, sizeof(key), "k%d", i);
        found += get(c, key, (apr_uint64_t)i) != NULL;
    }
    ck_assert_int_gt(found, 100);
    ck_assert_uint_eq(st.entries, (apr_uint64_t)found);
}
END_TEST

START_TEST(what_is_read_stays_what_is_not_goes)
{
    imc_scache *c = new_cache(SIZE);
    char key[32], value[1000];
    int i;

    memset(value, 'v', sizeof(value));
    ck_assert(put(c, "used", 1, "u", 1));
    for (i = 0; i < 3000; ++i) {
        apr_snprintf(key, sizeof(key), "k%d", i);
        ck_assert(put(c, key, 1, value, sizeof(value)));
        ck_assert_ptr_nonnull(get(c, "used", 1));
    }
    ck_assert_ptr_null(get(c, "k0", 1));
}
END_TEST

START_TEST(a_value_over_a_quarter_is_not_kept)
{
    imc_scache *c = new_cache(SIZE);
    apr_size_t most = imc_scache_max_value(c, 1);
    char *big = calloc(1, most + 1);

    ck_assert_uint_gt(most, SIZE / 5);
    ck_assert(put(c, "a", 1, "x", 1));
    ck_assert(!put(c, "a", 1, big, most + 1));
    ck_assert_ptr_null(get(c, "a", 1)); /* the old value is gone too */
    ck_assert(put(c, "a", 1, big, most));
    ck_assert_ptr_nonnull(get(c, "a", 1));
    free(big);
}
END_TEST

START_TEST(processes_share_it_and_attach_finds_it)
{
    void *mem = shared_block(SIZE);
    imc_scache *c;
    pid_t pid;
    int status;

    ck_assert_ptr_null(imc_scache_attach(memset(mem, 0, SIZE), SIZE));
    ck_assert_int_eq(imc_scache_format(&c, mem, SIZE), APR_SUCCESS);
    ck_assert_ptr_eq(imc_scache_attach(mem, SIZE), c);
    ck_assert_ptr_null(imc_scache_attach(mem, SIZE / 2)); /* other size */
    pid = fork();
    if (pid == 0) {
        _exit(put(c, "from the child", 3, "yes", 3) ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_str_eq(get(c, "from the child", 3), "yes");
}
END_TEST

/* A child writes big values without end; once it has written one, it is
 * killed at a random moment, some inside a write. Whatever is found
 * afterwards is a whole value. */
START_TEST(a_writer_killed_mid_write_leaves_no_half_value)
{
    apr_size_t size = (apr_size_t)512 * 1024;
    imc_scache *c = new_cache(size);
    apr_size_t len = imc_scache_max_value(c, 8);
    volatile apr_uint32_t *written = shared_block(sizeof(*written));
    apr_uint64_t seed = 12345;
    imc_scache_stats st;
    int round, checked = 0, waited;

    for (round = 0; round < 40; ++round) {
        pid_t pid;
        int status;

        *written = 0;
        if ((pid = fork()) == 0) {
            char *v = malloc(len);
            unsigned char fill = 0;

            for (;;) {
                memset(v, 'a' + fill % 26, len);
                put(c, "bigvalue", 1, v, len);
                __atomic_add_fetch(written, 1, __ATOMIC_SEQ_CST);
                ++fill;
            }
        }
        for (waited = 0;
             !__atomic_load_n(written, __ATOMIC_SEQ_CST) && waited < 30000;
             ++waited) {
            usleep(1000);
        }
        usleep((useconds_t)(imc_unit_random(&seed) % 2000));
        kill(pid, SIGKILL);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        {
            apr_size_t n;
            const char *v =
                imc_scache_get(c, imc_unit_pool, "bigvalue", 8, 1, &n);
            apr_size_t i;

            if (v) {
                ck_assert_uint_eq(n, len);
                for (i = 1; i < n; ++i) {
                    ck_assert_int_eq(v[i], v[0]);
                }
                ++checked;
            }
        }
    }
    imc_scache_stats_get(c, &st);
    ck_assert_int_gt(checked, 0);
    ck_assert_uint_gt(st.resets, 0); /* some kills did land inside */
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("scache");
    TCase *tc = tcase_create("scache");

    tcase_add_checked_fixture(tc, imc_unit_setup, imc_unit_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_value_is_found_under_its_key_and_tag_only);
    tcase_add_test(tc, the_ring_stays_within_its_size_and_drops_the_oldest);
    tcase_add_test(tc, what_is_read_stays_what_is_not_goes);
    tcase_add_test(tc, a_value_over_a_quarter_is_not_kept);
    tcase_add_test(tc, processes_share_it_and_attach_finds_it);
    tcase_add_test(tc, a_writer_killed_mid_write_leaves_no_half_value);
    suite_add_tcase(s, tc);
    return s;
}
