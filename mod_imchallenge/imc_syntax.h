/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_syntax: the module's one calendar and its one UUID form. APR only,
 * no httpd headers; no state, every function is thread-safe.
 *
 * The calendar is the proleptic Gregorian one. Day numbers count days
 * since 1970-01-01 (day 0, ClickHouse's Date; negative before), for any
 * day within +-IMC_SYNTAX_DAY_SPAN. Years are astronomical (year 0 is
 * 1 BC).
 *
 * Text forms:
 *
 * - a day's text (imc_syntax_day_text, imc_syntax_day_read) is
 *   printf's "%04d-%02d-%02d" of its year, month and day: "2026-11-28",
 *   also "-001-12-31" and "10000-01-01" for years outside 0..9999. A
 *   text is read back only in exactly that form.
 * - a date (imc_syntax_date_parse) is what users write: exactly
 *   YYYY-MM-DD (ten bytes, digits and two '-'), a real calendar date from
 *   IMC_SYNTAX_FIRST_DAY to IMC_SYNTAX_LAST_DAY (1970-01-01 to
 *   2105-12-31: the days an event may carry, the filter's day literals
 *   and the report's from / to). Such a date is its day's text.
 * - a UUID (imc_syntax_uuid) is 8-4-4-4-12 hexadecimal digits in any
 *   case, 36 bytes, nothing around them; its canonical form is the same
 *   in lower case.
 */

#ifndef IMC_SYNTAX_H
#define IMC_SYNTAX_H

#include <apr.h>
#include <apr_errno.h>

/* The dates the module accepts: 1970-01-01 to 2105-12-31. */
#define IMC_SYNTAX_FIRST_DAY 0
#define IMC_SYNTAX_LAST_DAY  49672

/* The day numbers the calendar takes (every int): about +-5.8 million
 * years. */
#define IMC_SYNTAX_DAY_SPAN (APR_INT64_C(1) << 31)

/* The size of a day's text with its NUL ("-5877641-06-23" is 14 bytes). */
#define IMC_SYNTAX_DAY_TEXT_SIZE 16

/* The length of a date YYYY-MM-DD. */
#define IMC_SYNTAX_DATE_LEN 10

/* The length of a UUID; its canonical form takes one byte more (NUL). */
#define IMC_SYNTAX_UUID_LEN 36

/* a / b rounded toward minus infinity (b > 0). */
apr_int64_t imc_syntax_floor_div(apr_int64_t a, apr_int64_t b);

/* Whether year y has a 29 February. */
int imc_syntax_leap_year(int y);

/* The number of days of month m (1..12) of year y; 0 for another m. */
int imc_syntax_month_days(int y, int m);

/* Whether y-m-d is a day of the calendar: m 1..12, d 1 to the month's
 * last (any year). */
int imc_syntax_date_valid(int y, int m, int d);

/* The day number of the date y-m-d (a valid date, not checked). */
apr_int64_t imc_syntax_day(int y, int m, int d);

/* The date of day number day (within +-IMC_SYNTAX_DAY_SPAN). */
void imc_syntax_date(apr_int64_t day, int *y, int *m, int *d);

/* The text of day number day (within +-IMC_SYNTAX_DAY_SPAN) into buf (of
 * IMC_SYNTAX_DAY_TEXT_SIZE bytes, NUL-terminated); its length. */
apr_size_t imc_syntax_day_text(char *buf, apr_int64_t day);

/* The day number whose text (imc_syntax_day_text) is s[0..n) into *day;
 * APR_EINVAL, *day untouched, for any other bytes. */
apr_status_t imc_syntax_day_read(const char *s, apr_size_t n, apr_int64_t *day);

/* Whether s[0..10) has the form of a date, DDDD-DD-DD with decimal
 * digits D, and its numbers into *y, *m, *d: the form only, not whether
 * it is a real date (imc_syntax_date_valid). s holds at least 10 bytes. */
int imc_syntax_date_fields(const char *s, int *y, int *m, int *d);

/* The day number of the date s[0..n) (the strict YYYY-MM-DD above, from
 * 1970-01-01 to 2105-12-31) into *day; APR_EINVAL, *day untouched, when
 * s[0..n) is no such date. */
apr_status_t imc_syntax_date_parse(const char *s, apr_size_t n,
                                   apr_int64_t *day);

/* The canonical (lower-case) form of the UUID s[0..n) into out (of
 * IMC_SYNTAX_UUID_LEN + 1 bytes, NUL-terminated); APR_EINVAL when s[0..n)
 * is no UUID (out then holds no valid text). */
apr_status_t imc_syntax_uuid(const char *s, apr_size_t n, char *out);

#endif /* IMC_SYNTAX_H */
