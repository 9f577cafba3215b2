/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for the spool's reader side: the input becomes a
 * segment file (and maybe a bogus .pos) which is listed, read, committed or
 * quarantined until nothing is left. Checked: no crash, every batch is a
 * run of complete lines of the input inside complete records, a resend
 * returns exactly the recorded batch, progress always advances, and a
 * sealed segment is removed once delivered.
 *
 * Input: byte 0 flags (bit 0: write a .pos; bit 1: .pos text taken from
 * the input; bit 2: a live writer holds the segment; bit 3: quarantine the
 * first batch; bits 4-7: max_lines, 0 = no limit), bytes 1-2 max_bytes
 * (0 = no limit), bytes 3-6 done and intent_end (16 bits each), then with
 * bit 1 a length byte and that many bytes of .pos text; the rest is the
 * segment.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "imc_spool.h"

#define SEG_NAME "0000000000000001-1-0.seg"
#define REQUIRE(c)                                                             \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c);            \
            abort();                                                           \
        }                                                                      \
    } while (0)

static apr_pool_t *root;
static char dir[64];

static void clean(apr_pool_t *p);

static void remove_dir(void)
{
    clean(root);
    rmdir(apr_pstrcat(root, dir, "/failed", NULL));
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    apr_pool_create(&root, NULL);
    /* tmpfs when there is one: fdatasync costs nothing there */
    strcpy(dir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/imc_spool_fuzz_XXXXXX"
                                              : "/tmp/imc_spool_fuzz_XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    atexit(remove_dir);
    return 0;
}

static void put_file(apr_pool_t *p, const char *name, const uint8_t *b,
                     size_t n)
{
    int fd = open(apr_pstrcat(p, dir, "/", name, NULL),
                  O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(n == 0 || write(fd, b, n) == (ssize_t)n);
    close(fd);
}

static void clean(apr_pool_t *p)
{
    static const char *names[] = {SEG_NAME, SEG_NAME ".pos",
                                  SEG_NAME ".pos.tmp"};
    apr_dir_t *d;
    apr_finfo_t fi;
    const char *failed = apr_pstrcat(p, dir, "/failed", NULL);
    size_t i;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        unlink(apr_pstrcat(p, dir, "/", names[i], NULL));
    }
    if (apr_dir_open(&d, failed, p) == APR_SUCCESS) {
        while (apr_dir_read(&fi, APR_FINFO_NAME, d) == APR_SUCCESS) {
            unlink(apr_pstrcat(p, failed, "/", fi.name, NULL));
        }
        apr_dir_close(d);
    }
}

/* The oracle, written apart from the library: rows, records, lines. */
static size_t rows_in(const uint8_t *s, size_t from, size_t to)
{
    size_t i, n = 0;
    for (i = from; i < to; i++) {
        n += s[i] == '\n' && i > 0 && s[i - 1] != '\n';
    }
    return n;
}

static size_t ready_end(const uint8_t *s, size_t n)
{
    size_t i, end = 0;
    for (i = 1; i < n; i++) {
        if (s[i] == '\n' && s[i - 1] == '\n') {
            end = i + 1;
        }
    }
    return end;
}

static int line_start(const uint8_t *s, apr_off_t off)
{
    return off == 0 || s[off - 1] == '\n';
}

/* Where a recorded offset must land: clamped, then back to a line start. */
static apr_off_t expect_off(const uint8_t *s, apr_off_t off, size_t ready)
{
    off = off > (apr_off_t)ready ? (apr_off_t)ready : off;
    while (!line_start(s, off)) {
        off--;
    }
    return off;
}

/* One batch checked against the input; returns its end. */
static apr_off_t check_batch(const uint8_t *seg, size_t ready, apr_off_t from,
                             const char *buf, apr_size_t len, int lines,
                             int max_lines, apr_size_t max_bytes)
{
    REQUIRE(len > 0 && from + (apr_off_t)len <= (apr_off_t)ready);
    REQUIRE(memcmp(buf, seg + from, len) == 0);
    REQUIRE(buf[len - 1] == '\n' && line_start(seg, from));
    REQUIRE(lines >= 1 && (size_t)lines == rows_in(seg, from, from + len));
    REQUIRE(max_lines <= 0 || lines <= max_lines);
    REQUIRE(max_bytes == 0 || len <= max_bytes || lines == 1);
    return from + (apr_off_t)len;
}

/* pos: the recorded done and intent_end, or NULL when unknown. */
static void deliver(apr_pool_t *p, const uint8_t *seg, size_t n,
                    const apr_off_t *pos, int max_lines, apr_size_t max_bytes,
                    int quarantine, int live)
{
    apr_array_header_t *segs;
    imc_spool_segment *s;
    const char *buf;
    apr_size_t len;
    size_t ready = ready_end(seg, n), rounds = 0;
    apr_off_t done = -1, intent = -1;
    int lines;
    apr_uint64_t count;

    if (pos) {
        done = expect_off(seg, pos[0], ready);
        intent = expect_off(seg, pos[1], ready);
        intent = intent < done ? done : intent;
    }

    REQUIRE(imc_spool_list(p, dir, &segs) == APR_SUCCESS);
    if (segs->nelts == 0) { /* removed: sealed, nothing left to send */
        REQUIRE(!live &&
                access(apr_pstrcat(p, dir, "/" SEG_NAME, NULL), F_OK) != 0);
        REQUIRE(done < 0 || rows_in(seg, done, ready) == 0);
        return;
    }
    REQUIRE(segs->nelts == 1);
    s = &APR_ARRAY_IDX(segs, 0, imc_spool_segment);
    REQUIRE(s->size == (apr_off_t)n && s->ready_end == (apr_off_t)ready);
    REQUIRE(s->sealed == !live && s->created == 1);
    REQUIRE(0 <= s->done && s->done <= s->intent_end &&
            s->intent_end <= s->ready_end);
    REQUIRE(line_start(seg, s->done) && line_start(seg, s->intent_end));
    REQUIRE(done < 0 || (s->done == done && s->intent_end == intent));
    REQUIRE(imc_spool_count_lines(p, dir, s, 0, s->size, &count) ==
            APR_SUCCESS);
    REQUIRE(count == rows_in(seg, 0, n));

    if (s->intent_end > s->done) { /* resend exactly the recorded batch */
        REQUIRE(imc_spool_read(p, dir, s, s->done, 0,
                               (apr_size_t)(s->intent_end - s->done), &buf,
                               &len, &lines) == APR_SUCCESS);
        if (rows_in(seg, s->done, s->intent_end) > 0) {
            REQUIRE((apr_off_t)len == s->intent_end - s->done);
            check_batch(seg, ready, s->done, buf, len, lines, 0, 0);
        } else if (len > 0) { /* a bogus intent holding no row */
            check_batch(seg, ready, s->done, buf, len, lines, 0, 0);
        }
        REQUIRE(imc_spool_commit(p, dir, s, s->intent_end) == APR_SUCCESS);
    }
    for (;;) {
        apr_off_t from = s->done, end;
        REQUIRE(++rounds <= n + 2); /* never loops forever */
        REQUIRE(imc_spool_read(p, dir, s, from, max_lines, max_bytes, &buf,
                               &len, &lines) == APR_SUCCESS);
        if (len == 0) {
            break;
        }
        end = check_batch(seg, ready, from, buf, len, lines, max_lines,
                          max_bytes);
        REQUIRE(imc_spool_intent(p, dir, s, end) == APR_SUCCESS);
        if (quarantine && rounds == 1) {
            REQUIRE(imc_spool_quarantine(p, dir, s, from, end) == APR_SUCCESS);
        } else {
            REQUIRE(imc_spool_commit(p, dir, s, end) == APR_SUCCESS);
        }
        REQUIRE(s->done == end || (s->done == s->ready_end && !live));
    }
    REQUIRE(rows_in(seg, s->done, ready) == 0); /* all rows delivered */
    REQUIRE((access(apr_pstrcat(p, dir, "/" SEG_NAME, NULL), F_OK) == 0) ==
            live);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    apr_off_t pos[2] = {0, 0};
    size_t off = 7;
    int flags, lock_fd = -1;
    apr_size_t max_bytes;

    if (size < off) {
        return 0;
    }
    flags = data[0];
    max_bytes = (apr_size_t)(data[1] | data[2] << 8);
    apr_pool_create(&p, root);
    clean(p);
    if (flags & 2) {
        size_t l = size > off ? data[off++] % 48 : 0;
        l = l > size - off ? size - off : l;
        if (flags & 1) {
            put_file(p, SEG_NAME ".pos", data + off, l);
        }
        off += l;
    } else if (flags & 1) {
        char text[32];
        int k = snprintf(text, sizeof(text), "%u %u\n", data[3] | data[4] << 8,
                         data[5] | data[6] << 8);
        put_file(p, SEG_NAME ".pos", (const uint8_t *)text, (size_t)k);
        pos[0] = data[3] | data[4] << 8;
        pos[1] = data[5] | data[6] << 8;
    }
    put_file(p, SEG_NAME, data + off, size - off);
    if (flags & 4) { /* a live writer */
        lock_fd = open(apr_pstrcat(p, dir, "/" SEG_NAME, NULL), O_RDONLY);
        REQUIRE(lock_fd >= 0 && flock(lock_fd, LOCK_SH) == 0);
    }
    deliver(p, data + off, size - off, flags & 2 ? NULL : pos, flags >> 4,
            max_bytes, flags & 8, lock_fd >= 0);
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    clean(p);
    apr_pool_destroy(p);
    return 0;
}
