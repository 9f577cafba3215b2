/* Licensed under the Apache License, Version 2.0. */

/*
 * Unit tests of imc_spool: the writer, the deliverer's reader API and the
 * on-disk guarantees (sealing, orphans, torn records, resume, limits).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_general.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include "check_main.h"
#include "imc_spool.h"

static apr_pool_t *pool;
static char dir[64];

/*
 * The spool's fdatasync calls land here: counted, and made as slow as a
 * real disk's when asked, so that group commit shows on any file system.
 */
static volatile int sync_delay_us;
static apr_uint32_t sync_calls;
/* The next fdatasync fails with EIO, after running sync_fail_first (when
 * set; its own fdatasync calls succeed). */
static volatile int sync_fail_next;
static void (*sync_fail_first)(void);

int fdatasync(int fd)
{
    static __thread int in_first;
    apr_atomic_inc32(&sync_calls);
    if (sync_delay_us > 0) {
        usleep((useconds_t)sync_delay_us);
    }
    if (sync_fail_next && !in_first) {
        sync_fail_next = 0;
        if (sync_fail_first) {
            in_first = 1;
            sync_fail_first();
            in_first = 0;
        }
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* keep going */
}

static void setup(void)
{
    ck_assert_int_eq(apr_pool_create(&pool, NULL), APR_SUCCESS);
    strcpy(dir, "/tmp/imc_spool_test_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    apr_pool_destroy(pool);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *path_of(const char *name)
{
    return apr_pstrcat(pool, dir, "/", name, NULL);
}

static apr_off_t file_size(const char *name)
{
    struct stat st;
    return stat(path_of(name), &st) == 0 ? (apr_off_t)st.st_size : -1;
}

static int exists(const char *name)
{
    return access(path_of(name), F_OK) == 0;
}

/* List and return the number of segments; *segs gets the array. */
static int list(apr_pool_t *p, apr_array_header_t **segs)
{
    ck_assert_int_eq(imc_spool_list(p, dir, segs), APR_SUCCESS);
    return (*segs)->nelts;
}

static imc_spool_segment *seg_at(apr_array_header_t *segs, int i)
{
    return &APR_ARRAY_IDX(segs, i, imc_spool_segment);
}

/* Everything ready in seg, read in batches of max_lines and committed. */
static char *drain(apr_pool_t *p, imc_spool_segment *seg, int max_lines,
                   int *rows)
{
    char *all = "";
    const char *buf;
    apr_size_t len;
    int lines, rounds = 0;
    *rows = 0;
    for (;;) {
        ck_assert_int_eq(imc_spool_read(p, dir, seg, seg->done, max_lines, 0,
                                        &buf, &len, &lines),
                         APR_SUCCESS);
        if (len == 0) {
            break;
        }
        ck_assert_int_gt(lines, 0);
        ck_assert(max_lines <= 0 || lines <= max_lines);
        ck_assert_int_eq(buf[len - 1], '\n');
        all = apr_pstrcat(p, all, apr_pstrndup(p, buf, len), NULL);
        *rows += lines;
        ck_assert_int_eq(imc_spool_commit(p, dir, seg, seg->done + len),
                         APR_SUCCESS);
        ck_assert_int_lt(++rounds, 100000);
    }
    return all;
}

/* The rows of s (empty lines dropped), as one string. */
static char *rows_of(apr_pool_t *p, const char *s)
{
    char *out = apr_pstrdup(p, s), *w = out;
    const char *r;
    for (r = s; *r; r++) {
        if (!(*r == '\n' && (r == s || r[-1] == '\n'))) {
            *w++ = *r;
        }
    }
    *w = '\0';
    return out;
}

/* Append bytes to a file by hand (a writer that died mid-write). */
static void append_raw(const char *name, const char *bytes)
{
    int fd = open(path_of(name), O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    close(fd);
}

static void write_file(const char *name, const char *bytes)
{
    int fd = open(path_of(name), O_WRONLY | O_CREAT | O_TRUNC, 0640);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    close(fd);
}

START_TEST(append_and_read_back)
{
    imc_spool *sp;
    imc_spool_pos pos[3], empty;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    apr_uint64_t n;
    const char *buf;
    apr_size_t len;
    int lines, rows, done;
    char *all;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "a1\n", 3, &pos[0]), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "b1\nb2\nb3\n", 9, &pos[1]),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "c1\n", 3, &pos[2]), APR_SUCCESS);
    ck_assert_str_eq(pos[0].segment, pos[2].segment);
    ck_assert(pos[0].end < pos[1].end && pos[1].end < pos[2].end);
    /* malformed requests are refused and leave nothing behind */
    ck_assert_int_eq(imc_spool_append(sp, "x", 1, NULL), APR_EINVAL);
    ck_assert_int_eq(imc_spool_append(sp, "x\n\ny\n", 5, NULL), APR_EINVAL);
    ck_assert_int_eq(imc_spool_append(sp, "x\ny\n\n", 5, NULL), APR_EINVAL);
    ck_assert_int_eq(imc_spool_append(sp, "\nx\n", 3, NULL), APR_EINVAL);
    ck_assert_int_eq(imc_spool_append(sp, "x\n", 1, NULL), APR_EINVAL);
    /* an empty request writes nothing and is delivered at once */
    ck_assert_int_eq(imc_spool_append(sp, "", 0, &empty), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &empty, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 1);

    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    ck_assert_str_eq(seg->name, pos[0].segment);
    ck_assert_int_eq(seg->sealed, 0);
    ck_assert_int_eq(seg->done, 0);
    ck_assert_int_eq(seg->size, 3 + 9 + 3 + 3);
    ck_assert_int_eq(seg->ready_end, seg->size);
    ck_assert_int_eq(imc_spool_count_lines(pool, dir, seg, 0, seg->size, &n),
                     APR_SUCCESS);
    ck_assert_int_eq(n, 5);

    /* a batch stops after max_lines rows, at a line start */
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 2, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, 2);
    ck_assert_str_eq(rows_of(pool, apr_pstrndup(pool, buf, len)), "a1\nb1\n");
    /* and after max_bytes, yet always carries one row */
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 0, 1, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, 1);
    ck_assert_int_eq(len, 3);
    /* from must be a line start */
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 1, 0, 0, &buf, &len, &lines),
        APR_EINVAL);

    all = drain(pool, seg, 0, &rows);
    ck_assert_int_eq(rows, 5);
    ck_assert_str_eq(rows_of(pool, all), "a1\nb1\nb2\nb3\nc1\n");
    /* a live writer's segment stays, even when delivered */
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, seg_at(segs, 0)->ready_end);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "z\n", 2, NULL), APR_EBADF);
    ck_assert_int_eq(list(pool, &segs), 0);
}
END_TEST

#define THREADS    8
#define PER_THREAD 150

typedef struct {
    imc_spool *sp;
    int id;
    apr_status_t rv[PER_THREAD];
    imc_spool_pos pos[PER_THREAD];
} worker;

