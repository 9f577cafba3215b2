/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_zone: zone names, TZif files and footer rules, checked
 * against the C library (TZ and localtime_r read the same zone database)
 * at thousands of random instants from 1970 to 2105 in many zones, and the
 * first instant of a local time in gaps and folds.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "check_main.h"
#include "imc_zone.h"

#define DAY  86400
#define T0   ((apr_int64_t)0)          /* 1970-01-01 */
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
                                    "Antarctica/Troll",
                                    "Europe/Dublin",
                                    "Asia/Tehran",
                                    "America/Santiago",
                                    "Pacific/Kwajalein",
                                    "Africa/Monrovia",
                                    "Asia/Gaza",
                                    "Europe/Moscow",
                                    NULL};

/* ---------------------------------------------------------- helpers */

static apr_uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static apr_uint64_t rnd(void)
{
    return imc_unit_random(&rnd_state);
}

static apr_int64_t rnd_time(void)
{
    return T0 + (apr_int64_t)(rnd() % (apr_uint64_t)(TEND - T0));
}

static void use_tz(const char *name)
{
    setenv("TZ", name, 1);
    tzset();
}

/* The C library's offset at t in the zone of TZ. */
static long libc_offset(apr_int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    ck_assert_ptr_nonnull(localtime_r(&tt, &tm));
    return tm.tm_gmtoff;
}

static imc_zone *load(const char *name)
{
    imc_zone *z = NULL;

    ck_assert_msg(imc_zone_load(&z, imc_unit_pool, name) == APR_SUCCESS, "%s",
                  name);
    ck_assert_str_eq(imc_zone_name(z), name);
    return z;
}

