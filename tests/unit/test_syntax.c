/* Licensed under the Apache License, Version 2.0. */

/* The calendar, day texts, dates and UUIDs (imc_syntax.h). */

#include <string.h>
#include <time.h>

#include <apr_strings.h>

#include "check_main.h"
#include "imc_syntax.h"

#define DAY 86400

static const char *const CANON = "0faf8b64-a33d-4db8-aaee-aa165d13cff6";

/* The day number of s (a NUL-terminated date), or -99999 when refused. */
static apr_int64_t date_of(const char *s)
{
    apr_int64_t day = -99999;

    if (imc_syntax_date_parse(s, strlen(s), &day) != APR_SUCCESS) {
        ck_assert_int_eq(day, -99999); /* untouched */
    }
    return day;
}

static int read_ok(const char *s, apr_int64_t *day)
{
    return imc_syntax_day_read(s, strlen(s), day) == APR_SUCCESS;
}

static const char *text_of(apr_int64_t day)
{
    static char buf[IMC_SYNTAX_DAY_TEXT_SIZE];

    ck_assert_uint_eq(imc_syntax_day_text(buf, day), strlen(buf));
    return buf;
}

/* -------------------------------------------------------- calendar */

START_TEST(leap_years)
{
    static const struct {
        int year, leap;
    } years[] = {{1900, 0}, {2000, 1}, {2100, 0}, {2104, 1}, {2024, 1},
                 {2023, 0}, {1970, 0}, {1972, 1}, {2400, 1}, {0, 1},
                 {-1, 0},   {-4, 1},   {-100, 0}, {-400, 1}};
    apr_size_t i;

    for (i = 0; i < sizeof(years) / sizeof(years[0]); ++i) {
        int y = years[i].year;

        ck_assert_int_eq(imc_syntax_leap_year(y), years[i].leap);
        ck_assert_int_eq(imc_syntax_month_days(y, 2), 28 + years[i].leap);
        ck_assert_int_eq(imc_syntax_date_valid(y, 2, 29), years[i].leap);
        /* The leap day is the day before 1 March. */
        ck_assert_int_eq(imc_syntax_day(y, 3, 1) - imc_syntax_day(y, 2, 28),
                         1 + years[i].leap);
        ck_assert_int_eq(imc_syntax_day(y + 1, 1, 1) - imc_syntax_day(y, 1, 1),
                         365 + years[i].leap);
    }
    ck_assert_int_eq(date_of("2000-02-29"), 11016);
    ck_assert_int_eq(date_of("2104-02-29"), imc_syntax_day(2104, 2, 29));
    ck_assert_int_eq(date_of("2024-02-29"), imc_syntax_day(2024, 2, 29));
    ck_assert_int_eq(date_of("2100-02-29"), -99999);
    ck_assert_int_eq(date_of("2023-02-29"), -99999);
    ck_assert_int_eq(date_of("2000-02-30"), -99999);
}
END_TEST

START_TEST(month_ends)
{
    static const int ends[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};
    int m;

    for (m = 1; m <= 12; ++m) {
        const char *last =
            apr_psprintf(imc_unit_pool, "2026-%02d-%02d", m, ends[m - 1]);
        const char *after =
            apr_psprintf(imc_unit_pool, "2026-%02d-%02d", m, ends[m - 1] + 1);

        ck_assert_int_eq(imc_syntax_month_days(2026, m), ends[m - 1]);
        ck_assert(imc_syntax_date_valid(2026, m, ends[m - 1]));
        ck_assert(!imc_syntax_date_valid(2026, m, ends[m - 1] + 1));
        ck_assert(!imc_syntax_date_valid(2026, m, 0));
        ck_assert_int_eq(date_of(last), imc_syntax_day(2026, m, ends[m - 1]));
        ck_assert_int_eq(date_of(after), -99999);
        /* The day after a month's last is the next month's first. */
        ck_assert_int_eq(imc_syntax_day(2026, m, ends[m - 1]) + 1,
                         m == 12 ? imc_syntax_day(2027, 1, 1)
                                 : imc_syntax_day(2026, m + 1, 1));
    }
    ck_assert_int_eq(imc_syntax_month_days(2026, 0), 0);
    ck_assert_int_eq(imc_syntax_month_days(2026, 13), 0);
    ck_assert(!imc_syntax_date_valid(2026, 0, 1));
    ck_assert(!imc_syntax_date_valid(2026, 13, 1));
    ck_assert_int_eq(date_of("2026-00-10"), -99999);
    ck_assert_int_eq(date_of("2026-13-01"), -99999);
    ck_assert_int_eq(date_of("2026-01-00"), -99999);
    ck_assert_int_eq(date_of("2026-01-32"), -99999);
    ck_assert_int_eq(date_of("2026-04-31"), -99999);
}
END_TEST

