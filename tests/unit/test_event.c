/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_event: date-times, UUIDs, member rules, the three
 * request forms, limits, errors and the exact rows.
 */
#define _DEFAULT_SOURCE /* timegm */

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <jansson.h>

#include "check_main.h"
#include "imc_event.h"

#define T_OK   "\"2026-11-28T12:00:00Z\""
#define TY_OK  "\"serve\""
#define CID    "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
#define SID    "11111111-2222-4333-8444-555555555555"
#define CID_OK "\"" CID "\""
#define SID_OK "\"" SID "\""

/* Short names keep the many cases on one line each. */
#define FJ       IMC_EVENT_JSON
#define FN       IMC_EVENT_NDJSON
#define FS       IMC_EVENT_SINGLE
#define CAT(...) apr_pstrcat(pool, __VA_ARGS__, NULL)

static apr_pool_t *pool;
static imc_event_limits limits;
static imc_event_rows rows;
static imc_event_error err;

static void setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
    limits.max_event_size = 16384;
    limits.max_events = 10000;
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

/* An event from JSON member values; a NULL value leaves the member out. */
static const char *mk(const char *time, const char *type, const char *cid,
                      const char *sid, const char *extra)
{
    const char *names[4] = {
        "\"time\":", "\"type\":", "\"correlation_id\":", "\"site_id\":"};
    const char *vals[5] = {time, type, cid, sid, extra};
    const char *out = "{";
    int k, n = 0;

    for (k = 0; k < 5; k++) {
        if (vals[k]) {
            out = CAT(out, n++ ? "," : "", k < 4 ? names[k] : "", vals[k]);
        }
    }
    return CAT(out, "}");
}

static const char *good(void)
{
    return mk(T_OK, TY_OK, CID_OK, SID_OK, NULL);
}

static apr_status_t parse(const char *body, imc_event_format_e fmt)
{
    memset(&err, 0, sizeof(err));
    rows.data = "junk";
    rows.len = 4;
    rows.count = 99;
    return imc_event_parse_request(pool, body, strlen(body), fmt, &limits,
                                   1764331200 * APR_USEC_PER_SEC, &rows, &err);
}

static void expect_err(const char *body, imc_event_format_e fmt, int status,
                       int index, const char *field)
{
    ck_assert_int_eq(parse(body, fmt), APR_EINVAL);
    ck_assert_int_eq(err.status, status);
    ck_assert_int_eq(err.index, index);
    if (field) {
        ck_assert_ptr_nonnull(err.field);
        ck_assert_str_eq(err.field, field);
    } else {
        ck_assert_ptr_null(err.field);
    }
    ck_assert_ptr_nonnull(err.message);
    ck_assert_int_gt(strlen(err.message), 10);
    ck_assert_ptr_null(rows.data);
    ck_assert_int_eq(rows.count, 0);
    ck_assert_uint_eq(rows.len, 0);
}

static void expect_ok(const char *body, imc_event_format_e fmt, int count)
{
    ck_assert_msg(parse(body, fmt) == APR_SUCCESS, "rejected: %s", err.message);
    ck_assert_int_eq(rows.count, count);
    ck_assert_uint_eq(strlen(rows.data), rows.len);
}

static apr_int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (apr_int64_t)timegm(&tm);
}

static apr_time_t time_ok(const char *s)
{
    apr_time_t t = -1;
    const char *why = NULL;

    ck_assert_msg(imc_event_parse_time(s, strlen(s), &t, &why) == APR_SUCCESS,
                  "%s rejected: %s", s, why);
    return t;
}

static void time_bad(const char *s, const char *why_part)
{
    apr_time_t t = 0;
    const char *why = NULL;

    ck_assert_msg(imc_event_parse_time(s, strlen(s), &t, &why) == APR_EINVAL,
                  "%s accepted", s);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strstr(why, why_part) != NULL, "%s: %s", s, why);
    /* the same through a whole request, as a field error */
    expect_err(mk(apr_psprintf(pool, "\"%s\"", s), TY_OK, CID_OK, SID_OK, NULL),
               FJ, 400, 0, "time");
    ck_assert_str_eq(err.message, why);
}

/* ---- time ------------------------------------------------------------ */

START_TEST(time_bounds)
{
    ck_assert_int_eq(time_ok("1970-01-01T00:00:00Z"), 0);
    ck_assert_int_eq(time_ok("2105-12-31T23:59:59Z"),
                     utc(2105, 12, 31, 23, 59, 59) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2105-12-31T23:59:59.999999999Z"),
                     utc(2105, 12, 31, 23, 59, 59) * APR_USEC_PER_SEC + 999999);
    ck_assert_int_eq(time_ok("1970-01-01T01:00:00+01:00"), 0);
    ck_assert_int_eq(time_ok("1969-12-31T23:00:00-01:00"), 0);
    ck_assert_int_eq(time_ok("2106-01-01T00:59:59+01:00"),
                     utc(2105, 12, 31, 23, 59, 59) * APR_USEC_PER_SEC);
    time_bad("1969-12-31T23:59:59Z", "between");
    time_bad("1969-12-31T23:59:59.999999Z", "between");
    time_bad("2106-01-01T00:00:00Z", "between");
    time_bad("1970-01-01T00:30:00+01:00", "between");
    time_bad("2105-12-31T23:30:00-01:00", "between");
    time_bad("0000-01-01T00:00:00Z", "");
    time_bad("9999-12-31T23:59:59Z", "between");
}
END_TEST

