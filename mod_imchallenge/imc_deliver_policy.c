/* Licensed under the Apache License, Version 2.0. */

#include <string.h>

#include <apr_hash.h>
#include <apr_strings.h>

#include "imc_deliver_policy.h"

#define MARKS           32
#define MAX_BATCH_BYTES ((apr_size_t)256 * 1024 * 1024)

/* Rows before end were in the spool at the latest by at (wall clock). */
typedef struct {
    apr_off_t end;
    apr_time_t at;
} mark_t;

struct imc_policy_seg {
    apr_time_t first_seen; /* the batch delay counts from here (now) */
    apr_off_t counted;     /* rows counted up to here */
    apr_int64_t lines;     /* complete rows in [done, counted) */
    mark_t marks[MARKS];   /* when rows were counted, oldest first */
    int nmarks;
    int seen; /* listed once already */
    /* After a batch refused for good: rows per batch (0: batch size) until
     * done passes split_end, so that only the rows ClickHouse refuses on
     * their own are quarantined; how many were so far. */
    int split, split_refused;
    apr_off_t split_end;
};

struct imc_policy {
    apr_pool_t *pool, *state_pool;
    apr_hash_t *state; /* segment name -> imc_policy_seg */
    int batch_size;
    apr_interval_time_t batch_delay;
};

imc_policy *imc_policy_create(apr_pool_t *p, int batch_size,
                              apr_interval_time_t batch_delay)
{
    imc_policy *pol = apr_pcalloc(p, sizeof(*pol));

    pol->pool = p;
    pol->batch_size = batch_size;
    pol->batch_delay = batch_delay;
    apr_pool_create(&pol->state_pool, p);
    pol->state = apr_hash_make(pol->state_pool);
    return pol;
}

imc_policy_seg *imc_policy_seg_get(imc_policy *pol,
                                   const imc_spool_segment *seg)
{
    imc_policy_seg *st =
        apr_hash_get(pol->state, seg->name, APR_HASH_KEY_STRING);

    if (!st) {
        st = apr_pcalloc(pol->state_pool, sizeof(*st));
        st->counted = seg->done;
        apr_hash_set(pol->state, apr_pstrdup(pol->state_pool, seg->name),
                     APR_HASH_KEY_STRING, st);
    }
    if (st->counted <= seg->done) { /* none left, or another process
                                       delivered past them */
        st->counted = seg->done;
        st->lines = 0;
    }
    return st;
}

void imc_policy_prune(imc_policy *pol, const apr_array_header_t *segs)
{
    apr_pool_t *np;
    apr_hash_t *nh;
    int i;

    apr_pool_create(&np, pol->pool);
    nh = apr_hash_make(np);
    for (i = 0; i < segs->nelts; ++i) {
        const imc_spool_segment *seg =
            &APR_ARRAY_IDX(segs, i, imc_spool_segment);
        imc_policy_seg *st =
            apr_hash_get(pol->state, seg->name, APR_HASH_KEY_STRING);

        if (st) {
            apr_hash_set(nh, apr_pstrdup(np, seg->name), APR_HASH_KEY_STRING,
                         apr_pmemdup(np, st, sizeof(*st)));
        }
    }
    apr_pool_destroy(pol->state_pool);
    pol->state_pool = np;
    pol->state = nh;
}

/*
 * Notes that the rows before end were counted at `at`. When the marks run
 * out, every other one goes: the resolution halves evenly, and merged rows
 * only ever look younger than they are.
 */
static void add_mark(imc_policy_seg *st, apr_off_t end, apr_time_t at)
{
    int i;

    if (st->nmarks == MARKS) {
        for (i = 0; i < MARKS / 2; ++i) {
            st->marks[i] = st->marks[2 * i + 1];
        }
        st->nmarks = MARKS / 2;
    }
    st->marks[st->nmarks].end = end;
    st->marks[st->nmarks++].at = at;
}

apr_off_t imc_policy_count_from(const imc_policy_seg *st)
{
    return st->counted;
}