static void *APR_THREAD_FUNC work(apr_thread_t *t, void *data)
{
    worker *w = data;
    char row[64];
    int i, n;
    for (i = 0; i < PER_THREAD; i++) {
        n = snprintf(row, sizeof(row), "{\"t\":%d,\"i\":%d}\n", w->id, i);
        if (i % 3 == 0) { /* some requests carry two rows */
            n += snprintf(row + n, sizeof(row) - n, "{\"t\":%d,\"j\":%d}\n",
                          w->id, i);
        }
        w->rv[i] = imc_spool_append(w->sp, row, (apr_size_t)n, &w->pos[i]);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static int pos_cmp(const imc_spool_pos *a, const imc_spool_pos *b)
{
    int c = strcmp(a->segment, b->segment);
    return c ? c : (a->end > b->end) - (a->end < b->end);
}

START_TEST(group_commit_threads)
{
    static worker w[THREADS];
    apr_thread_t *th[THREADS];
    apr_array_header_t *segs;
    apr_uint64_t writes, syncs;
    apr_hash_t *seen = apr_hash_make(pool);
    imc_spool *sp;
    apr_status_t rv;
    char *all = "", *line, *last;
    int i, j, rows, total = 0, expect = 0;

    /* small segments: rollovers happen while others sync */
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 4096, 1), APR_SUCCESS);
    sync_delay_us = 300;
    apr_atomic_set32(&sync_calls, 0);
    for (i = 0; i < THREADS; i++) {
        w[i].sp = sp;
        w[i].id = i;
        ck_assert_int_eq(apr_thread_create(&th[i], NULL, work, &w[i], pool),
                         APR_SUCCESS);
    }
    for (i = 0; i < THREADS; i++) {
        apr_thread_join(&rv, th[i]);
    }
    sync_delay_us = 0;
    imc_spool_counters(sp, &writes, &syncs);
    ck_assert_int_eq(writes, THREADS * PER_THREAD);
    ck_assert_uint_eq(syncs, apr_atomic_read32(&sync_calls));
    ck_assert_uint_ge(syncs, 1);
    ck_assert_uint_lt(syncs, writes / 2); /* fdatasync calls were shared */
    for (i = 0; i < THREADS; i++) {
        for (j = 0; j < PER_THREAD; j++) {
            ck_assert_int_eq(w[i].rv[j], APR_SUCCESS);
            expect += j % 3 == 0 ? 2 : 1;
            if (j > 0) { /* one thread's requests land in order */
                ck_assert_int_lt(pos_cmp(&w[i].pos[j - 1], &w[i].pos[j]), 0);
            }
        }
    }
    for (i = 0; i < THREADS * PER_THREAD; i++) { /* all distinct */
        imc_spool_pos *a = &w[i / PER_THREAD].pos[i % PER_THREAD];
        char *key = apr_psprintf(pool, "%s@%ld", a->segment, (long)a->end);
        ck_assert_ptr_null(apr_hash_get(seen, key, APR_HASH_KEY_STRING));
        apr_hash_set(seen, key, APR_HASH_KEY_STRING, "");
    }
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_gt(list(pool, &segs), 1);
    for (i = 0; i < segs->nelts; i++) {
        ck_assert_int_eq(seg_at(segs, i)->sealed, 1);
        ck_assert_int_le(seg_at(segs, i)->size, 4096);
        all = apr_pstrcat(pool, all, drain(pool, seg_at(segs, i), 7, &rows),
                          NULL);
        total += rows;
    }
    ck_assert_int_eq(total, expect);
    seen = apr_hash_make(pool);
    for (line = apr_strtok(all, "\n", &last); line;
         line = apr_strtok(NULL, "\n", &last)) {
        ck_assert_ptr_null(apr_hash_get(seen, line, APR_HASH_KEY_STRING));
        apr_hash_set(seen, line, APR_HASH_KEY_STRING, "");
    }
    ck_assert_int_eq(apr_hash_count(seen), expect);
    ck_assert_int_eq(list(pool, &segs), 0); /* all delivered and removed */
}
END_TEST

START_TEST(rollover_never_splits)
{
    const char *recs[40];
    apr_array_header_t *segs;
    imc_spool *sp;
    char *content, *rec;
    int i, k, n = 0, rows;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 100, 0), APR_SUCCESS);
    for (i = 0; i < 40; i++) {
        int r, nrows = 1 + (i * 7) % 4;
        char *s = "";
        for (r = 0; r < nrows; r++) {
            s = apr_psprintf(pool, "%srec%02d-row%d-%.*s\n", s, i, r,
                             (i * 13 + r * 5) % 17, "xxxxxxxxxxxxxxxxxxxx");
        }
        if (i == 20) { /* bigger than a segment: alone in its own */
            s = apr_psprintf(pool, "rec20-%0150d\n", 0);
        }
        recs[i] = s;
        ck_assert_int_eq(imc_spool_append(sp, s, strlen(s), NULL), APR_SUCCESS);
    }
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_gt(list(pool, &segs), 5);
    for (i = 0; i < segs->nelts; i++) {
        imc_spool_segment *seg = seg_at(segs, i);
        const char *buf;
        apr_size_t len;
        k = 0;
        ck_assert_int_eq(
            imc_spool_read(pool, dir, seg, 0, 0, 0, &buf, &len, &rows),
            APR_SUCCESS);
        ck_assert_int_eq(len, seg->size);
        content = apr_pstrndup(pool, buf, len);
        /* whole records only, in order; a full segment has one record */
        for (rec = strstr(content, "\n\n"); rec;
             rec = strstr(rec + 2, "\n\n")) {
            k++;
        }
        ck_assert_int_ge(k, 1);
        ck_assert(seg->size <= 100 || k == 1);
        for (rec = content; *rec; n++) {
            char *end = strstr(rec, "\n\n");
            ck_assert_ptr_nonnull(end);
            ck_assert_int_lt(n, 40);
            end[1] = '\0';
            ck_assert_str_eq(rec, recs[n]);
            rec = end + 2;
        }
    }
    ck_assert_int_eq(n, 40);
}
END_TEST

START_TEST(sealed_after_close)
{
    imc_spool *a, *b;
    imc_spool_pos pa, pb;
    apr_array_header_t *segs;
    int rows;

    ck_assert_int_eq(imc_spool_open(&a, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_open(&b, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(a, "a\n", 2, &pa), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(b, "b\n", 2, &pb), APR_SUCCESS);
    ck_assert_str_ne(pa.segment, pb.segment);
    ck_assert_int_eq(list(pool, &segs), 2);
    ck_assert_int_eq(seg_at(segs, 0)->sealed, 0);
    ck_assert_int_eq(seg_at(segs, 1)->sealed, 0);
    ck_assert_int_eq(imc_spool_close(a), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 2);
    ck_assert_int_eq(seg_at(segs, 0)->sealed, 1);
    ck_assert_str_eq(seg_at(segs, 0)->name, pa.segment);
    ck_assert_int_eq(seg_at(segs, 1)->sealed, 0);
    ck_assert_str_eq(drain(pool, seg_at(segs, 0), 0, &rows), "a\n\n");
    ck_assert(!exists(pa.segment));
    ck_assert(!exists(apr_pstrcat(pool, pa.segment, ".pos", NULL)));
    ck_assert(exists(pb.segment));
}
END_TEST

START_TEST(orphan_of_dead_child)
{
    imc_spool *sp;
    imc_spool_pos mine;
    apr_array_header_t *segs;
    imc_spool_segment *orphan = NULL;
    int i, status, rows, unsealed = 0;
    pid_t pid;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "parent\n", 7, &mine), APR_SUCCESS);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* inherited writer: must not reuse the parent's file */
        imc_spool_pos p;
        int ok = imc_spool_append(sp, "child\n", 6, &p) == APR_SUCCESS &&
                 strcmp(p.segment, mine.segment) != 0;
        _exit(ok ? 0 : 1); /* no close, no cleanup */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(list(pool, &segs), 2);
    for (i = 0; i < 2; i++) {
        imc_spool_segment *s = seg_at(segs, i);
        if (strcmp(s->name, mine.segment) == 0) {
            unsealed += !s->sealed;
        } else {
            orphan = s;
        }
    }
    ck_assert_int_eq(unsealed, 1);
    ck_assert_ptr_nonnull(orphan);
    ck_assert_int_eq(orphan->sealed, 1);
    ck_assert_str_eq(drain(pool, orphan, 0, &rows), "child\n\n");
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_str_eq(seg_at(segs, 0)->name, mine.segment);
}
END_TEST