START_TEST(time_offsets)
{
    apr_time_t t = time_ok("2026-11-28T00:30:00+01:00");

    ck_assert_int_eq(t, time_ok("2026-11-27T23:30:00Z"));
    ck_assert_int_eq(t, utc(2026, 11, 27, 23, 30, 0) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2026-11-27T20:00:00-05:30"),
                     utc(2026, 11, 28, 1, 30, 0) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2026-12-31T23:00:00-23:59"),
                     utc(2027, 1, 1, 22, 59, 0) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2026-01-01T00:00:00+23:59"),
                     utc(2025, 12, 31, 0, 1, 0) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2026-11-28T12:00:00-00:00"),
                     time_ok("2026-11-28T12:00:00"));
    time_bad("2026-11-28T12:00:00+25:00", "offset");
    time_bad("2026-11-28T12:00:00+24:00", "offset");
    time_bad("2026-11-28T12:00:00+01:60", "offset");
    time_bad("2026-11-28T12:00:00+0100", "RFC 3339");
    time_bad("2026-11-28T12:00:00+01", "RFC 3339");
    time_bad("2026-11-28T12:00:00+01:00Z", "RFC 3339");
    time_bad("2026-11-28T12:00:00 +01:00", "RFC 3339");
    time_bad("2026-11-28T12:00:00UTC", "RFC 3339");
}
END_TEST

START_TEST(time_calendar)
{
    ck_assert_int_eq(time_ok("2024-02-29T12:00:00Z"),
                     utc(2024, 2, 29, 12, 0, 0) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2000-02-29T00:00:00Z"),
                     utc(2000, 2, 29, 0, 0, 0) * APR_USEC_PER_SEC);
    ck_assert_int_eq(time_ok("2104-02-29T00:00:00Z"),
                     utc(2104, 2, 29, 0, 0, 0) * APR_USEC_PER_SEC);
    time_bad("2023-02-29T12:00:00Z", "calendar");
    time_bad("2100-02-29T12:00:00Z", "calendar");
    time_bad("2024-02-30T12:00:00Z", "calendar");
    time_bad("2023-04-31T12:00:00Z", "calendar");
    time_bad("2023-13-01T12:00:00Z", "calendar");
    time_bad("2023-00-10T12:00:00Z", "calendar");
    time_bad("2023-01-00T12:00:00Z", "calendar");
    time_bad("2023-01-32T12:00:00Z", "calendar");
    time_bad("2026-11-28T24:00:00Z", "calendar");
    time_bad("2026-11-28T23:60:00Z", "calendar");
    time_bad("2026-11-28T23:59:60Z", "calendar");
    ck_assert_int_eq(time_ok("2023-12-31T23:59:59Z"),
                     utc(2023, 12, 31, 23, 59, 59) * APR_USEC_PER_SEC);
}
END_TEST

START_TEST(time_syntax)
{
    apr_time_t base = utc(2026, 11, 28, 12, 0, 0) * APR_USEC_PER_SEC;

    ck_assert_int_eq(time_ok("2026-11-28t12:00:00z"), base);
    ck_assert_int_eq(time_ok("2026-11-28 12:00:00"), base);
    ck_assert_int_eq(time_ok("2026-11-28T12:00:00"), base);
    ck_assert_int_eq(time_ok("2026-11-28T12:00:00.5Z"), base + 500000);
    ck_assert_int_eq(time_ok("2026-11-28T12:00:00.123456789Z"), base + 123456);
    ck_assert_int_eq(time_ok("2026-11-28T12:00:00.000001+00:00"), base + 1);
    time_bad("2026-11-28T12:00:00.1234567890Z", "RFC 3339");
    time_bad("2026-11-28T12:00:00.Z", "RFC 3339");
    time_bad("2026-11-28T12:00:00,5Z", "RFC 3339");
    time_bad("99999-01-01T00:00:00Z", "RFC 3339");
    time_bad("2026-11-28", "RFC 3339");
    time_bad("2026-11-28T12:00Z", "RFC 3339");
    time_bad("2026-1-28T12:00:00Z", "RFC 3339");
    time_bad("2026-11-28_12:00:00Z", "RFC 3339");
    time_bad("2026-11-28  12:00:00Z", "RFC 3339");
    time_bad(" 2026-11-28T12:00:00Z", "RFC 3339");
    time_bad("2026-11-28T12:00:00Z ", "RFC 3339");
    time_bad("2026-11-28T12:00:00ZZ", "RFC 3339");
    time_bad("+2026-11-28T12:00:00Z", "RFC 3339");
    time_bad("2026-11-28T1a:00:00Z", "RFC 3339");
    time_bad("", "RFC 3339");
}
END_TEST

