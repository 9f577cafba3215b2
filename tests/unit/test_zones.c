/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_zones_load: a process loads a zone once and shares
 * it, keeps nothing of a name it could not load, keeps at most LOADED
 * zones (later ones are loaded per call), and before
 * imc_zones_child_init keeps none.
 */

#include <string.h>

#include <apr_file_io.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "check_main.h"
#include "imc_zone.h"
#include "imc_zones.h"

/* imc_zones.c's bound. */
#define LOADED 64

/* 2026-07-01T00:00:00Z: Berlin is at +02:00 then. */
#define JULY ((apr_int64_t)1782864000)

START_TEST(a_zone_is_loaded_once_and_shared)
{
    const imc_zone *a, *b;
    apr_pool_t *p1, *p2;

    ck_assert_int_eq(imc_zones_child_init(imc_unit_pool), APR_SUCCESS);
    apr_pool_create(&p1, imc_unit_pool);
    apr_pool_create(&p2, imc_unit_pool);
    ck_assert_int_eq(imc_zones_load(&a, p1, "Europe/Berlin"), APR_SUCCESS);
    apr_pool_destroy(p1); /* the request that loaded it is over */
    ck_assert_int_eq(imc_zones_load(&b, p2, "Europe/Berlin"), APR_SUCCESS);
    ck_assert_ptr_eq(a, b);
    ck_assert_int_eq(imc_zone_offset(b, JULY), 7200);
    ck_assert_str_eq(imc_zone_name(b), "Europe/Berlin");
}
END_TEST

START_TEST(a_name_that_does_not_load_is_not_kept)
{
    const imc_zone *z = (const imc_zone *)&z, *utc, *again;

    ck_assert_int_eq(imc_zones_child_init(imc_unit_pool), APR_SUCCESS);
    ck_assert_int_eq(imc_zones_load(&z, imc_unit_pool, "Mars/Olympus_Mons"),
                     APR_ENOENT);
    ck_assert_ptr_null(z);
    ck_assert_int_eq(imc_zones_load(&z, imc_unit_pool, "Mars/Olympus_Mons"),
                     APR_ENOENT);
    ck_assert_int_eq(imc_zones_load(&z, imc_unit_pool, "../etc/passwd"),
                     APR_EINVAL);
    ck_assert_int_eq(imc_zones_load(&utc, imc_unit_pool, "UTC"), APR_SUCCESS);
    ck_assert_int_eq(imc_zones_load(&again, imc_unit_pool, "UTC"), APR_SUCCESS);
    ck_assert_ptr_eq(utc, again);
}
END_TEST

/* Names of zones in IMC_ZONE_DIR's America/ that load, at least n. */
static apr_array_header_t *america(apr_pool_t *p, int n)
{
    apr_array_header_t *names = apr_array_make(p, n, sizeof(const char *));
    apr_dir_t *dir;
    apr_finfo_t fi;

    ck_assert_int_eq(apr_dir_open(&dir, IMC_ZONE_DIR "America", p),
                     APR_SUCCESS);
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, dir) ==
           APR_SUCCESS) {
        const char *name = apr_pstrcat(p, "America/", fi.name, NULL);
        imc_zone *z;

        if (fi.filetype == APR_REG &&
            imc_zone_load(&z, p, name) == APR_SUCCESS) {
            APR_ARRAY_PUSH(names, const char *) = name;
        }
    }
    apr_dir_close(dir);
    ck_assert_int_ge(names->nelts, n);
    return names;
}

START_TEST(at_most_loaded_zones_are_kept)
{
    apr_array_header_t *names = america(imc_unit_pool, LOADED + 8);
    const imc_zone *first[LOADED + 8], *z;
    int i;

    ck_assert_int_eq(imc_zones_child_init(imc_unit_pool), APR_SUCCESS);
    for (i = 0; i < LOADED + 8; ++i) {
        const char *name = APR_ARRAY_IDX(names, i, const char *);

        ck_assert_int_eq(imc_zones_load(&first[i], imc_unit_pool, name),
                         APR_SUCCESS);
    }
    for (i = 0; i < LOADED + 8; ++i) {
        const char *name = APR_ARRAY_IDX(names, i, const char *);

        ck_assert_int_eq(imc_zones_load(&z, imc_unit_pool, name), APR_SUCCESS);
        ck_assert_str_eq(imc_zone_name(z), name);
        if (i < LOADED) {
            ck_assert_ptr_eq(z, first[i]); /* kept */
        } else {
            ck_assert_ptr_ne(z, first[i]); /* loaded again */
            ck_assert_int_eq(imc_zone_offset(z, JULY),
                             imc_zone_offset(first[i], JULY));
        }
    }
}
END_TEST

START_TEST(before_child_init_nothing_is_kept)
{
    const imc_zone *a, *b;

    ck_assert_int_eq(imc_zones_load(&a, imc_unit_pool, "Asia/Kolkata"),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_zones_load(&b, imc_unit_pool, "Asia/Kolkata"),
                     APR_SUCCESS);
    ck_assert_ptr_ne(a, b);
    ck_assert_int_eq(imc_zone_offset(b, JULY), 19800);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("zones");
    TCase *tc = tcase_create("load");

    tcase_add_checked_fixture(tc, imc_unit_setup, imc_unit_teardown);
    tcase_add_test(tc, before_child_init_nothing_is_kept);
    tcase_add_test(tc, a_zone_is_loaded_once_and_shared);
    tcase_add_test(tc, a_name_that_does_not_load_is_not_kept);
    tcase_add_test(tc, at_most_loaded_zones_are_kept);
    suite_add_tcase(s, tc);
    return s;
}
