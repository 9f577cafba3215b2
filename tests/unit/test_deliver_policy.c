/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_deliver_policy: when a segment's rows are due (batch
 * delay, full batch, sealed, resend, flush), the age of rows found at
 * start-up, oldest first across segments, the age marks, and the halving
 * of a batch ClickHouse refused for good.
 */

#include <string.h>

#include "check_main.h"
#include "imc_deliver_policy.h"

#define SEC   APR_USEC_PER_SEC
#define WALL0 ((apr_time_t)1700000000 * SEC) /* wall clock */
#define MONO0 ((apr_time_t)5000 * SEC)       /* monotonic clock */
#define DELAY (2 * SEC)
#define BATCH 100
#define ROW   10 /* bytes per row in these tests */

static imc_policy *pol;

static void setup(void)
{
    imc_unit_setup();
    pol = imc_policy_create(imc_unit_pool, BATCH, DELAY);
}

static imc_spool_segment segment(const char *name, apr_time_t created)
{
    imc_spool_segment seg;

    memset(&seg, 0, sizeof(seg));
    seg.name = name;
    seg.created = created;
    seg.stamp = "";
    return seg;
}

/* rows more rows written to seg and counted at (now, wall). */
static imc_policy_seg *add_rows(imc_spool_segment *seg, int rows,
                                apr_time_t now, apr_time_t wall)
{
    imc_policy_seg *st = imc_policy_seg_get(pol, seg);

    seg->ready_end += (apr_off_t)rows * ROW;
    seg->size = seg->ready_end;
    imc_policy_counted(st, seg, (apr_uint64_t)rows, now, wall);
    imc_policy_seen(st);
    return st;
}

static int due(imc_spool_segment *seg, apr_time_t now)
{
    return imc_policy_is_due(pol, seg, imc_policy_seg_get(pol, seg), 0, now);
}

/* The rows a batch of seg takes leave the queue, as a delivery does. */
static void deliver(imc_spool_segment *seg, int rows, apr_time_t now)
{
    seg->done += (apr_off_t)rows * ROW;
    imc_policy_advanced(pol, imc_policy_seg_get(pol, seg), (apr_uint64_t)rows,
                        now);
}

START_TEST(rows_of_a_new_segment_found_at_start_wait_the_delay)
{
    /* The segment was made 0.5 s before the deliverer's first listing,
     * which finds rows in it: they are new, not left from before. */
    imc_spool_segment seg = segment("a", WALL0 - SEC / 2);

    add_rows(&seg, 10, MONO0, WALL0);
    ck_assert(!due(&seg, MONO0));
    ck_assert(!due(&seg, MONO0 + DELAY - SEC / 2 - 1));
    ck_assert(due(&seg, MONO0 + DELAY - SEC / 2));
}
END_TEST

START_TEST(rows_left_by_an_earlier_process_go_at_once)
{
    imc_spool_segment seg = segment("a", WALL0 - 3600 * SEC);

    add_rows(&seg, 10, MONO0, WALL0);
    ck_assert(due(&seg, MONO0));
}
END_TEST

START_TEST(a_clock_stepped_back_makes_rows_new)
{
    imc_spool_segment seg = segment("a", WALL0 + 3600 * SEC);

    add_rows(&seg, 10, MONO0, WALL0);
    ck_assert(!due(&seg, MONO0 + DELAY - 1));
    ck_assert(due(&seg, MONO0 + DELAY));
}
END_TEST

START_TEST(rows_after_an_empty_listing_wait_from_their_count)
{
    /* An old segment, empty when first listed (a child's segment made at
     * its start): its rows wait their delay from when they are counted. */
    imc_spool_segment seg = segment("a", WALL0 - 3600 * SEC);
    imc_policy_seg *st = add_rows(&seg, 0, MONO0, WALL0);

    ck_assert_int_eq(imc_policy_queued(st), 0);
    ck_assert(!due(&seg, MONO0 + 10 * SEC));
    add_rows(&seg, 3, MONO0 + 10 * SEC, WALL0 + 10 * SEC);
    ck_assert_int_eq(imc_policy_queued(st), 3);
    ck_assert(!due(&seg, MONO0 + 10 * SEC + DELAY - 1));
    ck_assert(due(&seg, MONO0 + 10 * SEC + DELAY));
}
END_TEST

