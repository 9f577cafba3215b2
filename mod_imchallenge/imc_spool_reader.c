/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_spool, the reader (for the deliverer): list, read, record progress,
 * quarantine and remove segments, and the lock that elects one deliverer
 * per directory. The file layout and the guarantees are described in
 * imc_spool.h; the writer is imc_spool_writer.c, the helpers both use are
 * in imc_spool_file.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_hash.h>
#include <apr_portable.h>

#include "imc_spool_private.h"

#define FAILED_DIR  "failed"
#define LOCK_FILE   ".deliver.lock"
#define CHUNK       65536
#define FIRST_READ  ((apr_size_t)1024 * 1024)
#define TMP_MAX_AGE apr_time_from_sec(60)

/* ---- progress files ----------------------------------------------------- */

/* Replace path atomically with data, on disk before the rename. */
static apr_status_t file_replace(apr_pool_t *p, const char *path,
                                 const char *data, apr_size_t len)
{
    const char *tmp = apr_pstrcat(p, path, TMP_EXT, NULL);
    apr_status_t rv;
    int *fd;
    rv = imc_spool_fd_open(&fd, p, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rv = imc_spool_write_full(*fd, data, len);
    if (rv == APR_SUCCESS && fdatasync(*fd) != 0) {
        rv = os_error();
    }
    imc_spool_fd_close(p, fd);
    if (rv == APR_SUCCESS && rename(tmp, path) != 0) {
        rv = os_error();
    }
    if (rv != APR_SUCCESS) {
        unlink(tmp);
    }
    return rv;
}

/* No room for a new file: the space is gone or the quota is. */
static int is_space_error(apr_status_t rv)
{
    return APR_STATUS_IS_ENOSPC(rv) || rv == APR_FROM_OS_ERROR(EDQUOT);
}

/*
 * Overwrite an existing small file in place: it needs no new block, so it
 * works on a full disk, where a replacement cannot be created. Not atomic
 * across a power loss, but a .pos that cannot be parsed counts as nothing
 * delivered: at worst rows are sent again.
 */
static apr_status_t file_overwrite(apr_pool_t *p, const char *path,
                                   const char *data, apr_size_t len)
{
    apr_status_t rv;
    ssize_t n;
    int *fd;
    rv = imc_spool_fd_open(&fd, p, path, O_WRONLY, 0);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    do {
        n = pwrite(*fd, data, len, 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)len) {
        rv = n < 0 ? os_error() : APR_EGENERAL;
    } else if (ftruncate(*fd, (off_t)len) != 0 || fdatasync(*fd) != 0) {
        rv = os_error();
    }
    imc_spool_fd_close(p, fd);
    return rv;
}

static apr_status_t pos_write(apr_pool_t *p, const char *dir, const char *name,
                              apr_off_t done, apr_off_t intent)
{
    const char *text = apr_psprintf(
        p, "%" APR_OFF_T_FMT " %" APR_OFF_T_FMT "\n", done, intent);
    const char *path = apr_pstrcat(p, dir, "/", name, POS_EXT, NULL);
    apr_status_t rv = file_replace(p, path, text, strlen(text));
    if (is_space_error(rv)) {
        rv = file_overwrite(p, path, text, strlen(text));
    }
    return rv;
}

/* ---- segment content ---------------------------------------------------- */

/*
 * Just past the last '\n' in [0, hi) or, with pair, the last "\n\n" (the
 * end of the last complete record); 0 when there is none.
 */
static apr_status_t scan_back(apr_pool_t *p, int fd, apr_off_t hi, int pair,
                              apr_off_t *out)
{
    char *buf = apr_palloc(p, CHUNK), *q;
    apr_off_t lo, step = 512; /* the answer is usually near hi */
    apr_status_t rv = APR_SUCCESS;
    apr_size_t got, e;
    *out = 0;
    while (hi > 0 && rv == APR_SUCCESS) {
        lo = hi > step ? hi - step : 0;
        step = CHUNK;
        rv = imc_spool_pread_full(fd, buf, (apr_size_t)(hi - lo), lo, &got);
        if (rv == APR_SUCCESS && got != (apr_size_t)(hi - lo)) {
            rv = APR_EOF; /* shrunk meanwhile */
        }
        for (e = got; rv == APR_SUCCESS && (q = memrchr(buf, '\n', e));
             e = (apr_size_t)(q - buf)) {
            if (!pair || (q > buf && q[-1] == '\n')) {
                *out = lo + (q - buf) + 1;
                return APR_SUCCESS;
            }
        }
        hi = lo + (pair && lo > 0); /* overlap: a pair may straddle */
    }
    return rv;
}

/*
 * Rows (non-empty lines) in [from, to): a row ends at a '\n' that does not
 * follow another '\n'. With first, stop at the first row.
 */
static apr_status_t scan_rows(apr_pool_t *p, int fd, apr_off_t from,
                              apr_off_t to, int first, apr_uint64_t *rows)
{
    char *buf = apr_palloc(p, CHUNK + 1), *q, *end;
    apr_status_t rv = APR_SUCCESS;
    apr_size_t got, want;
    *rows = 0;
    buf[0] = '\n'; /* the byte before the chunk */
    if (from > 0) {
        rv = imc_spool_pread_full(fd, buf, 1, from - 1, &got);
    }
    while (rv == APR_SUCCESS && from < to && !(first && *rows)) {
        want = to - from > CHUNK ? CHUNK : (apr_size_t)(to - from);
        rv = imc_spool_pread_full(fd, buf + 1, want, from, &got);
        if (rv != APR_SUCCESS || got == 0) {
            break;
        }
        for (q = buf + 1, end = buf + 1 + got;
             q < end && (q = memchr(q, '\n', (apr_size_t)(end - q))); q++) {
            *rows += q[-1] != '\n';
        }
        buf[0] = buf[got];
        from += (apr_off_t)got;
    }
    return rv;
}

/* ---- delivery state ----------------------------------------------------- */

/* 1 when DIR/failed holds a quarantined batch of segment name with rows
 * of [start, end). */
static int quarantined(apr_pool_t *p, const char *dir, const char *name,
                       apr_off_t start, apr_off_t end)
{
    apr_size_t base = strlen(name) - strlen(SEG_EXT);
    apr_off_t from, to;
    apr_finfo_t fi;
    apr_dir_t *d;
    char *e;
    int found = 0;
    if (apr_dir_open(&d, apr_pstrcat(p, dir, "/" FAILED_DIR, NULL), p) !=
        APR_SUCCESS) {
        return 0;
    }
    while (!found && dir_next(&fi, d)) {
        if (strncmp(fi.name, name, base) != 0 || fi.name[base] != '-') {
            continue;
        }
        from = (apr_off_t)apr_strtoi64(fi.name + base + 1, &e, 10);
        if (*e != '-') {
            continue;
        }
        to = (apr_off_t)apr_strtoi64(e + 1, &e, 10);
        found = strcmp(e, ".rows") == 0 && from < end && start < to;
    }
    apr_dir_close(d);
    return found;
}

apr_status_t imc_spool_is_delivered(apr_pool_t *p, const char *dir,
                                    const imc_spool_pos *pos, int *done)
{
    apr_off_t d, intent;
    apr_finfo_t fi;
    apr_status_t rv;
    int found;
    *done = pos->end <= 0; /* an empty request */
    if (*done || !imc_spool_seg_name_parse(pos->segment, NULL)) {
        return *done ? APR_SUCCESS : APR_EINVAL;
    }
    rv = imc_spool_pos_read(p, dir, pos->segment, &d, &intent, &found);
    if (rv == APR_SUCCESS && !(found && d >= pos->end)) {
        rv = apr_stat(&fi, apr_pstrcat(p, dir, "/", pos->segment, NULL),
                      APR_FINFO_TYPE, p);
        if (!APR_STATUS_IS_ENOENT(rv)) {
            return rv; /* still to deliver, or an error */
        }
        rv = APR_SUCCESS; /* gone: delivered */
    }
    /* past it, but quarantined rather than stored: not delivered */
    *done = rv == APR_SUCCESS &&
            !quarantined(p, dir, pos->segment, pos->start, pos->end);
    return rv;
}

/* ---- deliverer ---------------------------------------------------------- */

apr_status_t imc_spool_lock_deliverer(apr_file_t **lock, apr_pool_t *p,
                                      const char *dir)
{
    apr_file_t *f;
    apr_os_file_t fd;
    apr_status_t rv;
    rv = apr_file_open(&f, apr_pstrcat(p, dir, "/" LOCK_FILE, NULL),
                       APR_FOPEN_READ | APR_FOPEN_WRITE | APR_FOPEN_CREATE,
                       APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_GREAD, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_os_file_get(&fd, f);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        rv = errno == EWOULDBLOCK ? APR_EAGAIN : os_error();
        apr_file_close(f);
        return rv;
    }
    *lock = f;
    return APR_SUCCESS;
}

/* Remove a leftover DIR/<name>.tmp: old, and nobody holds it. */
static void tmp_cleanup(apr_pool_t *p, const char *dir, const char *name)
{
    const char *path = apr_pstrcat(p, dir, "/", name, NULL);
    struct stat st;
    int *fd;
    if (imc_spool_fd_open(&fd, p, path, O_RDONLY, 0) != APR_SUCCESS) {
        return;
    }
    if (fstat(*fd, &st) == 0 &&
        apr_time_now() - apr_time_from_sec(st.st_mtime) > TMP_MAX_AGE &&
        flock(*fd, LOCK_EX | LOCK_NB) == 0) {
        unlink(path);
    }
    imc_spool_fd_close(p, fd);
}

static void segment_remove(apr_pool_t *p, const char *dir, const char *name)
{
    /* segment first: a .pos left alone is swept by the next list */
    unlink(apr_pstrcat(p, dir, "/", name, NULL));
    unlink(apr_pstrcat(p, dir, "/", name, POS_EXT, NULL));
}

/* Fill seg from the file and its .pos; *removable when sealed and done. */
static apr_status_t segment_inspect(apr_pool_t *p, const char *dir,
                                    const char *name, imc_spool_segment *seg,
                                    int *removable)
{
    struct stat st;
    apr_status_t rv;
    apr_uint64_t rows = 1;
    int *fd, found;
    memset(seg, 0, sizeof(*seg));
    seg->name = name;
    seg->stamp = imc_spool_seg_stamp(p, name);
    imc_spool_seg_name_parse(name, &seg->created);
    rv = imc_spool_fd_open(&fd, p, apr_pstrcat(p, dir, "/", name, NULL),
                           O_RDONLY, 0);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    /* a live writer holds a shared lock until it closes the segment */
    seg->sealed = flock(*fd, LOCK_EX | LOCK_NB) == 0;
    if (fstat(*fd, &st) != 0) {
        rv = os_error();
        goto out;
    }
    seg->size = st.st_size;
    if ((rv = scan_back(p, *fd, seg->size, 1, &seg->ready_end)) ||
        (rv = imc_spool_pos_read(p, dir, name, &seg->done, &seg->intent_end,
                                 &found))) {
        goto out;
    }
    seg->done = seg->done > seg->ready_end ? seg->ready_end : seg->done;
    if (seg->intent_end > seg->ready_end) {
        seg->intent_end = seg->ready_end;
    }
    /* a bogus .pos may point into a line: back to its start */
    if ((rv = scan_back(p, *fd, seg->done, 0, &seg->done)) ||
        (rv = scan_back(p, *fd, seg->intent_end, 0, &seg->intent_end))) {
        goto out;
    }
    seg->intent_end = seg->intent_end < seg->done ? seg->done : seg->intent_end;
    if (seg->sealed) {
        rv = scan_rows(p, *fd, seg->done, seg->ready_end, 1, &rows);
    }
out:
    *removable = rv == APR_SUCCESS && seg->sealed && !rows;
    imc_spool_fd_close(p, fd);
    return rv;
}

/*
 * Remove the .pos of a segment that is gone, and only then: a segment
 * missing from one scan may just have been created (its writer makes the
 * .pos right after it), or may have failed to open; its rows stay.
 */
static void pos_orphan_remove(apr_pool_t *p, const char *dir, const char *name)
{
    if (access(apr_pstrcat(p, dir, "/", name, NULL), F_OK) != 0 &&
        errno == ENOENT) {
        unlink(apr_pstrcat(p, dir, "/", name, POS_EXT, NULL));
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

apr_status_t imc_spool_list(apr_pool_t *p, const char *dir,
                            apr_array_header_t **segs)
{
    apr_array_header_t *names = apr_array_make(p, 16, sizeof(char *));
    apr_array_header_t *poss = apr_array_make(p, 16, sizeof(char *));
    apr_hash_t *live = apr_hash_make(p);
    apr_finfo_t fi;
    apr_dir_t *d;
    apr_status_t rv;
    int i, removable;
    *segs = apr_array_make(p, 16, sizeof(imc_spool_segment));
    if ((rv = apr_dir_open(&d, dir, p)) != APR_SUCCESS) {
        return rv;
    }
    while (dir_next(&fi, d)) {
        apr_size_t n = strlen(fi.name);
        if (imc_spool_seg_name_parse(fi.name, NULL)) {
            APR_ARRAY_PUSH(names, char *) = apr_pstrdup(p, fi.name);
        } else if (ends_with(fi.name, n, POS_EXT)) {
            APR_ARRAY_PUSH(poss, char *) = apr_pstrndup(p, fi.name, n - 4);
        } else if (ends_with(fi.name, n, TMP_EXT)) {
            tmp_cleanup(p, dir, fi.name);
        }
    }
    apr_dir_close(d);
    qsort(names->elts, names->nelts, sizeof(char *), name_cmp);
    for (i = 0; i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, char *);
        imc_spool_segment seg;
        rv = segment_inspect(p, dir, name, &seg, &removable);
        if (rv != APR_SUCCESS) {
            continue; /* removed meanwhile, or unreadable: skip it */
        } else if (removable) {
            segment_remove(p, dir, name);
            continue;
        }
        apr_hash_set(live, name, APR_HASH_KEY_STRING, name);
        APR_ARRAY_PUSH(*segs, imc_spool_segment) = seg;
    }
    for (i = 0; i < poss->nelts; i++) {
        const char *seg = APR_ARRAY_IDX(poss, i, char *);
        if (!apr_hash_get(live, seg, APR_HASH_KEY_STRING) &&
            imc_spool_seg_name_parse(seg, NULL)) {
            pos_orphan_remove(p, dir, seg);
        }
    }
    return APR_SUCCESS;
}

/*
 * The cut of one batch in data[0, n): leading empty lines and the first
 * row always, then lines while within max_lines rows and max_bytes bytes.
 * *more when every complete line of data was taken without reaching a
 * limit: a longer read may hold more of the batch.
 */
static apr_size_t batch_cut(const char *data, apr_size_t n, int max_lines,
                            apr_size_t max_bytes, int *rows, int *more)
{
    apr_size_t pos = 0, cut = 0, ll;
    const char *nl;
    *rows = 0;
    *more = 1;
    while (pos < n && (nl = memchr(data + pos, '\n', n - pos)) != NULL) {
        ll = (apr_size_t)(nl - (data + pos)) + 1;
        if (*rows > 0 && max_bytes > 0 && pos + ll > max_bytes) {
            *more = 0;
            break;
        }
        if (ll > 1) {
            if (max_lines > 0 && *rows >= max_lines) {
                *more = 0;
                break;
            }
            (*rows)++;
        }
        pos += ll;
        cut = pos;
    }
    return cut;
}

apr_status_t imc_spool_read(apr_pool_t *p, const char *dir,
                            const imc_spool_segment *seg, apr_off_t from,
                            int max_lines, apr_size_t max_bytes,
                            const char **buf, apr_size_t *len, int *lines)
{
    apr_off_t avail = seg->ready_end - from;
    apr_size_t want, cap, got = 0, lead = from > 0, cut = 0;
    apr_status_t rv;
    char *b = NULL;
    int *fd = NULL, more = 1;
    *buf = "";
    *len = 0;
    *lines = 0;
    if (from < 0 || avail < 0) {
        return APR_EINVAL;
    }
    if (avail == 0) {
        return APR_SUCCESS;
    }
    /* Reads start small and double while the batch may go on: the
     * deliverer's memory follows its batches, not its segments. */
    cap = max_bytes > 0 && (apr_off_t)max_bytes < avail ? max_bytes
                                                        : (apr_size_t)avail;
    want = cap < FIRST_READ ? cap : FIRST_READ;
    rv = imc_spool_fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL),
                           O_RDONLY, 0);
    if (APR_STATUS_IS_ENOENT(rv)) {
        return APR_SUCCESS; /* removed: it was delivered */
    }
    while (rv == APR_SUCCESS && more) {
        b = apr_palloc(p, want + lead + 1);
        rv = imc_spool_pread_full(*fd, b, want + lead, from - (apr_off_t)lead,
                                  &got);
        if (rv == APR_SUCCESS && lead && (got == 0 || b[0] != '\n')) {
            rv = APR_EINVAL; /* from is not a line start */
        }
        if (rv != APR_SUCCESS) {
            break;
        }
        cut =
            batch_cut(b + lead, got - lead, max_lines, max_bytes, lines, &more);
        if (!more || got < want + lead || (apr_off_t)want == avail) {
            break;
        }
        if (*lines > 0 && want >= cap) {
            break; /* a first row longer than max_bytes still comes whole */
        }
        want = (apr_off_t)want * 2 < avail ? want * 2 : (apr_size_t)avail;
        want = *lines > 0 && want > cap ? cap : want;
    }
    if (rv == APR_SUCCESS && *lines > 0) {
        b[lead + cut] = '\0';
        *buf = b + lead;
        *len = cut;
    }
    if (rv != APR_SUCCESS || *lines == 0) {
        *lines = 0;
    }
    if (fd) {
        imc_spool_fd_close(p, fd);
    }
    return rv;
}

