/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_rcache: day numbers, which days a plan takes from the
 * cache and which it asks for, how answers are merged and kept, and the
 * memory budget.
 */

#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include "check_main.h"
#include "imc_rcache.h"

#define S1  "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
#define S2  "7c9e6679-7425-40de-944b-e07fc1f90ae7"
#define KEY "db\nuser\nurl\nUTC\n1"
#define MB  ((apr_size_t)1024 * 1024)

static apr_pool_t *pool;
static imc_rcache *cache;

static void setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
    ck_assert_int_eq(imc_rcache_create(&cache, pool, MB), APR_SUCCESS);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

/* ---------------------------------------------------------- helpers */

static imc_rcache_part part(int first, int last, apr_uint64_t id)
{
    imc_rcache_part p;

    p.first = first;
    p.last = last;
    p.id = id;
    p.recent = 0;
    p.rows = 0;
    return p;
}

/* The database's answer for a plan: rows "day site served solved" for
 * every day of its ranges from the table of all rows, as ClickHouse would
 * give them; the plan learns that the query covered those ranges. */
typedef struct {
    int day;
    const char *site;
    int served, solved;
} fixture_row;

static apr_array_header_t *answer_in(apr_pool_t *p, imc_rcache_plan *plan,
                                     const fixture_row *all, int n)
{
    const apr_array_header_t *ranges = imc_rcache_plan_ranges(plan);
    apr_array_header_t *out = apr_array_make(p, 8, sizeof(imc_rcache_row));
    int i, k;

    for (k = 0; k < ranges->nelts; ++k) {
        const imc_rcache_range *rg =
            &APR_ARRAY_IDX(ranges, k, imc_rcache_range);

        imc_rcache_plan_covers(plan, rg->first, rg->last);
    }
    for (i = 0; i < n; ++i) {
        for (k = 0; k < ranges->nelts; ++k) {
            const imc_rcache_range *rg =
                &APR_ARRAY_IDX(ranges, k, imc_rcache_range);

            if (all[i].day >= rg->first && all[i].day <= rg->last) {
                imc_rcache_row *row = apr_array_push(out);

                row->day = all[i].day;
                row->site = all[i].site;
                row->served = (apr_uint64_t)all[i].served;
                row->solved = (apr_uint64_t)all[i].solved;
            }
        }
    }
    return out;
}

static apr_array_header_t *answer(imc_rcache_plan *plan, const fixture_row *all,
                                  int n)
{
    return answer_in(pool, plan, all, n);
}

/* The report's rows as text, "day site served solved;" each. */
static const char *text(const apr_array_header_t *rows)
{
    const char *s = "";
    int i;

    for (i = 0; i < rows->nelts; ++i) {
        const imc_rcache_row *r = &APR_ARRAY_IDX(rows, i, imc_rcache_row);

        s = apr_psprintf(pool, "%s%d %.4s %d %d;", s, r->day, r->site,
                         (int)r->served, (int)r->solved);
    }
    return s;
}

/* The plan's ranges as text, "first-last " each. */
static const char *ranges_text(const imc_rcache_plan *plan)
{
    const apr_array_header_t *ranges = imc_rcache_plan_ranges(plan);
    const char *s = "";
    int i;

    for (i = 0; i < ranges->nelts; ++i) {
        const imc_rcache_range *rg =
            &APR_ARRAY_IDX(ranges, i, imc_rcache_range);

        s = apr_psprintf(pool, "%s%d-%d ", s, rg->first, rg->last);
    }
    return s;
}

/* One report: plan, answer from all[], complete; returns the rows' text. */
static const char *report(const char *key, const imc_rcache_part *parts,
                          int nparts, int from, int to, const fixture_row *all,
                          int n, const char **ranges)
{
    imc_rcache_plan *plan =
        imc_rcache_plan_make(cache, pool, key, parts, nparts, from, to);

    if (ranges) {
        *ranges = ranges_text(plan);
    }
    return text(imc_rcache_complete(cache, plan, answer(plan, all, n)));
}

#define NO IMC_RCACHE_NO_DAY

/* ------------------------------------------------------------- days */

START_TEST(day_numbers)
{
    static const struct {
        const char *ymd;
        int n;
    } known[] = {{"1970-01-01", 0},      {"1970-01-02", 1},
                 {"1969-12-31", -1},     {"2000-02-29", 11016},
                 {"2000-03-01", 11017},  {"2025-01-01", 20089},
                 {"2100-03-01", 47541},  {"2149-06-06", 65535},
                 {"1900-03-01", -25508}, {"0001-01-01", -719162}};
    apr_size_t i;

    for (i = 0; i < sizeof(known) / sizeof(known[0]); ++i) {
        ck_assert_int_eq(imc_rcache_day_number(known[i].ymd), known[i].n);
        ck_assert_str_eq(imc_rcache_day_text(pool, known[i].n), known[i].ymd);
    }
}
END_TEST

