/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "imc_rcache.h"
#include "imc_syntax.h"

/* A day's row as kept: the site's text, its bucket's instant, its
 * counts. */
typedef struct {
    char site[IMC_RCACHE_SITE_LEN];
    apr_uint32_t time;
    apr_uint64_t served, solved;
} rc_cell;

/* The cache's records: "D" for the day report, "F" for the forms. */
#define KIND_DAY  'D'
#define KIND_FORM 'F'

struct imc_rcache {
    imc_scache *store;
};

/* A day of the report: covered by at least one part. */
typedef struct {
    int day;
    apr_uint64_t fp;
    apr_uint64_t rows;    /* the events its parts are likely to hold */
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

void imc_rcache_utc_day_bounds(int first, int last, apr_int64_t *lo,
                               apr_int64_t *hi)
{
    *lo =
        first == IMC_RCACHE_NO_DAY ? 0 : clamp_time((apr_int64_t)first * 86400);
    *hi = last == IMC_RCACHE_NO_DAY
              ? IMC_RCACHE_TIME_MAX
              : clamp_time(((apr_int64_t)last + 1) * 86400 - 1);
}

/* ------------------------------------------------------------ store */

/* A store of budget bytes of p's memory, for one process alone (the unit
 * tests'; the module's is shared, imc_report_post_config). */
static imc_scache *private_store(apr_pool_t *p, apr_size_t budget)
{
    imc_scache *store;

    if (budget < IMC_SCACHE_MIN_SIZE) {
        budget = IMC_SCACHE_MIN_SIZE;
    }
    return imc_scache_format(&store, apr_palloc(p, budget), budget) ==
                   APR_SUCCESS
               ? store
               : NULL;
}

apr_status_t imc_rcache_create(imc_rcache **cache, apr_pool_t *p,
                               apr_size_t budget)
{
    imc_scache *store = private_store(p, budget);

    *cache = NULL;
    return store ? imc_rcache_attach(cache, p, store) : APR_ENOMEM;
}

apr_status_t imc_rcache_attach(imc_rcache **cache, apr_pool_t *p,
                               imc_scache *store)
{
    imc_rcache *c = apr_pcalloc(p, sizeof(*c));

    c->store = store;
    *cache = c;
    return APR_SUCCESS;
}

apr_size_t imc_rcache_bytes(imc_rcache *cache)
{
    imc_scache_stats st;

    imc_scache_stats_get(cache->store, &st);
    return st.bytes;
}

/* The store's key of a record: its kind, the report's key, NUL, and for
 * a day its number. */
static const char *record_key(apr_pool_t *p, char kind, const char *key,
                              const int *day, apr_size_t *len)
{
    apr_size_t n = strlen(key);
    char *k = apr_palloc(p, 1 + n + 1 + sizeof(int));

    k[0] = kind;
    memcpy(k + 1, key, n + 1);
    *len = 1 + n + 1;
    if (day) {
        memcpy(k + *len, day, sizeof(int));
        *len += sizeof(int);
    }
    return k;
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
    apr_uint64_t fp;   /* sum of mixed part ids */
    apr_uint64_t rows; /* sum of the parts' rows a day */
    long parts, recent;
} day_sums;

/* The plan's days: each day of [from, to] some part covers, with the
 * fingerprint of the parts covering it. */
static void plan_days(imc_rcache_plan *plan, const imc_rcache_part *parts,
                      int nparts)
{
    day_sums *diff, run = {0, 0, 0, 0};
    int lo, hi, i, d;

    if (!day_span(parts, nparts, plan->from, plan->to, &lo, &hi)) {
        return;
    }
    diff = apr_pcalloc(plan->pool, sizeof(*diff) * ((apr_size_t)(hi - lo) + 2));
    for (i = 0; i < nparts; ++i) {
        int a = parts[i].first > lo ? parts[i].first : lo;
        int b = parts[i].last < hi ? parts[i].last : hi;
        apr_uint64_t m = mix(parts[i].id);
        apr_uint64_t share =
            parts[i].rows / (apr_uint64_t)(parts[i].last - parts[i].first + 1) +
            1;

        if (a <= b) {
            diff[a - lo].fp += m;
            diff[b - lo + 1].fp -= m;
            diff[a - lo].rows += share;
            diff[b - lo + 1].rows -= share;
            diff[a - lo].parts += 1;
            diff[b - lo + 1].parts -= 1;
            diff[a - lo].recent += parts[i].recent != 0;
            diff[b - lo + 1].recent -= parts[i].recent != 0;
        }
    }
    for (d = lo; d <= hi; ++d) {
        run.fp += diff[d - lo].fp;
        run.rows += diff[d - lo].rows;
        run.parts += diff[d - lo].parts;
        run.recent += diff[d - lo].recent;
        if (run.parts > 0) {
            plan_day *pd = apr_array_push(plan->days);

            memset(pd, 0, sizeof(*pd));
            pd->day = d;
            pd->fp = run.fp + mix((apr_uint64_t)run.parts);
            pd->rows = run.rows;
            pd->recent = run.recent > 0;
        }
    }
}

/* Takes the rows of the days the store holds under their fingerprint
 * into the plan. */
static void plan_take_cached(imc_rcache_plan *plan, imc_scache *store)
{
    int i, k, n;

    for (i = 0; i < plan->days->nelts; ++i) {
        plan_day *pd = &APR_ARRAY_IDX(plan->days, i, plan_day);
        apr_size_t klen, len;
        const char *key =
            record_key(plan->pool, KIND_DAY, plan->key, &pd->day, &klen);
        const rc_cell *cells =
            imc_scache_get(store, plan->pool, key, klen, pd->fp, &len);

        if (!cells || len % sizeof(rc_cell)) {
            continue;
        }
        n = (int)(len / sizeof(rc_cell));
        pd->cached = 1;
        pd->first_row = plan->cached->nelts;
        pd->nrows = n;
        for (k = 0; k < n; ++k) {
            imc_rcache_row *row = apr_array_push(plan->cached);

            row->day = pd->day;
            row->site =
                apr_pstrmemdup(plan->pool, cells[k].site, IMC_RCACHE_SITE_LEN);
            row->time = cells[k].time;
            row->served = cells[k].served;
            row->solved = cells[k].solved;
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

    plan->pool = p;
    plan->key = apr_pstrdup(p, key);
    plan->from = from;
    plan->to = to;
    plan->days = apr_array_make(p, 64, sizeof(plan_day));
    plan->cached = apr_array_make(p, 256, sizeof(imc_rcache_row));
    plan->ranges = apr_array_make(p, 4, sizeof(imc_rcache_range));
    plan->covered = apr_array_make(p, 4, sizeof(imc_rcache_range));
    plan_days(plan, parts, nparts);
    plan_take_cached(plan, cache->store);
    plan_ranges(plan);
    return plan;
}

const apr_array_header_t *imc_rcache_plan_ranges(const imc_rcache_plan *plan)
{
    return plan->ranges;
}

/* Closes the batch being filled (if it has a range) in *open. */
static void batch_close(apr_array_header_t *batches, apr_array_header_t **open)
{
    if (*open && (*open)->nelts) {
        APR_ARRAY_PUSH(batches, apr_array_header_t *) = *open;
    }
    *open = NULL;
}

/* Adds the range [first, last] of rows events to the batches: to the one
 * being filled while it has room, else to a new one. */
static void batch_add(const imc_rcache_plan *plan, apr_array_header_t *batches,
                      apr_array_header_t **open, apr_uint64_t *open_rows,
                      int first, int last, apr_uint64_t rows,
                      apr_uint64_t max_rows)
{
    imc_rcache_range *rg;

    if (*open && ((*open)->nelts >= IMC_RCACHE_MAX_RANGES ||
                  *open_rows + rows > max_rows)) {
        batch_close(batches, open);
    }
    if (!*open) {
        *open = apr_array_make(plan->pool, 4, sizeof(imc_rcache_range));
        *open_rows = 0;
    }
    rg = apr_array_push(*open);
    rg->first = first;
    rg->last = last;
    *open_rows += rows;
}

apr_array_header_t *imc_rcache_plan_batches(const imc_rcache_plan *plan,
                                            apr_uint64_t max_rows)
{
    apr_array_header_t *batches =
        apr_array_make(plan->pool, 4, sizeof(apr_array_header_t *));
    apr_array_header_t *open = NULL;
    apr_uint64_t open_rows = 0, rows;
    int i, k = 0, first;

    for (i = 0; i < plan->ranges->nelts; ++i) {
        const imc_rcache_range *rg =
            &APR_ARRAY_IDX(plan->ranges, i, imc_rcache_range);

        /* the range's days, cut where the next would pass max_rows */
        first = rg->first;
        rows = 0;
        for (; k < plan->days->nelts &&
               APR_ARRAY_IDX(plan->days, k, plan_day).day <= rg->last;
             ++k) {
            const plan_day *pd = &APR_ARRAY_IDX(plan->days, k, plan_day);

            if (pd->day < first) {
                continue;
            }
            if (rows && rows + pd->rows > max_rows) {
                batch_add(plan, batches, &open, &open_rows, first, pd->day - 1,
                          rows, max_rows);
                first = pd->day;
                rows = 0;
            }
            rows += pd->rows;
        }
        batch_add(plan, batches, &open, &open_rows, first, rg->last, rows,
                  max_rows);
    }
    batch_close(batches, &open);
    return batches;
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

/* Keeps the rows out[first, first + n) of day under its fingerprint;
 * not when one is of a site that is no UUID's text. */
static void keep_day(imc_rcache *cache, const imc_rcache_plan *plan,
                     const plan_day *pd, const apr_array_header_t *out,
                     int first, int n)
{
    rc_cell *cells = apr_pcalloc(plan->pool, sizeof(rc_cell) * (n + 1));
    imc_scache_piece piece;
    apr_size_t klen;
    const char *key;
    int k;

    for (k = 0; k < n; ++k) {
        const imc_rcache_row *row =
            &APR_ARRAY_IDX(out, first + k, imc_rcache_row);

        if (strlen(row->site) != IMC_RCACHE_SITE_LEN) {
            return;
        }
        memcpy(cells[k].site, row->site, IMC_RCACHE_SITE_LEN);
        cells[k].time = row->time;
        cells[k].served = row->served;
        cells[k].solved = row->solved;
    }
    key = record_key(plan->pool, KIND_DAY, plan->key, &pd->day, &klen);
    piece.data = cells;
    piece.len = sizeof(rc_cell) * (apr_size_t)n;
    imc_scache_put(cache->store, key, klen, pd->fp, &piece, 1);
}

apr_array_header_t *imc_rcache_complete(imc_rcache *cache,
                                        imc_rcache_plan *plan,
                                        const apr_array_header_t *fresh)
{
    apr_array_header_t *out = merge_rows(plan, fresh);
    int i, j = 0, first;

    for (i = 0; i < plan->days->nelts; ++i) {
        const plan_day *pd = &APR_ARRAY_IDX(plan->days, i, plan_day);

        while (j < out->nelts &&
               APR_ARRAY_IDX(out, j, imc_rcache_row).day < pd->day) {
            ++j; /* a day planned as uncovered: not kept */
        }
        first = j;
        while (j < out->nelts &&
               APR_ARRAY_IDX(out, j, imc_rcache_row).day == pd->day) {
            ++j;
        }
        /* Kept: fresh days a query vouched for, with no part that may
         * change unseen. */
        if (!pd->cached && !pd->recent && covered(plan, pd->day)) {
            keep_day(cache, plan, pd, out, first, j - first);
        }
    }
    return out;
}

/* ------------------------------------------------------------- forms */

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

void *imc_rcache_forms_get(imc_rcache *forms, apr_pool_t *p, const char *key,
                           apr_uint64_t fp, apr_size_t *size)
{
    apr_size_t klen;
    const char *k = record_key(p, KIND_FORM, key, NULL, &klen);

    return imc_scache_get(forms->store, p, k, klen, fp, size);
}

apr_size_t imc_rcache_forms_max(imc_rcache *forms, const char *key)
{
    return imc_scache_max_value(forms->store, 1 + strlen(key) + 1);
}

void imc_rcache_forms_putv(imc_rcache *forms, const char *key, apr_uint64_t fp,
                           const imc_rcache_piece *pieces, int n)
{
    apr_size_t klen = 1 + strlen(key) + 1;
    char *k = malloc(klen);

    if (k) {
        k[0] = KIND_FORM;
        memcpy(k + 1, key, klen - 1);
        imc_scache_put(forms->store, k, klen, fp, pieces, n);
        free(k);
    }
}

void imc_rcache_forms_put(imc_rcache *forms, const char *key, apr_uint64_t fp,
                          const void *blob, apr_size_t size)
{
    imc_rcache_piece piece;

    piece.data = blob;
    piece.len = size;
    imc_rcache_forms_putv(forms, key, fp, &piece, 1);
}