START_TEST(torn_record_never_delivered)
{
    imc_spool *sp;
    imc_spool_pos pos;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    apr_uint64_t n;
    int rows;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "ok1\nok2\n", 8, &pos), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    /* a writer killed inside write(): whole rows, then half a row */
    append_raw(pos.segment, "torn1\ntorn2\ntor");
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    ck_assert_int_eq(seg->sealed, 1);
    ck_assert_int_eq(seg->ready_end, 9);
    ck_assert_int_eq(seg->size, 9 + 15);
    ck_assert_int_eq(imc_spool_count_lines(pool, dir, seg, 0, seg->size, &n),
                     APR_SUCCESS);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(drain(pool, seg, 0, &rows), "ok1\nok2\n\n");
    ck_assert_int_eq(rows, 2);
    ck_assert(!exists(pos.segment)); /* removed despite the torn tail */

    /* a segment holding nothing but a torn record goes on the next list */
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "x\n", 2, &pos), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(truncate(path_of(pos.segment), 2), 0);
    ck_assert_int_eq(list(pool, &segs), 0);
    ck_assert(!exists(pos.segment));

    /* a long torn tail: the terminator is found across read windows */
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "r\n", 2, &pos), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    append_raw(pos.segment, apr_psprintf(pool, "%0511d", 7));
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->size, 514);
    ck_assert_int_eq(seg_at(segs, 0)->ready_end, 3);
    ck_assert_str_eq(drain(pool, seg_at(segs, 0), 0, &rows), "r\n\n");
    ck_assert(!exists(pos.segment));
}
END_TEST

START_TEST(intent_commit_resume)
{
    imc_spool *sp;
    apr_array_header_t *segs;
    imc_spool_segment seg;
    apr_pool_t *crash;
    const char *buf, *again;
    apr_size_t len, len2;
    char row[32];
    int i, lines, lines2;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    for (i = 0; i < 10; i++) {
        snprintf(row, sizeof(row), "row-%d\n", i);
        ck_assert_int_eq(imc_spool_append(sp, row, strlen(row), NULL),
                         APR_SUCCESS);
    }
    /* a deliverer sends a batch and dies before the answer */
    apr_pool_create(&crash, pool);
    ck_assert_int_eq(list(crash, &segs), 1);
    seg = *seg_at(segs, 0);
    ck_assert_int_eq(seg.intent_end, seg.done);
    ck_assert_int_eq(
        imc_spool_read(crash, dir, &seg, seg.done, 3, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, 3);
    buf = apr_pstrndup(pool, buf, len);
    ck_assert_int_eq(imc_spool_intent(crash, dir, &seg, seg.done + len),
                     APR_SUCCESS);
    apr_pool_destroy(crash);

    /* the next one sees the intent and resends exactly that batch */
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = *seg_at(segs, 0);
    ck_assert_int_eq(seg.done, 0);
    ck_assert_int_eq(seg.intent_end, (apr_off_t)len);
    ck_assert_int_eq(imc_spool_read(pool, dir, &seg, seg.done, 0,
                                    (apr_size_t)(seg.intent_end - seg.done),
                                    &again, &len2, &lines2),
                     APR_SUCCESS);
    ck_assert_int_eq(len2, len);
    ck_assert_int_eq(lines2, lines);
    ck_assert(memcmp(again, buf, len) == 0);
    ck_assert_int_eq(imc_spool_commit(pool, dir, &seg, seg.intent_end),
                     APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, (apr_off_t)len);
    ck_assert_int_eq(seg_at(segs, 0)->intent_end, (apr_off_t)len);
    /* intent beyond the segment is refused */
    ck_assert_int_eq(
        imc_spool_intent(pool, dir, seg_at(segs, 0), seg_at(segs, 0)->size + 1),
        APR_EINVAL);
    ck_assert_int_eq(imc_spool_commit(pool, dir, seg_at(segs, 0), 0),
                     APR_EINVAL);
}
END_TEST

START_TEST(quarantine_moves_batch)
{
    imc_spool *sp;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    const char *buf, *rows_file;
    apr_size_t len;
    char got[64] = "";
    int lines, fd;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "bad1\nbad2\n", 10, NULL),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "good\n", 5, NULL), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 2, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, 2);
    ck_assert_int_eq(imc_spool_quarantine(pool, dir, seg, 0, (apr_off_t)len),
                     APR_SUCCESS);
    rows_file = apr_psprintf(pool, "failed/%.*s-0-%d.rows",
                             (int)strlen(seg->name) - 4, seg->name, (int)len);
    fd = open(path_of(rows_file), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(read(fd, got, sizeof(got) - 1), (ssize_t)len);
    close(fd);
    ck_assert(memcmp(got, buf, len) == 0);
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, (apr_off_t)len);
    ck_assert_int_eq(imc_spool_read(pool, dir, seg_at(segs, 0),
                                    seg_at(segs, 0)->done, 0, 0, &buf, &len,
                                    &lines),
                     APR_SUCCESS);
    ck_assert_int_eq(lines, 1);
    ck_assert_str_eq(rows_of(pool, buf), "good\n");
}
END_TEST

START_TEST(usage_and_limit)
{
    char rec[100];
    imc_spool *sp;
    imc_spool_pos pos;
    imc_spool_usage_t u;
    apr_array_header_t *segs;
    apr_time_t t0 = apr_time_now();
    apr_off_t size;
    int rows;

    memset(rec, 'x', sizeof(rec) - 1);
    rec[sizeof(rec) - 1] = '\n'; /* 100 bytes + terminator per append */
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    imc_spool_set_limit(sp, 250);
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, &pos), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, NULL), APR_SUCCESS);
    size = file_size(pos.segment);
    ck_assert_int_eq(size, 202);
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, NULL),
                     IMC_SPOOL_EOVERLIMIT);
    ck_assert_int_eq(file_size(pos.segment), size); /* nothing written */

    ck_assert_int_eq(imc_spool_usage(pool, dir, &u), APR_SUCCESS);
    ck_assert_int_eq(u.pending, 202);
    ck_assert_int_eq(u.segments, 1);
    ck_assert_int_eq(u.writable, 1);
    ck_assert_int_gt(u.avail, 0);
    ck_assert(u.oldest >= t0 && u.oldest <= apr_time_now());
    ck_assert(u.oldest_age >= 0 && u.oldest_age < apr_time_from_sec(60));

    /* delivery frees room; the writer notices within 250 ms */
    ck_assert_int_eq(list(pool, &segs), 1);
    drain(pool, seg_at(segs, 0), 0, &rows);
    ck_assert_int_eq(rows, 2);
    ck_assert_int_eq(imc_spool_usage(pool, dir, &u), APR_SUCCESS);
    ck_assert_int_eq(u.pending, 0);
    ck_assert_int_eq(u.oldest, 0);
    apr_sleep(apr_time_from_msec(300));
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, NULL), APR_SUCCESS);
    ck_assert_int_eq(file_size(pos.segment), size + 101);
    imc_spool_set_limit(sp, 0); /* no limit */
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, NULL), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, NULL), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_usage(pool, dir, &u), APR_SUCCESS);
    ck_assert_int_eq(u.pending, 303);
}
END_TEST

