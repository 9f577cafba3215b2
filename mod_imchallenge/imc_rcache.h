/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_rcache: the report's cache of per-day results, kept in an
 * imc_scache that every httpd process shares.
 *
 * A report is one independent group of rows per day, and the rows of a day
 * depend only on the events whose time falls on that day. ClickHouse keeps
 * events in immutable parts and lists, for each, the first and last event
 * time (system.parts). The rows of a day therefore stay right as long as
 * the set of parts holding that day's events is the same: every insert,
 * merge, mutation or drop replaces parts. A day's cached rows carry a
 * fingerprint of that set and are used only while it matches, so the
 * counts stay exact; only days whose parts changed go to the database.
 * A part's id is a hash of its name, row count and modification time
 * (seconds): a table dropped and created again numbers its parts from the
 * start, so the rows of a day with a part written in the current second
 * are never kept (a later part of the same name is then of a later
 * second).
 *
 * A day is kept as the rows of every site, whatever the report's
 * filter: the key names the zone and the database, not the filter, which
 * the report applies to the rows (imc_filter_match), so any filter is
 * answered from days another filter had asked for. One record per day in
 * the store, so least recently used days go first.
 *
 * Days are numbers: days since 1970-01-01 (ClickHouse's Date), in the
 * report's time zone. APR only, no httpd headers; thread-safe.
 */
#ifndef IMC_RCACHE_H
#define IMC_RCACHE_H

#include <limits.h>

#include <apr_pools.h>
#include <apr_tables.h>

#include "imc_scache.h"

/* A report without from / to. */
#define IMC_RCACHE_NO_DAY INT_MIN
/* At most this many day ranges per database query; more are joined. */
#define IMC_RCACHE_MAX_RANGES 16
/* The length of a site_id as text (a UUID). */
#define IMC_RCACHE_SITE_LEN 36
/* The last second of ClickHouse's DateTime (an unsigned 32-bit count). */
#define IMC_RCACHE_TIME_MAX APR_INT64_C(4294967295)
/* More than any zone's offset from UTC (UTC-12 to UTC+14), DST included. */
#define IMC_RCACHE_ZONE_MARGIN (15 * 3600)

typedef struct {
    int first, last;   /* days of the part's first and last event */
    apr_uint64_t id;   /* identifies the part and its content */
    int recent;        /* written in the database's current second */
    apr_uint64_t rows; /* its events (0: not known) */
} imc_rcache_part;

typedef struct {
    int day;
    const char *site;
    apr_uint64_t served, solved;
    apr_uint32_t time; /* an instant of the row's bucket where the report
                        * has buckets within days (hours), else 0 */
} imc_rcache_row;

typedef struct {
    int first, last; /* inclusive */
} imc_rcache_range;

typedef struct imc_rcache imc_rcache;
typedef struct imc_rcache_plan imc_rcache_plan;

/* A cache over a store of its own of budget bytes from p. */
apr_status_t imc_rcache_create(imc_rcache **cache, apr_pool_t *p,
                               apr_size_t budget);

/* A cache over store (shared with other processes), allocated from p. */
apr_status_t imc_rcache_attach(imc_rcache **cache, apr_pool_t *p,
                               imc_scache *store);

/*
 * Plans the report named key (everything its rows depend on but the days
 * and the filter: the rows are those of every site)
 * over days [from, to] (either may be IMC_RCACHE_NO_DAY) given the events
 * table's parts: which days the cache answers and which the database must.
 */
imc_rcache_plan *imc_rcache_plan_make(imc_rcache *cache, apr_pool_t *p,
                                      const char *key,
                                      const imc_rcache_part *parts, int nparts,
                                      int from, int to);

/* The day ranges to ask the database for (imc_rcache_range), in order. */
const apr_array_header_t *imc_rcache_plan_ranges(const imc_rcache_plan *plan);

/*
 * The same ranges cut into queries of at most max_rows events each, as
 * the parts' rows tell (a part's spread evenly over its days; a day of
 * more is a query of its own), each of at most IMC_RCACHE_MAX_RANGES
 * ranges: an array of arrays of imc_rcache_range, in order. ClickHouse
 * holds every (day, site)'s distinct ids of a query at once, so one query
 * over many days of many events can pass the memory a query may take.
 */
apr_array_header_t *imc_rcache_plan_batches(const imc_rcache_plan *plan,
                                            apr_uint64_t max_rows);

/*
 * Records that the database's query for plan covered days [first, last]
 * (either may be IMC_RCACHE_NO_DAY: open) with bounds from
 * imc_rcache_day_bounds. imc_rcache_complete keeps fresh rows only of days
 * a recorded range covers: an answer the report did not vouch for is
 * shown, never kept.
 */
void imc_rcache_plan_covers(imc_rcache_plan *plan, int first, int last);

/* How many of the report's days the cache answers / the database must. */
int imc_rcache_plan_cached_days(const imc_rcache_plan *plan);
int imc_rcache_plan_stale_days(const imc_rcache_plan *plan);

/*
 * fresh: the database's rows (imc_rcache_row) for the plan's ranges, in
 * (day, site) order. Returns all the report's rows in that order, taken
 * from the cache and fresh, allocated from the plan's pool, and keeps
 * fresh rows in the cache for the next report.
 */
apr_array_header_t *imc_rcache_complete(imc_rcache *cache,
                                        imc_rcache_plan *plan,
                                        const apr_array_header_t *fresh);

/* Bytes the cache holds now. */
apr_size_t imc_rcache_bytes(imc_rcache *cache);

/*
 * The instants [*lo, *hi] (Unix seconds, both inclusive) that hold every
 * event of days [first, last] in any zone: from the first day's start
 * less IMC_RCACHE_ZONE_MARGIN to the last day's end plus it, clamped to
 * [0, IMC_RCACHE_TIME_MAX] so that they never wrap around in the
 * database. IMC_RCACHE_NO_DAY: that end is open (0, IMC_RCACHE_TIME_MAX).
 */
void imc_rcache_day_bounds(int first, int last, apr_int64_t *lo,
                           apr_int64_t *hi);

/* The same for UTC's days alone: exactly their instants. ClickHouse skips
 * a partition of one day (conf/schema.sql) only when the bounds leave out
 * all its times: the margins above make the query of a day read the days
 * on either side too. */
void imc_rcache_utc_day_bounds(int first, int last, apr_int64_t *lo,
                               apr_int64_t *hi);

/* Day numbers and their YYYY-MM-DD text: the calendar's day texts
 * (imc_syntax_day_text, imc_syntax_day_read) for the cache's int days.
 * A text that is no day's text has the day number IMC_RCACHE_NO_DAY. */
int imc_rcache_day_number(const char *ymd);
const char *imc_rcache_day_text(apr_pool_t *p, int day);

/* ------------------------------------------------------------------
 * The cache of the report's other forms (interval, by, metrics, fill,
 * compare): blobs. Distinct counts of weeks, months or a total do not add
 * up from days, so an answer (or every site's rows of a range, a span of
 * imc_report_buckets) is kept as one blob under its key (everything it
 * depends on but the events) and the fingerprint of the parts that can
 * hold an event it reads: it is used only while that fingerprint matches.
 * Kept in the same cache (and store) as the days, under keys of their own.
 */

/*
 * The fingerprint of the parts holding days [first, last] (either may be
 * IMC_RCACHE_NO_DAY: open): order-free, it changes when any such part is
 * added, removed or replaced. *recent is set when one of them was written
 * in the database's current second (the answer must not be kept).
 */
apr_uint64_t imc_rcache_fingerprint(const imc_rcache_part *parts, int nparts,
                                    int first, int last, int *recent);

/*
 * The days [*first, *last] a form's answer reads events of, as parts list
 * them: from / to (IMC_RCACHE_NO_DAY: open), back over the previous period
 * with compare, forward over window seconds (solve times look that far
 * past a serve), and a day more on each side for zones whose offsets the
 * module and the database might tell apart.
 */
void imc_rcache_forms_days(int from, int to, int compare, apr_int64_t window,
                           int *first, int *last);

/*
 * The answer kept under key with fingerprint fp, copied into p (its size
 * in *size), or NULL.
 */
void *imc_rcache_forms_get(imc_rcache *forms, apr_pool_t *p, const char *key,
                           apr_uint64_t fp, apr_size_t *size);

/* Keeps a copy of the answer under key and fp, replacing any other. */
void imc_rcache_forms_put(imc_rcache *forms, const char *key, apr_uint64_t fp,
                          const void *blob, apr_size_t size);

/* The same for an answer in n pieces, kept joined in their order. */
typedef imc_scache_piece imc_rcache_piece;

void imc_rcache_forms_putv(imc_rcache *forms, const char *key, apr_uint64_t fp,
                           const imc_rcache_piece *pieces, int n);

/* The largest answer kept under key. */
apr_size_t imc_rcache_forms_max(imc_rcache *forms, const char *key);

#endif /* IMC_RCACHE_H */
