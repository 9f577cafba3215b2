/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_bucket: the calendar, buckets and labels of random
 * instants in many zones checked against the C library (TZ, localtime_r,
 * strftime's ISO weeks), days of 23 and 25 hours, half-hour DST, a skipped
 * day, ISO weeks across year ends, months of 28 to 31 days, ranges cut in
 * a week or month, the first and last report dates, and counts that agree
 * with the lists they count.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "check_main.h"
#include "imc_bucket.h"

#define DAY  86400
#define TEND ((apr_int64_t)4291747200) /* 2106-01-01 */

static const char *const zones[] = {"Europe/Berlin",
                                    "America/New_York",
                                    "Australia/Lord_Howe",
                                    "Asia/Kathmandu",
                                    "Asia/Kolkata",
                                    "Pacific/Chatham",
                                    "America/St_Johns",
                                    "Pacific/Kiritimati",
                                    "Pacific/Apia",
                                    "Africa/Casablanca",
                                    "UTC",
                                    "America/Sao_Paulo",
                                    "America/Havana",
                                    "Asia/Tehran",
                                    NULL};

/* ---------------------------------------------------------- helpers */

static apr_uint64_t rnd_state = 0x2545f4914f6cdd1dULL;

static apr_uint64_t rnd(void)
{
    return imc_unit_random(&rnd_state);
}

static imc_zone *load(const char *name)
{
    imc_zone *z = NULL;

    ck_assert_msg(imc_zone_load(&z, imc_unit_pool, name) == APR_SUCCESS, "%s",
                  name);
    setenv("TZ", name, 1);
    tzset();
    return z;
}

static struct tm libc_tm(apr_int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    ck_assert_ptr_nonnull(localtime_r(&tt, &tm));
    return tm;
}

/* The day number of the local date of t, as the C library tells it. */
static apr_int64_t libc_day(apr_int64_t t)
{
    struct tm tm = libc_tm(t);

    return imc_bucket_day(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* Minute and hour buckets: the local unit and the offset, as one key. */
static apr_int64_t clock_key(apr_int64_t t, apr_int64_t u)
{
    struct tm tm = libc_tm(t);

    return imc_bucket_floor_div(t + tm.tm_gmtoff, u) * 100000 + tm.tm_gmtoff;
}

/* The C library's label of the minute or hour bucket starting at s. */
static const char *libc_clock_label(apr_int64_t s)
{
    struct tm tm = libc_tm(s);
    char buf[64];
    long off = tm.tm_gmtoff < 0 ? -tm.tm_gmtoff : tm.tm_gmtoff;

    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:00", &tm);
    return apr_psprintf(imc_unit_pool, "%s%c%02ld:%02ld", buf,
                        tm.tm_gmtoff < 0 ? '-' : '+', off / 3600,
                        off / 60 % 60);
}

static const char *day_text(apr_int64_t day)
{
    int y, m, d;

    imc_bucket_date(day, &y, &m, &d);
    return apr_psprintf(imc_unit_pool, "%04d-%02d-%02d", y, m, d);
}

static apr_int64_t ymd(int y, int m, int d)
{
    return imc_bucket_day(y, m, d);
}

static apr_array_header_t *range(const imc_zone *z, imc_bucket_interval iv,
                                 apr_int64_t from, apr_int64_t to)
{
    apr_array_header_t *a;

    ck_assert_int_eq(
        imc_bucket_range(&a, imc_unit_pool, z, iv, from, to, 10000000),
        APR_SUCCESS);
    ck_assert_int_eq(a->nelts,
                     imc_bucket_count(z, iv, from, to, (apr_size_t)-1));
    return a;
}

static imc_bucket *at(apr_array_header_t *a, int i)
{
    return &APR_ARRAY_IDX(a, i, imc_bucket);
}

static int has_label(apr_array_header_t *a, const char *label)
{
    int i;

    for (i = 0; i < a->nelts; ++i) {
        if (!strcmp(at(a, i)->label, label)) {
            return 1;
        }
    }
    return 0;
}

/* --------------------------------------------------------- calendar */

START_TEST(day_numbers_agree_with_timegm)
{
    int k;

    ck_assert_int_eq(ymd(1970, 1, 1), 0);
    ck_assert_int_eq(ymd(2105, 12, 31), IMC_BUCKET_LAST_DAY);
    ck_assert_int_eq(ymd(1969, 12, 31), -1);
    ck_assert_int_eq(imc_bucket_floor_div(-1, DAY), -1);
    ck_assert_int_eq(imc_bucket_floor_div(-DAY, DAY), -1);
    ck_assert_int_eq(imc_bucket_floor_div(DAY - 1, DAY), 0);
    for (k = -80000; k < 120000; k += 7) {
        struct tm tm;
        time_t tt = (time_t)k * DAY;
        int y, m, d;

        gmtime_r(&tt, &tm);
        imc_bucket_date(k, &y, &m, &d);
        ck_assert_int_eq(y, tm.tm_year + 1900);
        ck_assert_int_eq(m, tm.tm_mon + 1);
        ck_assert_int_eq(d, tm.tm_mday);
        ck_assert_int_eq(ymd(y, m, d), k);
    }
}
END_TEST

START_TEST(intervals_have_names)
{
    imc_bucket_interval iv;
    static const char *const names[] = {"minute", "hour",  "day",
                                        "week",   "month", "total"};
    int i;

    for (i = 0; i < 6; ++i) {
        ck_assert_int_eq(imc_bucket_interval_parse(&iv, names[i]), APR_SUCCESS);
        ck_assert_int_eq(iv, i);
        ck_assert_str_eq(imc_bucket_interval_name(iv), names[i]);
    }
    ck_assert_int_eq(imc_bucket_interval_parse(&iv, "Hour"), APR_EINVAL);
    ck_assert_int_eq(imc_bucket_interval_parse(&iv, "year"), APR_EINVAL);
    ck_assert_int_eq(imc_bucket_interval_parse(&iv, ""), APR_EINVAL);
}
END_TEST

/* ---------------------------------------------------- against libc */

START_TEST(clock_buckets_agree_with_the_c_library)
{
    int i, k;

    for (i = 0; zones[i]; ++i) {
        imc_zone *z = load(zones[i]);

        for (k = 0; k < 3000; ++k) {
            imc_bucket_interval iv =
                k % 2 ? IMC_BUCKET_HOUR : IMC_BUCKET_MINUTE;
            apr_int64_t u = iv == IMC_BUCKET_HOUR ? 3600 : 60;
            apr_int64_t t = (apr_int64_t)(rnd() % (apr_uint64_t)TEND);
            apr_int64_t s = imc_bucket_start(z, iv, t);
            apr_int64_t n = imc_bucket_next(z, iv, t);
            char label[IMC_BUCKET_LABEL_SIZE];

            ck_assert(s <= t && t < n);
            ck_assert_msg(clock_key(s, u) == clock_key(t, u) &&
                              clock_key(s - 1, u) != clock_key(t, u) &&
                              clock_key(n - 1, u) == clock_key(t, u) &&
                              clock_key(n, u) != clock_key(t, u),
                          "%s at %lld", zones[i], (long long)t);
            ck_assert_int_eq(imc_bucket_label(label, z, iv, t), 25);
            ck_assert_str_eq(label, libc_clock_label(s));
            ck_assert_int_eq(imc_bucket_start(z, iv, n), n);
        }
    }
}
END_TEST

/* Days, ISO weeks and months of the instant's local date; each starts at
 * the first instant of its first local date (or a later one of the unit,
 * where its midnight is in a gap). */
START_TEST(calendar_buckets_agree_with_the_c_library)
{
    int i, k;

    for (i = 0; zones[i]; ++i) {
        imc_zone *z = load(zones[i]);

        for (k = 0; k < 3000; ++k) {
            imc_bucket_interval iv = IMC_BUCKET_DAY + k % 3;
            apr_int64_t t = (apr_int64_t)(rnd() % (apr_uint64_t)TEND);
            struct tm tm = libc_tm(t);
            apr_int64_t day = libc_day(t), first = day, after = day + 1;
            apr_int64_t s = imc_bucket_start(z, iv, t);
            apr_int64_t n = imc_bucket_next(z, iv, t);
            char label[IMC_BUCKET_LABEL_SIZE], iso[16], iso_label[16];

            if (iv == IMC_BUCKET_WEEK) {
                first = day - (tm.tm_wday + 6) % 7;
                after = first + 7;
            } else if (iv == IMC_BUCKET_MONTH) {
                first = day - (tm.tm_mday - 1);
                after = tm.tm_mon == 11
                            ? ymd(tm.tm_year + 1901, 1, 1)
                            : ymd(tm.tm_year + 1900, tm.tm_mon + 2, 1);
            }
            ck_assert(s <= t && t < n);
            ck_assert_msg(libc_day(s) >= first && libc_day(s) <= day &&
                              libc_day(s - 1) < first,
                          "%s %d at %lld", zones[i], iv, (long long)t);
            ck_assert(libc_day(n - 1) < after && libc_day(n) >= after);
            ck_assert_int_eq(imc_bucket_label(label, z, iv, t), 10);
            ck_assert_str_eq(label, day_text(first));
            if (iv == IMC_BUCKET_WEEK) {
                /* the ISO week of strftime: same week, labelled Monday */
                time_t mid = (time_t)(first * DAY + DAY / 2);
                struct tm lt;

                gmtime_r(&mid, &lt);
                strftime(iso, sizeof(iso), "%G-W%V", &tm);
                strftime(iso_label, sizeof(iso_label), "%G-W%V", &lt);
                ck_assert_str_eq(iso, iso_label);
                ck_assert_int_eq(lt.tm_wday, 1);
            }
        }
    }
}
END_TEST

/* Random ranges: buckets follow each other without a hole from the first
 * instant of from to the first of the day after to, each starts a bucket
 * (the first where from cuts it), labels are unique, counts agree. */
START_TEST(random_ranges_tile_their_days)
{
    static const apr_int64_t span[] = {3, 60, 400, 3000, 3000, 3000};
    int k;

    for (k = 0; k < 600; ++k) {
        const char *name = zones[rnd() % 14];
        imc_zone *z = load(name);
        imc_bucket_interval iv = (imc_bucket_interval)(rnd() % 6);
        apr_int64_t from = (apr_int64_t)(rnd() % (IMC_BUCKET_LAST_DAY + 1));
        apr_int64_t to = from + (apr_int64_t)(rnd() % span[iv]);
        apr_array_header_t *a;
        apr_hash_t *seen = apr_hash_make(imc_unit_pool);
        int i;

        if (to > IMC_BUCKET_LAST_DAY) {
            to = IMC_BUCKET_LAST_DAY;
        }
        a = range(z, iv, from, to);
        ck_assert_int_gt(a->nelts, 0);
        ck_assert_int_eq(at(a, 0)->start, imc_zone_local_to_utc(z, from * DAY));
        ck_assert_int_eq(at(a, a->nelts - 1)->end,
                         imc_zone_local_to_utc(z, (to + 1) * DAY));
        for (i = 0; i < a->nelts; ++i) {
            imc_bucket *b = at(a, i);
            char label[IMC_BUCKET_LABEL_SIZE];

            ck_assert(b->start < b->end);
            ck_assert(i == 0 || b->start == at(a, i - 1)->end);
            ck_assert(i == 0 || imc_bucket_start(z, iv, b->start) == b->start);
            imc_bucket_label(label, z, iv, b->start);
            ck_assert_str_eq(label, b->label);
            ck_assert_ptr_null(
                apr_hash_get(seen, b->label, APR_HASH_KEY_STRING));
            apr_hash_set(seen, b->label, APR_HASH_KEY_STRING, b);
        }
        ck_assert_int_eq(imc_bucket_count(z, iv, from, to, 5),
                         a->nelts < 5 ? a->nelts : 5);
    }
}
END_TEST

/* --------------------------------------------------------- DST days */

START_TEST(dst_days_have_23_and_25_hours)
{
    imc_zone *z = load("Europe/Berlin");
    apr_array_header_t *a;

    a = range(z, IMC_BUCKET_HOUR, ymd(2024, 3, 31), ymd(2024, 3, 31));
    ck_assert_int_eq(a->nelts, 23);
    ck_assert_str_eq(at(a, 1)->label, "2024-03-31T01:00:00+01:00");
    ck_assert_str_eq(at(a, 2)->label, "2024-03-31T03:00:00+02:00");
    ck_assert(!has_label(a, "2024-03-31T02:00:00+01:00"));
    ck_assert(!has_label(a, "2024-03-31T02:00:00+02:00"));
    a = range(z, IMC_BUCKET_HOUR, ymd(2024, 10, 27), ymd(2024, 10, 27));
    ck_assert_int_eq(a->nelts, 25);
    ck_assert_str_eq(at(a, 2)->label, "2024-10-27T02:00:00+02:00");
    ck_assert_str_eq(at(a, 3)->label, "2024-10-27T02:00:00+01:00");
    ck_assert_str_eq(at(a, 24)->label, "2024-10-27T23:00:00+01:00");
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_MINUTE, ymd(2024, 10, 27),
                                      ymd(2024, 10, 27), 100000),
                     25 * 60);
    a = range(z, IMC_BUCKET_DAY, ymd(2024, 10, 27), ymd(2024, 10, 27));
    ck_assert_int_eq(at(a, 0)->end - at(a, 0)->start, 25 * 3600);

    z = load("America/New_York");
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_HOUR, ymd(2024, 3, 10),
                                      ymd(2024, 3, 10), 1000),
                     23);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_HOUR, ymd(2024, 11, 3),
                                      ymd(2024, 11, 3), 1000),
                     25);
    /* the footer rule's years: 2100 as 2024 */
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_HOUR, ymd(2100, 3, 14),
                                      ymd(2100, 3, 14), 1000),
                     23);
}
END_TEST

