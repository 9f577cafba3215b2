/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_zone_parse (TZif files and their POSIX TZ
 * footer rules) and the buckets of the zones it accepts.
 *
 * For every input: parsing twice gives the same answer, APR_SUCCESS or
 * APR_EINVAL. When accepted, at instants drawn from the input: offsets stay
 * within +-IMC_ZONE_MAX_OFFSET and hold over their span; the first instant
 * of a local time shows it and the one before does not; bucket starts and
 * next starts enclose the instant and labels are well formed; a few days of
 * hour buckets are counted as they are listed. Any violation aborts.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imc_bucket.h"
#include "fuzz_common.h"

/* An instant from 8 bytes of the input (wrapping), spread over 1900-2200
 * with some far outside, even beyond the bounds a zone answers for. */
static apr_int64_t instant(const uint8_t *d, size_t size, size_t k)
{
    apr_uint64_t v = 0;
    size_t i;

    for (i = 0; i < 8; ++i) {
        v = v << 8 | d[(k * 8 + i) % size];
    }
    if (v % 16 == 0) {
        return (apr_int64_t)v; /* anywhere, even beyond the bounds */
    }
    return -2208988800LL + (apr_int64_t)(v % 9467280000ULL);
}

static void check_label(const char *l, apr_size_t n, imc_bucket_interval iv)
{
    apr_size_t i;

    must(strlen(l) == n);
    must(n == (iv == IMC_BUCKET_TOTAL                             ? 0
               : iv == IMC_BUCKET_MINUTE || iv == IMC_BUCKET_HOUR ? 25
                                                                  : 10));
    for (i = 0; i < n; ++i) {
        must((l[i] >= '0' && l[i] <= '9') || strchr("-+:T", l[i]) != NULL);
    }
}

static void check_zone(const imc_zone *z, const uint8_t *d, size_t size)
{
    size_t k;

    for (k = 0; k < 16; ++k) {
        apr_int64_t t = instant(d, size, k), since, until, u, s, n;
        int off = imc_zone_span(z, t, &since, &until);
        imc_bucket_interval iv = (imc_bucket_interval)(k % 6);
        char label[IMC_BUCKET_LABEL_SIZE];

        must(off >= -IMC_ZONE_MAX_OFFSET && off <= IMC_ZONE_MAX_OFFSET);
        must(off == imc_zone_offset(z, t));
        must(since < until && off == imc_zone_offset(z, since) &&
             off == imc_zone_offset(z, until - 1));
        if (t < -2208988800LL || t >= 7258118400LL) {
            continue; /* beyond 1900-2200: bounds and clamping only */
        }
        must(since <= t && t < until);
        u = imc_zone_local_to_utc(z, t);
        must(imc_zone_local_reached(z, u) >= t);
        must(u == IMC_ZONE_TIME_MIN || imc_zone_local_reached(z, u - 1) < t);
        must(imc_zone_local_reached(z, t) >= t + off);
        s = imc_bucket_start(z, iv, t);
        n = imc_bucket_next(z, iv, t);
        must(s <= t && t < n);
        check_label(label, imc_bucket_label(label, z, iv, t), iv);
    }
}

/* Three days of hour buckets (and their weeks) around an input instant:
 * as many listed as counted, each following the one before. */
static void check_range(apr_pool_t *p, const imc_zone *z, const uint8_t *d,
                        size_t size)
{
    apr_int64_t day = imc_bucket_floor_div(instant(d, size, 17), 86400);
    imc_bucket_interval iv = size % 2 ? IMC_BUCKET_HOUR : IMC_BUCKET_WEEK;
    apr_array_header_t *a;
    apr_size_t n;
    int i;

    if (day < -25567 || day > 84006) {
        return; /* beyond 1900-2200 */
    }
    n = imc_bucket_count(z, iv, day, day + 2, 100000);
    must(imc_bucket_range(&a, p, z, iv, day, day + 2, 100000) == APR_SUCCESS);
    must((apr_size_t)a->nelts == n);
    for (i = 0; i < a->nelts; ++i) {
        imc_bucket *b = &APR_ARRAY_IDX(a, i, imc_bucket);

        must(b->start < b->end);
        must(i == 0 || b->start == APR_ARRAY_IDX(a, i - 1, imc_bucket).end);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    imc_zone *z1, *z2;
    apr_status_t rv1, rv2;

    must(apr_pool_create(&p, root) == APR_SUCCESS);
    rv1 = imc_zone_parse(&z1, p, "F", data, size);
    rv2 = imc_zone_parse(&z2, p, "F", data, size);
    must(rv1 == rv2);
    must(rv1 == APR_SUCCESS || rv1 == APR_EINVAL);
    if (rv1 == APR_SUCCESS) {
        must(z1 != NULL && z2 != NULL);
        must(imc_zone_max_jump(z1) == imc_zone_max_jump(z2));
        check_zone(z1, data, size);
        check_range(p, z1, data, size);
    } else {
        must(z1 == NULL && z2 == NULL);
    }
    apr_pool_destroy(p);
    return 0;
}