apr_status_t imc_spool_intent(apr_pool_t *p, const char *dir,
                              imc_spool_segment *seg, apr_off_t end)
{
    apr_status_t rv;
    if (end < seg->done || end > seg->size) {
        return APR_EINVAL;
    }
    rv = pos_write(p, dir, seg->name, seg->done, end);
    if (rv == APR_SUCCESS) {
        seg->intent_end = end;
    }
    return rv;
}

/* *left = 1 when seg has a row in [from, seg->ready_end); a segment
 * that is gone has none. */
static apr_status_t rows_left(apr_pool_t *p, const char *dir,
                              const imc_spool_segment *seg, apr_off_t from,
                              int *left)
{
    apr_uint64_t rows = 0;
    apr_status_t rv;
    int *fd;
    rv = imc_spool_fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL),
                           O_RDONLY, 0);
    if (APR_STATUS_IS_ENOENT(rv)) {
        rv = APR_SUCCESS;
    } else if (rv == APR_SUCCESS) {
        rv = scan_rows(p, *fd, from, seg->ready_end, 1, &rows);
        imc_spool_fd_close(p, fd);
    }
    *left = rows > 0;
    return rv;
}

apr_status_t imc_spool_commit(apr_pool_t *p, const char *dir,
                              imc_spool_segment *seg, apr_off_t end)
{
    apr_off_t intent = seg->intent_end > end ? seg->intent_end : end;
    apr_status_t rv;
    int left = 1;
    if (end < seg->done || end > seg->size) {
        return APR_EINVAL;
    }
    /* Sealed and nothing left: removed at once, with no .pos to write
     * first (which a full disk might refuse). */
    if (seg->sealed && (rv = rows_left(p, dir, seg, end, &left))) {
        return rv;
    }
    if (!left) {
        segment_remove(p, dir, seg->name);
        seg->done = seg->intent_end = seg->ready_end;
        return APR_SUCCESS;
    }
    if ((rv = pos_write(p, dir, seg->name, end, intent)) != APR_SUCCESS) {
        return rv;
    }
    seg->done = end;
    seg->intent_end = intent;
    return APR_SUCCESS;
}