/* Australia/Lord_Howe moves its clock by 30 minutes at 02:00: the hour a
 * transition cuts starts a bucket at the transition. */
START_TEST(half_hour_dst_starts_a_bucket_at_the_transition)
{
    imc_zone *z = load("Australia/Lord_Howe");
    apr_array_header_t *a;

    a = range(z, IMC_BUCKET_HOUR, ymd(2024, 10, 6), ymd(2024, 10, 6));
    ck_assert_int_eq(a->nelts, 24);
    ck_assert_str_eq(at(a, 1)->label, "2024-10-06T01:00:00+10:30");
    ck_assert_str_eq(at(a, 2)->label, "2024-10-06T02:30:00+11:00");
    ck_assert_int_eq(at(a, 2)->end - at(a, 2)->start, 1800);
    ck_assert_str_eq(at(a, 3)->label, "2024-10-06T03:00:00+11:00");
    a = range(z, IMC_BUCKET_HOUR, ymd(2024, 4, 7), ymd(2024, 4, 7));
    ck_assert_int_eq(a->nelts, 25);
    ck_assert_str_eq(at(a, 1)->label, "2024-04-07T01:00:00+11:00");
    ck_assert_str_eq(at(a, 2)->label, "2024-04-07T01:30:00+10:30");
    ck_assert_str_eq(at(a, 3)->label, "2024-04-07T02:00:00+10:30");
    ck_assert_int_eq(at(a, 2)->end - at(a, 2)->start, 1800);
}
END_TEST