/* Random instants, written with random offsets, against timegm(). */
START_TEST(time_oracle)
{
    unsigned int seed = 12345;
    int k;

    for (k = 0; k < 5000; k++) {
        time_t secs = (time_t)(rand_r(&seed) % 4291747200LL);
        int off = (rand_r(&seed) % (2 * 1440 - 1)) - 1439; /* minutes */
        time_t local = secs + off * 60;
        struct tm tm;
        char buf[64];

        gmtime_r(&local, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
        if (tm.tm_year + 1900 > 9999) {
            continue;
        }
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%c%02d:%02d",
                 off < 0 ? '-' : '+', abs(off) / 60, abs(off) % 60);
        ck_assert_msg(time_ok(buf) == (apr_time_t)secs * APR_USEC_PER_SEC, "%s",
                      buf);
    }
}
END_TEST

/* ---- UUID and type --------------------------------------------------- */

START_TEST(uuid_forms)
{
    char out[37];
    static const char *bad[] = {"{0faf8b64-a33d-4db8-aaee-aa165d13cff6}",
                                "0faf8b64a33d4db8aaeeaa165d13cff6",
                                "urn:uuid:0faf8b64-a33d-4db8-aaee-aa165d13cff6",
                                "0faf8b64-a33d-4db8-aaee-aa165d13cff",
                                "0faf8b64-a33d-4db8-aaee-aa165d13cff66",
                                "0faf8b64-a33d-4db8-aaee-aa165d13cffg",
                                "0faf8b64a-33d-4db8-aaee-aa165d13cff6",
                                "0faf8b64-a33d-4db8-aaee_aa165d13cff6",
                                " 0faf8b64-a33d-4db8-aaee-aa165d13cff"};
    size_t k;

    ck_assert_int_eq(imc_event_canon_uuid(CID, 36, out), APR_SUCCESS);
    ck_assert_str_eq(out, CID);
    ck_assert_int_eq(
        imc_event_canon_uuid("0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6", 36, out),
        APR_SUCCESS);
    ck_assert_str_eq(out, CID);
    ck_assert_int_eq(
        imc_event_canon_uuid("0fAF8b64-A33d-4Db8-aAeE-Aa165D13cFf6", 36, out),
        APR_SUCCESS);
    ck_assert_str_eq(out, CID);
    for (k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        ck_assert_msg(imc_event_canon_uuid(bad[k], strlen(bad[k]), out) ==
                          APR_EINVAL,
                      "%s accepted", bad[k]);
        expect_err(
            mk(T_OK, TY_OK, CID_OK, apr_psprintf(pool, "\"%s\"", bad[k]), NULL),
            FJ, 400, 0, "site_id");
        expect_err(
            mk(T_OK, TY_OK, apr_psprintf(pool, "\"%s\"", bad[k]), SID_OK, NULL),
            FJ, 400, 0, "correlation_id");
    }
}
END_TEST

START_TEST(uuid_in_row_lower)
{
    expect_ok(mk(T_OK, TY_OK, "\"0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6\"",
                 "\"11111111-2222-4333-8444-555555555555\"", NULL),
              FJ, 1);
    ck_assert_ptr_nonnull(strstr(rows.data, "\"correlation_id\":\"" CID "\""));
    /* raw keeps the original spelling */
    ck_assert_ptr_nonnull(strstr(rows.data, "0FAF8B64-A33D"));
}
END_TEST

START_TEST(type_values)
{
    static const char *bad[] = {"\"Serve\"", "\"SOLVE\"",  "\"served\"",
                                "\"\"",      "\" serve\"", "\"serve \"",
                                "\"sol\""};
    size_t k;

    expect_ok(mk(T_OK, "\"serve\"", CID_OK, SID_OK, NULL), FJ, 1);
    ck_assert_ptr_nonnull(strstr(rows.data, "\"type\":\"serve\""));
    expect_ok(mk(T_OK, "\"solve\"", CID_OK, SID_OK, NULL), FJ, 1);
    ck_assert_ptr_nonnull(strstr(rows.data, "\"type\":\"solve\""));
    expect_ok(mk(T_OK, "\"s\\u006flve\"", CID_OK, SID_OK, NULL), FJ, 1);
    ck_assert_ptr_nonnull(strstr(rows.data, "\"type\":\"solve\""));
    for (k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        expect_err(mk(T_OK, bad[k], CID_OK, SID_OK, NULL), FJ, 400, 0, "type");
    }
}
END_TEST

/* ---- members --------------------------------------------------------- */

START_TEST(members_missing_and_types)
{
    static const char *names[] = {"time", "type", "correlation_id", "site_id"};
    static const char *wrong[] = {"1", "null", "true", "{}", "[\"x\"]"};
    const char *v[4] = {T_OK, TY_OK, CID_OK, SID_OK};
    int k, w;

    for (k = 0; k < 4; k++) {
        const char *save = v[k];

        v[k] = NULL;
        expect_err(mk(v[0], v[1], v[2], v[3], NULL), FJ, 400, 0, names[k]);
        ck_assert_str_eq(err.message, CAT(names[k], " is required"));
        for (w = 0; w < 5; w++) {
            v[k] = wrong[w];
            expect_err(mk(v[0], v[1], v[2], v[3], NULL), FJ, 400, 0, names[k]);
            ck_assert_str_eq(err.message, CAT(names[k], " must be a string"));
        }
        v[k] = save;
    }
    expect_err("{}", FJ, 400, 0, "time");
}
END_TEST