START_TEST(floor_division)
{
    ck_assert_int_eq(imc_syntax_floor_div(-1, DAY), -1);
    ck_assert_int_eq(imc_syntax_floor_div(-DAY, DAY), -1);
    ck_assert_int_eq(imc_syntax_floor_div(-DAY - 1, DAY), -2);
    ck_assert_int_eq(imc_syntax_floor_div(0, DAY), 0);
    ck_assert_int_eq(imc_syntax_floor_div(DAY - 1, DAY), 0);
    ck_assert_int_eq(imc_syntax_floor_div(DAY, DAY), 1);
}
END_TEST

/* ------------------------------------------------------------ dates */

START_TEST(range_limits)
{
    apr_int64_t day;

    ck_assert_int_eq(IMC_SYNTAX_FIRST_DAY, 0);
    ck_assert_int_eq(date_of("1970-01-01"), IMC_SYNTAX_FIRST_DAY);
    ck_assert_int_eq(date_of("1970-01-02"), 1);
    ck_assert_int_eq(date_of("2105-12-31"), IMC_SYNTAX_LAST_DAY);
    ck_assert_int_eq(IMC_SYNTAX_LAST_DAY, 49672);
    /* The last second an event may carry, 2105-12-31T23:59:59Z. */
    ck_assert_int_eq((IMC_SYNTAX_LAST_DAY + 1) * APR_INT64_C(DAY) - 1,
                     APR_INT64_C(4291747199));
    ck_assert_int_eq(date_of("1969-12-31"), -99999);
    ck_assert_int_eq(date_of("2106-01-01"), -99999);
    ck_assert_int_eq(date_of("0000-01-01"), -99999);
    ck_assert_int_eq(date_of("0001-01-01"), -99999);
    ck_assert_int_eq(date_of("9999-12-31"), -99999);
    /* Outside the dates, still days of the calendar. */
    ck_assert(read_ok("1969-12-31", &day));
    ck_assert_int_eq(day, -1);
    ck_assert(read_ok("2106-01-01", &day));
    ck_assert_int_eq(day, IMC_SYNTAX_LAST_DAY + 1);
}
END_TEST

START_TEST(bad_forms)
{
    static const char *const bad[] = {"",
                                      "2026",
                                      "2026-2-01",
                                      "2026-02-1",
                                      "26-02-01",
                                      "2026-02-001",
                                      "+2026-02-01",
                                      "-2026-02-01",
                                      "2026-+2-01",
                                      "2026--2-01",
                                      "2026-02--1",
                                      "2026-02-+1",
                                      " 2026-02-01",
                                      "2026-02-01 ",
                                      "2026-02-01\n",
                                      "2026-02-01x",
                                      "2026-02-01T00:00:00Z",
                                      "2026/02/01",
                                      "2026.02.01",
                                      "20260201",
                                      "2026-02-30",
                                      "2026-1a-01",
                                      "2026-02-0a",
                                      "202a-02-01",
                                      "2026 02-01",
                                      "\xef\xbc\x92\x30\x32\x36-02-01"};
    apr_size_t i;
    apr_int64_t day = -99999;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        ck_assert_msg(date_of(bad[i]) == -99999, "'%s' accepted", bad[i]);
    }
    /* Only the n bytes given count, a NUL among them too. */
    ck_assert_int_eq(imc_syntax_date_parse("2026-02-01xyz", 10, &day),
                     APR_SUCCESS);
    ck_assert_int_eq(day, imc_syntax_day(2026, 2, 1));
    ck_assert_int_eq(imc_syntax_date_parse("2026-02-01xyz", 13, &day),
                     APR_EINVAL);
    ck_assert_int_eq(imc_syntax_date_parse("2026-02-01", 9, &day), APR_EINVAL);
    ck_assert_int_eq(imc_syntax_date_parse("2026-02-0\0", 10, &day),
                     APR_EINVAL);
    ck_assert_int_eq(imc_syntax_date_parse("2026\0-02-01", 11, &day),
                     APR_EINVAL);
}
END_TEST

