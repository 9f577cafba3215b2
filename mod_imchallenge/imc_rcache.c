/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "imc_rcache.h"
#include "imc_syntax.h"

/* A cached day: its fingerprint and its rows in the entry's rows. */
typedef struct {
    int day;
    apr_uint64_t fp;
    int first_row, nrows;
} rc_day;

typedef struct {
    int day;
    char site[IMC_RCACHE_SITE_LEN + 1];
    apr_uint64_t served, solved;
} rc_row;

/* One report (key): its days in ascending order. malloc'ed, so that an
 * entry is freed on its own; entries are only touched under the lock. */
typedef struct rc_entry {
    struct rc_entry *next;
    char *key;
    rc_day *days;
    int ndays;
    rc_row *rows;
    int nrows;
    apr_size_t bytes;
    apr_uint64_t used; /* the cache's clock when last used: LRU */
} rc_entry;

struct imc_rcache {
    apr_thread_mutex_t *lock;
    rc_entry *entries;
    apr_size_t bytes, budget;
    apr_uint64_t clock;
};

/* A day of the report: covered by at least one part. */
typedef struct {
    int day;
    apr_uint64_t fp;
    int recent;           /* covered by a recent part: not to be kept */
    int cached;           /* the cache answers it with the rows below */
    int first_row, nrows; /* in the plan's cached rows */
} plan_day;

struct imc_rcache_plan {
    apr_pool_t *pool;
    const char *key;
    int from, to;                /* as asked (IMC_RCACHE_NO_DAY: open) */
    apr_array_header_t *days;    /* plan_day, ascending */
    apr_array_header_t *cached;  /* imc_rcache_row */
    apr_array_header_t *ranges;  /* imc_rcache_range */
    apr_array_header_t *covered; /* imc_rcache_range the query covered */
};

/* ------------------------------------------------------------- days */

int imc_rcache_day_number(const char *ymd)
{
    apr_int64_t day;

    if (imc_syntax_day_read(ymd, strlen(ymd), &day) != APR_SUCCESS ||
        day < INT_MIN + 1 || day > INT_MAX) {
        return IMC_RCACHE_NO_DAY;
    }
    return (int)day;
}

const char *imc_rcache_day_text(apr_pool_t *p, int day)
{
    char text[IMC_SYNTAX_DAY_TEXT_SIZE];

    return apr_pstrmemdup(p, text, imc_syntax_day_text(text, day));
}

static apr_int64_t clamp_time(apr_int64_t t)
{
    return t < 0 ? 0 : t > IMC_RCACHE_TIME_MAX ? IMC_RCACHE_TIME_MAX : t;
}

void imc_rcache_day_bounds(int first, int last, apr_int64_t *lo,
                           apr_int64_t *hi)
{
    *lo = first == IMC_RCACHE_NO_DAY
              ? 0
              : clamp_time((apr_int64_t)first * 86400 - IMC_RCACHE_ZONE_MARGIN);
    *hi = last == IMC_RCACHE_NO_DAY
              ? IMC_RCACHE_TIME_MAX
              : clamp_time(((apr_int64_t)last + 1) * 86400 +
                           IMC_RCACHE_ZONE_MARGIN);
}

/* ----------------------------------------------------------- entries */

static void entry_free(rc_entry *e)
{
    if (e) {
        free(e->key);
        free(e->days);
        free(e->rows);
        free(e);
    }
}

static apr_status_t cache_cleanup(void *data)
{
    imc_rcache *c = data;

    while (c->entries) {
        rc_entry *e = c->entries;

        c->entries = e->next;
        entry_free(e);
    }
    c->bytes = 0;
    return APR_SUCCESS;
}

apr_status_t imc_rcache_create(imc_rcache **cache, apr_pool_t *p,
                               apr_size_t budget)
{
    imc_rcache *c = apr_pcalloc(p, sizeof(*c));
    apr_status_t rv;

    c->budget = budget;
    rv = apr_thread_mutex_create(&c->lock, APR_THREAD_MUTEX_DEFAULT, p);
    if (rv == APR_SUCCESS) {
        apr_pool_cleanup_register(p, c, cache_cleanup, apr_pool_cleanup_null);
    }
    *cache = rv == APR_SUCCESS ? c : NULL;
    return rv;
}

apr_size_t imc_rcache_bytes(imc_rcache *cache)
{
    apr_size_t n;

    apr_thread_mutex_lock(cache->lock);
    n = cache->bytes;
    apr_thread_mutex_unlock(cache->lock);
    return n;
}