START_TEST(more_rows_do_not_restart_the_delay)
{
    imc_spool_segment seg = segment("a", WALL0);

    add_rows(&seg, 0, MONO0, WALL0);
    add_rows(&seg, 1, MONO0 + SEC, WALL0 + SEC);
    add_rows(&seg, 1, MONO0 + 2 * SEC, WALL0 + 2 * SEC);
    ck_assert(due(&seg, MONO0 + SEC + DELAY));
}
END_TEST

START_TEST(drained_rows_then_new_ones_wait_their_own_delay)
{
    imc_spool_segment seg = segment("a", WALL0);

    add_rows(&seg, 0, MONO0, WALL0);
    add_rows(&seg, 5, MONO0, WALL0);
    ck_assert(due(&seg, MONO0 + DELAY));
    deliver(&seg, 5, MONO0 + DELAY);
    ck_assert(!due(&seg, MONO0 + 10 * DELAY)); /* nothing queued */
    add_rows(&seg, 5, MONO0 + 10 * DELAY, WALL0 + 10 * DELAY);
    ck_assert(!due(&seg, MONO0 + 11 * DELAY - 1));
    ck_assert(due(&seg, MONO0 + 11 * DELAY));
}
END_TEST

START_TEST(full_sealed_resent_and_flushed_are_due_at_once)
{
    imc_spool_segment a = segment("a", WALL0), b = segment("b", WALL0),
                      c = segment("c", WALL0), d = segment("d", WALL0);

    add_rows(&a, 0, MONO0, WALL0);
    add_rows(&a, BATCH - 1, MONO0, WALL0);
    ck_assert(!due(&a, MONO0));
    add_rows(&a, 1, MONO0, WALL0);
    ck_assert(due(&a, MONO0)); /* a full batch */

    add_rows(&b, 0, MONO0, WALL0);
    add_rows(&b, 1, MONO0, WALL0);
    b.sealed = 1;
    ck_assert(due(&b, MONO0));

    add_rows(&c, 0, MONO0, WALL0);
    add_rows(&c, 1, MONO0, WALL0);
    c.intent_end = c.ready_end;
    ck_assert(due(&c, MONO0));

    add_rows(&d, 0, MONO0, WALL0);
    add_rows(&d, 1, MONO0, WALL0);
    ck_assert(!due(&d, MONO0));
    ck_assert(
        imc_policy_is_due(pol, &d, imc_policy_seg_get(pol, &d), 1, MONO0));
}
END_TEST

START_TEST(the_oldest_row_goes_first)
{
    apr_array_header_t *segs =
        apr_array_make(imc_unit_pool, 3, sizeof(imc_spool_segment));
    imc_spool_segment *a, *b, *c;
    char over[3] = {0, 0, 0};

    a = apr_array_push(segs);
    b = apr_array_push(segs);
    c = apr_array_push(segs);
    *a = segment("a", WALL0);
    *b = segment("b", WALL0);
    *c = segment("c", WALL0);
    add_rows(a, 0, MONO0, WALL0);
    add_rows(b, 0, MONO0, WALL0);
    add_rows(c, 0, MONO0, WALL0);
    add_rows(b, 2, MONO0 + 1 * SEC, WALL0 + 1 * SEC);
    add_rows(a, 2, MONO0 + 2 * SEC, WALL0 + 2 * SEC);
    add_rows(c, 2, MONO0 + 3 * SEC, WALL0 + 3 * SEC);
    ck_assert_int_eq(imc_policy_oldest_due(pol, segs, over, 0, MONO0), -1);
    ck_assert_int_eq(imc_policy_oldest_due(pol, segs, over, 1, MONO0), 1);
    over[1] = 1; /* b done in this pass */
    ck_assert_int_eq(imc_policy_oldest_due(pol, segs, over, 1, MONO0), 0);
    over[1] = 0;
    /* Without flushing, each waits its own delay. */
    ck_assert_int_eq(
        imc_policy_oldest_due(pol, segs, over, 0, MONO0 + 1 * SEC + DELAY), 1);
    deliver(b, 2, MONO0 + 1 * SEC + DELAY);
    ck_assert_int_eq(
        imc_policy_oldest_due(pol, segs, over, 0, MONO0 + 2 * SEC + DELAY), 0);
    over[0] = 1;
    ck_assert_int_eq(
        imc_policy_oldest_due(pol, segs, over, 0, MONO0 + 2 * SEC + DELAY), -1);
    ck_assert_int_eq(
        imc_policy_oldest_due(pol, segs, over, 0, MONO0 + 3 * SEC + DELAY), 2);
}
END_TEST

