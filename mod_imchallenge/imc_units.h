/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_units: the SIZE and DURATION values of the directives (README
 * "Directives"). APR only, so they are unit-tested on their own.
 */
#ifndef IMC_UNITS_H
#define IMC_UNITS_H

#include <apr_pools.h>
#include <apr_time.h>

/*
 * A SIZE: a whole number with an optional suffix k, M or G (powers of 1024,
 * either case); a bare number is bytes. Returns APR_SUCCESS or APR_EINVAL
 * (not a size, or larger than max).
 */
apr_status_t imc_units_parse_size(const char *s, apr_off_t max,
                                  apr_off_t *bytes);

/*
 * A DURATION: a whole number with an optional suffix ms, s or m; a bare
 * number is seconds. Returns APR_SUCCESS or APR_EINVAL (not a duration, or
 * longer than max).
 */
apr_status_t imc_units_parse_duration(const char *s, apr_interval_time_t max,
                                      apr_interval_time_t *t);

/* A whole number between min and max. */
apr_status_t imc_units_parse_int(const char *s, long min, long max,
                                 long *value);

#endif /* IMC_UNITS_H */