START_TEST(date_fields_form_only)
{
    int y, m, d;

    ck_assert(imc_syntax_date_fields("2026-02-30", &y, &m, &d));
    ck_assert_int_eq(y, 2026);
    ck_assert_int_eq(m, 2);
    ck_assert_int_eq(d, 30);
    ck_assert(imc_syntax_date_fields("0000-00-00T", &y, &m, &d));
    ck_assert_int_eq(y + m + d, 0);
    ck_assert(!imc_syntax_date_fields("2026-2-01x", &y, &m, &d));
    ck_assert(!imc_syntax_date_fields("2026-02+01", &y, &m, &d));
    ck_assert(!imc_syntax_date_fields("-026-02-01", &y, &m, &d));
    ck_assert(!imc_syntax_date_fields("2026-02- 1", &y, &m, &d));
}
END_TEST

/* Whether the date of day k is its successor's day before. */
static int next_is_next(apr_int64_t k)
{
    int y, m, d, y2, m2, d2;

    imc_syntax_date(k, &y, &m, &d);
    imc_syntax_date(k + 1, &y2, &m2, &d2);
    if (d < imc_syntax_month_days(y, m)) {
        return y2 == y && m2 == m && d2 == d + 1;
    }
    if (m < 12) {
        return y2 == y && m2 == m + 1 && d2 == 1;
    }
    return y2 == y + 1 && m2 == 1 && d2 == 1;
}

/* Whether day k's text reads back as k and its date's day number is k. */
static int text_round_trips(apr_int64_t k)
{
    char t[IMC_SYNTAX_DAY_TEXT_SIZE];
    apr_size_t n = imc_syntax_day_text(t, k);
    apr_int64_t day = k + 1;
    int y, m, d;

    imc_syntax_date(k, &y, &m, &d);
    return n == strlen(t) && imc_syntax_day_read(t, n, &day) == APR_SUCCESS &&
           day == k && imc_syntax_date_valid(y, m, d) &&
           imc_syntax_day(y, m, d) == k && next_is_next(k);
}

/* Whether day k's text is a date of the range, parsed as k, and its
 * fields those of the C library's UTC calendar. */
static int date_round_trips(apr_int64_t k)
{
    char t[IMC_SYNTAX_DAY_TEXT_SIZE];
    apr_size_t n = imc_syntax_day_text(t, k);
    apr_int64_t day = k + 1;
    time_t tt = (time_t)(k * DAY);
    struct tm tm;
    int y, m, d;

    imc_syntax_date(k, &y, &m, &d);
    gmtime_r(&tt, &tm);
    return n == IMC_SYNTAX_DATE_LEN &&
           imc_syntax_date_parse(t, n, &day) == APR_SUCCESS && day == k &&
           y == tm.tm_year + 1900 && m == tm.tm_mon + 1 && d == tm.tm_mday;
}