static void put32(unsigned char *b, apr_uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* A TZif version 2 file: offset off0 before the n transitions at[i] to
 * off[i], then the footer rule footer (its version 1 part has no
 * transitions, as zic -b slim writes it). */
static unsigned char *tzif_make(int off0, const apr_int64_t *at, const int *off,
                                int n, const char *footer, apr_size_t *len)
{
    apr_size_t fl = strlen(footer), size = 2 * 44 + 10 + 13 * n + 6 * (n + 1);
    unsigned char *d = apr_pcalloc(imc_unit_pool, size + 4 + fl + 2), *b;
    int i;

    memcpy(d, "TZif2", 5);
    d[39] = 1; /* typecnt */
    d[43] = 4; /* charcnt */
    put32(d + 44, (apr_uint32_t)off0);
    memcpy(d + 50, "ABC", 4);
    b = d + 54;
    memcpy(b, "TZif2", 5);
    put32(b + 32, (apr_uint32_t)n);
    put32(b + 36, (apr_uint32_t)n + 1);
    put32(b + 40, 4);
    b += 44;
    for (i = 0; i < n; ++i) {
        put32(b + 8 * i, (apr_uint32_t)((apr_uint64_t)at[i] >> 32));
        put32(b + 8 * i + 4, (apr_uint32_t)at[i]);
        b[8 * n + i] = (unsigned char)(i + 1);
    }
    b += 9 * n;
    for (i = 0; i <= n; ++i) {
        put32(b + 6 * i, (apr_uint32_t)(i ? off[i - 1] : off0));
    }
    b += 6 * (n + 1);
    memcpy(b, "ABC", 4);
    b += 4;
    *b++ = '\n';
    memcpy(b, footer, fl);
    b += fl;
    *b++ = '\n';
    *len = (apr_size_t)(b - d);
    return d;
}

/* A TZif file of one offset off and the footer rule footer. */
static unsigned char *tzif_rule(int off, const char *footer, apr_size_t *len)
{
    return tzif_make(off, NULL, NULL, 0, footer, len);
}

static unsigned char *read_zone_file(const char *name, apr_size_t *len)
{
    apr_file_t *f;
    apr_finfo_t fi;
    unsigned char *buf;
    const char *path = apr_pstrcat(imc_unit_pool, IMC_ZONE_DIR, name, NULL);

    ck_assert_int_eq(apr_stat(&fi, path, APR_FINFO_SIZE, imc_unit_pool),
                     APR_SUCCESS);
    ck_assert_int_eq(apr_file_open(&f, path, APR_FOPEN_READ,
                                   APR_FPROT_OS_DEFAULT, imc_unit_pool),
                     APR_SUCCESS);
    buf = apr_palloc(imc_unit_pool, (apr_size_t)fi.size);
    ck_assert_int_eq(apr_file_read_full(f, buf, (apr_size_t)fi.size, len),
                     APR_SUCCESS);
    apr_file_close(f);
    return buf;
}

/* imc_zone_local_to_utc(local) is the first instant whose local time
 * (as the C library tells it) is >= local. */
static void check_first_instant(const imc_zone *z, apr_int64_t local)
{
    apr_int64_t t = imc_zone_local_to_utc(z, local);

    ck_assert_msg(t + libc_offset(t) >= local, "%s at %lld", imc_zone_name(z),
                  (long long)local);
    ck_assert_msg(t - 1 + libc_offset(t - 1) < local, "%s at %lld",
                  imc_zone_name(z), (long long)local);
    ck_assert_int_ge(imc_zone_local_reached(z, t), local);
    ck_assert_int_lt(imc_zone_local_reached(z, t - 1), local);
}

/* ------------------------------------------------------------ names */

START_TEST(names_are_checked)
{
    imc_zone *z;

    ck_assert(imc_zone_valid_name("Europe/Berlin"));
    ck_assert(imc_zone_valid_name("Etc/GMT+5"));
    ck_assert(imc_zone_valid_name("America/Port-au-Prince"));
    ck_assert(!imc_zone_valid_name(""));
    ck_assert(!imc_zone_valid_name("/etc/localtime"));
    ck_assert(!imc_zone_valid_name("../zoneinfo/UTC"));
    ck_assert(!imc_zone_valid_name("Europe/../UTC"));
    ck_assert(!imc_zone_valid_name("right/Europe/Berlin"));
    ck_assert(!imc_zone_valid_name("Europe/Berlin'"));
    ck_assert(!imc_zone_valid_name("Europe Berlin"));
    ck_assert(!imc_zone_valid_name(
        "Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    ck_assert_int_eq(imc_zone_load(&z, imc_unit_pool, "right/UTC"), APR_EINVAL);
    ck_assert_ptr_null(z);
    ck_assert_int_eq(imc_zone_load(&z, imc_unit_pool, "Nowhere/Zone"),
                     APR_ENOENT);
    ck_assert_int_eq(imc_zone_load(&z, imc_unit_pool, "leapseconds"),
                     APR_EINVAL);
    ck_assert_int_eq(imc_zone_load(&z, imc_unit_pool, "tzdata.zi"), APR_EINVAL);
    ck_assert_int_eq(imc_zone_load(&z, imc_unit_pool, "Europe"), APR_EINVAL);
}
END_TEST

START_TEST(utc_needs_no_file)
{
    imc_zone *z = load("UTC");

    ck_assert_int_eq(imc_zone_offset(z, 0), 0);
    ck_assert_int_eq(imc_zone_offset(z, TEND), 0);
    ck_assert_int_eq(imc_zone_local_to_utc(z, 12345), 12345);
    ck_assert_int_eq(imc_zone_max_jump(z), 0);
}
END_TEST

/* ---------------------------------------------------- against libc */

START_TEST(offsets_agree_with_the_c_library)
{
    int i, k;

    for (i = 0; zones[i]; ++i) {
        imc_zone *z = load(zones[i]);

        use_tz(zones[i]);
        for (k = 0; k < 4000; ++k) {
            apr_int64_t t = rnd_time();

            ck_assert_msg(imc_zone_offset(z, t) == libc_offset(t),
                          "%s at %lld: %d, C library %ld", zones[i],
                          (long long)t, imc_zone_offset(z, t), libc_offset(t));
        }
    }
}
END_TEST

/* Every zone of zone1970.tab, fewer instants each. */
START_TEST(every_zone_agrees_with_the_c_library)
{
    FILE *tab = fopen(IMC_ZONE_DIR "zone1970.tab", "r");
    char line[512];
    int zones_seen = 0, k;

    ck_assert_ptr_nonnull(tab);
    while (fgets(line, sizeof(line), tab)) {
        char *f1, *f2, *name, *save = NULL;
        imc_zone *z;

        if (line[0] == '#') {
            continue;
        }
        f1 = strtok_r(line, "\t\n", &save);
        f2 = strtok_r(NULL, "\t\n", &save);
        name = strtok_r(NULL, "\t\n", &save);
        ck_assert(f1 && f2 && name);
        z = load(name);
        use_tz(name);
        for (k = 0; k < 300; ++k) {
            apr_int64_t t = rnd_time();

            ck_assert_msg(imc_zone_offset(z, t) == libc_offset(t), "%s at %lld",
                          name, (long long)t);
        }
        ++zones_seen;
    }
    fclose(tab);
    ck_assert_int_gt(zones_seen, 300);
}
END_TEST

/* Spans: the offset holds from since to until, and changes at both. */
START_TEST(spans_end_where_the_offset_changes)
{
    int i, k;

    for (i = 0; zones[i]; ++i) {
        imc_zone *z = load(zones[i]);

        use_tz(zones[i]);
        for (k = 0; k < 500; ++k) {
            apr_int64_t t = rnd_time(), since, until;
            int off = imc_zone_span(z, t, &since, &until);

            ck_assert(since <= t && t < until);
            ck_assert_int_eq(off, imc_zone_offset(z, since));
            ck_assert_int_eq(off, imc_zone_offset(z, until - 1));
            if (since > T0) {
                ck_assert_int_eq(off, libc_offset(since));
                ck_assert_int_ne(off, libc_offset(since - 1));
            }
            if (until < TEND) {
                ck_assert_int_ne(off, libc_offset(until));
            }
        }
    }
}
END_TEST

START_TEST(first_instants_of_random_local_times)
{
    int i, k;

    for (i = 0; zones[i]; ++i) {
        imc_zone *z = load(zones[i]);

        use_tz(zones[i]);
        for (k = 0; k < 2000; ++k) {
            apr_int64_t local = rnd_time();

            /* local midnights, hours and minutes, as buckets ask */
            local -= local % (k % 3 == 0 ? DAY : k % 3 == 1 ? 3600 : 60);
            check_first_instant(z, local);
        }
    }
}
END_TEST

/* ------------------------------------------------- gaps and folds */

START_TEST(gaps_start_at_the_jump)
{
    imc_zone *z = load("Europe/Berlin");
    /* 2024-03-31 02:00 CET becomes 03:00 CEST at 01:00Z */
    apr_int64_t jump = 1711846800;

    use_tz("Europe/Berlin");
    ck_assert_int_eq(imc_zone_local_to_utc(z, jump + 3600), jump);
    ck_assert_int_eq(imc_zone_local_to_utc(z, jump + 3600 + 1800), jump);
    ck_assert_int_eq(imc_zone_local_to_utc(z, jump + 7200), jump);
    ck_assert_int_eq(imc_zone_local_to_utc(z, jump + 7200 + 60), jump + 60);
    ck_assert_int_eq(imc_zone_local_to_utc(z, jump + 3599), jump - 1);
    check_first_instant(z, jump + 3600);

    /* Pacific/Apia: 2011-12-29 24:00 -10 was 2011-12-31 00:00 +14 */
    z = load("Pacific/Apia");
    jump = 1325239200;
    ck_assert_int_eq(imc_zone_offset(z, jump - 1), -10 * 3600);
    ck_assert_int_eq(imc_zone_offset(z, jump), 14 * 3600);
    ck_assert_int_eq(imc_zone_local_to_utc(z, 15338 * (apr_int64_t)DAY),
                     jump); /* 2011-12-30 */
    ck_assert_int_eq(imc_zone_local_to_utc(z, 15339 * (apr_int64_t)DAY),
                     jump); /* 2011-12-31 */
    ck_assert_int_eq(imc_zone_max_jump(z), DAY);
}
END_TEST

START_TEST(folds_start_at_the_first_of_the_instants)
{
    imc_zone *z = load("Europe/Berlin");
    /* 2024-10-27 03:00 CEST becomes 02:00 CET at 01:00Z */
    apr_int64_t back = 1729990800;

    ck_assert_int_eq(imc_zone_offset(z, back - 1), 7200);
    ck_assert_int_eq(imc_zone_offset(z, back), 3600);
    /* 02:00 and 02:30 local: the CEST ones */
    ck_assert_int_eq(imc_zone_local_to_utc(z, back + 7200 - 3600), back - 3600);
    ck_assert_int_eq(imc_zone_local_to_utc(z, back + 7200 - 1800), back - 1800);
    /* 03:00 local: after the repeated hour */
    ck_assert_int_eq(imc_zone_local_to_utc(z, back + 7200), back + 3600);
    /* in the repeated hour, the latest local time shown is 02:59:59 */
    ck_assert_int_eq(imc_zone_local_reached(z, back + 600), back + 7200 - 1);
    ck_assert_int_eq(imc_zone_local_reached(z, back + 3600), back + 7200);
}
END_TEST

/* A fold that outlasts the offset after it: +3h, then 0 for an hour (its
 * local times were all shown before), then +1h. The first instant of a
 * local time and the latest local time shown look back past that hour. */
START_TEST(a_fold_can_outlast_the_next_offset)
{
    static const apr_int64_t at[] = {1000000, 1003600};
    static const int off[] = {0, 3600};
    apr_int64_t t1 = at[0];
    apr_size_t len;
    unsigned char *d = tzif_make(10800, at, off, 2, "", &len);
    imc_zone *z;

    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "F", d, len),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_zone_offset(z, t1 - 1), 10800);
    ck_assert_int_eq(imc_zone_offset(z, t1), 0);
    ck_assert_int_eq(imc_zone_offset(z, t1 + 3600), 3600);
    ck_assert_int_eq(imc_zone_local_to_utc(z, t1 + 9000), t1 - 1800);
    ck_assert_int_eq(imc_zone_local_to_utc(z, t1 + 10800), t1 + 7200);
    ck_assert_int_eq(imc_zone_local_reached(z, t1 + 3700), t1 + 10799);
    ck_assert_int_eq(imc_zone_local_reached(z, t1 + 7300), t1 + 10900);
    ck_assert_int_eq(imc_zone_max_jump(z), 3600);
}
END_TEST

/* ---------------------------------------------------- footer rules */

/* RFC 8536 3.3.1: "EST5EDT,0/0,J365/25" is DST all year. The C library
 * gives standard time in the first five hours of each UTC year (it takes
 * the year of the instant in UTC); the zone answers DST throughout. */
START_TEST(permanent_dst_is_dst_all_year)
{
    apr_size_t len;
    unsigned char *d = tzif_rule(0, "EST5EDT,0/0,J365/25", &len);
    imc_zone *z;
    int k;

    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "X", d, len),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_zone_offset(z, 157775316), -4 * 3600);
    for (k = 0; k < 3000; ++k) {
        apr_int64_t t = rnd_time();

        ck_assert_int_eq(imc_zone_offset(z, t), -4 * 3600);
    }
}
END_TEST

