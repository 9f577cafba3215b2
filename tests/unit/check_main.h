/* Licensed under the Apache License, Version 2.0. */

/*
 * The one main() of the Check unit tests (check_main.c): each test file
 * defines imc_unit_suite(), and check_main.c runs it with APR initialised.
 * CK_FORK and the other Check variables work as usual. It also holds the
 * helpers several suites share.
 */
#ifndef IMC_CHECK_MAIN_H
#define IMC_CHECK_MAIN_H

#include <check.h>

#include <apr_pools.h>

Suite *imc_unit_suite(void);

/* A pool of its own for each test: tcase_add_checked_fixture(tc,
 * imc_unit_setup, imc_unit_teardown) makes imc_unit_pool before and
 * destroys it after. */
extern apr_pool_t *imc_unit_pool;
void imc_unit_setup(void);
void imc_unit_teardown(void);

/* Repeatable pseudo-random numbers (xorshift64) from *state (not 0). */
apr_uint64_t imc_unit_random(apr_uint64_t *state);

#endif /* IMC_CHECK_MAIN_H */
