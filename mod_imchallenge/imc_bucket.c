/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_bucket: calendar units of a zone, their labels and the buckets of a
 * range of dates. See imc_bucket.h.
 */

#include <stdio.h>
#include <string.h>

#include "imc_bucket.h"

#define DAY 86400

static const char *const names[] = {"minute", "hour",  "day",
                                    "week",   "month", "total"};

/* ------------------------------------------------------- calendar */

/* The first day of the unit (day, ISO week, month) holding day. */
static apr_int64_t unit_first(imc_bucket_interval iv, apr_int64_t day)
{
    int y, m, d;

    if (iv == IMC_BUCKET_WEEK) {
        return day - (((day + 3) % 7) + 7) % 7; /* 1970-01-01: Thursday */
    }
    if (iv == IMC_BUCKET_MONTH) {
        imc_syntax_date(day, &y, &m, &d);
        return day - (d - 1);
    }
    return day;
}

/* The first day of the unit after the one starting on day first. */
static apr_int64_t unit_after(imc_bucket_interval iv, apr_int64_t first)
{
    int y, m, d;

    if (iv == IMC_BUCKET_WEEK) {
        return first + 7;
    }
    if (iv == IMC_BUCKET_MONTH) {
        imc_syntax_date(first, &y, &m, &d);
        return first + imc_syntax_month_days(y, m);
    }
    return first + 1;
}

/* ------------------------------------------------------- intervals */

apr_status_t imc_bucket_interval_parse(imc_bucket_interval *iv,
                                       const char *name)
{
    int i;

    for (i = 0; i <= IMC_BUCKET_TOTAL; ++i) {
        if (!strcmp(name, names[i])) {
            *iv = (imc_bucket_interval)i;
            return APR_SUCCESS;
        }
    }
    return APR_EINVAL;
}

const char *imc_bucket_interval_name(imc_bucket_interval iv)
{
    return names[iv];
}

static apr_int64_t unit_seconds(imc_bucket_interval iv)
{
    return iv == IMC_BUCKET_MINUTE ? 60 : 3600;
}

/* The bucket holding t: its first instant *start and the next's *next. */
static void bucket_of(const imc_zone *z, imc_bucket_interval iv, apr_int64_t t,
                      apr_int64_t *start, apr_int64_t *next)
{
    apr_int64_t since, until, local, first;
    int off;

    if (iv == IMC_BUCKET_TOTAL) {
        *start = IMC_ZONE_TIME_MIN;
        *next = IMC_ZONE_TIME_MAX + 1;
    } else if (iv == IMC_BUCKET_MINUTE || iv == IMC_BUCKET_HOUR) {
        apr_int64_t u = unit_seconds(iv);

        off = imc_zone_span(z, t, &since, &until);
        if (t < since) {
            t = since; /* before the instants the zone answers for */
        } else if (t >= until) {
            t = until - 1;
        }
        local = imc_syntax_floor_div(t + off, u) * u;
        *start = local - off < since ? since : local - off;
        *next = local + u - off > until ? until : local + u - off;
    } else {
        local = imc_zone_local_reached(z, t);
        first = unit_first(iv, imc_syntax_floor_div(local, DAY));
        *start = imc_zone_local_to_utc(z, first * DAY);
        *next = imc_zone_local_to_utc(z, unit_after(iv, first) * DAY);
    }
}

apr_int64_t imc_bucket_start(const imc_zone *zone, imc_bucket_interval iv,
                             apr_int64_t t)
{
    apr_int64_t start, next;

    bucket_of(zone, iv, t, &start, &next);
    return start;
}

apr_int64_t imc_bucket_next(const imc_zone *zone, imc_bucket_interval iv,
                            apr_int64_t t)
{
    apr_int64_t start, next;

    bucket_of(zone, iv, t, &start, &next);
    return next;
}

apr_size_t imc_bucket_label(char *buf, const imc_zone *zone,
                            imc_bucket_interval iv, apr_int64_t t)
{
    apr_int64_t start, next, local, day, sec;
    int off, aoff;
    apr_size_t n;

    buf[0] = '\0';
    if (iv == IMC_BUCKET_TOTAL) {
        return 0;
    }
    if (iv != IMC_BUCKET_MINUTE && iv != IMC_BUCKET_HOUR) {
        day = imc_syntax_floor_div(imc_zone_local_reached(zone, t), DAY);
        return imc_syntax_day_text(buf, unit_first(iv, day));
    }
    bucket_of(zone, iv, t, &start, &next);
    off = imc_zone_offset(zone, start);
    local = start + off;
    day = imc_syntax_floor_div(local, DAY);
    sec = local - day * DAY;
    aoff = off < 0 ? -off : off;
    n = imc_syntax_day_text(buf, day);
    n += (apr_size_t)snprintf(buf + n, IMC_BUCKET_LABEL_SIZE - n,
                              "T%02d:%02d:00%c%02d:%02d", (int)(sec / 3600),
                              (int)(sec / 60 % 60), off < 0 ? '-' : '+',
                              aoff / 3600, aoff / 60 % 60);
    return n;
}