/* Every date of the range, and the days just outside it. */
START_TEST(dates_round_trip)
{
    apr_int64_t k;

    for (k = IMC_SYNTAX_FIRST_DAY; k <= IMC_SYNTAX_LAST_DAY; ++k) {
        ck_assert_msg(date_round_trips(k) && text_round_trips(k), "day %ld",
                      (long)k);
    }
    ck_assert(text_round_trips(IMC_SYNTAX_FIRST_DAY - 1));
    ck_assert(!date_round_trips(IMC_SYNTAX_FIRST_DAY - 1));
    ck_assert(text_round_trips(IMC_SYNTAX_LAST_DAY + 1));
    ck_assert(!date_round_trips(IMC_SYNTAX_LAST_DAY + 1));
}
END_TEST

/* ------------------------------------------------------- day texts */

START_TEST(day_texts)
{
    static const struct {
        const char *text;
        int y, m, d;
    } known[] = {{"0000-03-01", 0, 3, 1},      {"0001-01-01", 1, 1, 1},
                 {"-001-12-31", -1, 12, 31},   {"-400-02-29", -400, 2, 29},
                 {"-1000-01-01", -1000, 1, 1}, {"9999-12-31", 9999, 12, 31},
                 {"10000-01-01", 10000, 1, 1}, {"2149-06-06", 2149, 6, 6}};
    static const char *const bad[] = {"+2026-01-01",
                                      "02026-01-01",
                                      "-000-01-01",
                                      "-0001-01-01",
                                      "2026-02-30",
                                      "2026-1-01",
                                      "0000-02-29x",
                                      "--001-12-31",
                                      "-2026-1-01",
                                      "2026-01-01 ",
                                      "",
                                      "-01-01",
                                      "1-01-01",
                                      "0999999999-01-01"};
    apr_size_t i;
    apr_int64_t day = 12345;

    for (i = 0; i < sizeof(known) / sizeof(known[0]); ++i) {
        apr_int64_t k = imc_syntax_day(known[i].y, known[i].m, known[i].d);

        ck_assert_str_eq(text_of(k), known[i].text);
        ck_assert_msg(read_ok(known[i].text, &day), "%s", known[i].text);
        ck_assert_int_eq(day, k);
    }
    ck_assert_int_eq(imc_syntax_day(0, 3, 1), -719468);
    ck_assert_int_eq(imc_syntax_day(1, 1, 1), -719162);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        day = 12345;
        ck_assert_msg(!read_ok(bad[i], &day), "'%s' accepted", bad[i]);
        ck_assert_int_eq(day, 12345);
    }
}
END_TEST

/* Text and reading agree over the whole span, ends included, and on
 * every day of the years where the text changes width; the days beyond
 * the span are refused. */
START_TEST(day_texts_round_trip)
{
    const apr_int64_t span = IMC_SYNTAX_DAY_SPAN;
    static const int widths[] = {-1000, -999, -1, 0, 1, 9999, 10000};
    apr_int64_t k, day;
    apr_size_t i;

    for (k = -span; k < span; k += 65521) {
        ck_assert_msg(text_round_trips(k), "day %ld", (long)k);
    }
    for (i = 0; i < sizeof(widths) / sizeof(widths[0]); ++i) {
        apr_int64_t first = imc_syntax_day(widths[i], 1, 1);

        for (k = first; k < first + 366; ++k) {
            ck_assert_msg(text_round_trips(k), "day %ld", (long)k);
        }
    }
    ck_assert(text_round_trips(span - 1));
    ck_assert(read_ok(text_of(span), &day));
    ck_assert_int_eq(day, span);
    ck_assert(text_round_trips(-span));
    ck_assert_str_eq(text_of(-span), "-5877641-06-23");
    ck_assert_str_eq(text_of(span), "5881580-07-12");
    ck_assert(!read_ok("5881580-07-13", &day));
    ck_assert(!read_ok("-5877641-06-22", &day));
}
END_TEST

/* ------------------------------------------------------------ UUIDs */