void imc_policy_counted(imc_policy_seg *st, const imc_spool_segment *seg,
                        apr_uint64_t n, apr_time_t now, apr_time_t wall)
{
    apr_interval_time_t age = wall - seg->created;

    if (seg->ready_end <= st->counted) {
        return;
    }
    if (st->lines == 0 && n > 0) {
        /* (an age below 0 is a clock stepped back: taken as new) */
        st->first_seen = st->seen || age < 0 ? now : now - age;
    }
    add_mark(st, seg->ready_end, st->seen ? wall : seg->created);
    st->counted = seg->ready_end;
    st->lines += (apr_int64_t)n;
}

void imc_policy_seen(imc_policy_seg *st)
{
    st->seen = 1;
}

apr_int64_t imc_policy_queued(const imc_policy_seg *st)
{
    return st->lines;
}

apr_time_t imc_policy_head(imc_policy_seg *st, const imc_spool_segment *seg)
{
    int n = 0;

    while (n < st->nmarks && st->marks[n].end <= seg->done) {
        ++n;
    }
    if (n > 0) {
        memmove(st->marks, st->marks + n,
                (apr_size_t)(st->nmarks - n) * sizeof(mark_t));
        st->nmarks -= n;
    }
    return st->nmarks ? st->marks[0].at : 0;
}

int imc_policy_is_due(const imc_policy *pol, const imc_spool_segment *seg,
                      const imc_policy_seg *st, int flush, apr_time_t now)
{
    return seg->intent_end > seg->done || flush || seg->sealed ||
           st->lines >= pol->batch_size ||
           (st->lines > 0 && now - st->first_seen >= pol->batch_delay);
}

int imc_policy_oldest_due(imc_policy *pol, const apr_array_header_t *segs,
                          const char *over, int flush, apr_time_t now)
{
    apr_time_t best_at = 0, at;
    int i, best = -1;

    for (i = 0; i < segs->nelts; ++i) {
        const imc_spool_segment *seg =
            &APR_ARRAY_IDX(segs, i, imc_spool_segment);
        imc_policy_seg *st = imc_policy_seg_get(pol, seg);

        if (over[i] || !imc_policy_is_due(pol, seg, st, flush, now)) {
            continue;
        }
        at = imc_policy_head(st, seg);
        if (best < 0 || at < best_at) {
            best = i;
            best_at = at;
        }
    }
    return best;
}

void imc_policy_batch(const imc_policy *pol, imc_policy_seg *st,
                      const imc_spool_segment *seg, int *max_rows,
                      apr_size_t *max_bytes)
{
    if (st->split && seg->done >= st->split_end) {
        st->split = 0; /* past the refused batch */
    }
    if (seg->intent_end > seg->done) { /* the same batch, the same token */
        *max_rows = APR_INT32_MAX;
        *max_bytes = (apr_size_t)(seg->intent_end - seg->done);
        return;
    }
    *max_rows = st->split ? st->split : pol->batch_size;
    *max_bytes = MAX_BATCH_BYTES;
}

void imc_policy_advanced(imc_policy *pol, imc_policy_seg *st, apr_uint64_t rows,
                         apr_time_t now)
{
    if (st->split) { /* taken: twice as many next time */
        st->split =
            st->split * 2 < pol->batch_size ? st->split * 2 : pol->batch_size;
    }
    st->lines -= (apr_int64_t)rows;
    if (st->lines <= 0) {
        /* Drained: later rows wait for their own batch delay. */
        st->lines = 0;
        st->first_seen = now;
    }
}

imc_policy_refusal imc_policy_refused(imc_policy_seg *st, int rows,
                                      apr_off_t end)
{
    int first = !st->split;

    if (rows > 1) {
        if (first) {
            st->split_refused = 0;
        }
        st->split = (rows + 1) / 2;
        st->split_end = end > st->split_end ? end : st->split_end;
        return first ? IMC_POLICY_SPLIT : IMC_POLICY_HALVE;
    }
    if (first || ++st->split_refused <= IMC_POLICY_MAX_REFUSED_ALONE ||
        st->split_end <= end) {
        return IMC_POLICY_ALONE;
    }
    st->split = 0;
    return IMC_POLICY_THE_REST;
}

apr_off_t imc_policy_split_end(const imc_policy_seg *st)
{
    return st->split_end;
}
