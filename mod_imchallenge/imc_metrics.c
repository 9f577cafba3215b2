/* Licensed under the Apache License, Version 2.0. */

#include <apr_hash.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <http_protocol.h>

#include "imc_private.h"
#include "imc_config.h"
#include "imc_http.h"
#include "imc_metrics.h"
#include "imc_report.h"
#include "imc_spool.h"

/* The segment belongs to the parent's process pool and is found again
 * through retained data, so the numbers survive graceful and hard restarts
 * alike (a restart neither resets nor double counts them; processes of the
 * old generation keep adding to them while they finish). They start from
 * zero when the parent starts, or when a restart loads a build whose layout
 * no longer fits the segment (logged). */
#define RETAINED_KEY "imchallenge-metrics"

/* Upper bounds of the histogram buckets, in microseconds and as written
 * in `le` (Prometheus' canonical float form: apr's %g would drop the
 * leading zero, and `le` values are compared as strings); +Inf follows. */
static const struct {
    apr_interval_time_t usec;
    const char *le;
} bounds[] = {{1000, "0.001"},  {5000, "0.005"}, {10000, "0.01"},
              {25000, "0.025"}, {50000, "0.05"}, {100000, "0.1"},
              {250000, "0.25"}, {500000, "0.5"}, {1000000, "1"},
              {2500000, "2.5"}, {5000000, "5"},  {10000000, "10"}};
#define NBOUNDS (sizeof(bounds) / sizeof(bounds[0]))

typedef struct {
    apr_uint64_t buckets[NBOUNDS + 1];
    apr_uint64_t count;
    apr_uint64_t sum_usec;
} histogram_t;

#define SPOOL_NAME 256

/* One spool's gauges. */
typedef struct {
    apr_uint64_t key;     /* hash of its imc_spool_dir_key; 0: free */
    char dir[SPOOL_NAME]; /* its IMChallengeSpoolDir, for the label */
    apr_int64_t gauges[IMC_G_GAUGES];
    /* When the oldest queued event was queued, derived from the age the
     * deliverer last published: the age read later keeps growing even
     * while the deliverer is busy or backing off. */
    apr_time_t oldest_since;
} spool_gauges_t;

typedef struct {
    apr_uint64_t counters[IMC_M_COUNTERS];
    spool_gauges_t spools[IMC_METRICS_SPOOLS];
    histogram_t histograms[IMC_H_HISTOGRAMS];
} shared_t;

/* Kept by the parent across generations; children inherit the mapping. */
typedef struct {
    apr_shm_t *shm;
} retained_t;

static shared_t *shared;

/* A restart may load a newer build whose layout is larger than the
 * retained segment's: then start a new segment rather than overrun it. */
static int retained_fits(const retained_t *ret)
{
    return ret->shm != NULL && apr_shm_size_get(ret->shm) >= sizeof(shared_t);
}

apr_status_t imc_metrics_post_config(apr_pool_t *pconf, server_rec *s)
{
    retained_t *ret = ap_retained_data_get(RETAINED_KEY);
    apr_status_t rv;

    (void)pconf;
    if (ret == NULL) {
        ret = ap_retained_data_create(RETAINED_KEY, sizeof(*ret));
        ret->shm = NULL;
    }
    if (!retained_fits(ret)) {
        if (ret->shm != NULL) {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                         IMC_LOGNO(00102) "the metrics layout changed: "
                                          "counters start again from zero");
            apr_shm_destroy(ret->shm);
            ret->shm = NULL;
        }
        rv =
            apr_shm_create(&ret->shm, sizeof(shared_t), NULL, s->process->pool);
        if (rv != APR_SUCCESS) {
            ret->shm = NULL;
            shared = NULL;
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         IMC_LOGNO(00101) "cannot create the shared memory "
                                          "for metrics");
            return rv;
        }
        memset(apr_shm_baseaddr_get(ret->shm), 0, sizeof(shared_t));
    }
    shared = apr_shm_baseaddr_get(ret->shm);
    return APR_SUCCESS;
}

void imc_metrics_add(imc_metric_counter c, apr_uint64_t n)
{
    if (shared) {
        __atomic_fetch_add(&shared->counters[c], n, __ATOMIC_RELAXED);
    }
}

/* FNV-1a of a spool key; never 0, the mark of a free slot. */
static apr_uint64_t key_hash(const char *key)
{
    apr_uint64_t h = APR_UINT64_C(14695981039346656037);

    for (; *key; ++key) {
        h = (h ^ (unsigned char)*key) * APR_UINT64_C(1099511628211);
    }
    return h ? h : 1;
}