/* Rules the C library reads from TZ as they are: each agrees with it from
 * 1970 to 2105 (a file without transitions is all footer). */
START_TEST(footer_rules_agree_with_the_c_library)
{
    static const char *const rules[] = {
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "EST5EDT,M3.2.0,M11.1.0",
        "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
        "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
        "NST3:30NDT,M3.2.0,M11.1.0",
        "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",
        "AAA3BBB,J60/2,J300/1:30:15",
        "AAA-1BBB-3,59/0,300/0",
        "<-0230>2:30",
        "<+0545>-5:45",
        "IST-2IDT,M3.4.4/26,M10.5.0",
        "<+14>-14",
        "<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
        NULL};
    int i, k;

    for (i = 0; rules[i]; ++i) {
        apr_size_t len;
        unsigned char *d = tzif_rule(0, rules[i], &len);
        imc_zone *z;

        ck_assert_msg(imc_zone_parse(&z, imc_unit_pool, "X", d, len) ==
                          APR_SUCCESS,
                      "%s", rules[i]);
        use_tz(rules[i]);
        for (k = 0; k < 3000; ++k) {
            apr_int64_t t = rnd_time();

            ck_assert_msg(imc_zone_offset(z, t) == libc_offset(t),
                          "%s at %lld: %d, C library %ld", rules[i],
                          (long long)t, imc_zone_offset(z, t), libc_offset(t));
        }
    }
}
END_TEST