START_TEST(is_delivered_follows_progress)
{
    imc_spool *sp;
    imc_spool_pos p1, p2, bogus;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    const char *buf;
    apr_size_t len;
    int lines, done;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "one\n", 4, &p1), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "two\n", 4, &p2), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &p1, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 1, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(imc_spool_intent(pool, dir, seg, (apr_off_t)len),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &p1, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0); /* sent is not stored */
    ck_assert_int_eq(imc_spool_commit(pool, dir, seg, (apr_off_t)len),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &p1, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 1);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &p2, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    drain(pool, seg_at(segs, 0), 0, &lines);
    ck_assert(!exists(p2.segment));
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &p2, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 1); /* gone */
    memset(&bogus, 0, sizeof(bogus));
    strcpy(bogus.segment, "../etc/passwd");
    bogus.end = 10;
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &bogus, &done),
                     APR_EINVAL);
    ck_assert_int_eq(done, 0);
}
END_TEST

START_TEST(one_deliverer)
{
    apr_file_t *a, *b;
    int status;
    pid_t pid;

    ck_assert_int_eq(imc_spool_lock_deliverer(&a, pool, dir), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_lock_deliverer(&b, pool, dir), APR_EAGAIN);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* another process is refused too */
        apr_pool_t *cp;
        apr_file_t *c;
        apr_pool_create(&cp, NULL);
        _exit(imc_spool_lock_deliverer(&c, cp, dir) == APR_EAGAIN ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(apr_file_close(a), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_lock_deliverer(&b, pool, dir), APR_SUCCESS);
    ck_assert_int_eq(apr_file_close(b), APR_SUCCESS);
}
END_TEST

START_TEST(leftovers_cleaned)
{
    const char *old_tmp = "00000000000000aa-1-0.tmp";
    const char *new_tmp = "00000000000000aa-1-1.tmp";
    const char *held_tmp = "00000000000000aa-1-2.tmp";
    const char *old_pos_tmp = "00000000000000aa-1-3.seg.pos.tmp";
    const char *orphan_pos = "00000000000000aa-1-4.seg.pos";
    struct timeval tv[2];
    apr_array_header_t *segs;
    int held;

    write_file(old_tmp, "x\n");
    write_file(new_tmp, "x\n");
    write_file(held_tmp, "x\n");
    write_file(old_pos_tmp, "1 1\n");
    write_file(orphan_pos, "1 1\n");
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= 120;
    tv[1] = tv[0];
    ck_assert_int_eq(utimes(path_of(old_tmp), tv), 0);
    ck_assert_int_eq(utimes(path_of(held_tmp), tv), 0);
    ck_assert_int_eq(utimes(path_of(old_pos_tmp), tv), 0);
    held = open(path_of(held_tmp), O_RDONLY); /* a writer still owns it */
    ck_assert_int_eq(flock(held, LOCK_SH), 0);
    ck_assert_int_eq(list(pool, &segs), 0);
    ck_assert(!exists(old_tmp));
    ck_assert(!exists(old_pos_tmp));
    ck_assert(!exists(orphan_pos));
    ck_assert(exists(new_tmp));
    ck_assert(exists(held_tmp));
    close(held);
}
END_TEST

START_TEST(bogus_pos_is_safe)
{
    imc_spool *sp;
    imc_spool_pos pos;
    apr_array_header_t *segs;
    const char *pos_file;
    int rows;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "aaaa\nbbbb\n", 10, &pos),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    pos_file = apr_pstrcat(pool, pos.segment, ".pos", NULL);
    write_file(pos_file, "garbage");
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, 0);
    write_file(pos_file, "7 99\n"); /* inside a line, past the end */
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, 5);
    ck_assert_int_eq(seg_at(segs, 0)->intent_end, 11);
    write_file(pos_file, "7 2\n"); /* intent before done */
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, 5);
    ck_assert_int_eq(seg_at(segs, 0)->intent_end, 5);
    ck_assert_str_eq(drain(pool, seg_at(segs, 0), 0, &rows), "bbbb\n\n");
    ck_assert(!exists(pos.segment));
}
END_TEST

START_TEST(failed_write_leaves_nothing)
{
    struct rlimit old, lim;
    imc_spool *sp;
    imc_spool_pos pos, third;
    apr_array_header_t *segs;
    char big[200];
    apr_status_t rv;
    int rows;

    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\n';
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "first\n", 6, &pos), APR_SUCCESS);
    /* the disk "fills" half-way through the next request */
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 7 + 100;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    rv = imc_spool_append(sp, big, sizeof(big), NULL);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    ck_assert_int_eq(rv, EFBIG);
    ck_assert_int_eq(file_size(pos.segment), 7);
    /* the failed segment is sealed at once (on a full disk its space comes
       back only once it is delivered and removed); the next request starts
       a new one */
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->sealed, 1);
    ck_assert_int_eq(imc_spool_append(sp, "third\n", 6, &third), APR_SUCCESS);
    ck_assert_str_ne(third.segment, pos.segment);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 2);
    ck_assert_str_eq(drain(pool, seg_at(segs, 0), 0, &rows), "first\n\n");
    ck_assert_str_eq(drain(pool, seg_at(segs, 1), 0, &rows), "third\n\n");
    ck_assert_int_eq(list(pool, &segs), 0);
}
END_TEST

START_TEST(pos_made_with_segment)
{
    imc_spool *sp;
    imc_spool_pos pos;
    apr_array_header_t *segs;
    const char *pos_file;
    int fd;
    char text[16] = "";

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "one\n", 4, &pos), APR_SUCCESS);
    /* the deliverer only ever rewrites it: possible in place on a full
       disk, where no new file can be made */
    pos_file = apr_pstrcat(pool, pos.segment, ".pos", NULL);
    fd = open(path_of(pos_file), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(read(fd, text, sizeof(text) - 1), 4);
    close(fd);
    ck_assert_str_eq(text, "0 0\n");
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_int_eq(seg_at(segs, 0)->done, 0);
    ck_assert_int_eq(seg_at(segs, 0)->intent_end, 0);
    /* sealed and delivered: removed with its .pos, none written first */
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    /* a .pos could not be replaced now */
    ck_assert_int_eq(
        mkdir(path_of(apr_pstrcat(pool, pos_file, ".tmp", NULL)), 0700), 0);
    ck_assert_int_eq(imc_spool_commit(pool, dir, seg_at(segs, 0),
                                      seg_at(segs, 0)->ready_end),
                     APR_SUCCESS);
    ck_assert(!exists(pos.segment));
    ck_assert(!exists(pos_file));
}
END_TEST