START_TEST(uuids_accepted)
{
    static const char *const good[] = {"0faf8b64-a33d-4db8-aaee-aa165d13cff6",
                                       "0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6",
                                       "0fAF8b64-A33d-4Db8-aAeE-Aa165D13cFf6"};
    char out[IMC_SYNTAX_UUID_LEN + 1];
    apr_size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); ++i) {
        ck_assert_int_eq(imc_syntax_uuid(good[i], 36, out), APR_SUCCESS);
        ck_assert_str_eq(out, CANON);
    }
    ck_assert_int_eq(
        imc_syntax_uuid("00000000-0000-0000-0000-000000000000", 36, out),
        APR_SUCCESS);
    ck_assert_str_eq(out, "00000000-0000-0000-0000-000000000000");
    ck_assert_int_eq(
        imc_syntax_uuid("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF", 36, out),
        APR_SUCCESS);
    ck_assert_str_eq(out, "ffffffff-ffff-ffff-ffff-ffffffffffff");
    /* Only the n bytes given count. */
    ck_assert_int_eq(
        imc_syntax_uuid("0faf8b64-a33d-4db8-aaee-aa165d13cff6}", 36, out),
        APR_SUCCESS);
    ck_assert_str_eq(out, CANON);
}
END_TEST

START_TEST(uuids_refused)
{
    static const char *const bad[] = {
        "",
        "0faf8b64a33d4db8aaeeaa165d13cff6",
        "urn:uuid:0faf8b64-a33d-4db8-aaee-aa165d13cff6",
        "{0faf8b64-a33d-4db8-aaee-aa165d13cff6}",
        "0faf8b64-a33d-4db8-aaee-aa165d13cff",
        "0faf8b64-a33d-4db8-aaee-aa165d13cff66",
        "0faf8b64-a33d-4db8-aaee-aa165d13cffg",
        "0faf8b64-a33d-4db8-aaee-aa165d13cffG",
        "0faf8b64a-33d-4db8-aaee-aa165d13cff6",
        "0faf8b64-a33d-4db8-aaee_aa165d13cff6",
        "0faf8b64-a33d-4db8-aaee-aa165d13-ff6",
        " 0faf8b64-a33d-4db8-aaee-aa165d13cff",
        "0faf8b64-a33d-4db8-aaee-aa165d13cff ",
        "+faf8b64-a33d-4db8-aaee-aa165d13cff6",
        "0faf8b64-a33d-4db8-aaee-aa165d13cf\xc3\xa6",
        "00000000-0000-0000-0000-00000000000Z"};
    char out[IMC_SYNTAX_UUID_LEN + 1];
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        ck_assert_msg(imc_syntax_uuid(bad[i], strlen(bad[i]), out) ==
                          APR_EINVAL,
                      "'%s' accepted", bad[i]);
    }
    ck_assert_int_eq(
        imc_syntax_uuid("0faf8b64-a33d-4db8-aaee-aa165d13cff\0", 36, out),
        APR_EINVAL);
    ck_assert_int_eq(imc_syntax_uuid(CANON, 35, out), APR_EINVAL);
    ck_assert_int_eq(imc_syntax_uuid(CANON, 37, out), APR_EINVAL);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("syntax");
    TCase *cal = tcase_create("calendar");
    TCase *dates = tcase_create("dates");
    TCase *uuids = tcase_create("uuids");

    tcase_add_checked_fixture(cal, imc_unit_setup, imc_unit_teardown);
    tcase_add_test(cal, leap_years);
    tcase_add_test(cal, month_ends);
    tcase_add_test(cal, floor_division);
    tcase_add_checked_fixture(dates, imc_unit_setup, imc_unit_teardown);
    tcase_set_timeout(dates, 60);
    tcase_add_test(dates, range_limits);
    tcase_add_test(dates, bad_forms);
    tcase_add_test(dates, date_fields_form_only);
    tcase_add_test(dates, dates_round_trip);
    tcase_add_test(dates, day_texts);
    tcase_add_test(dates, day_texts_round_trip);
    tcase_add_test(uuids, uuids_accepted);
    tcase_add_test(uuids, uuids_refused);
    suite_add_tcase(s, cal);
    suite_add_tcase(s, dates);
    suite_add_tcase(s, uuids);
    return s;
}