START_TEST(odd_offsets_are_labelled)
{
    static const struct {
        const char *zone, *first;
    } cases[] = {{"Asia/Kathmandu", "2024-01-01T00:00:00+05:45"},
                 {"Asia/Kolkata", "2024-01-01T00:00:00+05:30"},
                 {"Pacific/Chatham", "2024-01-01T00:00:00+13:45"},
                 {"America/St_Johns", "2024-01-01T00:00:00-03:30"},
                 {"Pacific/Kiritimati", "2024-01-01T00:00:00+14:00"},
                 {"UTC", "2024-01-01T00:00:00+00:00"},
                 {"Africa/Casablanca", "2024-01-01T00:00:00+01:00"}};
    unsigned i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        imc_zone *z = load(cases[i].zone);
        apr_array_header_t *a =
            range(z, IMC_BUCKET_MINUTE, ymd(2024, 1, 1), ymd(2024, 1, 1));

        ck_assert_int_eq(a->nelts, 1440);
        ck_assert_str_eq(at(a, 0)->label, cases[i].first);
    }
}
END_TEST

/* Pacific/Apia went from 2011-12-29 to 2011-12-31: the 30th has no
 * instant and no bucket, in the list and in the count. */
START_TEST(a_skipped_day_has_no_bucket)
{
    imc_zone *z = load("Pacific/Apia");
    apr_array_header_t *a;

    a = range(z, IMC_BUCKET_DAY, ymd(2011, 12, 29), ymd(2011, 12, 31));
    ck_assert_int_eq(a->nelts, 2);
    ck_assert_str_eq(at(a, 0)->label, "2011-12-29");
    ck_assert_str_eq(at(a, 1)->label, "2011-12-31");
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_HOUR, ymd(2011, 12, 29),
                                      ymd(2011, 12, 31), 1000),
                     48);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, ymd(2011, 12, 30),
                                      ymd(2011, 12, 30), 1000),
                     0);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, ymd(2011, 1, 1),
                                      ymd(2012, 12, 31), 1000),
                     365 + 366 - 1);
}
END_TEST