START_TEST(members_unknown_kept)
{
    const char *body = mk(T_OK, TY_OK, CID_OK, SID_OK,
                          "\"ua\":\"Mozilla\",\"n\":[1,2.5,{\"k\":null}],"
                          "\"big\":123456789012345678901234567890");

    expect_ok(body, FJ, 1);
    ck_assert_ptr_nonnull(strstr(rows.data, "\\\"ua\\\":\\\"Mozilla\\\""));
    ck_assert_ptr_nonnull(strstr(rows.data, "123456789012345678901234567890"));
}
END_TEST

START_TEST(json_rejections)
{
    /* duplicate member, mandatory or not */
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"type\":\"solve\""), FJ, 400,
               0, NULL);
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":{\"b\":1,\"b\":2}"), FJ,
               400, 0, NULL);
    /* invalid UTF-8: a stray continuation byte, an overlong form, a cut */
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\x80\""), FJ, 400, 0,
               NULL);
    ck_assert_ptr_nonnull(strstr(err.message, "UTF-8"));
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\xC0\xAF\""), FJ, 400,
               0, NULL);
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\xE2\x82\""), FJ, 400,
               0, NULL);
    /* lone surrogates; a pair is fine */
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\\ud800\""), FJ, 400, 0,
               NULL);
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\\udc00x\""), FJ, 400,
               0, NULL);
    expect_ok(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\\ud83d\\ude00\""), FJ,
              1);
    /* NUL, escaped or in a key, and a raw control character */
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"\\u0000\""), FJ, 400, 0,
               NULL);
    ck_assert_ptr_nonnull(strstr(err.message, "\\u0000"));
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\\u0000\":1"), FJ, 400, 0,
               NULL);
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"a\":\"x\ty\""), FJ, 400, 0,
               NULL);
    /* raw control bytes, in strings or between tokens */
    expect_err(mk(T_OK, TY_OK, CID_OK, SID_OK, "\"n\":[1\b]"), FJ, 400, 0,
               NULL);
    ck_assert_int_eq(parse(CAT("[", good(), ",", good(), "]"), FJ),
                     APR_SUCCESS);
    {
        /* a NUL byte after a number, in the middle of a batch */
        char *b = CAT("[", good(), ",",
                      mk(T_OK, TY_OK, CID_OK, SID_OK, "\"n\":[1#]"), "]");

        *strchr(b, '#') = '\0';
        ck_assert_int_eq(imc_event_parse_request(
                             pool, b, strlen(b) + 1 + strlen(b + strlen(b) + 1),
                             FJ, &limits, 0, &rows, &err),
                         APR_EINVAL);
        ck_assert_int_eq(err.status, 400);
        ck_assert_int_eq(err.index, 1);
    }
    /* not JSON inside an otherwise balanced object */
    expect_err("{\"time\":}", FJ, 400, 0, NULL);
    expect_err("{\"a\":[}]", FJ, 400, 0, NULL);
    expect_err("{\"a\":tru}", FN, 400, 0, NULL);
}
END_TEST

START_TEST(not_objects)
{
    expect_err("1", FJ, 400, 0, NULL);
    expect_err("null", FJ, 400, 0, NULL);
    expect_err("\"x\"", FJ, 400, 0, NULL);
    expect_err("[1]", FJ, 400, 0, NULL);
    expect_err("[[{}]]", FJ, 400, 0, NULL);
    expect_err(CAT("[", good(), ",\"x\"]"), FJ, 400, 1, NULL);
    expect_err("[1]", FS, 400, 0, NULL);
    expect_err("true", FN, 400, 0, NULL);
    expect_err("", FJ, 400, 0, NULL);
    expect_err(" \r\n\t", FJ, 400, 0, NULL);
    expect_err("", FS, 400, 0, NULL);
    expect_err("[]", FJ, 400, 0, NULL);
    ck_assert_str_eq(err.message, "the request holds no events");
    expect_err(" [ \n ] ", FJ, 400, 0, NULL);
    ck_assert_str_eq(err.message, "the request holds no events");
    /* a byte order mark, in every form */
    expect_err(CAT("\xEF\xBB\xBF", good()), FJ, 400, 0, NULL);
    expect_err(CAT("\xEF\xBB\xBF", good()), FN, 400, 0, NULL);
    expect_err(CAT("\xEF\xBB\xBF", good()), FS, 400, 0, NULL);
    ck_assert_ptr_nonnull(strstr(err.message, "byte order mark"));
    expect_ok(CAT(" \n", good(), "\r\n "), FJ, 1);
}
END_TEST

/* ---- nesting and limits ---------------------------------------------- */

/* An event whose member x nests so that the deepest level is `levels`. */
static const char *nested(int levels)
{
    const char *o = "", *c = "";
    int k;

    for (k = 0; k < levels - 1; k++) {
        o = CAT(o, k % 2 ? "[" : "{\"a\":");
        c = CAT(k % 2 ? "]" : "}", c);
    }
    return mk(T_OK, TY_OK, CID_OK, SID_OK, CAT("\"x\":", o, "1", c));
}

