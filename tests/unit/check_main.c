/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>

#include <apr_general.h>

#include "check_main.h"

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