/* ------------------------------------------------- weeks and months */

START_TEST(iso_weeks_cross_year_ends)
{
    imc_zone *z = load("UTC");
    apr_array_header_t *a;

    /* 2020-12-28 .. 2021-01-03 is week 53 of 2020 */
    a = range(z, IMC_BUCKET_WEEK, ymd(2020, 12, 28), ymd(2021, 1, 3));
    ck_assert_int_eq(a->nelts, 1);
    ck_assert_str_eq(at(a, 0)->label, "2020-12-28");
    ck_assert_int_eq(at(a, 0)->end - at(a, 0)->start, 7 * DAY);
    /* cut in the middle of both weeks: labels keep their Monday */
    a = range(z, IMC_BUCKET_WEEK, ymd(2020, 12, 31), ymd(2021, 1, 5));
    ck_assert_int_eq(a->nelts, 2);
    ck_assert_str_eq(at(a, 0)->label, "2020-12-28");
    ck_assert_int_eq(at(a, 0)->start, ymd(2020, 12, 31) * DAY);
    ck_assert_str_eq(at(a, 1)->label, "2021-01-04");
    ck_assert_int_eq(at(a, 1)->end, ymd(2021, 1, 6) * DAY);
    /* 2026-01-01 is a Thursday of week 1 of 2026, which starts in 2025 */
    a = range(z, IMC_BUCKET_WEEK, ymd(2026, 1, 1), ymd(2026, 1, 1));
    ck_assert_str_eq(at(a, 0)->label, "2025-12-29");
}
END_TEST