START_TEST(quarantined_is_not_delivered)
{
    imc_spool *sp;
    imc_spool_pos bad, good;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    const char *buf;
    apr_size_t len;
    int lines, done;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "bad\n", 4, &bad), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "good\n", 5, &good), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 1, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(imc_spool_quarantine(pool, dir, seg, 0, (apr_off_t)len),
                     APR_SUCCESS);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &bad, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0); /* past it, but not stored */
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &good, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    drain(pool, seg_at(segs, 0), 0, &lines);
    ck_assert(!exists(good.segment));
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &good, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 1);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &bad, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0); /* gone, and still not stored */
}
END_TEST

/* A row quarantined from the middle of a request: the request is not
 * delivered, the requests beside it are. */
START_TEST(quarantined_row_inside_a_request)
{
    imc_spool *sp;
    imc_spool_pos before, req, after;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    const char *buf;
    apr_size_t len;
    apr_off_t from;
    int lines, done;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "x\n", 2, &before), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "a\nbad\nc\n", 8, &req), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "y\n", 2, &after), APR_SUCCESS);
    ck_assert_int_eq(req.end - req.start, 8);
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    /* x and a delivered, bad quarantined alone, the rest delivered. */
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 2, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, 2);
    ck_assert_int_eq(imc_spool_commit(pool, dir, seg, (apr_off_t)len),
                     APR_SUCCESS);
    from = (apr_off_t)len;
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, from, 1, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert(!strncmp(buf, "bad\n", 4));
    ck_assert_int_eq(
        imc_spool_quarantine(pool, dir, seg, from, from + (apr_off_t)len),
        APR_SUCCESS);
    drain(pool, seg, 0, &lines);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &req, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 0);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &before, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 1);
    ck_assert_int_eq(imc_spool_is_delivered(pool, dir, &after, &done),
                     APR_SUCCESS);
    ck_assert_int_eq(done, 1);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
}
END_TEST

/* Batches bigger than a first read (1 MB) come whole, within their
 * limits, and a row bigger than max_bytes still comes alone. */
START_TEST(batches_beyond_the_first_read)
{
    enum { ROW = 1000, ROWS = 3000 }; /* about 3 MB */
    imc_spool *sp;
    apr_array_header_t *segs;
    imc_spool_segment *seg;
    const char *buf;
    char *row = apr_palloc(pool, ROW + 1), *big;
    apr_size_t len;
    int i, lines;

    memset(row, 'r', ROW - 1);
    row[ROW - 1] = '\n';
    row[ROW] = '\0';
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 64 << 20, 0), APR_SUCCESS);
    for (i = 0; i < ROWS; ++i) {
        ck_assert_int_eq(imc_spool_append(sp, row, ROW, NULL), APR_SUCCESS);
    }
    big = apr_palloc(pool, 3 << 20);
    memset(big, 'b', (3 << 20) - 1);
    big[(3 << 20) - 1] = '\n';
    ck_assert_int_eq(imc_spool_append(sp, big, 3 << 20, NULL), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 1);
    seg = seg_at(segs, 0);
    /* Rows are records of ROW + 1 bytes (the record's empty line). */
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, ROWS, 0, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, ROWS);
    ck_assert_int_eq(len, (apr_size_t)ROWS * (ROW + 1));
    ck_assert_int_eq(
        imc_spool_read(pool, dir, seg, 0, 2500, 2 << 20, &buf, &len, &lines),
        APR_SUCCESS);
    ck_assert_int_eq(lines, (2 << 20) / (ROW + 1));
    ck_assert_int_le(len, (apr_size_t)2 << 20);
    /* The big row: alone, whole, past max_bytes. */
    ck_assert_int_eq(imc_spool_read(pool, dir, seg, (apr_off_t)ROWS * (ROW + 1),
                                    10, 4096, &buf, &len, &lines),
                     APR_SUCCESS);
    ck_assert_int_eq(lines, 1);
    ck_assert_int_eq(len, (apr_size_t)3 << 20);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
}
END_TEST

#define KILLED      6
#define MAX_REQS    100
#define PAD         8192
#define REQ_ROWS(r) (1 + ((r)*7) % 60)

/* A writer process: acknowledges each appended request on fd ack. */
static void killed_writer(int id, int ack)
{
    apr_pool_t *p;
    imc_spool *sp;
    char *req, *pad;
    int r, k, n, len;
    apr_pool_create(&p, NULL);
    pad = apr_palloc(p, PAD);
    memset(pad, 'p', PAD - 1);
    pad[PAD - 1] = '\0';
    req = apr_palloc(p, 60 * (PAD + 64));
    if (imc_spool_open(&sp, p, dir, 4 * 1024 * 1024, 0) != APR_SUCCESS) {
        _exit(1);
    }
    for (r = 0; r < MAX_REQS; r++) {
        n = REQ_ROWS(r); /* up to 480 KB: many pages per write() */
        for (len = 0, k = 0; k < n; k++) {
            len += sprintf(req + len, "c%d r%d k%d n%d ", id, r, k, n);
            memcpy(req + len, pad, PAD - 1);
            len += PAD - 1;
            req[len++] = '\n';
        }
        if (imc_spool_append(sp, req, (apr_size_t)len, NULL) == APR_SUCCESS &&
            write(ack, &r, sizeof(r)) != sizeof(r)) {
            _exit(1);
        }
    }
    pause(); /* still holding its segment when killed */
    _exit(0);
}

/* Deliver every ready row; count rows per request. */
static void deliver_round(apr_pool_t *p, apr_hash_t *got)
{
    apr_array_header_t *segs;
    const char *buf, *line, *nl;
    apr_size_t len;
    int i, lines;
    list(p, &segs);
    for (i = 0; i < segs->nelts; i++) {
        imc_spool_segment *seg = seg_at(segs, i);
        while (imc_spool_read(p, dir, seg, seg->done, 50, 1 << 20, &buf, &len,
                              &lines) == APR_SUCCESS &&
               len > 0) {
            for (line = buf; line < buf + len; line = nl + 1) {
                int c, r, k, n, *cnt;
                const char *key;
                nl = memchr(line, '\n', (apr_size_t)(buf + len - line));
                if (nl == line) {
                    continue; /* record terminator */
                }
                ck_assert_int_eq(
                    sscanf(line, "c%d r%d k%d n%d", &c, &r, &k, &n), 4);
                ck_assert_int_eq(nl - line,
                                 (int)strlen("c r k n ") +
                                     snprintf(NULL, 0, "%d%d%d%d", c, r, k, n) +
                                     PAD - 1);
                key = apr_psprintf(pool, "%d/%d/%d", c, r, n);
                cnt = apr_hash_get(got, key, APR_HASH_KEY_STRING);
                if (!cnt) {
                    cnt = apr_pcalloc(pool, sizeof(*cnt));
                    apr_hash_set(got, key, APR_HASH_KEY_STRING, cnt);
                }
                ++*cnt;
            }
            ck_assert_int_eq(
                imc_spool_commit(p, dir, seg, seg->done + (apr_off_t)len),
                APR_SUCCESS);
        }
    }
}

