/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_zone: TZif files and their POSIX TZ footer rules, as a sorted table
 * of offsets. See imc_zone.h.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "imc_syntax.h"
#include "imc_zone.h"

#define DAY      86400
#define TIME_END (IMC_ZONE_TIME_MAX + 1)

struct imc_zone {
    const char *name;
    int n;              /* offsets, at least 1 */
    apr_int64_t *at;    /* at[i]: first instant of offset i, ascending */
    int *off;           /* off[i] != off[i - 1] */
    apr_int64_t *reach; /* reach[i]: latest local time of offsets 0..i */
    apr_int64_t max_jump;
};

/* A transition while building: from instant at, the offset off. */
typedef struct {
    apr_int64_t at;
    int off;
    int seq; /* order of making, for a stable sort */
} trans;

/* A date of a footer rule: Jn, n or Mm.w.d, and the local time of day. */
typedef struct {
    char kind; /* 'J', 'N' or 'M' */
    int m, w, d;
    apr_int64_t time;
} rule_date;

/* A footer rule: the offsets (seconds east) and, with DST, its dates. */
typedef struct {
    int std, dst, has_dst;
    rule_date start, end;
} posix_tz;

/* ------------------------------------------------------------ names */

int imc_zone_valid_name(const char *name)
{
    const char *c;

    if (!*name || strlen(name) > IMC_ZONE_MAX_NAME || name[0] == '/' ||
        strstr(name, "..") || !strncmp(name, "right/", 6)) {
        return 0;
    }
    for (c = name; *c; ++c) {
        if (!apr_isalnum(*c) && !strchr("/_+-", *c)) {
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------- footer rule */

/* An unsigned number of 1 to digits digits at s[*i], at most max. */
static int rule_number(const char *s, apr_size_t n, apr_size_t *i, int digits,
                       int max, int *out)
{
    int v = 0, k = 0;

    while (*i < n && apr_isdigit(s[*i]) && k < digits) {
        v = v * 10 + (s[(*i)++] - '0');
        k++;
    }
    *out = v;
    return k > 0 && v <= max;
}

/* [+-]hh[:mm[:ss]] with hours up to max_hours; seconds into *out. */
static int rule_clock(const char *s, apr_size_t n, apr_size_t *i, int max_hours,
                      apr_int64_t *out)
{
    int sign = 1, h, m = 0, sec = 0;

    if (*i < n && (s[*i] == '+' || s[*i] == '-')) {
        sign = s[(*i)++] == '-' ? -1 : 1;
    }
    if (!rule_number(s, n, i, 3, max_hours, &h)) {
        return 0;
    }
    if (*i < n && s[*i] == ':') {
        ++*i;
        if (!rule_number(s, n, i, 2, 59, &m)) {
            return 0;
        }
        if (*i < n && s[*i] == ':') {
            ++*i;
            if (!rule_number(s, n, i, 2, 59, &sec)) {
                return 0;
            }
        }
    }
    *out = sign * ((apr_int64_t)h * 3600 + m * 60 + sec);
    return 1;
}

/* A zone abbreviation: <[A-Za-z0-9+-]{3,}> or [A-Za-z]{3,}. */
static int rule_name(const char *s, apr_size_t n, apr_size_t *i)
{
    apr_size_t b = *i;

    if (*i < n && s[*i] == '<') {
        ++*i;
        while (*i < n && (apr_isalnum(s[*i]) || s[*i] == '+' || s[*i] == '-')) {
            ++*i;
        }
        if (*i >= n || s[*i] != '>' || *i - b - 1 < 3) {
            return 0;
        }
        ++*i;
        return 1;
    }
    while (*i < n && apr_isalpha(s[*i])) {
        ++*i;
    }
    return *i - b >= 3;
}

static int rule_when(const char *s, apr_size_t n, apr_size_t *i, rule_date *r)
{
    int v;

    r->time = 7200;
    r->m = r->w = r->d = 0;
    if (*i < n && s[*i] == 'M') {
        r->kind = 'M';
        ++*i;
        if (!rule_number(s, n, i, 2, 12, &r->m) || r->m < 1 || *i >= n ||
            s[(*i)++] != '.' || !rule_number(s, n, i, 1, 5, &r->w) ||
            r->w < 1 || *i >= n || s[(*i)++] != '.' ||
            !rule_number(s, n, i, 1, 6, &r->d)) {
            return 0;
        }
    } else if (*i < n && s[*i] == 'J') {
        r->kind = 'J';
        ++*i;
        if (!rule_number(s, n, i, 3, 365, &v) || v < 1) {
            return 0;
        }
        r->d = v;
    } else {
        r->kind = 'N';
        if (!rule_number(s, n, i, 3, 365, &r->d)) {
            return 0;
        }
    }
    if (*i < n && s[*i] == '/') {
        ++*i;
        return rule_clock(s, n, i, 167, &r->time);
    }
    return 1;
}

/* The POSIX TZ string s[0..n) into *tz; 0 when it is not one. */
static int rule_parse(const char *s, apr_size_t n, posix_tz *tz)
{
    apr_size_t i = 0;
    apr_int64_t v;

    memset(tz, 0, sizeof(*tz));
    if (!rule_name(s, n, &i) || !rule_clock(s, n, &i, 24, &v)) {
        return 0;
    }
    tz->std = (int)-v; /* POSIX offsets count west */
    if (i == n) {
        return 1;
    }
    if (!rule_name(s, n, &i)) {
        return 0;
    }
    tz->has_dst = 1;
    tz->dst = tz->std + 3600;
    if (i < n && s[i] != ',') {
        if (!rule_clock(s, n, &i, 24, &v)) {
            return 0;
        }
        tz->dst = (int)-v;
    }
    /* A DST name without dates would take a default of the C library's
     * choosing: no zone file has one. */
    if (i >= n || s[i++] != ',' || !rule_when(s, n, &i, &tz->start) || i >= n ||
        s[i++] != ',' || !rule_when(s, n, &i, &tz->end)) {
        return 0;
    }
    return i == n;
}

/* The local seconds at which rule date r falls in year y. */
static apr_int64_t rule_local(const rule_date *r, int y)
{
    int leap = imc_syntax_leap_year(y);
    apr_int64_t day = imc_syntax_day(y, 1, 1);

    if (r->kind == 'J') {
        day += r->d - 1 + (leap && r->d >= 60);
    } else if (r->kind == 'N') {
        day += r->d;
    } else {
        apr_int64_t first = imc_syntax_day(y, r->m, 1);
        apr_int64_t next = first + imc_syntax_month_days(y, r->m);
        int wd = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01: Thu */

        day = first + (r->d - wd + 7) % 7 + (apr_int64_t)(r->w - 1) * 7;
        while (day >= next) {
            day -= 7;
        }
    }
    return day * DAY + r->time;
}

/* Append the rule's transitions after instant after, for the years from
 * the one before that of after (at least 1900) to IMC_ZONE_RULE_YEARS. */
static void rule_expand(apr_array_header_t *ts, const posix_tz *tz,
                        apr_int64_t after)
{
    int y = 1900, m, d;

    if (after > IMC_ZONE_TIME_MIN) {
        imc_syntax_date(imc_syntax_floor_div(after, DAY), &y, &m, &d);
        y = y - 1 < 1900 ? 1900 : y - 1;
    }
    for (; y <= IMC_ZONE_RULE_YEARS; ++y) {
        trans on, off;

        on.at = rule_local(&tz->start, y) - tz->std;
        on.off = tz->dst;
        off.at = rule_local(&tz->end, y) - tz->dst;
        off.off = tz->std;
        if (on.at > after) {
            on.seq = ts->nelts;
            *(trans *)apr_array_push(ts) = on;
        }
        if (off.at > after) {
            off.seq = ts->nelts;
            *(trans *)apr_array_push(ts) = off;
        }
    }
}

/* ------------------------------------------------------------ TZif */

typedef struct {
    apr_uint32_t isut, isstd, leap, time, type, chars;
} tzif_counts;

static apr_uint32_t be32(const unsigned char *b)
{
    return (apr_uint32_t)b[0] << 24 | (apr_uint32_t)b[1] << 16 |
           (apr_uint32_t)b[2] << 8 | b[3];
}

static apr_int64_t be64(const unsigned char *b)
{
    apr_uint64_t v = (apr_uint64_t)be32(b) << 32 | be32(b + 4);

    return (apr_int64_t)v;
}

/* The header at data[0..len) into *c, and the size of the data block
 * after it with times of tsize bytes; 0 when it is no valid header. */
static apr_uint64_t tzif_header(const unsigned char *d, apr_size_t len,
                                tzif_counts *c, int tsize)
{
    if (len < 44 || memcmp(d, "TZif", 4)) {
        return 0;
    }
    c->isut = be32(d + 20);
    c->isstd = be32(d + 24);
    c->leap = be32(d + 28);
    c->time = be32(d + 32);
    c->type = be32(d + 36);
    c->chars = be32(d + 40);
    if (c->type < 1 || c->type > 256 || c->chars < 1 || c->leap ||
        (c->isut && c->isut != c->type) || (c->isstd && c->isstd != c->type) ||
        c->time > IMC_ZONE_MAX_FILE || c->chars > IMC_ZONE_MAX_FILE) {
        return 0;
    }
    return (apr_uint64_t)c->time * (tsize + 1) + c->type * 6 + c->chars +
           c->isstd + c->isut;
}

/* The transitions of a data block b (counts c, times of tsize bytes) into
 * ts, the offset before the first one into *first. */
static int tzif_block(const unsigned char *b, const tzif_counts *c, int tsize,
                      apr_array_header_t *ts, int *first)
{
    const unsigned char *idx = b + (apr_size_t)c->time * tsize;
    const unsigned char *types = idx + c->time;
    apr_uint32_t i;
    apr_int64_t prev = 0;

    for (i = 0; i < c->type; ++i) {
        apr_int32_t off = (apr_int32_t)be32(types + 6 * i);

        if (off < -IMC_ZONE_MAX_OFFSET || off > IMC_ZONE_MAX_OFFSET ||
            types[6 * i + 4] > 1 || types[6 * i + 5] >= c->chars) {
            return 0;
        }
    }
    *first = (int)(apr_int32_t)be32(types);
    for (i = 0; i < c->time; ++i) {
        apr_int64_t at = tsize == 8 ? be64(b + 8 * i)
                                    : (apr_int32_t)be32(b + 4 * (apr_size_t)i);
        trans t;

        if (idx[i] >= c->type || (i && at <= prev)) {
            return 0;
        }
        prev = at;
        t.off = (int)(apr_int32_t)be32(types + 6 * idx[i]);
        if (at <= IMC_ZONE_TIME_MIN) {
            *first = t.off; /* before the instants we answer for */
            continue;
        }
        if (at > IMC_ZONE_TIME_MAX) {
            break;
        }
        t.at = at;
        t.seq = ts->nelts;
        *(trans *)apr_array_push(ts) = t;
    }
    return 1;
}

/* The transitions of a TZif file into ts, its footer rule into *tz (and
 * *has_tz), the offset before the first transition into *first. */
static int tzif_parse(const unsigned char *d, apr_size_t len,
                      apr_array_header_t *ts, int *first, posix_tz *tz,
                      int *has_tz)
{
    tzif_counts c;
    apr_uint64_t size = tzif_header(d, len, &c, 4);
    const unsigned char *foot, *end;

    *has_tz = 0;
    if (!size || size > len - 44) {
        return 0;
    }
    if (d[4] == '\0') {
        return tzif_block(d + 44, &c, 4, ts, first);
    }
    d += 44 + size;
    len -= 44 + (apr_size_t)size;
    size = tzif_header(d, len, &c, 8);
    if (!size || size > len - 44 || !tzif_block(d + 44, &c, 8, ts, first)) {
        return 0;
    }
    foot = d + 44 + size;
    end = d + len;
    if (foot >= end || *foot != '\n') {
        return 0;
    }
    d = memchr(foot + 1, '\n', (apr_size_t)(end - foot - 1));
    if (!d) {
        return 0;
    }
    if (d == foot + 1) {
        return 1; /* an empty footer: no rule */
    }
    *has_tz = 1;
    return rule_parse((const char *)foot + 1, (apr_size_t)(d - foot - 1), tz);
}

/* ------------------------------------------------------------ table */

static int trans_cmp(const void *a, const void *b)
{
    const trans *x = a, *y = b;

    if (x->at != y->at) {
        return x->at < y->at ? -1 : 1;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The zone's table from the offset first and transitions ts (sorted here;
 * of equal instants the last made wins, equal offsets merge). */
static void table_build(imc_zone *z, apr_pool_t *p, int first,
                        apr_array_header_t *ts)
{
    trans *t = (trans *)ts->elts;
    int i, n = 0;

    qsort(t, (size_t)ts->nelts, sizeof(*t), trans_cmp);
    z->at = apr_palloc(p, sizeof(*z->at) * (ts->nelts + 1));
    z->off = apr_palloc(p, sizeof(*z->off) * (ts->nelts + 1));
    z->reach = apr_palloc(p, sizeof(*z->reach) * (ts->nelts + 1));
    z->at[0] = IMC_ZONE_TIME_MIN;
    z->off[0] = first;
    n = 1;
    for (i = 0; i < ts->nelts; ++i) {
        if (n > 1 && t[i].at == z->at[n - 1]) {
            --n; /* replaced by the later one */
        }
        if (t[i].off != z->off[n - 1]) {
            z->at[n] = t[i].at;
            z->off[n] = t[i].off;
            ++n;
        }
    }
    z->n = n;
    z->max_jump = 0;
    for (i = 0; i < n; ++i) {
        apr_int64_t last = i + 1 < n ? z->at[i + 1] - 1 + z->off[i]
                                     : TIME_END + IMC_ZONE_MAX_OFFSET;

        z->reach[i] = i && z->reach[i - 1] > last ? z->reach[i - 1] : last;
        if (i && z->off[i] - z->off[i - 1] > z->max_jump) {
            z->max_jump = z->off[i] - z->off[i - 1];
        }
    }
}

apr_status_t imc_zone_parse(imc_zone **zone, apr_pool_t *p, const char *name,
                            const unsigned char *data, apr_size_t len)
{
    apr_pool_t *tmp;
    apr_array_header_t *ts;
    imc_zone *z;
    posix_tz tz;
    int first = 0, has_tz = 0;
    apr_status_t rv = APR_EINVAL;

    *zone = NULL;
    if ((rv = apr_pool_create(&tmp, p)) != APR_SUCCESS) {
        return rv;
    }
    rv = APR_EINVAL;
    ts = apr_array_make(tmp, 64, sizeof(trans));
    if (!tzif_parse(data, len, ts, &first, &tz, &has_tz)) {
        goto done;
    }
    if (has_tz && !ts->nelts) {
        first = tz.std; /* the rule holds for every instant */
    }
    if (has_tz && tz.has_dst) {
        rule_expand(ts, &tz,
                    ts->nelts ? APR_ARRAY_IDX(ts, ts->nelts - 1, trans).at
                              : IMC_ZONE_TIME_MIN);
    }
    z = apr_pcalloc(p, sizeof(*z));
    z->name = apr_pstrdup(p, name);
    table_build(z, p, first, ts);
    *zone = z;
    rv = APR_SUCCESS;
done:
    apr_pool_destroy(tmp);
    return rv;
}

apr_status_t imc_zone_load(imc_zone **zone, apr_pool_t *p, const char *name)
{
    apr_pool_t *tmp;
    apr_file_t *f;
    unsigned char *buf;
    apr_size_t n = 0;
    apr_status_t rv;

    *zone = NULL;
    if (!imc_zone_valid_name(name)) {
        return APR_EINVAL;
    }
    if (!strcmp(name, "UTC")) {
        imc_zone *z = apr_pcalloc(p, sizeof(*z));

        z->name = "UTC";
        table_build(z, p, 0, apr_array_make(p, 1, sizeof(trans)));
        *zone = z;
        return APR_SUCCESS;
    }
    if ((rv = apr_pool_create(&tmp, p)) != APR_SUCCESS) {
        return rv;
    }
    rv = apr_file_open(&f, apr_pstrcat(tmp, IMC_ZONE_DIR, name, NULL),
                       APR_FOPEN_READ, APR_FPROT_OS_DEFAULT, tmp);
    if (rv == APR_SUCCESS) {
        buf = apr_palloc(tmp, IMC_ZONE_MAX_FILE + 1);
        rv = apr_file_read_full(f, buf, IMC_ZONE_MAX_FILE + 1, &n);
        apr_file_close(f);
        if (rv == APR_EOF || (rv == APR_SUCCESS && n > IMC_ZONE_MAX_FILE)) {
            rv = n > IMC_ZONE_MAX_FILE ? APR_EINVAL : APR_SUCCESS;
        }
        if (rv == APR_SUCCESS) {
            rv = imc_zone_parse(zone, p, name, buf, n);
        } else if (rv == APR_FROM_OS_ERROR(EISDIR)) {
            rv = APR_EINVAL;
        }
    }
    apr_pool_destroy(tmp);
    return rv;
}

/* ---------------------------------------------------------- lookups */

const char *imc_zone_name(const imc_zone *zone)
{
    return zone->name;
}

static apr_int64_t clamp(apr_int64_t t)
{
    return t < IMC_ZONE_TIME_MIN   ? IMC_ZONE_TIME_MIN
           : t > IMC_ZONE_TIME_MAX ? IMC_ZONE_TIME_MAX
                                   : t;
}

/* The index of the offset holding at t: the last i with at[i] <= t. */
static int find(const imc_zone *z, apr_int64_t t)
{
    int lo = 0, hi = z->n - 1;

    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;

        if (z->at[mid] <= t) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

int imc_zone_offset(const imc_zone *zone, apr_int64_t t)
{
    return zone->off[find(zone, clamp(t))];
}

int imc_zone_span(const imc_zone *zone, apr_int64_t t, apr_int64_t *since,
                  apr_int64_t *until)
{
    int i = find(zone, clamp(t));

    *since = zone->at[i];
    *until = i + 1 < zone->n ? zone->at[i + 1] : TIME_END;
    return zone->off[i];
}

apr_int64_t imc_zone_local_reached(const imc_zone *zone, apr_int64_t t)
{
    int i;
    apr_int64_t local;

    t = clamp(t);
    i = find(zone, t);
    local = t + zone->off[i];
    return i && zone->reach[i - 1] > local ? zone->reach[i - 1] : local;
}

apr_int64_t imc_zone_local_to_utc(const imc_zone *zone, apr_int64_t local)
{
    int lo = 0, hi = zone->n - 1;
    apr_int64_t t;

    local = clamp(local);
    while (lo < hi) { /* the first i with reach[i] >= local */
        int mid = lo + (hi - lo) / 2;

        if (zone->reach[mid] >= local) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    t = local - zone->off[lo];
    return clamp(t > zone->at[lo] ? t : zone->at[lo]);
}

apr_int64_t imc_zone_max_jump(const imc_zone *zone)
{
    return zone->max_jump;
}