START_TEST(months_have_28_to_31_days)
{
    static const struct {
        int y, m, days;
    } cases[] = {{2023, 2, 28}, {2024, 2, 29},  {2100, 2, 28}, {2000, 2, 29},
                 {2024, 4, 30}, {2024, 12, 31}, {1970, 1, 31}, {2105, 12, 31}};
    imc_zone *z = load("UTC");
    apr_array_header_t *a;
    unsigned i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        apr_int64_t first = ymd(cases[i].y, cases[i].m, 1);
        apr_int64_t mid = (first + 14) * DAY + 3600;

        ck_assert_int_eq(imc_bucket_start(z, IMC_BUCKET_MONTH, mid),
                         first * DAY);
        ck_assert_int_eq(imc_bucket_next(z, IMC_BUCKET_MONTH, mid),
                         (first + cases[i].days) * DAY);
        ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, first,
                                          first + cases[i].days - 1, 100),
                         cases[i].days);
    }
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, ymd(2024, 1, 1),
                                      ymd(2024, 12, 31), 1000),
                     366);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, ymd(2100, 1, 1),
                                      ymd(2100, 12, 31), 1000),
                     365);
    /* cut in February and April, in a zone with DST in March */
    z = load("Europe/Berlin");
    a = range(z, IMC_BUCKET_MONTH, ymd(2024, 2, 10), ymd(2024, 4, 5));
    ck_assert_int_eq(a->nelts, 3);
    ck_assert_str_eq(at(a, 0)->label, "2024-02-01");
    ck_assert_str_eq(at(a, 1)->label, "2024-03-01");
    ck_assert_str_eq(at(a, 2)->label, "2024-04-01");
    ck_assert_int_eq(at(a, 0)->start, ymd(2024, 2, 10) * DAY - 3600);
    ck_assert_int_eq(at(a, 1)->end - at(a, 1)->start, 31 * DAY - 3600);
    ck_assert_int_eq(at(a, 2)->end, ymd(2024, 4, 6) * DAY - 7200);
}
END_TEST