START_TEST(kill9_writers_lose_nothing)
{
    apr_hash_t *got = apr_hash_make(pool);
    apr_hash_index_t *hi;
    apr_array_header_t *segs;
    pid_t pids[KILLED];
    int acks[KILLED][2], i, r, acked = 0, status;

    for (i = 0; i < KILLED; i++) {
        ck_assert_int_eq(pipe(acks[i]), 0);
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            close(acks[i][0]);
            killed_writer(i, acks[i][1]);
        }
        close(acks[i][1]);
    }
    /* writers die one by one, most likely inside a write() */
    for (i = 0; i < KILLED; i++) {
        apr_sleep(apr_time_from_msec(i == 0 ? 4 : 1));
        kill(pids[i], SIGKILL);
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        ck_assert(WIFSIGNALED(status));
        if (i == KILLED - 2) { /* some delivery while one still writes */
            apr_pool_t *round;
            apr_pool_create(&round, pool);
            deliver_round(round, got);
            apr_pool_destroy(round);
        }
    }
    deliver_round(pool, got);
    ck_assert_int_eq(list(pool, &segs), 0); /* all adopted and removed */
    /* every request delivered is whole, and delivered once */
    for (hi = apr_hash_first(pool, got); hi; hi = apr_hash_next(hi)) {
        const char *key = apr_hash_this_key(hi);
        int *cnt = apr_hash_this_val(hi), c, n;
        ck_assert_int_eq(sscanf(key, "%d/%d/%d", &c, &r, &n), 3);
        ck_assert_msg(*cnt == n, "request %s: %d of %d rows", key, *cnt, n);
    }
    /* every acknowledged request was delivered */
    for (i = 0; i < KILLED; i++) {
        while (read(acks[i][0], &r, sizeof(r)) == sizeof(r)) {
            const char *key = apr_psprintf(pool, "%d/%d/%d", i, r, REQ_ROWS(r));
            ck_assert_msg(apr_hash_get(got, key, APR_HASH_KEY_STRING) != NULL,
                          "acknowledged %s lost", key);
            acked++;
        }
        close(acks[i][0]);
    }
    ck_assert_int_gt(acked, 0);
}
END_TEST

/* A segment that cannot be inspected (here: out of file descriptors)
 * keeps its rows and its .pos: only the .pos of a segment that is gone is
 * a leftover. */
START_TEST(uninspectable_segment_is_kept)
{
    struct rlimit old, lim;
    imc_spool *sp;
    imc_spool_pos pos;
    apr_array_header_t *segs;
    apr_status_t rv;
    int fd, rows;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, "keep\n", 5, &pos), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    /* one descriptor left: the segment opens, its .pos does not */
    fd = dup(0);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)fd + 1;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    rv = imc_spool_list(pool, dir, &segs);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(rv, APR_SUCCESS);
    ck_assert_int_eq(segs->nelts, 0);
    ck_assert(exists(pos.segment));
    ck_assert(exists(apr_pstrcat(pool, pos.segment, ".pos", NULL)));
    ck_assert_int_eq(list(pool, &segs), 1);
    ck_assert_str_eq(drain(pool, seg_at(segs, 0), 0, &rows), "keep\n\n");
}
END_TEST

#define RACE_ROWS 1000

static apr_uint32_t race_done;

static void *APR_THREAD_FUNC race_writer(apr_thread_t *t, void *data)
{
    imc_spool *sp = data;
    char row[32];
    int i, n;
    for (i = 0; i < RACE_ROWS; i++) {
        n = snprintf(row, sizeof(row), "w%d\n", i);
        if (imc_spool_append(sp, row, (apr_size_t)n, NULL) != APR_SUCCESS) {
            break;
        }
    }
    apr_atomic_set32(&race_done, 1);
    apr_thread_exit(t, i == RACE_ROWS ? APR_SUCCESS : APR_EGENERAL);
    return NULL;
}

/* Deliver what is ready; mark the rows seen. */
static void race_round(apr_pool_t *p, char *seen)
{
    apr_array_header_t *segs;
    const char *buf, *r;
    apr_size_t len;
    int i, lines;
    list(p, &segs);
    for (i = 0; i < segs->nelts; i++) {
        imc_spool_segment *seg = seg_at(segs, i);
        while (imc_spool_read(p, dir, seg, seg->done, 0, 0, &buf, &len,
                              &lines) == APR_SUCCESS &&
               len > 0) {
            for (r = buf; r < buf + len; r = strchr(r, '\n') + 1) {
                if (*r == 'w') {
                    seen[atoi(r + 1)] = 1;
                }
            }
            ck_assert_int_eq(
                imc_spool_commit(p, dir, seg, seg->done + (apr_off_t)len),
                APR_SUCCESS);
        }
    }
}

/* A segment (and its .pos) made while the deliverer scans the directory is
 * never taken for the leftover of a removed one. */
START_TEST(new_segments_while_listing)
{
    static char seen[RACE_ROWS];
    apr_thread_t *t;
    apr_status_t trv;
    imc_spool *sp;
    int i, rounds = 0;

    memset(seen, 0, sizeof(seen));
    apr_atomic_set32(&race_done, 0);
    /* every append opens a new segment */
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1, 0), APR_SUCCESS);
    ck_assert_int_eq(apr_thread_create(&t, NULL, race_writer, sp, pool),
                     APR_SUCCESS);
    while (!apr_atomic_read32(&race_done) && ++rounds < 1000000) {
        apr_pool_t *round;
        apr_pool_create(&round, pool);
        race_round(round, seen);
        apr_pool_destroy(round);
    }
    ck_assert_int_eq(apr_thread_join(&trv, t), APR_SUCCESS);
    ck_assert_int_eq(trv, APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    race_round(pool, seen);
    for (i = 0; i < RACE_ROWS; i++) {
        ck_assert_msg(seen[i], "row %d lost", i);
    }
}
END_TEST

/* ---- the directory: made and handed over without following links ---- */

#define NOBODY ((uid_t)65534)

static uid_t owner_of(const char *path)
{
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    return st.st_uid;
}

static apr_status_t prepare(const char *spool, const char **why)
{
    return imc_spool_dir_prepare(pool, spool, NOBODY, NOBODY, why);
}