/* The entry of key (lock held), or NULL. */
static rc_entry *entry_find(imc_rcache *c, const char *key)
{
    rc_entry *e;

    for (e = c->entries; e; e = e->next) {
        if (!strcmp(e->key, key)) {
            return e;
        }
    }
    return NULL;
}

/* Takes e out of the list (lock held). */
static void entry_unlink(imc_rcache *c, rc_entry *e)
{
    rc_entry **pp;

    for (pp = &c->entries; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            c->bytes -= e->bytes;
            return;
        }
    }
}

/* Frees least recently used entries, other than keep, while over the
 * budget (lock held). */
static void evict(imc_rcache *c, const rc_entry *keep)
{
    while (c->bytes > c->budget) {
        rc_entry *e, *lru = NULL;

        for (e = c->entries; e; e = e->next) {
            if (e != keep && (!lru || e->used < lru->used)) {
                lru = e;
            }
        }
        if (!lru) {
            return;
        }
        entry_unlink(c, lru);
        entry_free(lru);
    }
}

/* -------------------------------------------------------------- plan */

/* A 64-bit mix (the splitmix64 finalizer): fingerprints are sums of
 * mixed part ids, so that they do not depend on the parts' order. */
static apr_uint64_t mix(apr_uint64_t x)
{
    x ^= x >> 30;
    x *= APR_UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= APR_UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* The days [lo, hi] the report covers: within from / to and within some
 * part. Returns 0 when there are none. */
static int day_span(const imc_rcache_part *parts, int nparts, int from, int to,
                    int *lo, int *hi)
{
    int i;

    if (nparts == 0) {
        return 0;
    }
    *lo = parts[0].first;
    *hi = parts[0].last;
    for (i = 1; i < nparts; ++i) {
        *lo = parts[i].first < *lo ? parts[i].first : *lo;
        *hi = parts[i].last > *hi ? parts[i].last : *hi;
    }
    if (from != IMC_RCACHE_NO_DAY && from > *lo) {
        *lo = from;
    }
    if (to != IMC_RCACHE_NO_DAY && to < *hi) {
        *hi = to;
    }
    return *lo <= *hi;
}

/* Per day of [lo, hi], what the parts covering it add up to, as running
 * sums of what parts add where they start and take away after they end. */
typedef struct {
    apr_uint64_t fp; /* sum of mixed part ids */
    long parts, recent;
} day_sums;

/* The plan's days: each day of [from, to] some part covers, with the
 * fingerprint of the parts covering it. */
static void plan_days(imc_rcache_plan *plan, const imc_rcache_part *parts,
                      int nparts)
{
    day_sums *diff, run = {0, 0, 0};
    int lo, hi, i, d;

    if (!day_span(parts, nparts, plan->from, plan->to, &lo, &hi)) {
        return;
    }
    diff = apr_pcalloc(plan->pool, sizeof(*diff) * ((apr_size_t)(hi - lo) + 2));
    for (i = 0; i < nparts; ++i) {
        int a = parts[i].first > lo ? parts[i].first : lo;
        int b = parts[i].last < hi ? parts[i].last : hi;
        apr_uint64_t m = mix(parts[i].id);

        if (a <= b) {
            diff[a - lo].fp += m;
            diff[b - lo + 1].fp -= m;
            diff[a - lo].parts += 1;
            diff[b - lo + 1].parts -= 1;
            diff[a - lo].recent += parts[i].recent != 0;
            diff[b - lo + 1].recent -= parts[i].recent != 0;
        }
    }
    for (d = lo; d <= hi; ++d) {
        run.fp += diff[d - lo].fp;
        run.parts += diff[d - lo].parts;
        run.recent += diff[d - lo].recent;
        if (run.parts > 0) {
            plan_day *pd = apr_array_push(plan->days);

            memset(pd, 0, sizeof(*pd));
            pd->day = d;
            pd->fp = run.fp + mix((apr_uint64_t)run.parts);
            pd->recent = run.recent > 0;
        }
    }
}

/* Copies the rows of the entry's days whose fingerprint still holds into
 * the plan (lock held). */
static void plan_take_cached(imc_rcache_plan *plan, const rc_entry *e)
{
    int i, j = 0, k;

    for (i = 0; i < plan->days->nelts; ++i) {
        plan_day *pd = &APR_ARRAY_IDX(plan->days, i, plan_day);

        while (j < e->ndays && e->days[j].day < pd->day) {
            ++j;
        }
        if (j == e->ndays) {
            return;
        }
        if (e->days[j].day != pd->day || e->days[j].fp != pd->fp) {
            continue;
        }
        pd->cached = 1;
        pd->first_row = plan->cached->nelts;
        pd->nrows = e->days[j].nrows;
        for (k = 0; k < e->days[j].nrows; ++k) {
            const rc_row *src = &e->rows[e->days[j].first_row + k];
            imc_rcache_row *row = apr_array_push(plan->cached);

            row->day = src->day;
            row->site = apr_pstrdup(plan->pool, src->site);
            row->served = src->served;
            row->solved = src->solved;
        }
    }
}

/* Joins the days the cache cannot answer into ranges; days no part covers
 * may lie inside a range (they have no events). Past the maximum, one
 * range from the first to the last such day, recounting the cached days
 * inside it. */
static void plan_ranges(imc_rcache_plan *plan)
{
    imc_rcache_range *open = NULL;
    int i, first = 0, last = 0;

    for (i = 0; i < plan->days->nelts; ++i) {
        const plan_day *pd = &APR_ARRAY_IDX(plan->days, i, plan_day);

        if (pd->cached) {
            open = NULL;
        } else if (open) {
            open->last = pd->day;
        } else {
            open = apr_array_push(plan->ranges);
            open->first = open->last = pd->day;
        }
    }
    if (plan->ranges->nelts <= IMC_RCACHE_MAX_RANGES) {
        return;
    }
    first = APR_ARRAY_IDX(plan->ranges, 0, imc_rcache_range).first;
    last =
        APR_ARRAY_IDX(plan->ranges, plan->ranges->nelts - 1, imc_rcache_range)
            .last;
    apr_array_clear(plan->ranges);
    open = apr_array_push(plan->ranges);
    open->first = first;
    open->last = last;
    for (i = 0; i < plan->days->nelts; ++i) {
        plan_day *pd = &APR_ARRAY_IDX(plan->days, i, plan_day);

        if (pd->day >= first && pd->day <= last) {
            pd->cached = 0;
        }
    }
}

imc_rcache_plan *imc_rcache_plan_make(imc_rcache *cache, apr_pool_t *p,
                                      const char *key,
                                      const imc_rcache_part *parts, int nparts,
                                      int from, int to)
{
    imc_rcache_plan *plan = apr_pcalloc(p, sizeof(*plan));
    rc_entry *e;

    plan->pool = p;
    plan->key = apr_pstrdup(p, key);
    plan->from = from;
    plan->to = to;
    plan->days = apr_array_make(p, 64, sizeof(plan_day));
    plan->cached = apr_array_make(p, 256, sizeof(imc_rcache_row));
    plan->ranges = apr_array_make(p, 4, sizeof(imc_rcache_range));
    plan->covered = apr_array_make(p, 4, sizeof(imc_rcache_range));
    plan_days(plan, parts, nparts);
    apr_thread_mutex_lock(cache->lock);
    if ((e = entry_find(cache, key)) != NULL) {
        e->used = ++cache->clock;
        plan_take_cached(plan, e);
    }
    apr_thread_mutex_unlock(cache->lock);
    plan_ranges(plan);
    return plan;
}

const apr_array_header_t *imc_rcache_plan_ranges(const imc_rcache_plan *plan)
{
    return plan->ranges;
}

void imc_rcache_plan_covers(imc_rcache_plan *plan, int first, int last)
{
    imc_rcache_range *rg = apr_array_push(plan->covered);

    rg->first = first == IMC_RCACHE_NO_DAY ? INT_MIN : first;
    rg->last = last == IMC_RCACHE_NO_DAY ? INT_MAX : last;
}

/* Whether the database's query covered day (a recorded range holds it). */
static int covered(const imc_rcache_plan *plan, int day)
{
    int i;

    for (i = 0; i < plan->covered->nelts; ++i) {
        const imc_rcache_range *rg =
            &APR_ARRAY_IDX(plan->covered, i, imc_rcache_range);

        if (day >= rg->first && day <= rg->last) {
            return 1;
        }
    }
    return 0;
}

static int count_days(const imc_rcache_plan *plan, int cached)
{
    int i, n = 0;

    for (i = 0; i < plan->days->nelts; ++i) {
        n += APR_ARRAY_IDX(plan->days, i, plan_day).cached == cached;
    }
    return n;
}

int imc_rcache_plan_cached_days(const imc_rcache_plan *plan)
{
    return count_days(plan, 1);
}

int imc_rcache_plan_stale_days(const imc_rcache_plan *plan)
{
    return count_days(plan, 0);
}

/* ---------------------------------------------------------- complete */

/* The rows of the report, in order: per day, the cached rows of a cached
 * day, then any fresh rows of that day. Fresh rows of a day no part
 * covered when planned (an insert since) are reported too. */
static apr_array_header_t *merge_rows(const imc_rcache_plan *plan,
                                      const apr_array_header_t *fresh)
{
    apr_array_header_t *out =
        apr_array_make(plan->pool, plan->cached->nelts + fresh->nelts + 1,
                       sizeof(imc_rcache_row));
    int i = 0, j = 0, k;

    while (i < plan->days->nelts || j < fresh->nelts) {
        const plan_day *pd = i < plan->days->nelts
                                 ? &APR_ARRAY_IDX(plan->days, i, plan_day)
                                 : NULL;
        int day = pd ? pd->day : INT_MAX;

        if (j < fresh->nelts &&
            APR_ARRAY_IDX(fresh, j, imc_rcache_row).day < day) {
            day = APR_ARRAY_IDX(fresh, j, imc_rcache_row).day;
        }
        if (pd && pd->day == day) {
            for (k = 0; pd->cached && k < pd->nrows; ++k) {
                *(imc_rcache_row *)apr_array_push(out) = APR_ARRAY_IDX(
                    plan->cached, pd->first_row + k, imc_rcache_row);
            }
            ++i;
        }
        while (j < fresh->nelts &&
               APR_ARRAY_IDX(fresh, j, imc_rcache_row).day == day) {
            *(imc_rcache_row *)apr_array_push(out) =
                APR_ARRAY_IDX(fresh, j++, imc_rcache_row);
        }
    }
    return out;
}

/* Whether an old entry's day is kept beside the plan's days: only days
 * outside the report's from / to, which this report said nothing about. */
static int outside(const imc_rcache_plan *plan, int day)
{
    return (plan->from != IMC_RCACHE_NO_DAY && day < plan->from) ||
           (plan->to != IMC_RCACHE_NO_DAY && day > plan->to);
}

/* Adds a row to e's last day; 0 when its site is no UUID's text. */
static int append_row(rc_entry *e, const imc_rcache_row *src)
{
    rc_row *row = &e->rows[e->nrows];

    if (strlen(src->site) != IMC_RCACHE_SITE_LEN) {
        return 0;
    }
    e->nrows++;
    e->days[e->ndays - 1].nrows++;
    row->day = src->day;
    memcpy(row->site, src->site, IMC_RCACHE_SITE_LEN + 1);
    row->served = src->served;
    row->solved = src->solved;
    return 1;
}

static void append_day(rc_entry *e, int day, apr_uint64_t fp)
{
    rc_day *d = &e->days[e->ndays++];

    d->day = day;
    d->fp = fp;
    d->first_row = e->nrows;
    d->nrows = 0;
}

/* Adds old's day i to e, as it is, when outside the plan's from / to. */
static void keep_old_day(rc_entry *e, const rc_entry *old, int i,
                         const imc_rcache_plan *plan)
{
    int k;

    if (!outside(plan, old->days[i].day)) {
        return;
    }
    append_day(e, old->days[i].day, old->days[i].fp);
    for (k = 0; k < old->days[i].nrows; ++k) {
        e->rows[e->nrows++] = old->rows[old->days[i].first_row + k];
    }
    e->days[e->ndays - 1].nrows = old->days[i].nrows;
}

/* The new entry of the plan's report: the plan's days with their rows
 * (out holds them all, in order) but recent ones and fresh ones no
 * recorded range covers, and old's days outside from / to. NULL
 * when out has a row that cannot be kept or memory is short. */
static rc_entry *entry_build(const imc_rcache_plan *plan,
                             const apr_array_header_t *out, const rc_entry *old)
{
    rc_entry *e = calloc(1, sizeof(*e));
    int maxdays = plan->days->nelts + (old ? old->ndays : 0);
    int maxrows = out->nelts + (old ? old->nrows : 0);
    int i, j = 0, o = 0, ok = 1;

    if (!e || !(e->key = strdup(plan->key)) ||
        !(e->days = malloc(sizeof(rc_day) * (apr_size_t)(maxdays + 1))) ||
        !(e->rows = malloc(sizeof(rc_row) * (apr_size_t)(maxrows + 1)))) {
        entry_free(e);
        return NULL;
    }
    for (i = 0; ok && i < plan->days->nelts; ++i) {
        const plan_day *pd = &APR_ARRAY_IDX(plan->days, i, plan_day);

        for (; old && o < old->ndays && old->days[o].day < pd->day; ++o) {
            keep_old_day(e, old, o, plan);
        }
        while (j < out->nelts &&
               APR_ARRAY_IDX(out, j, imc_rcache_row).day < pd->day) {
            ++j; /* a day planned as uncovered: not kept */
        }
        if (pd->recent || (!pd->cached && !covered(plan, pd->day))) {
            continue; /* may change unseen, or no query vouched for it */
        }
        append_day(e, pd->day, pd->fp);
        for (; ok && j < out->nelts &&
               APR_ARRAY_IDX(out, j, imc_rcache_row).day == pd->day;
             ++j) {
            ok = append_row(e, &APR_ARRAY_IDX(out, j, imc_rcache_row));
        }
    }
    for (; ok && old && o < old->ndays; ++o) {
        keep_old_day(e, old, o, plan);
    }
    if (!ok) {
        entry_free(e);
        return NULL;
    }
    e->bytes = sizeof(*e) + strlen(e->key) + 1 +
               sizeof(rc_day) * (apr_size_t)e->ndays +
               sizeof(rc_row) * (apr_size_t)e->nrows;
    return e;
}

apr_array_header_t *imc_rcache_complete(imc_rcache *cache,
                                        imc_rcache_plan *plan,
                                        const apr_array_header_t *fresh)
{
    apr_array_header_t *out = merge_rows(plan, fresh);
    rc_entry *old, *e;

    apr_thread_mutex_lock(cache->lock);
    old = entry_find(cache, plan->key);
    e = entry_build(plan, out, old);
    if (old) {
        entry_unlink(cache, old);
        entry_free(old);
    }
    if (e && e->bytes <= cache->budget / 2) {
        e->used = ++cache->clock;
        e->next = cache->entries;
        cache->entries = e;
        cache->bytes += e->bytes;
        evict(cache, e);
    } else {
        entry_free(e);
    }
    apr_thread_mutex_unlock(cache->lock);
    return out;
}

/* ------------------------------------------------------------- forms */

/* A form's answer: malloc'ed with its key and blob after it. */
typedef struct fm_entry {
    struct fm_entry *next;
    apr_uint64_t fp, used;
    apr_size_t size, bytes;
    char *key;
    void *blob;
} fm_entry;

struct imc_rcache_forms {
    apr_thread_mutex_t *lock;
    fm_entry *entries;
    apr_size_t bytes, budget;
    apr_uint64_t clock;
};

static apr_status_t forms_cleanup(void *data)
{
    imc_rcache_forms *f = data;

    while (f->entries) {
        fm_entry *e = f->entries;

        f->entries = e->next;
        free(e);
    }
    f->bytes = 0;
    return APR_SUCCESS;
}

apr_status_t imc_rcache_forms_create(imc_rcache_forms **forms, apr_pool_t *p,
                                     apr_size_t budget)
{
    imc_rcache_forms *f = apr_pcalloc(p, sizeof(*f));
    apr_status_t rv;

    f->budget = budget;
    rv = apr_thread_mutex_create(&f->lock, APR_THREAD_MUTEX_DEFAULT, p);
    if (rv == APR_SUCCESS) {
        apr_pool_cleanup_register(p, f, forms_cleanup, apr_pool_cleanup_null);
    }
    *forms = rv == APR_SUCCESS ? f : NULL;
    return rv;
}

apr_uint64_t imc_rcache_fingerprint(const imc_rcache_part *parts, int nparts,
                                    int first, int last, int *recent)
{
    apr_uint64_t fp = 0, n = 0;
    int i;

    *recent = 0;
    for (i = 0; i < nparts; ++i) {
        if ((first != IMC_RCACHE_NO_DAY && parts[i].last < first) ||
            (last != IMC_RCACHE_NO_DAY && parts[i].first > last)) {
            continue;
        }
        fp += mix(parts[i].id);
        ++n;
        *recent = *recent || parts[i].recent;
    }
    return fp + mix(n);
}

void imc_rcache_forms_days(int from, int to, int compare, apr_int64_t window,
                           int *first, int *last)
{
    apr_int64_t lo = from, hi = to;

    if (from != IMC_RCACHE_NO_DAY && compare && to != IMC_RCACHE_NO_DAY) {
        lo = (apr_int64_t)from - ((apr_int64_t)to - from + 1);
    }
    if (to != IMC_RCACHE_NO_DAY) {
        hi += (window > 0 ? (window + 86399) / 86400 : 0) + 1;
    }
    if (from != IMC_RCACHE_NO_DAY) {
        lo -= 1;
    }
    *first = from == IMC_RCACHE_NO_DAY || lo <= INT_MIN ? IMC_RCACHE_NO_DAY
                                                        : (int)lo;
    *last =
        to == IMC_RCACHE_NO_DAY || hi >= INT_MAX ? IMC_RCACHE_NO_DAY : (int)hi;
}

/* The entry of key (lock held), or NULL. */
static fm_entry *forms_find(imc_rcache_forms *f, const char *key,
                            fm_entry ***at)
{
    fm_entry **pp;

    for (pp = &f->entries; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->key, key)) {
            *at = pp;
            return *pp;
        }
    }
    return NULL;
}