apr_status_t imc_spool_quarantine(apr_pool_t *p, const char *dir,
                                  imc_spool_segment *seg, apr_off_t from,
                                  apr_off_t to)
{
    const char *fdir = apr_pstrcat(p, dir, "/" FAILED_DIR, NULL);
    apr_size_t n = strlen(seg->name), got = 0;
    char *buf;
    apr_status_t rv;
    int *fd;
    if (from < 0 || from > to || to > seg->size || to < seg->done) {
        return APR_EINVAL;
    }
    if (mkdir(fdir, 0750) != 0 && errno != EEXIST) {
        return os_error();
    }
    buf = apr_palloc(p, (apr_size_t)(to - from) + 1); /* one batch */
    rv = imc_spool_fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL),
                           O_RDONLY, 0);
    if (rv == APR_SUCCESS) {
        rv =
            imc_spool_pread_full(*fd, buf, (apr_size_t)(to - from), from, &got);
        imc_spool_fd_close(p, fd);
    }
    if (rv == APR_SUCCESS && got != (apr_size_t)(to - from)) {
        rv = APR_EOF;
    }
    if (rv == APR_SUCCESS) {
        rv = file_replace(p,
                          apr_psprintf(p,
                                       "%s/%.*s-%" APR_OFF_T_FMT
                                       "-%" APR_OFF_T_FMT ".rows",
                                       fdir, (int)(n - 4), seg->name, from, to),
                          buf, got);
    }
    if (rv == APR_SUCCESS) {
        imc_spool_sync_dir(fdir);
        rv = imc_spool_commit(p, dir, seg, to);
    }
    return rv;
}