START_TEST(merged_marks_only_make_rows_look_younger)
{
    imc_spool_segment seg = segment("a", WALL0);
    imc_policy_seg *st = add_rows(&seg, 0, MONO0, WALL0);
    int i, n = 100;

    /* Row i counted at second i: far more counts than marks. */
    for (i = 0; i < n; ++i) {
        add_rows(&seg, 1, MONO0 + i * SEC, WALL0 + i * SEC);
    }
    for (i = 0; i < n; ++i) {
        apr_time_t head = imc_policy_head(st, &seg);

        ck_assert_msg(head >= WALL0 + i * SEC && head <= WALL0 + n * SEC,
                      "row %d counted at %d s looks counted at %d s", i, i,
                      (int)((head - WALL0) / SEC));
        deliver(&seg, 1, MONO0 + n * SEC);
    }
    ck_assert_int_eq(imc_policy_head(st, &seg), 0);
}
END_TEST

START_TEST(a_batch_takes_the_batch_size_or_what_is_resent)
{
    imc_spool_segment seg = segment("a", WALL0);
    imc_policy_seg *st = add_rows(&seg, 500, MONO0, WALL0);
    apr_size_t bytes;
    int rows;

    imc_policy_batch(pol, st, &seg, &rows, &bytes);
    ck_assert_int_eq(rows, BATCH);
    seg.intent_end = 37 * ROW;
    imc_policy_batch(pol, st, &seg, &rows, &bytes);
    ck_assert_int_eq(rows, APR_INT32_MAX);
    ck_assert_int_eq(bytes, 37 * ROW);
}
END_TEST

/* Sends the next batch of seg, which ClickHouse refuses for good when it
 * holds a row of bad[] (row numbers): returns the policy's answer, or -1
 * when taken. Moves seg as the deliverer does. */
static int send_next(imc_spool_segment *seg, const int *bad, int nbad,
                     int *quarantined)
{
    imc_policy_seg *st = imc_policy_seg_get(pol, seg);
    apr_off_t from = seg->done;
    int rows, i, first = (int)(from / ROW), refused = 0;
    apr_size_t bytes;
    imc_policy_refusal what;

    imc_policy_batch(pol, st, seg, &rows, &bytes);
    if (rows > (int)((seg->ready_end - from) / ROW)) {
        rows = (int)((seg->ready_end - from) / ROW);
    }
    for (i = 0; i < nbad; ++i) {
        refused |= bad[i] >= first && bad[i] < first + rows;
    }
    if (!refused) {
        deliver(seg, rows, MONO0);
        return -1;
    }
    what = imc_policy_refused(st, rows, from + (apr_off_t)rows * ROW);
    if (what == IMC_POLICY_ALONE) {
        *quarantined += 1;
        deliver(seg, 1, MONO0);
    } else if (what == IMC_POLICY_THE_REST) {
        int rest = (int)((imc_policy_split_end(st) - from) / ROW);

        *quarantined += rest;
        deliver(seg, rest, MONO0);
    }
    return (int)what;
}

START_TEST(a_refused_batch_is_halved_down_to_its_bad_rows)
{
    imc_spool_segment seg = segment("a", WALL0);
    static const int bad[] = {7, 40};
    int quarantined = 0, sends = 0, what, splits = 0;

    add_rows(&seg, 250, MONO0, WALL0);
    while (seg.done < seg.ready_end && sends < 1000) {
        ++sends;
        what = send_next(&seg, bad, 2, &quarantined);
        splits += what == IMC_POLICY_SPLIT;
    }
    ck_assert_int_eq(seg.done, seg.ready_end);
    ck_assert_int_eq(quarantined, 2); /* only the bad rows */
    ck_assert_int_eq(splits, 1);      /* the first refusal of the batch */
    ck_assert_int_lt(sends, 40);      /* halving, not row by row */
    ck_assert_int_eq(imc_policy_queued(imc_policy_seg_get(pol, &seg)), 0);
}
END_TEST

