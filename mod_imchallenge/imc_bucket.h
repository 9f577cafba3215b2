/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_bucket: the report's intervals as calendar units of its zone. APR
 * only, no httpd headers.
 *
 * A bucket is a run of instants [start, next) of one calendar unit:
 *
 * - day, week (ISO, Monday first), month: the unit's first instant is the
 *   first instant whose local time is >= the unit's first local second
 *   (imc_zone_local_to_utc); the bucket lasts to the next unit's. A day
 *   that a zone skips (Pacific/Apia, 2011-12-30) has no instant and no
 *   bucket.
 * - minute, hour: the instants whose local time lies in the same minute or
 *   hour under the same offset. A day of 23 or 25 hours therefore has 23 or
 *   25 hour buckets (the repeated hour of a fold is a bucket of its own,
 *   with its own offset), and a transition inside an hour (half-hour DST of
 *   Australia/Lord_Howe) starts a bucket.
 * - total: every instant.
 *
 * Labels: minute and hour buckets "YYYY-MM-DDTHH:MM:00+HH:MM", the local
 * time of the bucket's first instant and its offset (always +-HH:MM, UTC
 * is +00:00): a label read as a time is the bucket's first instant, also
 * where a transition inside an hour starts it (Lord_Howe: "01:30:00+10:30").
 * Offsets with seconds (before 1972 in Africa/Monrovia) and transitions at
 * a second other than :00 are shown to the minute, toward zero. Day buckets
 * "YYYY-MM-DD", week buckets the date of their Monday, month buckets of
 * their 1st; total buckets have none.
 *
 * Day numbers count days since 1970-01-01 (day 0; negative before), in
 * the module's one calendar (imc_syntax, the proleptic Gregorian one).
 */

#ifndef IMC_BUCKET_H
#define IMC_BUCKET_H

#include <apr_pools.h>
#include <apr_tables.h>

#include "imc_syntax.h"
#include "imc_zone.h"

typedef enum {
    IMC_BUCKET_MINUTE,
    IMC_BUCKET_HOUR,
    IMC_BUCKET_DAY,
    IMC_BUCKET_WEEK,
    IMC_BUCKET_MONTH,
    IMC_BUCKET_TOTAL
} imc_bucket_interval;

/* The report's dates: 1970-01-01 to 2105-12-31. */
#define IMC_BUCKET_FIRST_DAY IMC_SYNTAX_FIRST_DAY
#define IMC_BUCKET_LAST_DAY  IMC_SYNTAX_LAST_DAY

/* The largest range of day numbers the functions take: a range beyond it
 * is refused (it would leave the instants imc_zone answers for). */
#define IMC_BUCKET_MAX_DAY (IMC_ZONE_TIME_MAX / 86400 - 2)

/* The size of a label with its NUL: "2026-11-28T13:00:00+01:00" is 25
 * bytes; years before 0 or after 9999 take up to 3 more. */
#define IMC_BUCKET_LABEL_SIZE 32

/* One bucket of a range: the instants [start, end) the range admits in it
 * (a bucket cut by from or to keeps its calendar label). */
typedef struct {
    apr_int64_t start, end;
    char label[IMC_BUCKET_LABEL_SIZE]; /* "" for total */
} imc_bucket;

/* The calendar's imc_syntax_floor_div, imc_syntax_day and
 * imc_syntax_date under the names the bucket's callers know. */
static inline apr_int64_t imc_bucket_floor_div(apr_int64_t a, apr_int64_t b)
{
    return imc_syntax_floor_div(a, b);
}

static inline apr_int64_t imc_bucket_day(int y, int m, int d)
{
    return imc_syntax_day(y, m, d);
}

static inline void imc_bucket_date(apr_int64_t day, int *y, int *m, int *d)
{
    imc_syntax_date(day, y, m, d);
}

/* The interval named name ("minute" ... "total") into *iv; APR_EINVAL for
 * any other name. */
apr_status_t imc_bucket_interval_parse(imc_bucket_interval *iv,
                                       const char *name);

/* The interval's name. */
const char *imc_bucket_interval_name(imc_bucket_interval iv);

/* The first instant of the bucket holding instant t. */
apr_int64_t imc_bucket_start(const imc_zone *zone, imc_bucket_interval iv,
                             apr_int64_t t);

/* The first instant after the bucket holding instant t: the next bucket's
 * start (IMC_ZONE_TIME_MAX + 1 for total). */
apr_int64_t imc_bucket_next(const imc_zone *zone, imc_bucket_interval iv,
                            apr_int64_t t);

/* The label of the bucket holding instant t into buf (of
 * IMC_BUCKET_LABEL_SIZE bytes); its length, 0 for total. */
apr_size_t imc_bucket_label(char *buf, const imc_zone *zone,
                            imc_bucket_interval iv, apr_int64_t t);

/*
 * The number of buckets of the local dates [from, to] (day numbers,
 * inclusive, as the report's from/to), at most cap: counted without
 * allocating, in O(transitions in the range) for minute and hour and O(1)
 * for the other intervals unless the zone's clock once jumped a whole day.
 * 0 when from > to or either is beyond +-IMC_BUCKET_MAX_DAY.
 */
apr_size_t imc_bucket_count(const imc_zone *zone, imc_bucket_interval iv,
                            apr_int64_t from, apr_int64_t to, apr_size_t cap);

/*
 * The buckets of the local dates [from, to] into *buckets (imc_bucket, in
 * order, allocated from p). APR_ENOSPC, with nothing allocated, when there
 * are more than max; APR_EINVAL when from > to or either is beyond
 * +-IMC_BUCKET_MAX_DAY.
 */
apr_status_t imc_bucket_range(apr_array_header_t **buckets, apr_pool_t *p,
                              const imc_zone *zone, imc_bucket_interval iv,
                              apr_int64_t from, apr_int64_t to, apr_size_t max);

#endif /* IMC_BUCKET_H */