int imc_metrics_spool_slot(const char *key)
{
    apr_uint64_t h = key_hash(key);
    int i;

    for (i = 0; shared && i < IMC_METRICS_SPOOLS; ++i) {
        if (__atomic_load_n(&shared->spools[i].key, __ATOMIC_ACQUIRE) == h) {
            return i;
        }
    }
    return -1;
}

/* Frees the slots of spools no longer configured and gives the new ones
 * a slot each (the parent, before children exist). */
apr_status_t imc_metrics_spools(apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *want = apr_hash_make(ptemp);
    apr_hash_index_t *hi;
    server_rec *main_s = s;
    int i;

    if (!shared) {
        return APR_SUCCESS;
    }
    for (; s; s = s->next) {
        const char *dir = imc_config_spool_dir(imc_config_get(s));
        const char *key = imc_spool_dir_key(ptemp, dir);

        if (!apr_hash_get(want, key, APR_HASH_KEY_STRING)) {
            apr_hash_set(want, key, APR_HASH_KEY_STRING, dir);
        }
    }
    for (i = 0; i < IMC_METRICS_SPOOLS; ++i) {
        spool_gauges_t *g = &shared->spools[i];
        int kept = 0;

        for (hi = apr_hash_first(ptemp, want); hi && g->key;
             hi = apr_hash_next(hi)) {
            kept = kept || key_hash(apr_hash_this_key(hi)) == g->key;
        }
        if (g->key && !kept) {
            memset(g, 0, sizeof(*g));
        }
    }
    for (hi = apr_hash_first(ptemp, want); hi; hi = apr_hash_next(hi)) {
        const char *key = apr_hash_this_key(hi);

        if (imc_metrics_spool_slot(key) >= 0) {
            continue;
        }
        for (i = 0; i < IMC_METRICS_SPOOLS && shared->spools[i].key; ++i) {
        }
        if (i == IMC_METRICS_SPOOLS) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, main_s,
                         IMC_LOGNO(00902) "more than %d spool directories: "
                                          "the gauges of %s are not kept",
                         IMC_METRICS_SPOOLS,
                         (const char *)apr_hash_this_val(hi));
            continue;
        }
        memset(&shared->spools[i], 0, sizeof(shared->spools[i]));
        apr_cpystrn(shared->spools[i].dir, apr_hash_this_val(hi), SPOOL_NAME);
        __atomic_store_n(&shared->spools[i].key, key_hash(key),
                         __ATOMIC_RELEASE);
    }
    return APR_SUCCESS;
}

static spool_gauges_t *slot_of(int slot)
{
    return shared && slot >= 0 && slot < IMC_METRICS_SPOOLS
               ? &shared->spools[slot]
               : NULL;
}

void imc_metrics_spool_set(int slot, const char *key, imc_metric_gauge g,
                           apr_int64_t v)
{
    spool_gauges_t *sg = slot_of(slot);

    if (!sg || __atomic_load_n(&sg->key, __ATOMIC_ACQUIRE) != key_hash(key)) {
        return;
    }
    if (g == IMC_G_OLDEST_AGE_MS) {
        __atomic_store_n(&sg->oldest_since,
                         apr_time_now() - apr_time_from_msec(v),
                         __ATOMIC_RELAXED);
    }
    __atomic_store_n(&sg->gauges[g], v, __ATOMIC_RELAXED);
}

/* The oldest queued event's age now, in ms; 0 when nothing is queued. */
static apr_int64_t oldest_age_ms(const spool_gauges_t *sg)
{
    apr_time_t since = __atomic_load_n(&sg->oldest_since, __ATOMIC_RELAXED);
    apr_time_t now = apr_time_now();

    if (__atomic_load_n(&sg->gauges[IMC_G_QUEUED_EVENTS], __ATOMIC_RELAXED) <=
            0 ||
        since <= 0 || since > now) {
        return 0;
    }
    return apr_time_as_msec(now - since);
}

apr_int64_t imc_metrics_spool_get(int slot, imc_metric_gauge g)
{
    spool_gauges_t *sg = slot_of(slot);

    if (!sg) {
        return 0;
    }
    if (g == IMC_G_OLDEST_AGE_MS) {
        return oldest_age_ms(sg);
    }
    return __atomic_load_n(&sg->gauges[g], __ATOMIC_RELAXED);
}