START_TEST(past_the_refused_batch_batches_are_full_again)
{
    imc_spool_segment seg = segment("a", WALL0);
    static const int bad[] = {0};
    imc_policy_seg *st;
    apr_size_t bytes;
    int quarantined = 0, rows;

    add_rows(&seg, 300, MONO0, WALL0);
    while (seg.done < BATCH * ROW) {
        send_next(&seg, bad, 1, &quarantined);
    }
    st = imc_policy_seg_get(pol, &seg);
    imc_policy_batch(pol, st, &seg, &rows, &bytes);
    ck_assert_int_eq(rows, BATCH);
    ck_assert_int_eq(quarantined, 1);
}
END_TEST

START_TEST(too_many_bad_rows_quarantine_the_rest_at_once)
{
    imc_spool_segment seg = segment("a", WALL0);
    int bad[BATCH], i, quarantined = 0, rest = 0, what;

    for (i = 0; i < BATCH; ++i) {
        bad[i] = i; /* a table that refuses every row */
    }
    add_rows(&seg, BATCH, MONO0, WALL0);
    while (seg.done < seg.ready_end) {
        what = send_next(&seg, bad, BATCH, &quarantined);
        rest += what == IMC_POLICY_THE_REST;
    }
    ck_assert_int_eq(quarantined, BATCH);
    ck_assert_int_eq(rest, 1);
    ck_assert_int_eq(imc_policy_queued(imc_policy_seg_get(pol, &seg)), 0);
}
END_TEST

START_TEST(state_goes_with_its_segment)
{
    apr_array_header_t *segs =
        apr_array_make(imc_unit_pool, 1, sizeof(imc_spool_segment));
    imc_spool_segment a = segment("a", WALL0);
    imc_policy_seg *st;

    add_rows(&a, 0, MONO0, WALL0);
    add_rows(&a, 5, MONO0, WALL0);
    imc_policy_prune(pol, segs); /* a is gone */
    a.ready_end = a.size = 0;
    st = imc_policy_seg_get(pol, &a);
    ck_assert_int_eq(imc_policy_queued(st), 0);
    ck_assert_int_eq(imc_policy_count_from(st), 0);
    *(imc_spool_segment *)apr_array_push(segs) = a;
    add_rows(&a, 4, MONO0, WALL0);
    imc_policy_prune(pol, segs); /* a stays */
    ck_assert_int_eq(imc_policy_queued(imc_policy_seg_get(pol, &a)), 4);
}
END_TEST

START_TEST(another_process_past_the_rows_empties_the_count)
{
    imc_spool_segment seg = segment("a", WALL0);
    imc_policy_seg *st = add_rows(&seg, 8, MONO0, WALL0);

    seg.done = seg.ready_end; /* delivered by the spool's last owner */
    st = imc_policy_seg_get(pol, &seg);
    ck_assert_int_eq(imc_policy_queued(st), 0);
    ck_assert_int_eq(imc_policy_count_from(st), seg.done);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("deliver_policy");
    TCase *tc = tcase_create("core");

    tcase_add_checked_fixture(tc, setup, imc_unit_teardown);
    tcase_add_test(tc, rows_of_a_new_segment_found_at_start_wait_the_delay);
    tcase_add_test(tc, rows_left_by_an_earlier_process_go_at_once);
    tcase_add_test(tc, a_clock_stepped_back_makes_rows_new);
    tcase_add_test(tc, rows_after_an_empty_listing_wait_from_their_count);
    tcase_add_test(tc, more_rows_do_not_restart_the_delay);
    tcase_add_test(tc, drained_rows_then_new_ones_wait_their_own_delay);
    tcase_add_test(tc, full_sealed_resent_and_flushed_are_due_at_once);
    tcase_add_test(tc, the_oldest_row_goes_first);
    tcase_add_test(tc, merged_marks_only_make_rows_look_younger);
    tcase_add_test(tc, a_batch_takes_the_batch_size_or_what_is_resent);
    tcase_add_test(tc, a_refused_batch_is_halved_down_to_its_bad_rows);
    tcase_add_test(tc, past_the_refused_batch_batches_are_full_again);
    tcase_add_test(tc, too_many_bad_rows_quarantine_the_rest_at_once);
    tcase_add_test(tc, state_goes_with_its_segment);
    tcase_add_test(tc, another_process_past_the_rows_empties_the_count);
    suite_add_tcase(s, tc);
    return s;
}