/* Made with its missing parents, given to the user; again at a restart. */
START_TEST(dir_made_and_handed_over)
{
    const char *spool = path_of("a/b/spool"), *why = "x";
    struct stat st;

    if (geteuid() != 0) {
        return; /* only root hands directories over */
    }
    ck_assert_int_eq(prepare(spool, &why), APR_SUCCESS);
    ck_assert_ptr_null(why);
    ck_assert_int_eq(stat(spool, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(st.st_uid, NOBODY);
    ck_assert_int_eq(st.st_mode & 07777, 0750);
    ck_assert_int_eq(owner_of(path_of("a/b")), 0);
    ck_assert_int_eq(prepare(apr_pstrcat(pool, spool, "/", NULL), &why),
                     APR_SUCCESS);
}
END_TEST

/* A symbolic link at the spool's path, to a file or a directory: refused,
 * and what it points to keeps its owner. */
START_TEST(dir_symlink_refused)
{
    const char *file = path_of("shadow"), *sub = path_of("etc");
    const char *spool = path_of("spool"), *why = NULL;
    int fd;

    if (geteuid() != 0) {
        return;
    }
    fd = open(file, O_WRONLY | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(symlink(file, spool), 0);
    ck_assert_int_eq(prepare(spool, &why), IMC_SPOOL_EUNSAFE);
    ck_assert_ptr_nonnull(strstr(why, "symbolic link"));
    ck_assert_int_eq(owner_of(file), 0);
    ck_assert_int_eq(unlink(spool), 0);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    ck_assert_int_eq(symlink(sub, spool), 0);
    ck_assert_int_eq(prepare(spool, &why), IMC_SPOOL_EUNSAFE);
    ck_assert_int_eq(owner_of(sub), 0);
}
END_TEST

/* A parent that others may write (plainly, sticky, by group, or owned by
 * someone else) is refused, and nothing below it changes owner. */
START_TEST(dir_unsafe_parent_refused)
{
    const char *parent = path_of("p"), *spool = path_of("p/spool"), *why;
    static const mode_t modes[] = {0777, 01777, 0775};
    size_t i;

    if (geteuid() != 0) {
        return;
    }
    ck_assert_int_eq(mkdir(parent, 0755), 0);
    ck_assert_int_eq(mkdir(spool, 0750), 0);
    ck_assert_int_eq(chown(parent, 0, 100), 0); /* group users */
    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        why = NULL;
        ck_assert_int_eq(chmod(parent, modes[i]), 0);
        ck_assert_int_eq(prepare(spool, &why), IMC_SPOOL_EUNSAFE);
        ck_assert_ptr_nonnull(strstr(why, "written by others"));
        ck_assert_int_eq(owner_of(spool), 0);
    }
    ck_assert_int_eq(chmod(parent, 0755), 0);
    ck_assert_int_eq(chown(parent, NOBODY, 0), 0);
    ck_assert_int_eq(prepare(spool, &why), IMC_SPOOL_EUNSAFE);
    ck_assert_ptr_nonnull(strstr(why, "not to root"));
    ck_assert_int_eq(owner_of(spool), 0);
    /* the same, but the way there is safe: handed over */
    ck_assert_int_eq(chown(parent, 0, 0), 0);
    ck_assert_int_eq(prepare(spool, &why), APR_SUCCESS);
    ck_assert_int_eq(owner_of(spool), NOBODY);
}
END_TEST

/* Sticky directories higher up (as /tmp above the test's directory) and
 * root's own symbolic links on the way are fine; a link of another user
 * is not. */
START_TEST(dir_sticky_above_and_root_links)
{
    const char *sticky = path_of("tmp"), *mine = path_of("tmp/mine");
    const char *link = path_of("tmp/link"), *why = NULL;

    if (geteuid() != 0) {
        return;
    }
    ck_assert_int_eq(mkdir(sticky, 01777), 0);
    ck_assert_int_eq(chmod(sticky, 01777), 0);
    ck_assert_int_eq(mkdir(mine, 0755), 0);
    ck_assert_int_eq(prepare(apr_pstrcat(pool, mine, "/spool", NULL), &why),
                     APR_SUCCESS);
    ck_assert_int_eq(symlink("mine", link), 0);
    ck_assert_int_eq(prepare(apr_pstrcat(pool, link, "//./spool", NULL), &why),
                     APR_SUCCESS);
    ck_assert_int_eq(lchown(link, NOBODY, NOBODY), 0);
    ck_assert_int_eq(prepare(apr_pstrcat(pool, link, "/spool", NULL), &why),
                     IMC_SPOOL_EUNSAFE);
    ck_assert_ptr_nonnull(strstr(why, "symbolic link of uid"));
    /* a directory of another user in the sticky one */
    ck_assert_int_eq(chown(mine, NOBODY, NOBODY), 0);
    ck_assert_int_eq(prepare(apr_pstrcat(pool, mine, "/spool", NULL), &why),
                     IMC_SPOOL_EUNSAFE);
}
END_TEST

/* One directory, however it is written, is one key. */
START_TEST(dir_key_names_the_directory)
{
    const char *a = path_of("d"), *link = path_of("l");
    const char *key;

    ck_assert_int_eq(mkdir(a, 0750), 0);
    ck_assert_int_eq(symlink(a, link), 0);
    key = imc_spool_dir_key(pool, a);
    ck_assert_str_eq(imc_spool_dir_key(pool, apr_pstrcat(pool, a, "/", NULL)),
                     key);
    ck_assert_str_eq(imc_spool_dir_key(pool, link), key);
    ck_assert_str_ne(imc_spool_dir_key(pool, dir), key);
    /* not there yet: by its path, slashes aside */
    ck_assert_str_eq(imc_spool_dir_key(pool, "/nonexistent//imc/"),
                     imc_spool_dir_key(pool, "/nonexistent/imc"));
}
END_TEST

/* Segments carry their destination's stamp; list tells it, and segments
 * from before stamps still list. */
START_TEST(segments_carry_their_stamp)
{
    apr_array_header_t *segs;
    const char *stamp;
    imc_spool *sp;
    int fd, i, stamped = 0, plain = 0;

    stamp = imc_spool_stamp(pool, "imchallenge");
    ck_assert_int_eq(strlen(stamp), 16);
    ck_assert_str_eq(imc_spool_stamp(pool, "imchallenge"), stamp);
    ck_assert_str_ne(imc_spool_stamp(pool, "other"), stamp);

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 0, 0), APR_SUCCESS);
    imc_spool_set_stamp(sp, stamp);
    ck_assert_int_eq(imc_spool_append(sp, "{\"a\":1}\n", 8, NULL), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    fd = open(path_of("0000000000000001-1-0.seg"), O_WRONLY | O_CREAT, 0640);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "{\"b\":2}\n\n", 9), 9);
    close(fd);
    ck_assert_int_eq(imc_spool_list(pool, dir, &segs), APR_SUCCESS);
    ck_assert_int_eq(segs->nelts, 2);
    for (i = 0; i < segs->nelts; i++) {
        const imc_spool_segment *seg =
            &APR_ARRAY_IDX(segs, i, imc_spool_segment);
        if (*seg->stamp) {
            ck_assert_str_eq(seg->stamp, stamp);
            ck_assert_ptr_nonnull(strstr(seg->name, stamp));
            stamped++;
        } else {
            plain++;
        }
    }
    ck_assert_int_eq(stamped, 1);
    ck_assert_int_eq(plain, 1);
}
END_TEST

/* The deliverer sends and commits everything ready, as it may between a
 * write and its fdatasync. */
static void deliver_everything(void)
{
    apr_array_header_t *segs;
    int i;

    ck_assert_int_eq(imc_spool_list(pool, dir, &segs), APR_SUCCESS);
    for (i = 0; i < segs->nelts; i++) {
        imc_spool_segment *seg = &APR_ARRAY_IDX(segs, i, imc_spool_segment);
        ck_assert_int_eq(imc_spool_commit(pool, dir, seg, seg->ready_end),
                         APR_SUCCESS);
    }
}

/* The "<done> <intent>" of a segment's .pos. */
static void pos_of(const char *name, apr_off_t *done, apr_off_t *intent)
{
    long long d = -1, i = -1;
    FILE *f = fopen(path_of(apr_pstrcat(pool, name, ".pos", NULL)), "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%lld %lld", &d, &i), 2);
    fclose(f);
    *done = (apr_off_t)d;
    *intent = (apr_off_t)i;
}