apr_int64_t imc_metrics_get(imc_metric_gauge g)
{
    apr_int64_t total = 0, v;
    int i, first = 1;

    for (i = 0; shared && i < IMC_METRICS_SPOOLS; ++i) {
        if (!__atomic_load_n(&shared->spools[i].key, __ATOMIC_ACQUIRE)) {
            continue;
        }
        v = imc_metrics_spool_get(i, g);
        if (g == IMC_G_QUEUED_EVENTS || g == IMC_G_SPOOL_BYTES ||
            g == IMC_G_QUARANTINED_FILES || g == IMC_G_QUARANTINED_BYTES) {
            total += v;
        } else if (g == IMC_G_CLICKHOUSE_OK) {
            total = first || v < total ? v : total;
        } else if (v > total) { /* oldest age, last failed ping */
            total = v;
        }
        first = 0;
    }
    return total;
}

void imc_metrics_observe(imc_metric_histogram h, apr_interval_time_t t)
{
    histogram_t *hist;
    apr_size_t i;

    if (!shared) {
        return;
    }
    hist = &shared->histograms[h];
    for (i = 0; i < NBOUNDS && t > bounds[i].usec; ++i) {
    }
    __atomic_fetch_add(&hist->buckets[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&hist->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&hist->sum_usec, (apr_uint64_t)(t > 0 ? t : 0),
                       __ATOMIC_RELAXED);
}

static apr_uint64_t counter(imc_metric_counter c)
{
    return __atomic_load_n(&shared->counters[c], __ATOMIC_RELAXED);
}

static void family(request_rec *r, const char *name, const char *type,
                   const char *help)
{
    ap_rprintf(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void print_counter(request_rec *r, const char *name, const char *help,
                          imc_metric_counter c)
{
    family(r, name, "counter", help);
    ap_rprintf(r, "%s %" APR_UINT64_T_FMT "\n", name, counter(c));
}

static void print_histogram(request_rec *r, const char *name, const char *help,
                            imc_metric_histogram h)
{
    const histogram_t *hist = &shared->histograms[h];
    apr_uint64_t cumulative = 0;
    apr_size_t i;

    family(r, name, "histogram", help);
    for (i = 0; i < NBOUNDS; ++i) {
        cumulative += __atomic_load_n(&hist->buckets[i], __ATOMIC_RELAXED);
        ap_rprintf(r, "%s_bucket{le=\"%s\"} %" APR_UINT64_T_FMT "\n", name,
                   bounds[i].le, cumulative);
    }
    cumulative += __atomic_load_n(&hist->buckets[NBOUNDS], __ATOMIC_RELAXED);
    ap_rprintf(r, "%s_bucket{le=\"+Inf\"} %" APR_UINT64_T_FMT "\n", name,
               cumulative);
    ap_rprintf(r, "%s_sum %.6f\n", name,
               (double)__atomic_load_n(&hist->sum_usec, __ATOMIC_RELAXED) /
                   APR_USEC_PER_SEC);
    ap_rprintf(r, "%s_count %" APR_UINT64_T_FMT "\n", name, cumulative);
}

typedef struct {
    const char *value;
    imc_metric_counter c;
} labelled;

/* A counter family with one label, one line per value. */
static void print_labelled(request_rec *r, const char *name, const char *help,
                           const char *label, const labelled *values,
                           apr_size_t n)
{
    apr_size_t i;

    family(r, name, "counter", help);
    for (i = 0; i < n; ++i) {
        ap_rprintf(r, "%s{%s=\"%s\"} %" APR_UINT64_T_FMT "\n", name, label,
                   values[i].value, counter(values[i].c));
    }
}

static void print_labelled_counters(request_rec *r)
{
    static const labelled reasons[] = {{"invalid", IMC_M_REJECTED_INVALID},
                                       {"too_large", IMC_M_REJECTED_TOO_LARGE},
                                       {"media_type", IMC_M_REJECTED_MEDIA},
                                       {"method", IMC_M_REJECTED_METHOD},
                                       {"spool", IMC_M_REJECTED_SPOOL},
                                       {"forbidden", IMC_M_REJECTED_FORBIDDEN},
                                       {"rate_limited", IMC_M_REJECTED_RATE}};
    static const labelled results[] = {
        {"sent", IMC_M_BATCHES_SENT},
        {"failed", IMC_M_BATCHES_FAILED},
        {"retried", IMC_M_BATCHES_RETRIED},
        {"quarantined", IMC_M_BATCHES_QUARANTINED}};

    print_labelled(r, "imchallenge_requests_rejected_total",
                   "Event requests rejected, by reason.", "reason", reasons,
                   sizeof(reasons) / sizeof(reasons[0]));
    print_counter(r, "imchallenge_events_delivered_total",
                  "Events confirmed stored by ClickHouse.", IMC_M_DELIVERED);
    print_labelled(r, "imchallenge_batches_total",
                   "INSERT batches to ClickHouse, by result.", "result",
                   results, sizeof(results) / sizeof(results[0]));
}

static void print_report_counters(request_rec *r)
{
    static const labelled sources[] = {
        {"cache", IMC_M_REPORT_DAYS_CACHED},
        {"clickhouse", IMC_M_REPORT_DAYS_QUERIED}};
    static const labelled form_sources[] = {
        {"cache", IMC_M_REPORT_FORM_CACHED},
        {"clickhouse", IMC_M_REPORT_FORM_ASKED}};
    static const labelled cell_sources[] = {
        {"cache", IMC_M_REPORT_CELLS_CACHED},
        {"clickhouse", IMC_M_REPORT_CELLS_QUERIED}};
    imc_scache_stats st;

    print_counter(r, "imchallenge_reports_total", "Report requests answered.",
                  IMC_M_REPORTS);
    print_counter(r, "imchallenge_report_errors_total",
                  "Report requests answered with an error.",
                  IMC_M_REPORT_ERRORS);
    print_labelled(r, "imchallenge_report_day_lookups_total",
                   "Days of reports, by where their rows came from.", "source",
                   sources, sizeof(sources) / sizeof(sources[0]));
    print_labelled(r, "imchallenge_report_form_lookups_total",
                   "Reports with interval, by, metrics, fill or compare "
                   "looked up in the cache, by where their answer came from.",
                   "source", form_sources,
                   sizeof(form_sources) / sizeof(form_sources[0]));
    print_labelled(r, "imchallenge_report_cells_total",
                   "Rows (day and site) of reports before their filter, by "
                   "where they came from.",
                   "source", cell_sources,
                   sizeof(cell_sources) / sizeof(cell_sources[0]));
    if (!imc_report_cache_stats(&st)) {
        memset(&st, 0, sizeof(st));
    }
    family(r, "imchallenge_report_cache_size_bytes", "gauge",
           "Size of the report cache all processes share "
           "(IMChallengeReportCache).");
    ap_rprintf(r, "imchallenge_report_cache_size_bytes %" APR_SIZE_T_FMT "\n",
               st.size);
    family(r, "imchallenge_report_cache_bytes", "gauge",
           "Bytes the report cache holds.");
    ap_rprintf(r, "imchallenge_report_cache_bytes %" APR_SIZE_T_FMT "\n",
               st.bytes);
    family(r, "imchallenge_report_cache_evictions_total", "counter",
           "Records the report cache dropped for room, since it was made.");
    ap_rprintf(
        r, "imchallenge_report_cache_evictions_total %" APR_UINT64_T_FMT "\n",
        st.evictions);
    /* The name before imchallenge_report_day_lookups_total ("days" reads
     * as a unit to Prometheus' lint), kept for one release. */
    print_labelled(r, "imchallenge_report_days_total",
                   "Deprecated: the same as "
                   "imchallenge_report_day_lookups_total, removed in the "
                   "next release.",
                   "source", sources, sizeof(sources) / sizeof(sources[0]));
}

/* A label value: backslash, double quote and line feed escaped. */
static const char *label_value(apr_pool_t *p, const char *v)
{
    char *out = apr_palloc(p, 2 * strlen(v) + 1), *q = out;

    for (; *v; ++v) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            *q++ = '\\';
            *q++ = *v == '\n' ? 'n' : *v;
        } else {
            *q++ = *v;
        }
    }
    *q = '\0';
    return out;
}

/* The gauges of each spool, labelled with its directory. */
static void print_spool_gauges(request_rec *r)
{
    static const struct {
        const char *name, *help;
        imc_metric_gauge g;
    } fams[] = {{"imchallenge_spool_events_queued",
                 "Events not yet delivered, per spool.", IMC_G_QUEUED_EVENTS},
                {"imchallenge_spool_pending_bytes",
                 "Bytes not yet delivered, per spool.", IMC_G_SPOOL_BYTES},
                {"imchallenge_spool_oldest_queued_age_seconds",
                 "Age of the oldest event not yet delivered, per spool.",
                 IMC_G_OLDEST_AGE_MS},
                {"imchallenge_spool_clickhouse_up",
                 "1 when the spool's ClickHouse answered the last ping.",
                 IMC_G_CLICKHOUSE_OK}};
    apr_size_t f;
    int i;

    for (f = 0; f < sizeof(fams) / sizeof(fams[0]); ++f) {
        family(r, fams[f].name, "gauge", fams[f].help);
        for (i = 0; i < IMC_METRICS_SPOOLS; ++i) {
            const spool_gauges_t *sg = &shared->spools[i];
            apr_int64_t v = imc_metrics_spool_get(i, fams[f].g), fail;
            const char *dir;

            if (!__atomic_load_n(&sg->key, __ATOMIC_ACQUIRE)) {
                continue;
            }
            dir = label_value(r->pool, sg->dir);
            if (fams[f].g == IMC_G_OLDEST_AGE_MS) {
                ap_rprintf(r, "%s{spool=\"%s\"} %.3f\n", fams[f].name, dir,
                           (double)v / 1000.0);
            } else if (fams[f].g == IMC_G_CLICKHOUSE_OK) {
                fail = imc_metrics_spool_get(i, IMC_G_CLICKHOUSE_FAIL);
                ap_rprintf(r, "%s{spool=\"%s\"} %d\n", fams[f].name, dir,
                           v != 0 && v >= fail);
            } else {
                ap_rprintf(r, "%s{spool=\"%s\"} %" APR_INT64_T_FMT "\n",
                           fams[f].name, dir, v);
            }
        }
    }
}

static void print_gauges(request_rec *r)
{
    /* The totals over all spools, in the order they are listed; the age
     * is kept in milliseconds and shown in seconds. */
    static const struct {
        const char *name, *help;
        imc_metric_gauge g;
        int ms;
    } gauges[] = {
        {"imchallenge_events_queued", "Events in the spool not yet delivered.",
         IMC_G_QUEUED_EVENTS, 0},
        {"imchallenge_spool_bytes", "Bytes in the spool not yet delivered.",
         IMC_G_SPOOL_BYTES, 0},
        {"imchallenge_oldest_queued_age_seconds",
         "Age of the oldest event not yet delivered.", IMC_G_OLDEST_AGE_MS, 1},
        {"imchallenge_quarantined_batches",
         "Batches ClickHouse refused for good, kept in spool/failed.",
         IMC_G_QUARANTINED_FILES, 0},
        {"imchallenge_quarantined_bytes",
         "Bytes in spool/failed (not counted in IMChallengeSpoolLimit).",
         IMC_G_QUARANTINED_BYTES, 0},
    };
    apr_time_t ok = imc_metrics_get(IMC_G_CLICKHOUSE_OK);
    apr_time_t fail = imc_metrics_get(IMC_G_CLICKHOUSE_FAIL);
    apr_size_t i;

    for (i = 0; i < sizeof(gauges) / sizeof(gauges[0]); ++i) {
        apr_int64_t v = imc_metrics_get(gauges[i].g);

        family(r, gauges[i].name, "gauge", gauges[i].help);
        if (gauges[i].ms) {
            ap_rprintf(r, "%s %.3f\n", gauges[i].name, (double)v / 1000.0);
        } else {
            ap_rprintf(r, "%s %" APR_INT64_T_FMT "\n", gauges[i].name, v);
        }
    }
    family(r, "imchallenge_clickhouse_up", "gauge",
           "1 when ClickHouse answered the last ping.");
    ap_rprintf(r, "imchallenge_clickhouse_up %d\n", ok != 0 && ok >= fail);
}

int imc_metrics_handler(request_rec *r)
{
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        r->allowed = AP_METHOD_BIT << M_GET;
        return imc_http_error(r, HTTP_METHOD_NOT_ALLOWED, "use GET");
    }
    if (!shared) {
        return imc_http_error(r, HTTP_SERVICE_UNAVAILABLE,
                              "metrics are not available");
    }
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only) {
        return OK;
    }
    print_counter(r, "imchallenge_events_accepted_total",
                  "Events acknowledged to clients (stored in the spool).",
                  IMC_M_ACCEPTED);
    print_labelled_counters(r);
    print_gauges(r);
    print_spool_gauges(r);
    print_report_counters(r);
    print_histogram(r, "imchallenge_clickhouse_request_seconds",
                    "ClickHouse request latency.", IMC_H_CLICKHOUSE);
    print_histogram(r, "imchallenge_report_seconds", "Report request latency.",
                    IMC_H_REPORT);
    return OK;
}
