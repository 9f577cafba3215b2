/* Licensed under the Apache License, Version 2.0. */

/* IMChallengeCORS: origin matching and the headers of preflight and
 * actual answers (SPEC section 10). */

#include <stdlib.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "check_main.h"
#include "imc_cors.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

/* allowed list from NULL-terminated strings, made canonical as the
 * directive does. */
static apr_array_header_t *origins(const char *first, ...)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(const char *));
    const char *o;
    va_list ap;

    va_start(ap, first);
    for (o = first; o; o = va_arg(ap, const char *)) {
        const char *c = o;

        if (strcmp(o, IMC_CORS_ANY) != 0) {
            ck_assert_int_eq(imc_cors_origin_canonical(pool, o, &c),
                             APR_SUCCESS);
        }
        APR_ARRAY_PUSH(a, const char *) = c;
    }
    va_end(ap);
    return a;
}

START_TEST(canonical_good)
{
    static const char *cases[][2] = {
        {"https://www.example.com", "https://www.example.com"},
        {"HTTPS://WWW.EXAMPLE.COM", "https://www.example.com"},
        {"https://example.com:443", "https://example.com"},
        {"http://example.com:80", "http://example.com"},
        {"http://example.com:443", "http://example.com:443"},
        {"https://example.com:80", "https://example.com:80"},
        {"http://127.0.0.1:8081", "http://127.0.0.1:8081"},
        {"http://[::1]:8081", "http://[::1]:8081"},
        {"http://[2001:DB8::1]", "http://[2001:db8::1]"},
        {"chrome-extension://abcdefgh", "chrome-extension://abcdefgh"},
        {"http://my_host.local", "http://my_host.local"}};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const char *out = NULL;

        ck_assert_msg(imc_cors_origin_canonical(pool, cases[i][0], &out) ==
                          APR_SUCCESS,
                      "'%s' refused", cases[i][0]);
        ck_assert_str_eq(out, cases[i][1]);
    }
}
END_TEST

START_TEST(canonical_bad)
{
    static const char *cases[] = {"",
                                  "null",
                                  "*",
                                  "example.com",
                                  "//example.com",
                                  "https://",
                                  "https://example.com/",
                                  "https://example.com/path",
                                  "https://example.com?q",
                                  "https://user@example.com",
                                  "https://example.com:",
                                  "https://example.com:0",
                                  "https://example.com:65536",
                                  "https://example.com:123456",
                                  "https://example.com:8o",
                                  "https://exa mple.com",
                                  "https://*.example.com",
                                  "https://[::1",
                                  "https://[]",
                                  "1http://example.com",
                                  "https://example.com\r\nX: y"};
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const char *out = "untouched";

        ck_assert_msg(imc_cors_origin_canonical(pool, cases[i], &out) ==
                          APR_EINVAL,
                      "'%s' accepted", cases[i]);
        ck_assert_str_eq(out, "untouched");
    }
    ck_assert_int_eq(imc_cors_origin_canonical(pool, NULL, &cases[0]),
                     APR_EINVAL);
}
END_TEST

START_TEST(matching)
{
    apr_array_header_t *named =
        origins("https://a.example", "http://b:8080", NULL);
    apr_array_header_t *any = origins("*", "https://a.example", NULL);
    int n = -1;

    ck_assert_int_eq(imc_cors_allowed(pool, named, "https://a.example", &n), 1);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(imc_cors_allowed(pool, named, "HTTPS://A.EXAMPLE:443", &n),
                     1);
    ck_assert_int_eq(imc_cors_allowed(pool, named, "http://b:8080", &n), 1);
    ck_assert_int_eq(imc_cors_allowed(pool, named, "http://b", &n), 0);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(imc_cors_allowed(pool, named, "http://a.example", &n), 0);
    ck_assert_int_eq(
        imc_cors_allowed(pool, named, "https://a.example.evil", &n), 0);
    ck_assert_int_eq(imc_cors_allowed(pool, named, "null", &n), 0);
    ck_assert_int_eq(imc_cors_allowed(pool, named, NULL, &n), 0);
    ck_assert_int_eq(imc_cors_allowed(pool, NULL, "https://a.example", &n), 0);
    /* '*' allows any origin, but credentials only to those named. */
    ck_assert_int_eq(imc_cors_allowed(pool, any, "https://c.example", &n), 1);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(imc_cors_allowed(pool, any, "https://a.example", &n), 1);
    ck_assert_int_eq(n, 1);
    /* Even '*' does not allow what is no origin. */
    ck_assert_int_eq(imc_cors_allowed(pool, any, "null", &n), 0);
    ck_assert_int_eq(imc_cors_allowed(pool, any, "https://x/y", &n), 0);
}
END_TEST