START_TEST(nesting_limit)
{
    expect_ok(nested(32), FJ, 1);
    expect_ok(CAT("[", good(), ",", nested(32), "]"), FJ, 2);
    expect_err(nested(33), FJ, 400, 0, NULL);
    ck_assert_ptr_nonnull(strstr(err.message, "32"));
    expect_err(CAT("[", good(), ",", nested(33), "]"), FJ, 400, 1, NULL);
    expect_err(CAT(good(), "\n", nested(40)), FN, 400, 1, NULL);
    expect_err(nested(1000), FS, 400, 0, NULL);
    /* brackets inside strings do not count */
    expect_ok(mk(T_OK, TY_OK, CID_OK, SID_OK,
                 "\"x\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{\\\"\""),
              FJ, 1);
}
END_TEST

/* A good event padded (with escapes) to exactly size bytes. */
static const char *sized(apr_size_t size)
{
    const char *base = mk(T_OK, TY_OK, CID_OK, SID_OK, "\"pad\":\"\\\"\"");
    apr_size_t fill = size - strlen(base);
    char *pad = apr_palloc(pool, fill + 1);

    memset(pad, 'p', fill);
    pad[fill] = '\0';
    return mk(T_OK, TY_OK, CID_OK, SID_OK, CAT("\"pad\":\"\\\"", pad, "\""));
}

START_TEST(size_limit)
{
    limits.max_event_size = 400;
    ck_assert_uint_eq(strlen(sized(400)), 400);
    expect_ok(sized(400), FJ, 1);
    expect_ok(sized(400), FS, 1);
    expect_ok(CAT("  ", sized(400), "\r\n"), FN, 1);
    expect_err(sized(401), FJ, 413, 0, NULL);
    ck_assert_ptr_nonnull(strstr(err.message, "400"));
    expect_err(sized(401), FS, 413, 0, NULL);
    expect_err(CAT("[", good(), ",", sized(400), ",", sized(401), "]"), FJ, 413,
               2, NULL);
    expect_err(CAT(good(), "\n\n", sized(401), "\n"), FN, 413, 1, NULL);
    /* a mismatched bracket is seen at once, before the limit */
    expect_err(CAT("{\"a\":[1}", apr_psprintf(pool, "%500s", ""), "]}"), FJ,
               400, 0, NULL);
    /* an unterminated event is 413 once it passes the limit, else 400 */
    expect_err(apr_pstrndup(pool, sized(401), 399), FJ, 400, 0, NULL);
    expect_err(CAT(apr_pstrndup(pool, sized(401), 399), "pppp"), FJ, 413, 0,
               NULL);
}
END_TEST

START_TEST(event_count_limit)
{
    const char *g = good();

    limits.max_events = 3;
    expect_ok(CAT("[", g, ",", g, ",", g, "]"), FJ, 3);
    expect_err(CAT("[", g, ",", g, ",", g, ",", g, "]"), FJ, 413, 3, NULL);
    ck_assert_ptr_nonnull(strstr(err.message, "3"));
    expect_ok(CAT(g, "\n", g, "\n\n", g, "\n"), FN, 3);
    expect_err(CAT(g, "\n", g, "\n", g, "\n", g), FN, 413, 3, NULL);
}
END_TEST

/* ---- forms ----------------------------------------------------------- */

START_TEST(form_ndjson)
{
    const char *g = good();
    const char *s = mk(T_OK, "\"solve\"", CID_OK, SID_OK, NULL);

    expect_ok(CAT(g, "\r\n", s, "\r\n"), FN, 2);
    ck_assert_ptr_null(strstr(rows.data, "\\r"));
    ck_assert_ptr_nonnull(strstr(strchr(rows.data, '\n'), "\"solve\""));
    expect_ok(CAT("\n  \n\t\r\n", g, "\n\n \n", s), FN, 2);
    expect_ok(g, FN, 1);
    expect_err("\n \r\n\n", FN, 400, 0, NULL);
    ck_assert_str_eq(err.message, "the request holds no events");
    expect_err("", FN, 400, 0, NULL);
    expect_err(CAT(g, " ", g, "\n"), FN, 400, 0, NULL);
    expect_err(CAT(g, "\n", g, "x\n"), FN, 400, 1, NULL);
    expect_err(CAT("[", g, "]\n"), FN, 400, 0, NULL);
    /* an event split over two lines is two bad lines */
    expect_err("{\"time\":\n\"x\"}", FN, 400, 0, NULL);
}
END_TEST

