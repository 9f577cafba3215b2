/* Licensed under the Apache License, Version 2.0. */

/*
 * What the fuzz targets share: APR initialised once with a root pool
 * (LLVMFuzzerInitialize), and must(), which stops the run on a broken
 * property so that libFuzzer keeps the input. Included once per target:
 * each target is a program of its own.
 */
#ifndef IMC_FUZZ_COMMON_H
#define IMC_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <apr_general.h>
#include <apr_pools.h>

static apr_pool_t *root;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (apr_initialize() != APR_SUCCESS ||
        apr_pool_create(&root, NULL) != APR_SUCCESS) {
        abort();
    }
    return 0;
}

static void must(int cond)
{
    if (!cond) {
        abort();
    }
}

#endif /* IMC_FUZZ_COMMON_H */
