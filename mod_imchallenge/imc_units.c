/* Licensed under the Apache License, Version 2.0. */

#include <apr_lib.h>
#include <apr_strings.h>

#include "imc_units.h"

/* Reads the leading digits of s into *n; returns the rest, NULL on none or
 * on overflow. */
static const char *read_number(const char *s, apr_uint64_t *n)
{
    apr_uint64_t v = 0;
    const char *p = s;

    while (apr_isdigit(*p)) {
        if (v > (APR_UINT64_MAX - 9) / 10) {
            return NULL;
        }
        v = v * 10 + (apr_uint64_t)(*p - '0');
        ++p;
    }
    if (p == s) {
        return NULL;
    }
    *n = v;
    return p;
}

apr_status_t imc_units_parse_size(const char *s, apr_off_t max,
                                  apr_off_t *bytes)
{
    apr_uint64_t n, unit = 1;
    const char *rest = read_number(s, &n);

    if (rest == NULL) {
        return APR_EINVAL;
    }
    if (*rest) {
        switch (apr_tolower(*rest)) {
            case 'k':
                unit = 1024;
                break;
            case 'm':
                unit = 1024 * 1024;
                break;
            case 'g':
                unit = 1024 * 1024 * 1024;
                break;
            default:
                return APR_EINVAL;
        }
        if (rest[1] != '\0') {
            return APR_EINVAL;
        }
    }
    if (n > (apr_uint64_t)max / unit) {
        return APR_EINVAL;
    }
    *bytes = (apr_off_t)(n * unit);
    return APR_SUCCESS;
}

apr_status_t imc_units_parse_duration(const char *s, apr_interval_time_t max,
                                      apr_interval_time_t *t)
{
    apr_uint64_t n, unit = APR_USEC_PER_SEC;
    const char *rest = read_number(s, &n);

    if (rest == NULL) {
        return APR_EINVAL;
    }
    if (!strcmp(rest, "ms")) {
        unit = 1000;
    } else if (!strcmp(rest, "s") || *rest == '\0') {
        unit = APR_USEC_PER_SEC;
    } else if (!strcmp(rest, "m")) {
        unit = 60 * APR_USEC_PER_SEC;
    } else {
        return APR_EINVAL;
    }
    if (n > (apr_uint64_t)max / unit) {
        return APR_EINVAL;
    }
    *t = (apr_interval_time_t)(n * unit);
    return APR_SUCCESS;
}

apr_status_t imc_units_parse_int(const char *s, long min, long max, long *value)
{
    apr_uint64_t n;
    const char *rest = read_number(s, &n);

    if (rest == NULL || *rest != '\0' || n > (apr_uint64_t)max ||
        (long)n < min) {
        return APR_EINVAL;
    }
    *value = (long)n;
    return APR_SUCCESS;
}