START_TEST(form_json_array_syntax)
{
    const char *g = good();

    expect_ok(CAT(" [\n", g, " ,\t", g, "\r\n] \n"), FJ, 2);
    expect_err(CAT("[", g, "]x"), FJ, 400, 1, NULL);
    expect_err(CAT("[", g, "] []"), FJ, 400, 1, NULL);
    expect_err(CAT("[", g, ",]"), FJ, 400, 1, NULL);
    expect_err(CAT("[", g, " ", g, "]"), FJ, 400, 1, NULL);
    expect_err(CAT("[", g, ",", g), FJ, 400, 2, NULL);
    expect_err(CAT("[", g, ","), FJ, 400, 1, NULL);
    expect_err("[", FJ, 400, 0, NULL);
    expect_err(CAT("[", g, ",{\"time\":\""), FJ, 400, 1, NULL);
    expect_err(CAT("[,", g, "]"), FJ, 400, 0, NULL);
    /* concatenated objects are not a JSON request */
    expect_err(CAT(g, g), FJ, 400, 0, NULL);
    expect_err(CAT(g, "\n", g), FJ, 400, 0, NULL);
    expect_err(CAT(g, g), FS, 400, 0, NULL);
    expect_err(CAT(g, "]"), FJ, 400, 0, NULL);
    /* the single form takes no array */
    expect_err(CAT("[", g, "]"), FS, 400, 0, NULL);
    expect_ok(CAT(" \t", g, "\n"), FS, 1);
}
END_TEST

START_TEST(batch_error_index)
{
    const char *g = good();
    const char *bad_type = mk(T_OK, "\"Serve\"", CID_OK, SID_OK, NULL);
    const char *bad_sid = mk(T_OK, TY_OK, CID_OK, "\"nope\"", NULL);

    expect_err(CAT("[", g, ",", g, ",", bad_type, ",", bad_sid, "]"), FJ, 400,
               2, "type");
    expect_err(CAT("[", g, ",", bad_sid, ",", bad_type, "]"), FJ, 400, 1,
               "site_id");
    expect_err(CAT("\n", g, "\n\n\n", g, "\r\n \n", bad_sid, "\n", g), FN, 400,
               2, "site_id");
    expect_err(CAT("[", g, ",", g, ",{\"a\":1,\"a\":2}]"), FJ, 400, 2, NULL);
    expect_err(bad_type, FS, 400, 0, "type");
}
END_TEST

/* ---- rows ------------------------------------------------------------ */

START_TEST(row_exact)
{
    const char *body =
        "{\"time\":\"2026-11-28T00:30:00.75+01:00\",\"type\":\"solve\","
        "\"correlation_id\":\"0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6\","
        "\"site_id\":\"" SID "\"}";
    const char *expect = apr_psprintf(
        pool,
        "{\"time\":%" APR_INT64_T_FMT ",\"time_ms\":750,\"type\":\"solve\","
        "\"correlation_id\":\"" CID "\",\"site_id\":\"" SID "\","
        "\"received_at\":%" APR_INT64_T_FMT ",\"raw\":\"{\\\"time\\\":"
        "\\\"2026-11-28T00:30:00.75+01:00\\\",\\\"type\\\":\\\"solve\\\","
        "\\\"correlation_id\\\":\\\"0FAF8B64-A33D-4DB8-AAEE-AA165D13CFF6\\\","
        "\\\"site_id\\\":\\\"" SID "\\\"}\"}\n",
        utc(2026, 11, 27, 23, 30, 0), (apr_int64_t)1764331200);

    expect_ok(body, FJ, 1);
    ck_assert_str_eq(rows.data, expect);
    expect_ok(CAT("[", body, ",", body, "]"), FJ, 2);
    ck_assert_str_eq(rows.data, CAT(expect, expect));
    expect_ok(CAT(body, "\r\n", body), FN, 2);
    ck_assert_str_eq(rows.data, CAT(expect, expect));
}
END_TEST

/* The rows written a piece at a time are the rows of one buffer, each
 * piece whole rows, for every capacity from the longest row up. */
START_TEST(batch_rows_in_pieces)
{
    const char *big =
        mk(T_OK, TY_OK, CID_OK, SID_OK, "\"pad\":\"\\\"quoted\\\" and long\"");
    const char *body = CAT("[", good(), ",", big, ",", good(), ",", big, "]");
    imc_event_batch *b;
    apr_size_t cap, n, total;
    char *buf, *all;
    int pieces;

    expect_ok(body, FJ, 4);
    for (cap = 0; cap < 3 * rows.len; cap += 97) {
        ck_assert_int_eq(
            imc_event_parse_batch(pool, body, strlen(body), FJ, &limits,
                                  1764331200 * APR_USEC_PER_SEC, &b, &err),
            APR_SUCCESS);
        ck_assert_int_eq(imc_event_batch_count(b), 4);
        ck_assert_uint_ge(imc_event_batch_bound(b), rows.len);
        if (cap < imc_event_batch_row_max(b)) {
            cap = imc_event_batch_row_max(b);
        }
        buf = apr_palloc(pool, cap);
        all = apr_palloc(pool, rows.len + 1);
        total = 0;
        pieces = 0;
        while ((n = imc_event_batch_fill(b, buf, cap)) > 0) {
            ck_assert_uint_le(n, cap);
            ck_assert_int_eq(buf[n - 1], '\n');
            ck_assert_uint_le(total + n, rows.len);
            memcpy(all + total, buf, n);
            total += n;
            ck_assert_int_le(++pieces, 4);
        }
        all[total] = '\0';
        ck_assert_str_eq(all, rows.data);
    }
}
END_TEST

