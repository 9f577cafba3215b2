/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_rparams_parse: the report's interval, by,
 * metrics, fill and compare values.
 *
 * The input is up to five lines, the values in that order (a missing line
 * is an absent parameter); its first byte's low bits say whether from/to
 * are given and whether the answer is CSV. For every input: parsing twice
 * gives the same answer. When accepted, the values are in range, the
 * metrics are known, built and distinct, fill and compare had a range and
 * compare no CSV. When refused, the error is well formed. Any violation
 * aborts.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "imc_rparams.h"
#include "fuzz_common.h"

/* Splits data into at most 5 NUL-terminated values (NULL: absent). */
static void split(apr_pool_t *p, const char *data, size_t size, const char **v)
{
    size_t i = 0, start = 0, k;

    for (k = 0; k < 5; ++k) {
        v[k] = NULL;
    }
    for (k = 0; k < 5 && start <= size; ++k) {
        for (i = start; i < size && data[i] != '\n'; ++i) {
        }
        if (i == size && start == size) {
            break;
        }
        v[k] = apr_pstrndup(p, data + start, i - start);
        start = i + 1;
    }
}

static void check_ok(const imc_rparams *pr, int range, int csv)
{
    int seen[IMC_METRIC_COUNT] = {0}, i;

    must(pr->interval >= IMC_BUCKET_MINUTE && pr->interval <= IMC_BUCKET_TOTAL);
    must(pr->nmetrics >= 1 && pr->nmetrics <= IMC_METRIC_COUNT);
    for (i = 0; i < pr->nmetrics; ++i) {
        must(pr->metrics[i] >= 0 && pr->metrics[i] < IMC_METRIC_COUNT);
        must(!seen[pr->metrics[i]]++);
        must(imc_rparams_metric_built(pr->metrics[i]));
    }
    must(!pr->fill || range);
    must(!pr->compare || (range && !csv));
}

static void check_error(const imc_rparams_error *err)
{
    must(err->kind == IMC_RPARAMS_EINVAL || err->kind == IMC_RPARAMS_EMETRIC ||
         err->kind == IMC_RPARAMS_ENOTBUILT);
    must(err->message && *err->message);
    must(err->kind == IMC_RPARAMS_EINVAL || err->name);
    must(!err->name || strlen(err->name) <= IMC_RPARAMS_MAX_NAME);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *v[5];
    imc_rparams a, b;
    imc_rparams_error ea, eb;
    int range, csv;
    apr_status_t ra, rb;

    if (size < 1) {
        return 0;
    }
    range = data[0] & 1;
    csv = (data[0] >> 1) & 1;
    apr_pool_create(&p, root);
    split(p, (const char *)data + 1, size - 1, v);
    ra =
        imc_rparams_parse(&a, p, v[0], v[1], v[2], v[3], v[4], range, csv, &ea);
    rb =
        imc_rparams_parse(&b, p, v[0], v[1], v[2], v[3], v[4], range, csv, &eb);
    must(ra == rb);
    if (ra == APR_SUCCESS) {
        must(!memcmp(&a, &b, sizeof(a)));
        check_ok(&a, range, csv);
    } else {
        must(ra == APR_EINVAL && ea.kind == eb.kind &&
             !strcmp(ea.message, eb.message));
        check_error(&ea);
    }
    apr_pool_destroy(p);
    return 0;
}