START_TEST(bad_footer_rules_are_refused)
{
    static const char *const bad[] = {"",
                                      "C",
                                      "CE-1",
                                      "<+1>-1",
                                      "CET",
                                      "CET-1CEST",
                                      "CET-1CEST,M3.5.0",
                                      "CET-1CEST,M13.5.0,M10.5.0",
                                      "CET-1CEST,M3.6.0,M10.5.0",
                                      "CET-1CEST,M3.5.7,M10.5.0",
                                      "CET-1CEST,J0,J10",
                                      "CET-1CEST,366,1",
                                      "CET-25",
                                      "CET-1:60",
                                      "CET-1CEST,M3.5.0/168,M10.5.0",
                                      "CET-1 ",
                                      "<+01-1",
                                      "CET-1CEST,,",
                                      NULL};
    int i;

    for (i = 0; bad[i]; ++i) {
        apr_size_t len;
        unsigned char *d = tzif_rule(0, bad[i], &len);
        imc_zone *z;

        if (!bad[i][0]) {
            continue; /* an empty footer is no rule, and valid */
        }
        ck_assert_msg(imc_zone_parse(&z, imc_unit_pool, "X", d, len) ==
                          APR_EINVAL,
                      "%s", bad[i]);
    }
}
END_TEST

/* ------------------------------------------------------- TZif files */