/* Decodes raw of the first row and compares it with want. */
static void raw_is(const char *want)
{
    json_error_t jerr;
    json_t *row = json_loadb(rows.data, rows.len, 0, &jerr);
    json_t *raw;

    ck_assert_msg(row != NULL, "row is not JSON: %s", jerr.text);
    raw = json_object_get(row, "raw");
    ck_assert(json_is_string(raw));
    ck_assert_uint_eq(json_string_length(raw), strlen(want));
    ck_assert_str_eq(json_string_value(raw), want);
    ck_assert_int_eq(json_object_size(row), 7);
    json_decref(row);
}

START_TEST(row_raw_escaping)
{
    const char *ev = apr_pstrcat(
        pool,
        "{\n\t\"time\" : \"2026-11-28T12:00:00Z\",\r\n \"type\":\"serve\","
        "\"correlation_id\":" CID_OK ",\"site_id\":" SID_OK ","
        "\"q\":\"a\\\"b\\\\c\\n\\u0001\",\"u\":\"\xC3\xA9\xE2\x82\xAC"
        "\xF0\x9F\x98\x80\x7F\"}",
        NULL);

    expect_ok(CAT("[", ev, "]"), FJ, 1);
    raw_is(ev);
    ck_assert_ptr_nonnull(strstr(rows.data, "\"raw\":\"{\\n\\t\\\"time\\\" :"));
    ck_assert_ptr_nonnull(strstr(rows.data, "\\r\\n \\\"type"));
    ck_assert_ptr_nonnull(strstr(rows.data, "a\\\\\\\"b\\\\\\\\c\\\\n"));
    ck_assert_ptr_nonnull(
        strstr(rows.data, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\x7F"));
    ck_assert_int_eq(rows.data[rows.len - 1], '\n');
    ck_assert_ptr_eq(strchr(rows.data, '\n'), rows.data + rows.len - 1);
}
END_TEST

START_TEST(row_of_event)
{
    imc_event ev;
    const char *row, *p;

    memset(&ev, 0, sizeof(ev));
    ck_assert_int_eq(
        imc_event_parse_one(pool, good(), strlen(good()), &ev, &err),
        APR_SUCCESS);
    ck_assert_str_eq(ev.type, "serve");
    ck_assert_str_eq(ev.site_id, SID);
    ck_assert_uint_eq(ev.raw_len, strlen(good()));
    /* controls that JSON text never holds raw still escape correctly */
    ev.raw = "a\x01\b\f\x1f\"\\z";
    ev.raw_len = strlen(ev.raw);
    row = imc_event_row(pool, &ev, -1);
    p = strstr(row, "\"raw\":\"");
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p, "\"raw\":\"a\\u0001\\b\\f\\u001f\\\"\\\\z\"}\n");
    ck_assert_ptr_nonnull(strstr(row, "\"received_at\":-1,"));
    row = imc_event_row(pool, &ev, 1999999);
    ck_assert_ptr_nonnull(strstr(row, "\"received_at\":1,"));
    ck_assert_int_eq(imc_event_parse_one(pool, "[1]", 3, &ev, &err),
                     APR_EINVAL);
    ck_assert_ptr_null(err.field);
    ck_assert_int_eq(err.status, 400);
}
END_TEST

/* time_ms: the fraction's milliseconds, truncated, whatever the zone;
 * time keeps the whole second. */
START_TEST(row_time_ms)
{
    static const struct {
        const char *time;
        int y, mo, d, h, mi, s, ms;
    } cases[] = {
        {"2026-11-28T12:00:00Z", 2026, 11, 28, 12, 0, 0, 0},
        {"2026-11-28T12:00:00.5Z", 2026, 11, 28, 12, 0, 0, 500},
        {"2026-11-28T12:00:00.05Z", 2026, 11, 28, 12, 0, 0, 50},
        {"2026-11-28T12:00:00.123Z", 2026, 11, 28, 12, 0, 0, 123},
        {"2026-11-28T12:00:00.1239Z", 2026, 11, 28, 12, 0, 0, 123},
        {"2026-11-28T12:00:00.0009Z", 2026, 11, 28, 12, 0, 0, 0},
        {"2026-11-28T23:59:59.9999Z", 2026, 11, 28, 23, 59, 59, 999},
        {"2026-11-28T12:00:00.999999999Z", 2026, 11, 28, 12, 0, 0, 999},
        {"2026-11-28T12:00:00.250+05:30", 2026, 11, 28, 6, 30, 0, 250},
        {"2026-11-28T00:00:00.7-01:00", 2026, 11, 28, 1, 0, 0, 700},
        {"2026-11-28 12:00:00.001", 2026, 11, 28, 12, 0, 0, 1},
        {"1970-01-01T00:00:00.001Z", 1970, 1, 1, 0, 0, 0, 1},
        {"2105-12-31T23:59:59.999Z", 2105, 12, 31, 23, 59, 59, 999}};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const char *body = mk(apr_psprintf(pool, "\"%s\"", cases[i].time),
                              TY_OK, CID_OK, SID_OK, NULL);
        const char *want = apr_psprintf(
            pool, "{\"time\":%" APR_INT64_T_FMT ",\"time_ms\":%d,\"type\":",
            utc(cases[i].y, cases[i].mo, cases[i].d, cases[i].h, cases[i].mi,
                cases[i].s),
            cases[i].ms);
        imc_event ev;

        expect_ok(body, FS, 1);
        ck_assert_msg(!strncmp(rows.data, want, strlen(want)), "%s: %s",
                      cases[i].time, rows.data);
        ck_assert_int_eq(
            imc_event_parse_one(pool, body, strlen(body), &ev, &err),
            APR_SUCCESS);
        ck_assert_str_eq(
            imc_event_row(pool, &ev, 1764331200 * APR_USEC_PER_SEC), rows.data);
    }
}
END_TEST

