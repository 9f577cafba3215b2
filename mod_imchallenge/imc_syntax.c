/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_syntax: the calendar, day texts, dates and UUIDs. See imc_syntax.h.
 */

#include <stdio.h>
#include <string.h>

#include "imc_syntax.h"

/* 0000-03-01 to 1970-01-01, in days. */
#define EPOCH_SHIFT 719468

/* Days of a 400-year era of the calendar. */
#define ERA_DAYS 146097

/* ------------------------------------------------------- calendar */

apr_int64_t imc_syntax_floor_div(apr_int64_t a, apr_int64_t b)
{
    apr_int64_t q = a / b;

    return (a % b != 0 && a < 0) ? q - 1 : q;
}

int imc_syntax_leap_year(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int imc_syntax_month_days(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};

    if (m < 1 || m > 12) {
        return 0;
    }
    return days[m - 1] + (m == 2 && imc_syntax_leap_year(y));
}

int imc_syntax_date_valid(int y, int m, int d)
{
    return d >= 1 && d <= imc_syntax_month_days(y, m);
}

/* Years starting on 1 March, so that the leap day is the last day of a
 * year: 400-year eras of ERA_DAYS days. */
apr_int64_t imc_syntax_day(int y, int m, int d)
{
    apr_int64_t yy = (apr_int64_t)y - (m <= 2);
    apr_int64_t era = imc_syntax_floor_div(yy, 400);
    apr_int64_t yoe = yy - era * 400;
    apr_int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    apr_int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * ERA_DAYS + doe - EPOCH_SHIFT;
}

void imc_syntax_date(apr_int64_t day, int *y, int *m, int *d)
{
    apr_int64_t z = day + EPOCH_SHIFT;
    apr_int64_t era = imc_syntax_floor_div(z, ERA_DAYS);
    apr_int64_t doe = z - era * ERA_DAYS;
    apr_int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    apr_int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    apr_int64_t mp = (5 * doy + 2) / 153;

    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* ------------------------------------------------------- day texts */

apr_size_t imc_syntax_day_text(char *buf, apr_int64_t day)
{
    int y, m, d, n;

    imc_syntax_date(day, &y, &m, &d);
    n = snprintf(buf, IMC_SYNTAX_DAY_TEXT_SIZE, "%04d-%02d-%02d", y, m, d);
    return n < 0 ? 0 : (apr_size_t)n;
}

/* The number of the n decimal digits at s; -1 when one is no digit. */
static int digits(const char *s, apr_size_t n)
{
    int v = 0;
    apr_size_t i;

    for (i = 0; i < n; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Read as "[-]Y...-MM-DD" and accepted only when the day's text is the
 * very same bytes: that leaves out "+", leading zeros beyond four digits,
 * "-000" and every date the calendar has not. */
apr_status_t imc_syntax_day_read(const char *s, apr_size_t n, apr_int64_t *day)
{
    char text[IMC_SYNTAX_DAY_TEXT_SIZE];
    apr_size_t neg, ylen;
    int y, m, d;
    apr_int64_t k;

    if (n < IMC_SYNTAX_DATE_LEN || n >= IMC_SYNTAX_DAY_TEXT_SIZE ||
        s[n - 6] != '-' || s[n - 3] != '-') {
        return APR_EINVAL;
    }
    neg = s[0] == '-';
    ylen = n - 6 - neg;
    y = digits(s + neg, ylen);
    m = digits(s + n - 5, 2);
    d = digits(s + n - 2, 2);
    if (y < 0 || m < 0 || d < 0) {
        return APR_EINVAL;
    }
    y = neg ? -y : y;
    if (!imc_syntax_date_valid(y, m, d)) {
        return APR_EINVAL;
    }
    k = imc_syntax_day(y, m, d);
    if (k < -IMC_SYNTAX_DAY_SPAN || k > IMC_SYNTAX_DAY_SPAN ||
        imc_syntax_day_text(text, k) != n || memcmp(text, s, n)) {
        return APR_EINVAL;
    }
    *day = k;
    return APR_SUCCESS;
}

/* ----------------------------------------------------------- dates */

int imc_syntax_date_fields(const char *s, int *y, int *m, int *d)
{
    if (s[4] != '-' || s[7] != '-') {
        return 0;
    }
    *y = digits(s, 4);
    *m = digits(s + 5, 2);
    *d = digits(s + 8, 2);
    return *y >= 0 && *m >= 0 && *d >= 0;
}

apr_status_t imc_syntax_date_parse(const char *s, apr_size_t n,
                                   apr_int64_t *day)
{
    int y, m, d;
    apr_int64_t k;

    if (n != IMC_SYNTAX_DATE_LEN || !imc_syntax_date_fields(s, &y, &m, &d) ||
        !imc_syntax_date_valid(y, m, d)) {
        return APR_EINVAL;
    }
    k = imc_syntax_day(y, m, d);
    if (k < IMC_SYNTAX_FIRST_DAY || k > IMC_SYNTAX_LAST_DAY) {
        return APR_EINVAL;
    }
    *day = k;
    return APR_SUCCESS;
}

/* ----------------------------------------------------------- UUIDs */

apr_status_t imc_syntax_uuid(const char *s, apr_size_t n, char *out)
{
    apr_size_t i;

    if (n != IMC_SYNTAX_UUID_LEN) {
        return APR_EINVAL;
    }
    for (i = 0; i < IMC_SYNTAX_UUID_LEN; ++i) {
        char c = s[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return APR_EINVAL;
            }
        } else if (c >= 'A' && c <= 'F') {
            c = (char)(c - 'A' + 'a');
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return APR_EINVAL;
        }
        out[i] = c;
    }
    out[IMC_SYNTAX_UUID_LEN] = '\0';
    return APR_SUCCESS;
}