START_TEST(truncated_files_are_refused)
{
    apr_size_t len, n;
    unsigned char *d = read_zone_file("Europe/Berlin", &len);
    imc_zone *z;

    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "B", d, len),
                     APR_SUCCESS);
    for (n = 0; n < len; ++n) {
        ck_assert_msg(imc_zone_parse(&z, imc_unit_pool, "B", d, n) ==
                          APR_EINVAL,
                      "%zu of %zu bytes", n, len);
    }
}
END_TEST

START_TEST(leap_seconds_and_bad_fields_are_refused)
{
    apr_size_t len;
    unsigned char *d = read_zone_file("right/UTC", &len);
    imc_zone *z;

    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "R", d, len),
                     APR_EINVAL);

    d = tzif_rule(0, "UTC0", &len);
    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "U", d, len),
                     APR_SUCCESS);
    d[4] = '3';
    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "U", d, len),
                     APR_SUCCESS);
    d = tzif_rule(27 * 3600, "UTC0", &len); /* offset out of range */
    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "U", d, len),
                     APR_EINVAL);
    d = tzif_rule(0, "UTC0", &len);
    d[0] = 'X';
    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "U", d, len),
                     APR_EINVAL);
    d = tzif_rule(0, "UTC0", &len);
    d[len - 1] = 'x'; /* footer without its end */
    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "U", d, len),
                     APR_EINVAL);
}
END_TEST

/* A version 1 file (no 64-bit section, no footer) is read too. */
START_TEST(version_one_files_are_read)
{
    apr_size_t len;
    unsigned char *d = read_zone_file("America/New_York", &len);
    imc_zone *z;
    int k;

    d[4] = '\0';
    ck_assert_int_eq(imc_zone_parse(&z, imc_unit_pool, "V1", d, len),
                     APR_SUCCESS);
    use_tz("America/New_York");
    for (k = 0; k < 2000; ++k) {
        apr_int64_t t = T0 + (apr_int64_t)(rnd() % 2147483647);

        ck_assert_int_eq(imc_zone_offset(z, t), libc_offset(t));
    }
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("zone");
    TCase *names = tcase_create("names");
    TCase *libc = tcase_create("libc");
    TCase *edges = tcase_create("edges");
    TCase *files = tcase_create("files");

    tcase_add_checked_fixture(names, imc_unit_setup, imc_unit_teardown);
    tcase_add_checked_fixture(libc, imc_unit_setup, imc_unit_teardown);
    tcase_add_checked_fixture(edges, imc_unit_setup, imc_unit_teardown);
    tcase_add_checked_fixture(files, imc_unit_setup, imc_unit_teardown);
    tcase_set_timeout(libc, 120);
    tcase_add_test(names, names_are_checked);
    tcase_add_test(names, utc_needs_no_file);
    tcase_add_test(libc, offsets_agree_with_the_c_library);
    tcase_add_test(libc, every_zone_agrees_with_the_c_library);
    tcase_add_test(libc, spans_end_where_the_offset_changes);
    tcase_add_test(libc, first_instants_of_random_local_times);
    tcase_add_test(libc, footer_rules_agree_with_the_c_library);
    tcase_add_test(edges, a_fold_can_outlast_the_next_offset);
    tcase_add_test(edges, permanent_dst_is_dst_all_year);
    tcase_add_test(edges, gaps_start_at_the_jump);
    tcase_add_test(edges, folds_start_at_the_first_of_the_instants);
    tcase_add_test(files, bad_footer_rules_are_refused);
    tcase_add_test(files, truncated_files_are_refused);
    tcase_add_test(files, leap_seconds_and_bad_fields_are_refused);
    tcase_add_test(files, version_one_files_are_read);
    suite_add_tcase(s, names);
    suite_add_tcase(s, libc);
    suite_add_tcase(s, edges);
    suite_add_tcase(s, files);
    return s;
}
