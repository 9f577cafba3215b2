/* Licensed under the Apache License, Version 2.0. */

/*
 * The one main() of the Check unit tests (check_main.c): each test file
 * defines imc_unit_suite(), and check_main.c runs it with APR initialised.
 * CK_FORK and the other Check variables work as usual.
 */
#ifndef IMC_CHECK_MAIN_H
#define IMC_CHECK_MAIN_H

#include <check.h>

Suite *imc_unit_suite(void);

#endif /* IMC_CHECK_MAIN_H */