START_TEST(day_round_trip)
{
    int d;

    for (d = -800000; d <= 800000; d += 7) {
        const char *t = imc_rcache_day_text(pool, d);

        ck_assert_int_eq(imc_rcache_day_number(t), d);
    }
    /* 1900 is no leap year, 2000 and 2024 are, 2100 is not. */
    ck_assert_int_eq(imc_rcache_day_number("1900-03-01") -
                         imc_rcache_day_number("1900-02-28"),
                     1);
    ck_assert_int_eq(imc_rcache_day_number("2024-03-01") -
                         imc_rcache_day_number("2024-02-28"),
                     2);
    ck_assert_int_eq(imc_rcache_day_number("2100-03-01") -
                         imc_rcache_day_number("2100-02-28"),
                     1);
}
END_TEST

START_TEST(day_bounds_never_wrap)
{
    const apr_int64_t m = IMC_RCACHE_ZONE_MARGIN, max = IMC_RCACHE_TIME_MAX;
    const int last = imc_rcache_day_number("2105-12-31");
    apr_int64_t lo, hi;

    /* Day 0: its start in a zone east of UTC is before the epoch. */
    imc_rcache_day_bounds(0, 0, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 86400 + m);
    /* The last day an event may have, and the day after it in a zone east
     * of UTC (2106-01-01 in Pacific/Kiritimati). */
    ck_assert_int_eq(last, 49672);
    imc_rcache_day_bounds(last, last + 1, &lo, &hi);
    ck_assert_int_eq(lo, (apr_int64_t)last * 86400 - m);
    ck_assert_int_eq(hi, (apr_int64_t)(last + 2) * 86400 + m);
    ck_assert_int_le(hi, max);
    /* 2106-02-07, DateTime's last day, and days after it are clamped. */
    imc_rcache_day_bounds(49710, 49710, &lo, &hi);
    ck_assert_int_eq(lo, 49710LL * 86400 - m);
    ck_assert_int_eq(hi, max);
    imc_rcache_day_bounds(65535, 65535, &lo, &hi);
    ck_assert_int_eq(lo, max);
    ck_assert_int_eq(hi, max);
    /* Days before 1970, and open ends. */
    imc_rcache_day_bounds(-400, -1, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, m);
    imc_rcache_day_bounds(NO, NO, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, max);
    imc_rcache_day_bounds(20000, NO, &lo, &hi);
    ck_assert_int_eq(lo, 20000LL * 86400 - m);
    ck_assert_int_eq(hi, max);
    /* Every instant of a day in any zone lies within its bounds: UTC-12
     * (Etc/GMT+12) and UTC+14 (Pacific/Kiritimati). */
    imc_rcache_day_bounds(100, 100, &lo, &hi);
    ck_assert_int_le(lo, 100LL * 86400 - 14 * 3600);
    ck_assert_int_ge(hi, 101LL * 86400 + 12 * 3600);
}
END_TEST

START_TEST(utc_day_bounds_are_the_days_instants)
{
    const apr_int64_t max = IMC_RCACHE_TIME_MAX;
    apr_int64_t lo, hi;

    imc_rcache_utc_day_bounds(100, 100, &lo, &hi);
    ck_assert_int_eq(lo, 100LL * 86400);
    ck_assert_int_eq(hi, 101LL * 86400 - 1);
    imc_rcache_utc_day_bounds(0, 2, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 3LL * 86400 - 1);
    imc_rcache_utc_day_bounds(-400, -1, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 0);
    imc_rcache_utc_day_bounds(49710, 65535, &lo, &hi);
    ck_assert_int_eq(lo, 49710LL * 86400);
    ck_assert_int_eq(hi, max);
    imc_rcache_utc_day_bounds(NO, NO, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, max);
}
END_TEST

/* ------------------------------------------------------------- plans */

static const fixture_row rows1[] = {
    {10, S1, 5, 4}, {10, S2, 3, 0}, {11, S1, 7, 7}, {13, S2, 2, 1}};

