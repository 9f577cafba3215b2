/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>

#include <apr_general.h>

#include "check_main.h"

apr_pool_t *imc_unit_pool;

void imc_unit_setup(void)
{
    ck_assert_int_eq(apr_pool_create(&imc_unit_pool, NULL), APR_SUCCESS);
}

void imc_unit_teardown(void)
{
    apr_pool_destroy(imc_unit_pool);
    imc_unit_pool = NULL;
}

apr_uint64_t imc_unit_random(apr_uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

int main(void)
{
    SRunner *sr;
    int failed;

    apr_initialize();
    sr = srunner_create(imc_unit_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