apr_status_t imc_spool_quarantined(apr_pool_t *p, const char *dir,
                                   apr_int64_t *files, apr_int64_t *bytes)
{
    apr_finfo_t fi;
    apr_dir_t *d;
    apr_status_t rv;
    *files = *bytes = 0;
    rv = apr_dir_open(&d, apr_pstrcat(p, dir, "/" FAILED_DIR, NULL), p);
    if (rv != APR_SUCCESS) {
        return APR_STATUS_IS_ENOENT(rv) ? APR_SUCCESS : rv;
    }
    while ((rv = apr_dir_read(&fi,
                              APR_FINFO_NAME | APR_FINFO_SIZE | APR_FINFO_TYPE,
                              d)) == APR_SUCCESS ||
           APR_STATUS_IS_INCOMPLETE(rv)) {
        apr_size_t n = fi.name ? strlen(fi.name) : 0;
        if (n > 5 && !strcmp(fi.name + n - 5, ".rows") &&
            (fi.valid & APR_FINFO_SIZE) && fi.filetype == APR_REG) {
            ++*files;
            *bytes += fi.size;
        }
    }
    apr_dir_close(d);
    return APR_SUCCESS;
}

apr_status_t imc_spool_count_lines(apr_pool_t *p, const char *dir,
                                   const imc_spool_segment *seg, apr_off_t from,
                                   apr_off_t to, apr_uint64_t *rows)
{
    apr_status_t rv;
    int *fd;
    *rows = 0;
    if (from < 0 || to < from) {
        return APR_EINVAL;
    }
    rv = imc_spool_fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL),
                           O_RDONLY, 0);
    if (rv == APR_SUCCESS) {
        rv = scan_rows(p, *fd, from, to, 0, rows);
        imc_spool_fd_close(p, fd);
    }
    return rv;
}
