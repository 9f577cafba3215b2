/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_deliver_policy: what the deliverer sends next, kept apart from the
 * thread, the lock and the logging of imc_deliver.c so that unit tests
 * reach it. APR only, no httpd headers.
 *
 * Per segment it remembers how many complete rows are queued, when they
 * were counted (the age marks: the oldest row first goes first, across
 * segments), when the segment's batch delay started, and, after ClickHouse
 * refused a batch for good, how the batch is being halved so that only
 * the rows refused on their own are quarantined.
 *
 * Two clocks: `now` is imc_deliver_clock() (monotonic: intervals), `wall`
 * is apr_time_now() (ages, as segments' creation times are).
 */

#ifndef IMC_DELIVER_POLICY_H
#define IMC_DELIVER_POLICY_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

#include "imc_spool.h"

/* Rows of one rejected batch quarantined one by one at most; past them the
 * rest of the batch is quarantined at once (a table that refuses every
 * row would otherwise cost two INSERTs per row). */
#define IMC_POLICY_MAX_REFUSED_ALONE 8

typedef struct imc_policy imc_policy;
typedef struct imc_policy_seg imc_policy_seg;

imc_policy *imc_policy_create(apr_pool_t *p, int batch_size,
                              apr_interval_time_t batch_delay);

/* The state of seg, made empty the first time seg is seen. */
imc_policy_seg *imc_policy_seg_get(imc_policy *pol,
                                   const imc_spool_segment *seg);

/* Keeps the state of the segments in segs, forgets the others. */
void imc_policy_prune(imc_policy *pol, const apr_array_header_t *segs);

/*
 * Where counting seg's new rows starts; imc_policy_counted() then adds the
 * n complete rows found from there to seg->ready_end. Rows there when the
 * segment is first seen are of unknown age: taken as old as the segment,
 * and their batch delay counts from its creation, so that a segment left
 * by an earlier process goes at once and one made a moment ago waits.
 */
apr_off_t imc_policy_count_from(const imc_policy_seg *st);
void imc_policy_counted(imc_policy_seg *st, const imc_spool_segment *seg,
                        apr_uint64_t n, apr_time_t now, apr_time_t wall);
/* The segment was listed (counted or not): later rows are new ones. */
void imc_policy_seen(imc_policy_seg *st);

/* Rows of seg queued, as last counted. */
apr_int64_t imc_policy_queued(const imc_policy_seg *st);

/* When the oldest queued row of seg was counted (wall clock; 0: not
 * known). */
apr_time_t imc_policy_head(imc_policy_seg *st, const imc_spool_segment *seg);

/*
 * Whether seg has a batch to send now: one to resend, a sealed segment, a
 * full batch, one that waited the batch delay, or any when flushing (on
 * the way out).
 */
int imc_policy_is_due(const imc_policy *pol, const imc_spool_segment *seg,
                      const imc_policy_seg *st, int flush, apr_time_t now);

/* The index in segs of the due segment (over[i] == 0) whose oldest row is
 * the oldest; -1 when none. Ties go to the earlier segment in segs. */
int imc_policy_oldest_due(imc_policy *pol, const apr_array_header_t *segs,
                          const char *over, int flush, apr_time_t now);

/* How many rows and bytes at most the next batch of seg takes: the batch
 * being resent whole, a part of a refused batch, or a full batch. */
void imc_policy_batch(const imc_policy *pol, imc_policy_seg *st,
                      const imc_spool_segment *seg, int *max_rows,
                      apr_size_t *max_bytes);

/* rows left the queue (delivered or quarantined) at now. */
void imc_policy_advanced(imc_policy *pol, imc_policy_seg *st, apr_uint64_t rows,
                         apr_time_t now);

typedef enum {
    IMC_POLICY_SPLIT,    /* send it again in halves (the first refusal) */
    IMC_POLICY_HALVE,    /* a part refused: halve it again */
    IMC_POLICY_ALONE,    /* one row refused on its own: quarantine it */
    IMC_POLICY_THE_REST, /* too many refused alone: quarantine the rest of
                            the refused batch, to imc_policy_split_end() */
} imc_policy_refusal;

/* ClickHouse refused for good a batch of rows ending at end: what to do
 * with it. */
imc_policy_refusal imc_policy_refused(imc_policy_seg *st, int rows,
                                      apr_off_t end);

/* The end of the batch being halved (for IMC_POLICY_THE_REST). */
apr_off_t imc_policy_split_end(const imc_policy_seg *st);

#endif