/* ------------------------------------------------ the report's edges */

START_TEST(ranges_reach_1970_and_2105)
{
    imc_zone *z = load("America/New_York");
    apr_array_header_t *a;

    a = range(z, IMC_BUCKET_HOUR, 0, 0);
    ck_assert_int_eq(a->nelts, 24);
    ck_assert_str_eq(at(a, 0)->label, "1970-01-01T00:00:00-05:00");
    ck_assert_int_eq(at(a, 0)->start, 5 * 3600);
    z = load("Europe/Berlin");
    a = range(z, IMC_BUCKET_HOUR, IMC_BUCKET_LAST_DAY, IMC_BUCKET_LAST_DAY);
    ck_assert_int_eq(a->nelts, 24);
    ck_assert_str_eq(at(a, 23)->label, "2105-12-31T23:00:00+01:00");
    ck_assert_int_eq(at(a, 23)->end, TEND - 3600);
    a = range(z, IMC_BUCKET_WEEK, 0, IMC_BUCKET_LAST_DAY);
    ck_assert_str_eq(at(a, 0)->label, "1969-12-29");
    ck_assert_str_eq(at(a, a->nelts - 1)->label, "2105-12-28");
    a = range(z, IMC_BUCKET_MONTH, 0, IMC_BUCKET_LAST_DAY);
    ck_assert_int_eq(a->nelts, 136 * 12);
    a = range(z, IMC_BUCKET_TOTAL, 0, IMC_BUCKET_LAST_DAY);
    ck_assert_int_eq(a->nelts, 1);
    ck_assert_str_eq(at(a, 0)->label, "");
    ck_assert_int_eq(at(a, 0)->start, -3600);
    ck_assert_int_eq(at(a, 0)->end, TEND - 3600);
    z = load("Pacific/Kiritimati"); /* -10:40 in 1970 */
    a = range(z, IMC_BUCKET_HOUR, 0, 0);
    ck_assert_str_eq(at(a, 0)->label, "1970-01-01T00:00:00-10:40");
}
END_TEST

/* The row limit: counts stop at the cap without overflowing, and a list
 * over its maximum is refused before it is made. */