START_TEST(first_report_asks_for_every_covered_day)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    const char *ranges;

    ck_assert_str_eq(report(KEY, parts, 2, NO, NO, rows1, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    /* Day 12, in no part, has no events: it joins the range. */
    ck_assert_str_eq(ranges, "10-13 ");
}
END_TEST

START_TEST(same_parts_are_answered_by_the_cache)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    imc_rcache_plan *plan;
    const char *first, *ranges;

    first = report(KEY, parts, 2, NO, NO, rows1, 4, NULL);
    plan = imc_rcache_plan_make(cache, pool, KEY, parts, 2, NO, NO);
    ck_assert_int_eq(imc_rcache_plan_ranges(plan)->nelts, 0);
    ck_assert_int_eq(imc_rcache_plan_cached_days(plan), 3);
    ck_assert_int_eq(imc_rcache_plan_stale_days(plan), 0);
    /* The database answers nothing: every row comes from the cache. */
    ck_assert_str_eq(
        text(imc_rcache_complete(cache, plan, answer(plan, NULL, 0))), first);
    /* Parts listed in another order give the same fingerprints. */
    parts[0] = part(13, 13, 2);
    parts[1] = part(10, 11, 1);
    ck_assert_str_eq(report(KEY, parts, 2, NO, NO, NULL, 0, &ranges), first);
    ck_assert_str_eq(ranges, "");
}
END_TEST

START_TEST(a_new_part_makes_only_its_days_stale)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2),
                               part(11, 11, 3)};
    static const fixture_row later[] = {
        {10, S1, 5, 4}, {10, S2, 3, 0}, {11, S1, 8, 7}, {13, S2, 2, 1}};
    const char *ranges;

    report(KEY, parts, 2, NO, NO, rows1, 4, NULL);
    ck_assert_str_eq(report(KEY, parts, 3, NO, NO, later, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 8 7;13 7c9e 2 1;");
    ck_assert_str_eq(ranges, "11-11 ");
    /* A part with an id of its own replaces part 2: a merge, a mutation or
     * the same name with other rows all do that. */
    parts[1] = part(13, 13, 22);
    report(KEY, parts, 3, NO, NO, later, 4, &ranges);
    ck_assert_str_eq(ranges, "13-13 ");
}
END_TEST

START_TEST(a_new_day_is_asked_for)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2),
                               part(20, 20, 3)};
    static const fixture_row later[] = {{10, S1, 5, 4},
                                        {10, S2, 3, 0},
                                        {11, S1, 7, 7},
                                        {13, S2, 2, 1},
                                        {20, S1, 1, 0}};
    const char *ranges;

    report(KEY, parts, 2, NO, NO, rows1, 4, NULL);
    ck_assert_str_eq(report(KEY, parts, 3, NO, NO, later, 5, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;"
                     "20 0faf 1 0;");
    ck_assert_str_eq(ranges, "20-20 ");
}
END_TEST