void *imc_rcache_forms_get(imc_rcache_forms *forms, apr_pool_t *p,
                           const char *key, apr_uint64_t fp, apr_size_t *size)
{
    fm_entry *e, **at;
    void *copy = NULL;

    apr_thread_mutex_lock(forms->lock);
    e = forms_find(forms, key, &at);
    if (e && e->fp == fp) {
        e->used = ++forms->clock;
        copy = apr_pmemdup(p, e->blob, e->size);
        *size = e->size;
    }
    apr_thread_mutex_unlock(forms->lock);
    return copy;
}

/* Frees least recently used entries while over the budget (lock held). */
static void forms_evict(imc_rcache_forms *f)
{
    while (f->bytes > f->budget) {
        fm_entry **pp, **lru = NULL, *e;

        for (pp = &f->entries; *pp; pp = &(*pp)->next) {
            if (!lru || (*pp)->used < (*lru)->used) {
                lru = pp;
            }
        }
        if (!lru) {
            return;
        }
        e = *lru;
        *lru = e->next;
        f->bytes -= e->bytes;
        free(e);
    }
}

/* A new entry of key and fp holding the pieces joined; NULL when it
 * would be over half the budget or memory is short. */
static fm_entry *forms_entry(const imc_rcache_forms *forms, const char *key,
                             apr_uint64_t fp, const imc_rcache_piece *pieces,
                             int n)
{
    apr_size_t klen = strlen(key) + 1, size = 0, at = 0;
    fm_entry *e;
    int i;

    for (i = 0; i < n; ++i) {
        if (pieces[i].len > forms->budget - size) {
            return NULL;
        }
        size += pieces[i].len;
    }
    if (sizeof(fm_entry) + klen + size > forms->budget / 2 ||
        !(e = malloc(sizeof(fm_entry) + klen + size))) {
        return NULL;
    }
    e->fp = fp;
    e->size = size;
    e->bytes = sizeof(fm_entry) + klen + size;
    e->blob = (char *)(e + 1);
    e->key = (char *)e->blob + size;
    for (i = 0; i < n; ++i) {
        if (pieces[i].len) {
            memcpy((char *)e->blob + at, pieces[i].data, pieces[i].len);
            at += pieces[i].len;
        }
    }
    memcpy(e->key, key, klen);
    return e;
}