START_TEST(preflight_detection)
{
    ck_assert(imc_cors_is_preflight("OPTIONS", "https://a", "POST"));
    ck_assert(!imc_cors_is_preflight("OPTIONS", "https://a", NULL));
    ck_assert(!imc_cors_is_preflight("OPTIONS", NULL, "POST"));
    ck_assert(!imc_cors_is_preflight("POST", "https://a", "POST"));
    ck_assert(!imc_cors_is_preflight("options", "https://a", "POST"));
}
END_TEST

START_TEST(preflight_headers)
{
    apr_array_header_t *named = origins("https://a.example", NULL);
    apr_table_t *h = apr_table_make(pool, 8);

    ck_assert_int_eq(
        imc_cors_headers(pool, named, "https://a.example", 1, "GET, POST", h),
        1);
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Allow-Origin"),
                     "https://a.example");
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Allow-Credentials"),
                     "true");
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Allow-Methods"),
                     "GET, POST");
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Allow-Headers"),
                     IMC_CORS_ALLOW_HEADERS);
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Max-Age"),
                     IMC_CORS_MAX_AGE);
    ck_assert_str_eq(apr_table_get(h, "Vary"), "Origin");
    ck_assert_ptr_null(apr_table_get(h, "Access-Control-Expose-Headers"));
}
END_TEST

START_TEST(actual_headers)
{
    apr_array_header_t *any = origins("*", NULL);
    apr_table_t *h = apr_table_make(pool, 8);

    apr_table_setn(h, "Vary", "Accept-Encoding");
    ck_assert_int_eq(
        imc_cors_headers(pool, any, "http://127.0.0.1:9", 0, "GET, HEAD", h),
        1);
    /* The origin, not '*', so a cache keyed by Vary stays right. */
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Allow-Origin"),
                     "http://127.0.0.1:9");
    ck_assert_ptr_null(apr_table_get(h, "Access-Control-Allow-Credentials"));
    ck_assert_ptr_null(apr_table_get(h, "Access-Control-Allow-Methods"));
    ck_assert_ptr_null(apr_table_get(h, "Access-Control-Max-Age"));
    ck_assert_str_eq(apr_table_get(h, "Access-Control-Expose-Headers"),
                     "Retry-After");
    ck_assert_str_eq(apr_table_get(h, "Vary"), "Accept-Encoding, Origin");
    /* Called twice (header parser, then preflight): one Vary: Origin. */
    imc_cors_headers(pool, any, "http://127.0.0.1:9", 0, "GET, HEAD", h);
    ck_assert_str_eq(apr_table_get(h, "Vary"), "Accept-Encoding, Origin");
}
END_TEST

/* Other origins get no CORS headers, only Vary: Origin; with CORS off,
 * nothing at all. */
START_TEST(refused_and_off)
{
    apr_array_header_t *named = origins("https://a.example", NULL);
    apr_array_header_t *empty = apr_array_make(pool, 1, sizeof(char *));
    apr_table_t *h = apr_table_make(pool, 8);

    ck_assert_int_eq(
        imc_cors_headers(pool, named, "https://b.example", 1, "GET, POST", h),
        0);
    ck_assert_int_eq(apr_table_elts(h)->nelts, 1);
    ck_assert_str_eq(apr_table_get(h, "Vary"), "Origin");
    apr_table_clear(h);
    ck_assert_int_eq(imc_cors_headers(pool, named, NULL, 0, "GET, POST", h), 0);
    ck_assert_int_eq(apr_table_elts(h)->nelts, 1);
    apr_table_clear(h);
    ck_assert_int_eq(
        imc_cors_headers(pool, NULL, "https://a.example", 1, "GET, POST", h),
        0);
    ck_assert_int_eq(
        imc_cors_headers(pool, empty, "https://a.example", 1, "GET, POST", h),
        0);
    ck_assert_int_eq(apr_table_elts(h)->nelts, 0);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("cors");
    TCase *tc = tcase_create("cors");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, canonical_good);
    tcase_add_test(tc, canonical_bad);
    tcase_add_test(tc, matching);
    tcase_add_test(tc, preflight_detection);
    tcase_add_test(tc, preflight_headers);
    tcase_add_test(tc, actual_headers);
    tcase_add_test(tc, refused_and_off);
    suite_add_tcase(s, tc);
    return s;
}
