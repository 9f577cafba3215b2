/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_syntax: the calendar, day texts, dates and
 * UUIDs.
 *
 * The input is read as text and, from its first 8 bytes, as a day number.
 * As text: a date is accepted exactly when it is ten bytes, reads as a day
 * text and that day lies in the module's range, with the same day both
 * ways and its fields; a day text read back is the text of its day; a
 * UUID is accepted exactly when it has the 8-4-4-4-12 form, and its
 * canonical form is its lower case, itself canonical. As a day: its text
 * reads back as itself, its date is a valid date whose day number it is,
 * and the next day is the next date. Any violation aborts.
 */

#include <stdint.h>
#include <string.h>

#include "imc_syntax.h"
#include "fuzz_common.h"

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static void check_uuid(const char *s, size_t n)
{
    char out[IMC_SYNTAX_UUID_LEN + 1], again[IMC_SYNTAX_UUID_LEN + 1];
    int form = n == IMC_SYNTAX_UUID_LEN;
    size_t i;

    for (i = 0; form && i < n; ++i) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;

        form = dash ? s[i] == '-' : is_hex(s[i]);
    }
    must((imc_syntax_uuid(s, n, out) == APR_SUCCESS) == form);
    if (!form) {
        return;
    }
    must(out[IMC_SYNTAX_UUID_LEN] == '\0');
    for (i = 0; i < n; ++i) {
        must(out[i] == lower(s[i]));
    }
    must(imc_syntax_uuid(out, n, again) == APR_SUCCESS);
    must(!memcmp(out, again, sizeof(out)));
}

static void check_text(const char *s, size_t n)
{
    char text[IMC_SYNTAX_DAY_TEXT_SIZE];
    apr_int64_t day = 0, read = 0;
    int read_ok = imc_syntax_day_read(s, n, &read) == APR_SUCCESS;
    int date_ok = imc_syntax_date_parse(s, n, &day) == APR_SUCCESS;
    int y, m, d;

    if (read_ok) {
        must(read >= -IMC_SYNTAX_DAY_SPAN && read <= IMC_SYNTAX_DAY_SPAN);
        must(imc_syntax_day_text(text, read) == n && !memcmp(text, s, n));
    }
    must(date_ok ==
         (n == IMC_SYNTAX_DATE_LEN && read_ok && read >= IMC_SYNTAX_FIRST_DAY &&
          read <= IMC_SYNTAX_LAST_DAY));
    if (date_ok) {
        must(day == read);
        must(imc_syntax_date_fields(s, &y, &m, &d));
        must(imc_syntax_date_valid(y, m, d) && imc_syntax_day(y, m, d) == day);
    }
    if (n >= IMC_SYNTAX_DATE_LEN && imc_syntax_date_fields(s, &y, &m, &d)) {
        must(y >= 0 && y <= 9999 && m >= 0 && m <= 99 && d >= 0 && d <= 99);
        must((imc_syntax_date_parse(s, IMC_SYNTAX_DATE_LEN, &day) ==
              APR_SUCCESS) ==
             (imc_syntax_date_valid(y, m, d) && y >= 1970 && y <= 2105));
    }
}

static void check_day(apr_int64_t k)
{
    char text[IMC_SYNTAX_DAY_TEXT_SIZE];
    apr_int64_t back = 0;
    apr_size_t n = imc_syntax_day_text(text, k);
    int y, m, d, y2, m2, d2;

    must(n >= IMC_SYNTAX_DATE_LEN && n < IMC_SYNTAX_DAY_TEXT_SIZE);
    must(strlen(text) == n);
    must(imc_syntax_day_read(text, n, &back) == APR_SUCCESS && back == k);
    imc_syntax_date(k, &y, &m, &d);
    must(imc_syntax_date_valid(y, m, d) && imc_syntax_day(y, m, d) == k);
    must(imc_syntax_month_days(y, 2) == 28 + imc_syntax_leap_year(y));
    imc_syntax_date(k + 1, &y2, &m2, &d2);
    if (d < imc_syntax_month_days(y, m)) {
        must(y2 == y && m2 == m && d2 == d + 1);
    } else if (m < 12) {
        must(y2 == y && m2 == m + 1 && d2 == 1);
    } else {
        must(y2 == y + 1 && m2 == 1 && d2 == 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    apr_uint64_t u = 0;
    size_t i;

    check_uuid(s, size);
    check_text(s, size);
    for (i = 0; i < 8 && i < size; ++i) {
        u = u << 8 | data[i];
    }
    /* A day of the span but its last (whose next day is beyond it). */
    check_day((apr_int64_t)(u % (apr_uint64_t)(2 * IMC_SYNTAX_DAY_SPAN)) -
              IMC_SYNTAX_DAY_SPAN);
    return 0;
}