static apr_off_t size_of(const char *name)
{
    struct stat st;
    ck_assert_int_eq(stat(path_of(name), &st), 0);
    return st.st_size;
}

/* SpoolSync On and a failed fdatasync: the requests it covers are refused;
 * their rows are cut off, unless the deliverer already took them (then
 * cutting would not take them back from ClickHouse and would leave the
 * segment shorter than its .pos). */
START_TEST(failed_sync_cuts_only_what_was_not_taken)
{
    static const char a[] = "{\"a\":1}\n", b[] = "{\"b\":2}\n";
    imc_spool_pos pa, pb;
    imc_spool *sp;
    apr_off_t done, intent;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 0, 1), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, a, sizeof(a) - 1, &pa), APR_SUCCESS);
    /* not taken: cut off */
    sync_fail_first = NULL;
    sync_fail_next = 1;
    ck_assert_int_eq(imc_spool_append(sp, b, sizeof(b) - 1, &pb),
                     APR_FROM_OS_ERROR(EIO));
    ck_assert_int_eq(size_of(pa.segment), (apr_off_t)sizeof(a));
    /* taken by the deliverer before the failure: kept */
    ck_assert_int_eq(imc_spool_append(sp, a, sizeof(a) - 1, &pa), APR_SUCCESS);
    sync_fail_first = deliver_everything;
    sync_fail_next = 1;
    ck_assert_int_eq(imc_spool_append(sp, b, sizeof(b) - 1, &pb),
                     APR_FROM_OS_ERROR(EIO));
    sync_fail_first = NULL;
    ck_assert_str_eq(pb.segment, pa.segment);
    ck_assert_int_eq(size_of(pa.segment), (apr_off_t)(2 * sizeof(a)));
    pos_of(pa.segment, &done, &intent);
    ck_assert_int_eq(done, size_of(pa.segment));
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
}
END_TEST

/* A fill function over a list of pieces, the last one NULL. */
typedef struct {
    const char **pieces;
    int next;
} pieces_ctx;

static apr_size_t fill_pieces(void *data, char *buf, apr_size_t cap)
{
    pieces_ctx *c = data;
    const char *piece = c->pieces[c->next];
    apr_size_t n = piece ? strlen(piece) : 0;

    ck_assert_uint_le(n, cap);
    if (piece) {
        memcpy(buf, piece, n);
        c->next++;
    }
    return n;
}

START_TEST(append_in_pieces)
{
    const char *good[] = {"a1\na2\n", "b1\n", "c1\nc2\n", NULL};
    const char *bad[] = {"d1\n", "\nd2\n", NULL};
    const char *over[] = {"e1\n", "e2e2e2e2\n", NULL};
    const char *none[] = {NULL};
    pieces_ctx c = {good, 0};
    imc_spool *sp;
    imc_spool_pos pos, after;
    apr_array_header_t *segs;
    char buf[16];
    int rows;

    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append_pieces(sp, 100, fill_pieces, &c, buf,
                                             sizeof(buf), &pos),
                     APR_SUCCESS);
    ck_assert_int_eq(pos.start, 0);
    ck_assert_int_eq(pos.end, 15);
    ck_assert_int_eq(file_size(pos.segment), 16);
    /* a piece that is not whole rows, one past the bound, or no rows at
     * all: refused, and nothing of it remains */
    c.pieces = bad;
    c.next = 0;
    ck_assert_int_eq(imc_spool_append_pieces(sp, 100, fill_pieces, &c, buf,
                                             sizeof(buf), NULL),
                     APR_EINVAL);
    c.pieces = over;
    c.next = 0;
    ck_assert_int_eq(
        imc_spool_append_pieces(sp, 8, fill_pieces, &c, buf, sizeof(buf), NULL),
        APR_EINVAL);
    c.pieces = none;
    c.next = 0;
    ck_assert_int_eq(
        imc_spool_append_pieces(sp, 8, fill_pieces, &c, buf, sizeof(buf), NULL),
        APR_EINVAL);
    /* the failed writes sealed that segment; the next record is whole */
    ck_assert_int_eq(imc_spool_append(sp, "z1\n", 3, &after), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(list(pool, &segs), 2);
    ck_assert_str_eq(drain(pool, seg_at(segs, 0), 0, &rows),
                     "a1\na2\nb1\nc1\nc2\n\n");
    ck_assert_int_eq(rows, 5);
    ck_assert_str_eq(drain(pool, seg_at(segs, 1), 0, &rows), "z1\n\n");
}
END_TEST

START_TEST(admit_tells_the_limit_without_writing)
{
    char rec[100];
    imc_spool *sp;
    imc_spool_pos pos;

    memset(rec, 'x', sizeof(rec) - 1);
    rec[sizeof(rec) - 1] = '\n';
    ck_assert_int_eq(imc_spool_open(&sp, pool, dir, 1 << 20, 0), APR_SUCCESS);
    imc_spool_set_limit(sp, 250);
    ck_assert_int_eq(imc_spool_admit(sp, 200), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_append(sp, rec, 100, &pos), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_admit(sp, 100), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_admit(sp, 200), IMC_SPOOL_EOVERLIMIT);
    ck_assert_int_eq(file_size(pos.segment), 101);
    ck_assert_int_eq(imc_spool_close(sp), APR_SUCCESS);
    ck_assert_int_eq(imc_spool_admit(sp, 1), APR_EBADF);
}
END_TEST

Suite *imc_unit_suite(void)
{
    Suite *s = suite_create("imc_spool");
    TCase *tc = tcase_create("spool");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, append_and_read_back);
    tcase_add_test(tc, append_in_pieces);
    tcase_add_test(tc, admit_tells_the_limit_without_writing);
    tcase_add_test(tc, group_commit_threads);
    tcase_add_test(tc, rollover_never_splits);
    tcase_add_test(tc, sealed_after_close);
    tcase_add_test(tc, orphan_of_dead_child);
    tcase_add_test(tc, torn_record_never_delivered);
    tcase_add_test(tc, intent_commit_resume);
    tcase_add_test(tc, quarantine_moves_batch);
    tcase_add_test(tc, usage_and_limit);
    tcase_add_test(tc, is_delivered_follows_progress);
    tcase_add_test(tc, one_deliverer);
    tcase_add_test(tc, leftovers_cleaned);
    tcase_add_test(tc, bogus_pos_is_safe);
    tcase_add_test(tc, failed_write_leaves_nothing);
    tcase_add_test(tc, pos_made_with_segment);
    tcase_add_test(tc, quarantined_is_not_delivered);
    tcase_add_test(tc, quarantined_row_inside_a_request);
    tcase_add_test(tc, batches_beyond_the_first_read);
    tcase_add_test(tc, kill9_writers_lose_nothing);
    tcase_add_test(tc, new_segments_while_listing);
    tcase_add_test(tc, uninspectable_segment_is_kept);
    tcase_add_test(tc, segments_carry_their_stamp);
    tcase_add_test(tc, failed_sync_cuts_only_what_was_not_taken);
    tcase_add_test(tc, dir_made_and_handed_over);
    tcase_add_test(tc, dir_symlink_refused);
    tcase_add_test(tc, dir_unsafe_parent_refused);
    tcase_add_test(tc, dir_sticky_above_and_root_links);
    tcase_add_test(tc, dir_key_names_the_directory);
    suite_add_tcase(s, tc);
    return s;
}