START_TEST(days_no_part_covers_any_more_are_gone)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    const char *ranges;

    report(KEY, parts, 2, NO, NO, rows1, 4, NULL);
    /* Day 13's part was dropped (TRUNCATE, DROP PARTITION). */
    ck_assert_str_eq(report(KEY, parts, 1, NO, NO, rows1, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;");
    ck_assert_str_eq(ranges, "");
    ck_assert_str_eq(report(KEY, parts, 0, NO, NO, rows1, 4, &ranges), "");
}
END_TEST

START_TEST(keys_are_apart)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    static const fixture_row other[] = {{10, S1, 1, 1}};
    const char *ranges;

    report(KEY, parts, 2, NO, NO, rows1, 4, NULL);
    ck_assert_str_eq(report(KEY "x", parts, 2, NO, NO, other, 1, &ranges),
                     "10 0faf 1 1;");
    ck_assert_str_eq(ranges, "10-13 ");
    ck_assert_str_eq(report(KEY, parts, 2, NO, NO, NULL, 0, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    ck_assert_str_eq(ranges, "");
}
END_TEST

START_TEST(from_to_select_days_and_keep_the_others)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    const char *ranges;

    ck_assert_str_eq(report(KEY, parts, 2, 11, 12, rows1, 4, &ranges),
                     "11 0faf 7 7;");
    ck_assert_str_eq(ranges, "11-11 ");
    ck_assert_str_eq(report(KEY, parts, 2, 11, NO, rows1, 4, &ranges),
                     "11 0faf 7 7;13 7c9e 2 1;");
    ck_assert_str_eq(ranges, "13-13 ");
    ck_assert_str_eq(report(KEY, parts, 2, NO, 10, rows1, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;");
    ck_assert_str_eq(ranges, "10-10 ");
    /* Every day is known now. */
    ck_assert_str_eq(report(KEY, parts, 2, NO, NO, NULL, 0, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    ck_assert_str_eq(ranges, "");
    /* A window past every part, and one ending before it starts. */
    ck_assert_str_eq(report(KEY, parts, 2, 30, 40, rows1, 4, &ranges), "");
    ck_assert_str_eq(report(KEY, parts, 2, 13, 11, rows1, 4, &ranges), "");
    ck_assert_str_eq(ranges, "");
}
END_TEST

START_TEST(too_many_ranges_become_one)
{
    enum { N = IMC_RCACHE_MAX_RANGES * 2 + 3 };
    imc_rcache_part parts[N];
    imc_rcache_plan *plan;
    int i;

    /* Days 0, 2, 4, ... each in a part of its own, all cached. */
    for (i = 0; i < N; ++i) {
        parts[i] = part(2 * i, 2 * i, (apr_uint64_t)i + 1);
    }
    report(KEY, parts, N, NO, NO, NULL, 0, NULL);
    /* Every other day changes: as many ranges as allowed... */
    for (i = 1; i < 2 * IMC_RCACHE_MAX_RANGES; i += 2) {
        parts[i].id += 1000;
    }
    plan = imc_rcache_plan_make(cache, pool, KEY, parts, N, NO, NO);
    ck_assert_int_eq(imc_rcache_plan_ranges(plan)->nelts,
                     IMC_RCACHE_MAX_RANGES);
    imc_rcache_complete(cache, plan, answer(plan, NULL, 0));
    /* ...and one more: one range from the first to the last changed day,
     * the days between that the cache knew included. */
    for (i = 1; i <= 2 * IMC_RCACHE_MAX_RANGES + 1; i += 2) {
        parts[i].id += 1000;
    }
    plan = imc_rcache_plan_make(cache, pool, KEY, parts, N, NO, NO);
    ck_assert_str_eq(
        ranges_text(plan),
        apr_psprintf(pool, "2-%d ", 2 * (2 * IMC_RCACHE_MAX_RANGES + 1)));
    ck_assert_int_eq(imc_rcache_plan_cached_days(plan), 2);
    ck_assert_int_eq(imc_rcache_plan_stale_days(plan), N - 2);
}
END_TEST

START_TEST(fresh_rows_of_an_unplanned_day_are_reported_not_kept)
{
    imc_rcache_part parts[] = {part(10, 13, 1)};
    static const fixture_row more[] = {{10, S1, 5, 4}, {12, S2, 1, 1}};
    imc_rcache_plan *plan;
    apr_array_header_t *fresh;
    imc_rcache_row *row;
    const char *ranges;

    /* Day 12 is covered: the rows of a day inside a range are kept. */
    report(KEY, parts, 1, NO, NO, more, 2, NULL);
    ck_assert_str_eq(report(KEY, parts, 1, NO, NO, NULL, 0, &ranges),
                     "10 0faf 5 4;12 7c9e 1 1;");
    ck_assert_str_eq(ranges, "");
    /* An insert between the parts list and the query brings day 14: it is
     * reported, but not kept, since no fingerprint was taken for it. */
    plan = imc_rcache_plan_make(cache, pool, KEY "2", parts, 1, NO, NO);
    fresh = answer(plan, more, 2);
    row = apr_array_push(fresh);
    row->day = 14;
    row->site = S1;
    row->served = row->solved = 1;
    ck_assert_str_eq(text(imc_rcache_complete(cache, plan, fresh)),
                     "10 0faf 5 4;12 7c9e 1 1;14 0faf 1 1;");
    parts[0] = part(10, 14, 2);
    report(KEY "2", parts, 1, NO, NO, NULL, 0, &ranges);
    ck_assert_str_eq(ranges, "10-14 ");
}
END_TEST

START_TEST(days_of_a_part_of_this_second_are_not_kept)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    const char *ranges;

    /* Day 13's part was written in the database's current second: a part
     * of the same name, rows and second could replace it unseen. */
    parts[1].recent = 1;
    ck_assert_str_eq(report(KEY, parts, 2, NO, NO, rows1, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    ck_assert_str_eq(report(KEY, parts, 2, NO, NO, rows1, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    ck_assert_str_eq(ranges, "13-13 ");
    /* A second later it is kept. */
    parts[1].recent = 0;
    report(KEY, parts, 2, NO, NO, rows1, 4, &ranges);
    ck_assert_str_eq(ranges, "13-13 ");
    report(KEY, parts, 2, NO, NO, rows1, 4, &ranges);
    ck_assert_str_eq(ranges, "");
}
END_TEST

START_TEST(a_row_that_is_no_uuid_is_not_kept)
{
    imc_rcache_part parts[] = {part(10, 10, 1)};
    static const fixture_row odd[] = {{10, "not-a-uuid", 1, 1}};
    const char *ranges;

    ck_assert_str_eq(report(KEY, parts, 1, NO, NO, odd, 1, &ranges),
                     "10 not- 1 1;");
    ck_assert_int_eq(imc_rcache_bytes(cache), 0);
    report(KEY, parts, 1, NO, NO, odd, 1, &ranges);
    ck_assert_str_eq(ranges, "10-10 ");
}
END_TEST

START_TEST(an_answer_no_query_covered_is_not_kept)
{
    imc_rcache_part parts[] = {part(10, 11, 1), part(13, 13, 2)};
    imc_rcache_plan *plan;
    apr_array_header_t *fresh;
    const char *ranges;
    int i;

    /* An answer to a query that recorded no range (its bounds were not
     * the report's): shown, never kept. */
    plan = imc_rcache_plan_make(cache, pool, KEY, parts, 2, NO, NO);
    fresh = apr_array_make(pool, 4, sizeof(imc_rcache_row));
    for (i = 0; i < 4; ++i) {
        *(imc_rcache_row *)apr_array_push(fresh) = (imc_rcache_row){
            rows1[i].day, rows1[i].site, (apr_uint64_t)rows1[i].served,
            (apr_uint64_t)rows1[i].solved, 0};
    }
    ck_assert_str_eq(text(imc_rcache_complete(cache, plan, fresh)),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    report(KEY, parts, 2, NO, NO, rows1, 4, &ranges);
    ck_assert_str_eq(ranges, "10-13 ");
    /* A query that covered days 13 and after only: day 13 is kept, days
     * 10 and 11 (zero rows, as a query bounded wrongly answers) are not. */
    plan = imc_rcache_plan_make(cache, pool, KEY "2", parts, 2, NO, NO);
    imc_rcache_plan_covers(plan, 13, NO);
    fresh = apr_array_make(pool, 1, sizeof(imc_rcache_row));
    *(imc_rcache_row *)apr_array_push(fresh) =
        (imc_rcache_row){13, S2, 2, 1, 0};
    ck_assert_str_eq(text(imc_rcache_complete(cache, plan, fresh)),
                     "13 7c9e 2 1;");
    ck_assert_str_eq(report(KEY "2", parts, 2, NO, NO, rows1, 4, &ranges),
                     "10 0faf 5 4;10 7c9e 3 0;11 0faf 7 7;13 7c9e 2 1;");
    ck_assert_str_eq(ranges, "10-11 ");
    /* Open at the start: days up to 11 covered. */
    plan = imc_rcache_plan_make(cache, pool, KEY "3", parts, 2, NO, NO);
    imc_rcache_plan_covers(plan, NO, 11);
    imc_rcache_complete(cache, plan, apr_array_make(pool, 1, sizeof(int)));
    report(KEY "3", parts, 2, NO, NO, rows1, 4, &ranges);
    ck_assert_str_eq(ranges, "13-13 ");
}
END_TEST

/* The batches of a plan as text: "10-11 13-13 | 14-20 " (ranges, a bar
 * between batches). */
static const char *batches_text(apr_array_header_t *batches)
{
    const char *t = "";
    int i, j;

    for (i = 0; i < batches->nelts; ++i) {
        const apr_array_header_t *b =
            APR_ARRAY_IDX(batches, i, apr_array_header_t *);

        for (j = 0; j < b->nelts; ++j) {
            const imc_rcache_range *rg = &APR_ARRAY_IDX(b, j, imc_rcache_range);

            t = apr_psprintf(pool, "%s%d-%d ", t, rg->first, rg->last);
        }
        t = apr_pstrcat(pool, t, i + 1 < batches->nelts ? "| " : "", NULL);
    }
    return t;
}

START_TEST(batches_keep_each_query_under_its_rows)
{
    imc_rcache_part parts[] = {part(10, 10, 1), part(11, 11, 2),
                               part(12, 12, 3), part(13, 16, 4),
                               part(20, 20, 5), part(21, 21, 6)};
    imc_rcache_plan *plan;
    int i;

    parts[0].rows = 400;
    parts[1].rows = 500;
    parts[2].rows = 2000; /* a day over the limit: a query of its own */
    parts[3].rows = 399;  /* about 100 a day over 4 days */
    parts[4].rows = parts[5].rows = 10;
    plan = imc_rcache_plan_make(cache, pool, KEY "b", parts, 6, NO, NO);
    ck_assert_str_eq(batches_text(imc_rcache_plan_batches(plan, 1000)),
                     "10-11 | 12-12 | 13-21 ");
    ck_assert_str_eq(batches_text(imc_rcache_plan_batches(plan, 100000)),
                     "10-21 ");
    /* Every day alone over the limit: a query a day. */
    ck_assert_str_eq(batches_text(imc_rcache_plan_batches(plan, 1)),
                     "10-10 | 11-11 | 12-12 | 13-13 | 14-14 | 15-15 | "
                     "16-19 | 20-20 | 21-21 ");
    /* Days cached are not asked: the ranges between them are batched
     * together, at most IMC_RCACHE_MAX_RANGES a query. */
    report(KEY "c", parts, 6, NO, NO, NULL, 0, NULL);
    parts[1].id = 12;
    parts[4].id = 15;
    plan = imc_rcache_plan_make(cache, pool, KEY "c", parts, 6, NO, NO);
    ck_assert_str_eq(batches_text(imc_rcache_plan_batches(plan, 100000)),
                     "11-11 20-20 ");
    ck_assert_str_eq(batches_text(imc_rcache_plan_batches(plan, 500)),
                     "11-11 | 20-20 ");
    for (i = 0; i < 6; ++i) {
        parts[i].rows = 0; /* not known: a row a day */
    }
    plan = imc_rcache_plan_make(cache, pool, KEY "d", parts, 6, NO, NO);
    ck_assert_str_eq(batches_text(imc_rcache_plan_batches(plan, 3)),
                     "10-12 | 13-15 | 16-21 ");
}
END_TEST

START_TEST(rows_keep_their_bucket_instant)
{
    imc_rcache_part parts[] = {part(10, 10, 1)};
    static const apr_uint32_t times[] = {864000, 867600, 867600};
    static const char *const sites[] = {S1, S1, S2};
    imc_rcache_plan *plan;
    apr_array_header_t *fresh, *rows;
    int i;

    /* Rows of hours of one day: kept with each its instant, read back in
     * the order they came, the day's records apart from the day report's
     * (another key). */
    plan = imc_rcache_plan_make(cache, pool, KEY "\nhour", parts, 1, NO, NO);
    imc_rcache_plan_covers(plan, NO, NO);
    fresh = apr_array_make(pool, 3, sizeof(imc_rcache_row));
    for (i = 0; i < 3; ++i) {
        *(imc_rcache_row *)apr_array_push(fresh) = (imc_rcache_row){
            10, sites[i], (apr_uint64_t)i + 1, (apr_uint64_t)i, times[i]};
    }
    imc_rcache_complete(cache, plan, fresh);
    plan = imc_rcache_plan_make(cache, pool, KEY "\nhour", parts, 1, NO, NO);
    ck_assert_int_eq(imc_rcache_plan_cached_days(plan), 1);
    rows = imc_rcache_complete(cache, plan,
                               apr_array_make(pool, 1, sizeof(imc_rcache_row)));
    ck_assert_int_eq(rows->nelts, 3);
    for (i = 0; i < 3; ++i) {
        const imc_rcache_row *row = &APR_ARRAY_IDX(rows, i, imc_rcache_row);

        ck_assert_uint_eq(row->time, times[i]);
        ck_assert_str_eq(row->site, sites[i]);
        ck_assert_uint_eq(row->served, (apr_uint64_t)i + 1);
    }
    plan = imc_rcache_plan_make(cache, pool, KEY, parts, 1, NO, NO);
    ck_assert_int_eq(imc_rcache_plan_cached_days(plan), 0);
}
END_TEST

/* ------------------------------------------------------------ budget */

/* One report without its rows' text (for big ones); returns the ranges
 * the plan asked for. */
static const char *store(const char *key, const imc_rcache_part *parts,
                         int nparts, const fixture_row *all, int n)
{
    imc_rcache_plan *plan =
        imc_rcache_plan_make(cache, pool, key, parts, nparts, NO, NO);
    const char *ranges = ranges_text(plan);

    ck_assert_int_eq(
        imc_rcache_complete(cache, plan, answer(plan, all, n))->nelts, n);
    return ranges;
}

/* rows fixture rows on day 1, each its own site. */
static fixture_row *many_rows(int rows)
{
    fixture_row *all = apr_pcalloc(pool, sizeof(*all) * (apr_size_t)rows);
    int i;

    for (i = 0; i < rows; ++i) {
        all[i].day = 1;
        all[i].site =
            apr_psprintf(pool, "%08x-0000-0000-0000-000000000000", (unsigned)i);
        all[i].served = i;
    }
    return all;
}

START_TEST(least_recently_used_reports_are_evicted)
{
    imc_rcache_part parts[] = {part(1, 1, 1)};
    fixture_row *all = many_rows(2000); /* about 128 KB */
    apr_size_t one;
    int k;

    ck_assert_str_eq(store("a", parts, 1, all, 2000), "1-1 ");
    one = imc_rcache_bytes(cache);
    ck_assert_uint_gt(one, 2000 * 36);
    ck_assert_uint_lt(one, MB / 4);
    for (k = 0; k < 20; ++k) {
        store(apr_psprintf(pool, "b%d", k), parts, 1, all, 2000);
        /* "a" is used after each new one: it stays. */
        ck_assert_str_eq(store("a", parts, 1, all, 2000), "");
        ck_assert_uint_le(imc_rcache_bytes(cache), MB);
    }
    ck_assert_uint_gt(imc_rcache_bytes(cache), MB / 2);
    /* "b0" was evicted long ago, "b19" is still there. */
    ck_assert_str_eq(store("b19", parts, 1, all, 2000), "");
    ck_assert_str_eq(store("b0", parts, 1, all, 2000), "1-1 ");
}
END_TEST

START_TEST(a_report_over_half_the_budget_is_not_kept)
{
    imc_rcache_part parts[] = {part(1, 1, 1)};
    fixture_row *all = many_rows(10000); /* about 640 KB */

    ck_assert_str_eq(store("big", parts, 1, all, 10000), "1-1 ");
    ck_assert_int_eq(imc_rcache_bytes(cache), 0);
    ck_assert_str_eq(store("big", parts, 1, all, 10000), "1-1 ");
}
END_TEST

/* ----------------------------------------------------------- threads */

static void *APR_THREAD_FUNC hammer(apr_thread_t *t, void *data)
{
    apr_pool_t *p;
    imc_rcache_part parts[2];
    int i, *bad = data;

    apr_pool_create(&p, NULL);
    for (i = 0; i < 2000; ++i) {
        imc_rcache_plan *plan;
        apr_array_header_t *out;

        parts[0] = part(10, 11, 1);
        parts[1] = part(13, 13, (apr_uint64_t)(i % 3));
        plan =
            imc_rcache_plan_make(cache, p, i % 2 ? "x" : "y", parts, 2, NO, NO);
        out = imc_rcache_complete(cache, plan, answer_in(p, plan, rows1, 4));
        if (out->nelts != 4) {
            ++*bad;
        }
        apr_pool_clear(p);
    }
    apr_pool_destroy(p);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

START_TEST(threads_share_the_cache)
{
    apr_thread_t *t[4];
    apr_status_t rv;
    int i, bad[4] = {0, 0, 0, 0};

    for (i = 0; i < 4; ++i) {
        ck_assert_int_eq(apr_thread_create(&t[i], NULL, hammer, &bad[i], pool),
                         APR_SUCCESS);
    }
    for (i = 0; i < 4; ++i) {
        apr_thread_join(&rv, t[i]);
        ck_assert_int_eq(bad[i], 0);
    }
}
END_TEST

/* ------------------------------------------------------------- forms */

START_TEST(fingerprints_are_of_the_parts_in_range)
{
    imc_rcache_part a[] = {part(10, 12, 1), part(20, 20, 2), part(30, 31, 3)};
    imc_rcache_part b[] = {part(30, 31, 3), part(10, 12, 1), part(20, 20, 2)};
    imc_rcache_part c[] = {part(10, 12, 1), part(20, 20, 9), part(30, 31, 3)};
    int recent;

    /* Order-free; a part outside the range does not count. */
    ck_assert(imc_rcache_fingerprint(a, 3, NO, NO, &recent) ==
              imc_rcache_fingerprint(b, 3, NO, NO, &recent));
    ck_assert(imc_rcache_fingerprint(a, 3, 10, 15, &recent) ==
              imc_rcache_fingerprint(a, 1, 10, 15, &recent));
    ck_assert(imc_rcache_fingerprint(a, 3, 10, 15, &recent) ==
              imc_rcache_fingerprint(c, 3, 10, 15, &recent));
    ck_assert(imc_rcache_fingerprint(a, 3, 10, 20, &recent) !=
              imc_rcache_fingerprint(c, 3, 10, 20, &recent));
    ck_assert(imc_rcache_fingerprint(a, 3, 31, NO, &recent) !=
              imc_rcache_fingerprint(a, 2, 31, NO, &recent));
    /* No part at all is a fingerprint too, another one. */
    ck_assert(imc_rcache_fingerprint(a, 3, 13, 19, &recent) !=
              imc_rcache_fingerprint(a, 3, 10, 19, &recent));
    ck_assert_int_eq(recent, 0);
    a[1].recent = 1;
    imc_rcache_fingerprint(a, 3, 10, 19, &recent);
    ck_assert_int_eq(recent, 0);
    imc_rcache_fingerprint(a, 3, 10, 20, &recent);
    ck_assert_int_eq(recent, 1);
}
END_TEST

START_TEST(forms_read_days_around_from_to)
{
    int first, last;

    imc_rcache_forms_days(100, 106, 0, 0, &first, &last);
    ck_assert_int_eq(first, 99);
    ck_assert_int_eq(last, 107);
    imc_rcache_forms_days(100, 106, 1, 0, &first, &last);
    ck_assert_int_eq(first, 92); /* the previous 7 days, and one more */
    ck_assert_int_eq(last, 107);
    imc_rcache_forms_days(100, 106, 0, 1, &first, &last);
    ck_assert_int_eq(last, 108); /* a second past the last day: a day */
    imc_rcache_forms_days(100, 106, 0, 86400 * 3, &first, &last);
    ck_assert_int_eq(last, 110);
    imc_rcache_forms_days(NO, 106, 0, 0, &first, &last);
    ck_assert_int_eq(first, NO);
    ck_assert_int_eq(last, 107);
    imc_rcache_forms_days(100, NO, 1, 3600, &first, &last);
    ck_assert_int_eq(first, 99);
    ck_assert_int_eq(last, NO);
}
END_TEST

START_TEST(forms_answers_are_kept_under_key_and_fingerprint)
{
    imc_rcache *forms;
    apr_size_t size = 0;
    char *got;

    ck_assert_int_eq(imc_rcache_create(&forms, pool, MB), APR_SUCCESS);
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k", 1, &size));
    imc_rcache_forms_put(forms, "k", 1, "answer", 7);
    got = imc_rcache_forms_get(forms, pool, "k", 1, &size);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(size, 7);
    ck_assert_str_eq(got, "answer");
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k", 2, &size));
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k2", 1, &size));
    /* A new answer of the key replaces the old one. */
    imc_rcache_forms_put(forms, "k", 2, "other", 6);
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k", 1, &size));
    ck_assert_str_eq(imc_rcache_forms_get(forms, pool, "k", 2, &size), "other");
    ck_assert_int_lt(imc_rcache_bytes(forms), 200);
}
END_TEST

START_TEST(forms_answers_stay_within_the_budget)
{
    imc_rcache *forms;
    char *blob = apr_pcalloc(pool, 100 * 1024);
    apr_size_t size;
    int i;

    ck_assert_int_eq(imc_rcache_create(&forms, pool, MB), APR_SUCCESS);
    for (i = 0; i < 30; ++i) {
        blob[0] = (char)i;
        imc_rcache_forms_put(forms, apr_psprintf(pool, "k%d", i), 7, blob,
                             100 * 1024);
        /* k0 used again and again: it stays, k1 goes. */
        ck_assert_ptr_nonnull(
            imc_rcache_forms_get(forms, pool, "k0", 7, &size));
        ck_assert_int_le(imc_rcache_bytes(forms), MB);
    }
    ck_assert_ptr_nonnull(imc_rcache_forms_get(forms, pool, "k29", 7, &size));
    ck_assert_int_eq(
        ((char *)imc_rcache_forms_get(forms, pool, "k29", 7, &size))[0], 29);
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k1", 7, &size));
    /* Over half the budget: not kept, and the old answer is gone. */
    imc_rcache_forms_put(forms, "k29", 8, apr_pcalloc(pool, MB / 2), MB / 2);
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k29", 7, &size));
    ck_assert_ptr_null(imc_rcache_forms_get(forms, pool, "k29", 8, &size));
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("rcache");
    TCase *days = tcase_create("days");
    TCase *plans = tcase_create("plans");
    TCase *budget = tcase_create("budget");
    TCase *forms = tcase_create("forms");

    tcase_add_checked_fixture(days, setup, teardown);
    tcase_add_checked_fixture(plans, setup, teardown);
    tcase_add_checked_fixture(budget, setup, teardown);
    tcase_add_checked_fixture(forms, setup, teardown);
    tcase_add_test(days, day_numbers);
    tcase_add_test(days, day_round_trip);
    tcase_add_test(days, day_bounds_never_wrap);
    tcase_add_test(days, utc_day_bounds_are_the_days_instants);
    tcase_add_test(plans, first_report_asks_for_every_covered_day);
    tcase_add_test(plans, same_parts_are_answered_by_the_cache);
    tcase_add_test(plans, a_new_part_makes_only_its_days_stale);
    tcase_add_test(plans, a_new_day_is_asked_for);
    tcase_add_test(plans, days_no_part_covers_any_more_are_gone);
    tcase_add_test(plans, keys_are_apart);
    tcase_add_test(plans, from_to_select_days_and_keep_the_others);
    tcase_add_test(plans, too_many_ranges_become_one);
    tcase_add_test(plans, fresh_rows_of_an_unplanned_day_are_reported_not_kept);
    tcase_add_test(plans, days_of_a_part_of_this_second_are_not_kept);
    tcase_add_test(plans, a_row_that_is_no_uuid_is_not_kept);
    tcase_add_test(plans, an_answer_no_query_covered_is_not_kept);
    tcase_add_test(plans, rows_keep_their_bucket_instant);
    tcase_add_test(plans, batches_keep_each_query_under_its_rows);
    tcase_add_test(budget, least_recently_used_reports_are_evicted);
    tcase_add_test(budget, a_report_over_half_the_budget_is_not_kept);
    tcase_add_test(budget, threads_share_the_cache);
    tcase_add_test(forms, fingerprints_are_of_the_parts_in_range);
    tcase_add_test(forms, forms_read_days_around_from_to);
    tcase_add_test(forms, forms_answers_are_kept_under_key_and_fingerprint);
    tcase_add_test(forms, forms_answers_stay_within_the_budget);
    suite_add_tcase(s, days);
    suite_add_tcase(s, plans);
    suite_add_tcase(s, budget);
    suite_add_tcase(s, forms);
    return s;
}