/* ---------------------------------------------------------- ranges */

static int range_ok(apr_int64_t from, apr_int64_t to)
{
    return from <= to && from >= -IMC_BUCKET_MAX_DAY &&
           to <= IMC_BUCKET_MAX_DAY;
}

/* The calendar units (days, weeks, months) of [from, to]. */
static apr_int64_t units_in(imc_bucket_interval iv, apr_int64_t from,
                            apr_int64_t to)
{
    int y1, m1, d1, y2, m2, d2;

    if (iv == IMC_BUCKET_WEEK) {
        return (unit_first(iv, to) - unit_first(iv, from)) / 7 + 1;
    }
    if (iv == IMC_BUCKET_MONTH) {
        imc_syntax_date(from, &y1, &m1, &d1);
        imc_syntax_date(to, &y2, &m2, &d2);
        return ((apr_int64_t)y2 - y1) * 12 + (m2 - m1) + 1;
    }
    return to - from + 1;
}

/* Minute and hour buckets of [r0, r1): each offset's span starts one, each
 * local unit boundary inside a span another. */
static apr_uint64_t count_clock(const imc_zone *z, imc_bucket_interval iv,
                                apr_int64_t r0, apr_int64_t r1,
                                apr_uint64_t cap)
{
    apr_int64_t u = unit_seconds(iv), s = r0, since, until;
    apr_uint64_t n = 0;

    while (s < r1 && n < cap) {
        int off = imc_zone_span(z, s, &since, &until);
        apr_int64_t e = until < r1 ? until : r1;

        n += (apr_uint64_t)(1 + imc_syntax_floor_div(e - 1 + off, u) -
                            imc_syntax_floor_div(s + off, u));
        s = e;
    }
    return n;
}

apr_size_t imc_bucket_count(const imc_zone *zone, imc_bucket_interval iv,
                            apr_int64_t from, apr_int64_t to, apr_size_t cap)
{
    apr_int64_t r0, r1, s;
    apr_uint64_t n = 0;

    if (!range_ok(from, to) || !cap) {
        return 0;
    }
    r0 = imc_zone_local_to_utc(zone, from * DAY);
    r1 = imc_zone_local_to_utc(zone, (to + 1) * DAY);
    if (r0 >= r1) {
        return 0;
    }
    if (iv == IMC_BUCKET_TOTAL) {
        n = 1;
    } else if (iv == IMC_BUCKET_MINUTE || iv == IMC_BUCKET_HOUR) {
        n = count_clock(zone, iv, r0, r1, cap);
    } else if (imc_zone_max_jump(zone) < DAY) {
        n = (apr_uint64_t)units_in(iv, from, to); /* no day is empty */
    } else {
        for (s = r0; s < r1 && n < cap; ++n) {
            s = imc_bucket_next(zone, iv, s);
        }
    }
    return n < cap ? (apr_size_t)n : cap;
}

apr_status_t imc_bucket_range(apr_array_header_t **buckets, apr_pool_t *p,
                              const imc_zone *zone, imc_bucket_interval iv,
                              apr_int64_t from, apr_int64_t to, apr_size_t max)
{
    apr_int64_t r0, r1, s;
    apr_size_t n;
    apr_array_header_t *a;

    *buckets = NULL;
    if (!range_ok(from, to)) {
        return APR_EINVAL;
    }
    n = imc_bucket_count(zone, iv, from, to,
                         max < (apr_size_t)-1 ? max + 1 : max);
    if (n > max || n > 0x7fffffff) {
        return APR_ENOSPC;
    }
    r0 = imc_zone_local_to_utc(zone, from * DAY);
    r1 = imc_zone_local_to_utc(zone, (to + 1) * DAY);
    a = apr_array_make(p, n ? (int)n : 1, sizeof(imc_bucket));
    for (s = r0; s < r1;) {
        imc_bucket *b = apr_array_push(a);

        b->start = s;
        imc_bucket_label(b->label, zone, iv, s);
        s = imc_bucket_next(zone, iv, s);
        b->end = s < r1 ? s : r1;
    }
    *buckets = a;
    return APR_SUCCESS;
}