START_TEST(rows_many)
{
    int n = 500, k;
    char *body = apr_pstrdup(pool, "[");
    const char *line;

    for (k = 0; k < n; k++) {
        body = CAT(body, k ? "," : "",
                   mk(apr_psprintf(pool, "\"2026-11-28T12:%02d:%02d.%dZ\"",
                                   k / 60, k % 60, k),
                      k % 2 ? "\"solve\"" : "\"serve\"", CID_OK, SID_OK,
                      apr_psprintf(pool, "\"k\":%d", k)));
    }
    body = CAT(body, "]");
    expect_ok(body, FJ, n);
    line = rows.data;
    for (k = 0; k < n; k++) {
        const char *nl = strchr(line, '\n');
        /* ".k": k tenths, hundredths or thousandths of a second */
        int ms = k < 10 ? k * 100 : k < 100 ? k * 10 : k;
        const char *want = apr_psprintf(pool,
                                        "{\"time\":%" APR_INT64_T_FMT
                                        ",\"time_ms\":%d,\"type\":\"%s\"",
                                        utc(2026, 11, 28, 12, k / 60, k % 60),
                                        ms, k % 2 ? "solve" : "serve");

        ck_assert_ptr_nonnull(nl);
        ck_assert_int_eq(strncmp(line, want, strlen(want)), 0);
        ck_assert_ptr_nonnull(
            strstr(apr_pstrndup(pool, line, nl - line),
                   apr_psprintf(pool, "\\\"k\\\":%d}\"}", k)));
        line = nl + 1;
    }
    ck_assert_ptr_eq(line, rows.data + rows.len);
}
END_TEST

/* text/plain (sendBeacon): NDJSON only when the first line is a whole
 * object and more lines follow; everything else is read as JSON. */
START_TEST(text_format)
{
    static const struct {
        const char *body;
        imc_event_format_e fmt;
    } cases[] = {{"{\"a\":1}", IMC_EVENT_JSON},
                 {"{\"a\":1}\n", IMC_EVENT_JSON},
                 {"  {\"a\":1}\r\n\r\n  ", IMC_EVENT_JSON},
                 {"{\"a\":1}\n{\"a\":2}", IMC_EVENT_NDJSON},
                 {"\n{\"a\":1} \r\n{\"a\":2}\n", IMC_EVENT_NDJSON},
                 {"{\"a\":1}\nnot json", IMC_EVENT_NDJSON},
                 {"{\n  \"a\": 1\n}\n", IMC_EVENT_JSON},
                 {"{\"a\":\n1}", IMC_EVENT_JSON},
                 {"[{\"a\":1},\n{\"a\":2}]", IMC_EVENT_JSON},
                 {"{}\n{}", IMC_EVENT_NDJSON},
                 {"{\n{}", IMC_EVENT_JSON},
                 {"", IMC_EVENT_JSON},
                 {"garbage\nlines", IMC_EVENT_JSON}};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        ck_assert_msg(imc_event_text_format(
                          cases[i].body, strlen(cases[i].body)) == cases[i].fmt,
                      "case %u", (unsigned)i);
    }
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("imc_event");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, time_bounds);
    tcase_add_test(tc, batch_rows_in_pieces);
    tcase_add_test(tc, time_offsets);
    tcase_add_test(tc, time_calendar);
    tcase_add_test(tc, time_syntax);
    tcase_add_test(tc, time_oracle);
    tcase_add_test(tc, uuid_forms);
    tcase_add_test(tc, uuid_in_row_lower);
    tcase_add_test(tc, type_values);
    tcase_add_test(tc, members_missing_and_types);
    tcase_add_test(tc, members_unknown_kept);
    tcase_add_test(tc, json_rejections);
    tcase_add_test(tc, not_objects);
    tcase_add_test(tc, nesting_limit);
    tcase_add_test(tc, size_limit);
    tcase_add_test(tc, event_count_limit);
    tcase_add_test(tc, form_ndjson);
    tcase_add_test(tc, form_json_array_syntax);
    tcase_add_test(tc, batch_error_index);
    tcase_add_test(tc, row_exact);
    tcase_add_test(tc, row_raw_escaping);
    tcase_add_test(tc, row_of_event);
    tcase_add_test(tc, row_time_ms);
    tcase_add_test(tc, rows_many);
    tcase_add_test(tc, text_format);
    suite_add_tcase(s, tc);
    return s;
}