START_TEST(counts_are_capped)
{
    imc_zone *z = load("UTC");
    apr_array_header_t *a;
    apr_int64_t all = IMC_BUCKET_LAST_DAY + 1;
    char label[IMC_BUCKET_LABEL_SIZE];

    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_MINUTE, 0,
                                      IMC_BUCKET_LAST_DAY, (apr_size_t)-1),
                     all * 1440);
    ck_assert_int_eq(
        imc_bucket_count(z, IMC_BUCKET_MINUTE, 0, IMC_BUCKET_LAST_DAY, 100000),
        100000);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_MINUTE, -IMC_BUCKET_MAX_DAY,
                                      IMC_BUCKET_MAX_DAY, (apr_size_t)-1),
                     (2 * IMC_BUCKET_MAX_DAY + 1) * 1440);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, 5, 4, 10), 0);
    ck_assert_int_eq(
        imc_bucket_count(z, IMC_BUCKET_DAY, 0, IMC_BUCKET_MAX_DAY + 1, 10), 0);
    ck_assert_int_eq(
        imc_bucket_range(&a, imc_unit_pool, z, IMC_BUCKET_HOUR, 0, 6, 167),
        APR_ENOSPC);
    ck_assert_ptr_null(a);
    ck_assert_int_eq(
        imc_bucket_range(&a, imc_unit_pool, z, IMC_BUCKET_HOUR, 0, 6, 168),
        APR_SUCCESS);
    ck_assert_int_eq(a->nelts, 168);
    ck_assert_int_eq(
        imc_bucket_range(&a, imc_unit_pool, z, IMC_BUCKET_DAY, 6, 0, 10),
        APR_EINVAL);
    /* labels fit also at the bounds of the instants a zone answers for */
    ck_assert_int_lt(
        imc_bucket_label(label, z, IMC_BUCKET_MINUTE, IMC_ZONE_TIME_MAX),
        IMC_BUCKET_LABEL_SIZE);
    ck_assert_int_lt(
        imc_bucket_label(label, z, IMC_BUCKET_WEEK, IMC_ZONE_TIME_MIN),
        IMC_BUCKET_LABEL_SIZE);
    z = load("Pacific/Apia"); /* the counting of a zone with a skipped day */
    ck_assert_int_eq(
        imc_bucket_count(z, IMC_BUCKET_DAY, 0, IMC_BUCKET_LAST_DAY, 1000),
        1000);
    ck_assert_int_eq(imc_bucket_count(z, IMC_BUCKET_DAY, 0, IMC_BUCKET_LAST_DAY,
                                      (apr_size_t)-1),
                     all - 1);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("bucket");
    TCase *cal = tcase_create("calendar");
    TCase *libc = tcase_create("libc");
    TCase *fixed = tcase_create("fixed");

    tcase_add_checked_fixture(cal, imc_unit_setup, imc_unit_teardown);
    tcase_add_checked_fixture(libc, imc_unit_setup, imc_unit_teardown);
    tcase_add_checked_fixture(fixed, imc_unit_setup, imc_unit_teardown);
    tcase_set_timeout(libc, 120);
    tcase_add_test(cal, day_numbers_agree_with_timegm);
    tcase_add_test(cal, intervals_have_names);
    tcase_add_test(libc, clock_buckets_agree_with_the_c_library);
    tcase_add_test(libc, calendar_buckets_agree_with_the_c_library);
    tcase_add_test(libc, random_ranges_tile_their_days);
    tcase_add_test(fixed, dst_days_have_23_and_25_hours);
    tcase_add_test(fixed, half_hour_dst_starts_a_bucket_at_the_transition);
    tcase_add_test(fixed, odd_offsets_are_labelled);
    tcase_add_test(fixed, a_skipped_day_has_no_bucket);
    tcase_add_test(fixed, iso_weeks_cross_year_ends);
    tcase_add_test(fixed, months_have_28_to_31_days);
    tcase_add_test(fixed, ranges_reach_1970_and_2105);
    tcase_add_test(fixed, counts_are_capped);
    suite_add_tcase(s, cal);
    suite_add_tcase(s, libc);
    suite_add_tcase(s, fixed);
    return s;
}