void imc_rcache_forms_putv(imc_rcache_forms *forms, const char *key,
                           apr_uint64_t fp, const imc_rcache_piece *pieces,
                           int n)
{
    fm_entry *e = forms_entry(forms, key, fp, pieces, n), *old, **at;

    apr_thread_mutex_lock(forms->lock);
    if ((old = forms_find(forms, key, &at)) != NULL) {
        *at = old->next;
        forms->bytes -= old->bytes;
        free(old);
    }
    if (e) {
        e->used = ++forms->clock;
        e->next = forms->entries;
        forms->entries = e;
        forms->bytes += e->bytes;
        forms_evict(forms);
    }
    apr_thread_mutex_unlock(forms->lock);
}

void imc_rcache_forms_put(imc_rcache_forms *forms, const char *key,
                          apr_uint64_t fp, const void *blob, apr_size_t size)
{
    imc_rcache_piece piece;

    piece.data = blob;
    piece.len = size;
    imc_rcache_forms_putv(forms, key, fp, &piece, 1);
}

apr_size_t imc_rcache_forms_bytes(imc_rcache_forms *forms)
{
    apr_size_t n;

    apr_thread_mutex_lock(forms->lock);
    n = forms->bytes;
    apr_thread_mutex_unlock(forms->lock);
    return n;
}
