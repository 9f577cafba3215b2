/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_spool: append-only segment files between acceptance and delivery.
 * The file layout and the guarantees are described in imc_spool.h.
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
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_hash.h>
#include <apr_portable.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>

#include "imc_spool.h"

#if !APR_HAS_THREADS
#error "imc_spool needs APR with thread support"
#endif

#define SEG_EXT     ".seg"
#define POS_EXT     ".pos"
#define TMP_EXT     ".tmp"
#define FAILED_DIR  "failed"
#define LOCK_FILE   ".deliver.lock"
#define NAME_MAX_   64
#define CHUNK       65536
#define TMP_MAX_AGE apr_time_from_sec(60)
#define USAGE_EVERY apr_time_from_msec(250)

/* A request thread waiting for the fdatasync that covers its write. */
typedef struct ticket {
    apr_status_t rv;
    int done;
    struct ticket *next;
} ticket;

struct imc_spool {
    apr_pool_t *pool;
    apr_pool_t *upool; /* usage scans; one refresher at a time */
    const char *dir;
    apr_off_t segment_max;
    int sync;
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;
    int fd;                  /* current segment, -1 when none */
    char name[NAME_MAX_];    /* its file name */
    apr_off_t end;           /* its size */
    apr_off_t durable;       /* its size at the last good fdatasync */
    pid_t pid;               /* owner; a forked child starts afresh */
    apr_uint32_t seq;        /* per-process segment counter */
    apr_time_t last_created; /* keeps names increasing */
    int closed;
    int broken;  /* torn bytes at its end: take no more records */
    int syncing; /* a thread is in fdatasync outside the mutex */
    ticket *waiting;
    apr_off_t limit;
    apr_off_t pending; /* cached spool usage */
    int writable;      /* cached: the directory takes new files */
    apr_time_t usage_at;
    int refreshing;
    apr_uint64_t writes;
    apr_uint64_t syncs;
};

/* ---- small helpers ---------------------------------------------------- */

static apr_status_t os_error(void)
{
    int e = errno;
    return e ? APR_FROM_OS_ERROR(e) : APR_EGENERAL;
}

static apr_status_t fd_cleanup(void *data)
{
    int *fd = data;
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    return APR_SUCCESS;
}

/* open(2) with a pool cleanup that closes the descriptor. */
static apr_status_t fd_open(int **fdp, apr_pool_t *p, const char *path,
                            int flags, mode_t mode)
{
    int *fd = apr_palloc(p, sizeof(*fd));
    do {
        *fd = open(path, flags | O_CLOEXEC, mode);
    } while (*fd < 0 && errno == EINTR);
    if (*fd < 0) {
        return os_error();
    }
    apr_pool_cleanup_register(p, fd, fd_cleanup, apr_pool_cleanup_null);
    *fdp = fd;
    return APR_SUCCESS;
}

static void fd_close(apr_pool_t *p, int *fd)
{
    apr_pool_cleanup_run(p, fd, fd_cleanup);
}

/* pread until len bytes or end of file; *got tells how many. */
static apr_status_t pread_full(int fd, char *buf, apr_size_t len, apr_off_t off,
                               apr_size_t *got)
{
    ssize_t n;
    *got = 0;
    while (*got < len) {
        n = pread(fd, buf + *got, len - *got, off + (apr_off_t)*got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return os_error();
        }
        if (n == 0) {
            break;
        }
        *got += (apr_size_t)n;
    }
    return APR_SUCCESS;
}

static apr_status_t write_full(int fd, const char *buf, apr_size_t len)
{
    ssize_t n;
    while (len > 0) {
        n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? os_error() : APR_EGENERAL;
        }
        buf += n;
        len -= (apr_size_t)n;
    }
    return APR_SUCCESS;
}

static apr_status_t sync_dir(const char *dir)
{
    apr_status_t rv = APR_SUCCESS;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rv = os_error();
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

static int ends_with(const char *s, apr_size_t n, const char *ext)
{
    apr_size_t e = strlen(ext);
    return n > e && memcmp(s + n - e, ext, e) == 0;
}

/* Next directory entry's name; 0 at the end. */
static int dir_next(apr_finfo_t *fi, apr_dir_t *d)
{
    apr_status_t rv = apr_dir_read(fi, APR_FINFO_NAME, d);
    return (rv == APR_SUCCESS || APR_STATUS_IS_INCOMPLETE(rv)) &&
           fi->name != NULL;
}

/* "<16 hex>-<digits>-<digits>.seg"; *created from the hex part. */
static int seg_name_parse(const char *name, apr_time_t *created)
{
    static const char digits[] = "0123456789";
    apr_size_t n = strnlen(name, NAME_MAX_), a, b;
    if (n >= NAME_MAX_ || !ends_with(name, n, SEG_EXT) ||
        strspn(name, "0123456789abcdef") != 16 || name[16] != '-' ||
        (a = strspn(name + 17, digits)) == 0 || name[17 + a] != '-' ||
        (b = strspn(name + 18 + a, digits)) == 0 || 18 + a + b != n - 4) {
        return 0;
    }
    if (created) {
        *created = (apr_time_t)apr_strtoi64(name, NULL, 16);
    }
    return 1;
}

/* "<done> <intent_end>\n" with two non-negative numbers. */
static int pos_parse(const char *s, apr_size_t n, apr_off_t *done,
                     apr_off_t *intent)
{
    char text[64], *e;
    if (n == 0 || n >= sizeof(text)) {
        return 0;
    }
    memcpy(text, s, n);
    text[n] = '\0';
    *done = (apr_off_t)apr_strtoi64(text, &e, 10);
    if (e == text || *e != ' ') {
        return 0;
    }
    *intent = (apr_off_t)apr_strtoi64(e + 1, &e, 10);
    return *e == '\n' && e[1] == '\0' && *done >= 0 && *intent >= 0;
}

/* Read DIR/<name>.pos. No file: *found = 0. Bogus content: 0 0. */
static apr_status_t pos_read(apr_pool_t *p, const char *dir, const char *name,
                             apr_off_t *done, apr_off_t *intent, int *found)
{
    char buf[64];
    apr_size_t got = 0;
    apr_status_t rv;
    int *fd;
    *done = *intent = 0;
    *found = 0;
    rv = fd_open(&fd, p, apr_pstrcat(p, dir, "/", name, POS_EXT, NULL),
                 O_RDONLY, 0);
    if (rv != APR_SUCCESS) {
        return APR_STATUS_IS_ENOENT(rv) ? APR_SUCCESS : rv;
    }
    *found = 1;
    rv = pread_full(*fd, buf, sizeof(buf), 0, &got);
    fd_close(p, fd);
    if (rv == APR_SUCCESS && !pos_parse(buf, got, done, intent)) {
        *done = *intent = 0;
    }
    return rv;
}

/* Replace path atomically with data, on disk before the rename. */
static apr_status_t file_replace(apr_pool_t *p, const char *path,
                                 const char *data, apr_size_t len)
{
    const char *tmp = apr_pstrcat(p, path, TMP_EXT, NULL);
    apr_status_t rv;
    int *fd;
    rv = fd_open(&fd, p, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rv = write_full(*fd, data, len);
    if (rv == APR_SUCCESS && fdatasync(*fd) != 0) {
        rv = os_error();
    }
    fd_close(p, fd);
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
    rv = fd_open(&fd, p, path, O_WRONLY, 0);
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
    fd_close(p, fd);
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
        rv = pread_full(fd, buf, (apr_size_t)(hi - lo), lo, &got);
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
        rv = pread_full(fd, buf, 1, from - 1, &got);
    }
    while (rv == APR_SUCCESS && from < to && !(first && *rows)) {
        want = to - from > CHUNK ? CHUNK : (apr_size_t)(to - from);
        rv = pread_full(fd, buf + 1, want, from, &got);
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

/* ---- writer ------------------------------------------------------------- */

static void tickets_resolve(ticket *t, apr_status_t rv)
{
    while (t) {
        ticket *next = t->next; /* t may vanish once done is seen */
        t->rv = rv;
        t->done = 1;
        t = next;
    }
}

/*
 * Close the current segment (mutex held, nobody syncing). With sync, the
 * writes still waiting are flushed first; if that fails they are cut off.
 */
static void segment_close(imc_spool *sp)
{
    apr_status_t rv = APR_SUCCESS;
    if (sp->fd < 0) {
        return;
    }
    if (sp->waiting) {
        sp->syncs++;
        if (fdatasync(sp->fd) != 0) {
            rv = os_error();
            if (ftruncate(sp->fd, sp->durable) != 0) {
                /* left without terminator: never delivered */
            }
        }
        tickets_resolve(sp->waiting, rv);
        sp->waiting = NULL;
    }
    close(sp->fd);
    sp->fd = -1;
    sp->name[0] = '\0';
}

/*
 * The segment's .pos, "0 0": made with the segment so that the deliverer
 * only ever rewrites it, which it can do in place when the disk is full.
 */
static apr_status_t pos_reserve(const char *seg)
{
    char path[4096];
    apr_status_t rv = APR_SUCCESS;
    int fd;
    apr_snprintf(path, sizeof(path), "%s" POS_EXT, seg);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || write_full(fd, "0 0\n", 4) != APR_SUCCESS) {
        rv = os_error();
    }
    if (fd >= 0) {
        close(fd);
    }
    if (rv != APR_SUCCESS) {
        unlink(path);
    }
    return rv;
}

/* Create DIR/<name>.tmp, lock it shared, rename it to .seg (mutex held). */
static apr_status_t segment_create(imc_spool *sp)
{
    char tmp[4096], seg[4096];
    apr_time_t now = apr_time_now();
    apr_status_t rv = APR_EEXIST;
    int fd = -1, attempt;
    if (now <= sp->last_created) {
        now = sp->last_created + 1;
    }
    for (attempt = 0; attempt < 100 && APR_STATUS_IS_EEXIST(rv); attempt++) {
        apr_snprintf(sp->name, sizeof(sp->name),
                     "%016" APR_UINT64_T_HEX_FMT "-%ld-%u" SEG_EXT,
                     (apr_uint64_t)now, (long)sp->pid, sp->seq++);
        apr_snprintf(tmp, sizeof(tmp), "%s/%.*s" TMP_EXT, sp->dir,
                     (int)(strlen(sp->name) - 4), sp->name);
        apr_snprintf(seg, sizeof(seg), "%s/%s", sp->dir, sp->name);
        fd =
            open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
        rv = fd < 0 ? os_error() : APR_SUCCESS;
        if (fd >= 0 && access(seg, F_OK) == 0) { /* never replace one */
            close(fd);
            unlink(tmp);
            rv = APR_EEXIST;
        }
    }
    if (rv != APR_SUCCESS) {
        goto out;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) != 0 || rename(tmp, seg) != 0) {
        rv = os_error();
        close(fd);
        unlink(tmp);
        goto out;
    }
    if ((rv = pos_reserve(seg)) != APR_SUCCESS) {
        unlink(seg);
        close(fd);
        goto out;
    }
    if (sp->sync) {
        sync_dir(sp->dir);
    }
    sp->fd = fd;
    sp->end = sp->durable = 0;
    sp->broken = 0;
    sp->last_created = now;
out:
    if (rv != APR_SUCCESS) {
        sp->name[0] = '\0';
    }
    return rv;
}

/* One record: data plus its terminator; on failure nothing remains. */
static apr_status_t record_write(imc_spool *sp, const char *data,
                                 apr_size_t len)
{
    apr_size_t total = len + 1, put = 0;
    apr_status_t rv = APR_SUCCESS;
    struct iovec iov[2];
    ssize_t n;
    while (put < total) {
        int cnt = 0;
        if (put < len) {
            iov[cnt].iov_base = (void *)(data + put);
            iov[cnt++].iov_len = len - put;
        }
        iov[cnt].iov_base = (void *)"\n";
        iov[cnt++].iov_len = 1;
        n = writev(sp->fd, iov, cnt);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rv = n < 0 ? os_error() : APR_EGENERAL;
            break;
        }
        put += (apr_size_t)n;
    }
    if (rv != APR_SUCCESS && put > 0 && ftruncate(sp->fd, sp->end) != 0) {
        /* the torn bytes stay: no record may follow them (the next
           append rolls over) */
        sp->broken = 1;
    }
    if (rv == APR_SUCCESS) {
        sp->end += (apr_off_t)total;
    }
    return rv;
}

/*
 * Group commit (mutex held, me queued): the first waiter syncs for all
 * queued writes; writes made meanwhile wait for the next fdatasync.
 */
static apr_status_t sync_wait(imc_spool *sp, ticket *me)
{
    while (!me->done) {
        ticket *batch;
        apr_off_t upto;
        apr_status_t rv = APR_SUCCESS;
        int fd;
        if (sp->syncing) {
            apr_thread_cond_wait(sp->cond, sp->mutex);
            continue;
        }
        batch = sp->waiting;
        sp->waiting = NULL;
        fd = sp->fd;
        upto = sp->end;
        sp->syncing = 1;
        apr_thread_mutex_unlock(sp->mutex);
        if (fdatasync(fd) != 0) {
            rv = os_error();
        }
        apr_thread_mutex_lock(sp->mutex);
        sp->syncing = 0;
        sp->syncs++;
        tickets_resolve(batch, rv);
        if (rv == APR_SUCCESS) {
            sp->durable = upto;
        } else {
            /* nothing past durable was acknowledged: cut it off, seal */
            tickets_resolve(sp->waiting, rv);
            sp->waiting = NULL;
            if (ftruncate(sp->fd, sp->durable) != 0) {
                /* left without terminator: never delivered */
            }
            segment_close(sp);
        }
        apr_thread_cond_broadcast(sp->cond);
    }
    return me->rv;
}

/* Roll over before a record of need bytes would pass segment_max. */
static void roll_if_needed(imc_spool *sp, apr_off_t need)
{
    while (sp->fd >= 0 &&
           (sp->broken || (sp->end > 0 && sp->end + need > sp->segment_max))) {
        if (sp->syncing) {
            apr_thread_cond_wait(sp->cond, sp->mutex);
            continue;
        }
        segment_close(sp);
    }
}

/* In a forked child: leave the parent's segment and queue alone. */
static void forked(imc_spool *sp)
{
    if (sp->fd >= 0) {
        close(sp->fd); /* the parent's descriptor keeps its lock */
    }
    sp->fd = -1;
    sp->name[0] = '\0';
    sp->waiting = NULL;
    sp->syncing = 0;
    sp->pid = getpid();
    sp->seq = 0;
}

static apr_status_t spool_cleanup(void *data)
{
    imc_spool *sp = data;
    apr_thread_mutex_lock(sp->mutex);
    if (sp->pid != getpid()) {
        forked(sp);
    }
    while (sp->syncing) {
        apr_thread_cond_wait(sp->cond, sp->mutex);
    }
    segment_close(sp);
    sp->closed = 1;
    apr_thread_mutex_unlock(sp->mutex);
    return APR_SUCCESS;
}

apr_status_t imc_spool_open(imc_spool **sp, apr_pool_t *p, const char *dir,
                            apr_off_t segment_max, int sync)
{
    imc_spool *s = apr_pcalloc(p, sizeof(*s));
    apr_allocator_t *alloc = NULL;
    apr_status_t rv;
    rv = apr_dir_make_recursive(dir,
                                APR_FPROT_UREAD | APR_FPROT_UWRITE |
                                    APR_FPROT_UEXECUTE | APR_FPROT_GREAD |
                                    APR_FPROT_GEXECUTE,
                                p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    s->pool = p;
    s->dir = apr_pstrdup(p, dir);
    s->segment_max = segment_max > 0 ? segment_max : 64 * 1024 * 1024;
    s->sync = sync;
    s->fd = -1;
    s->writable = 1;
    s->pid = getpid();
    if ((rv = apr_thread_mutex_create(&s->mutex, APR_THREAD_MUTEX_DEFAULT,
                                      p)) != APR_SUCCESS ||
        (rv = apr_thread_cond_create(&s->cond, p)) != APR_SUCCESS ||
        (rv = apr_allocator_create(&alloc)) != APR_SUCCESS) {
        return rv;
    }
    /* its own allocator: used by request threads, one at a time */
    if ((rv = apr_pool_create_ex(&s->upool, p, NULL, alloc)) != APR_SUCCESS) {
        apr_allocator_destroy(alloc);
        return rv;
    }
    apr_allocator_owner_set(alloc, s->upool);
    /* registered last so it runs before the mutex is destroyed */
    apr_pool_cleanup_register(p, s, spool_cleanup, apr_pool_cleanup_null);
    *sp = s;
    return APR_SUCCESS;
}

void imc_spool_set_limit(imc_spool *sp, apr_off_t bytes)
{
    apr_thread_mutex_lock(sp->mutex);
    sp->limit = bytes > 0 ? bytes : 0;
    sp->usage_at = 0;
    apr_thread_mutex_unlock(sp->mutex);
}

/* Recount pending bytes and check that the directory is writable, when
 * due (mutex held; released while scanning). */
static void usage_refresh(imc_spool *sp)
{
    imc_spool_usage_t u;
    apr_status_t rv;
    if (sp->refreshing || apr_time_now() - sp->usage_at < USAGE_EVERY) {
        return;
    }
    sp->refreshing = 1;
    apr_thread_mutex_unlock(sp->mutex);
    apr_pool_clear(sp->upool); /* mutex released: only the refresher */
    rv = imc_spool_usage(sp->upool, sp->dir, &u);
    apr_thread_mutex_lock(sp->mutex);
    if (rv == APR_SUCCESS) {
        sp->pending = u.pending;
    }
    sp->writable = u.writable;
    sp->usage_at = apr_time_now();
    sp->refreshing = 0;
}

/* Rows: non-empty, '\n'-terminated, so no "\n\n" inside. */
static int rows_valid(const char *data, apr_size_t len)
{
    return len > 0 && data[0] != '\n' && data[len - 1] == '\n' &&
           !memmem(data, len, "\n\n", 2);
}

apr_status_t imc_spool_append(imc_spool *sp, const char *data, apr_size_t len,
                              imc_spool_pos *pos)
{
    apr_status_t rv = APR_SUCCESS;
    ticket me = {APR_SUCCESS, 0, NULL};
    if (len == 0 && pos) { /* nothing to keep: delivered already */
        memset(pos, 0, sizeof(*pos));
    }
    if (len == 0 || !rows_valid(data, len)) {
        return len == 0 ? APR_SUCCESS : APR_EINVAL;
    }
    apr_thread_mutex_lock(sp->mutex);
    if (sp->pid != getpid()) {
        forked(sp);
    }
    usage_refresh(sp);
    if (sp->closed) {
        rv = APR_EBADF;
        goto out;
    }
    if (!sp->writable) {
        /* the deliverer could not record its progress either */
        rv = APR_EACCES;
        goto out;
    }
    if (sp->limit > 0 && sp->pending + (apr_off_t)len + 1 > sp->limit) {
        rv = APR_ENOSPC;
        goto out;
    }
    roll_if_needed(sp, (apr_off_t)len + 1);
    if (sp->fd < 0 && (rv = segment_create(sp)) != APR_SUCCESS) {
        goto out;
    }
    if ((rv = record_write(sp, data, len)) != APR_SUCCESS) {
        /* Seal the segment now: on a full disk its delivered bytes can
         * only be freed once it is sealed and removed. */
        sp->broken = sp->broken || sp->end > 0;
        roll_if_needed(sp, 0);
        goto out;
    }
    sp->writes++;
    sp->pending += (apr_off_t)len + 1;
    if (pos) {
        apr_cpystrn(pos->segment, sp->name, sizeof(pos->segment));
        pos->end = sp->end - 1;
    }
    if (sp->sync) {
        me.next = sp->waiting;
        sp->waiting = &me;
        rv = sync_wait(sp, &me);
    }
out:
    apr_thread_mutex_unlock(sp->mutex);
    return rv;
}

void imc_spool_counters(imc_spool *sp, apr_uint64_t *writes,
                        apr_uint64_t *syncs)
{
    apr_thread_mutex_lock(sp->mutex);
    *writes = sp->writes;
    *syncs = sp->syncs;
    apr_thread_mutex_unlock(sp->mutex);
}

apr_status_t imc_spool_close(imc_spool *sp)
{
    return apr_pool_cleanup_run(sp->pool, sp, spool_cleanup);
}

/* 1 when DIR/failed holds a quarantined batch of segment name that
 * contains the row ending at end. */
static int quarantined(apr_pool_t *p, const char *dir, const char *name,
                       apr_off_t end)
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
        found = strcmp(e, ".rows") == 0 && from < end && end <= to;
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
    if (*done || !seg_name_parse(pos->segment, NULL)) {
        return *done ? APR_SUCCESS : APR_EINVAL;
    }
    rv = pos_read(p, dir, pos->segment, &d, &intent, &found);
    if (rv == APR_SUCCESS && !(found && d >= pos->end)) {
        rv = apr_stat(&fi, apr_pstrcat(p, dir, "/", pos->segment, NULL),
                      APR_FINFO_TYPE, p);
        if (!APR_STATUS_IS_ENOENT(rv)) {
            return rv; /* still to deliver, or an error */
        }
        rv = APR_SUCCESS; /* gone: delivered */
    }
    /* past it, but quarantined rather than stored: not delivered */
    *done = rv == APR_SUCCESS && !quarantined(p, dir, pos->segment, pos->end);
    return rv;
}

apr_status_t imc_spool_usage(apr_pool_t *p, const char *dir,
                             imc_spool_usage_t *u)
{
    apr_finfo_t fi, st;
    apr_dir_t *d;
    apr_status_t rv;
    struct statvfs vfs;
    memset(u, 0, sizeof(*u));
    u->writable = faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == 0;
    u->avail = statvfs(dir, &vfs) == 0
                   ? (apr_off_t)vfs.f_bavail * (apr_off_t)vfs.f_frsize
                   : -1;
    if ((rv = apr_dir_open(&d, dir, p)) != APR_SUCCESS) {
        return rv;
    }
    while (dir_next(&fi, d)) {
        apr_off_t done, intent;
        apr_time_t created;
        int found;
        if (!seg_name_parse(fi.name, &created) ||
            apr_stat(&st, apr_pstrcat(p, dir, "/", fi.name, NULL),
                     APR_FINFO_SIZE, p) != APR_SUCCESS ||
            pos_read(p, dir, fi.name, &done, &intent, &found) != APR_SUCCESS) {
            continue; /* removed meanwhile */
        }
        done = done < 0 ? 0 : done > st.size ? st.size : done;
        u->segments++;
        u->pending += st.size - done;
        if (st.size > done && (u->oldest == 0 || created < u->oldest)) {
            u->oldest = created;
        }
    }
    apr_dir_close(d);
    if (u->oldest) {
        u->oldest_age = apr_time_now() - u->oldest;
        u->oldest_age = u->oldest_age < 0 ? 0 : u->oldest_age;
    }
    return APR_SUCCESS;
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
    if (fd_open(&fd, p, path, O_RDONLY, 0) != APR_SUCCESS) {
        return;
    }
    if (fstat(*fd, &st) == 0 &&
        apr_time_now() - apr_time_from_sec(st.st_mtime) > TMP_MAX_AGE &&
        flock(*fd, LOCK_EX | LOCK_NB) == 0) {
        unlink(path);
    }
    fd_close(p, fd);
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
    seg_name_parse(name, &seg->created);
    rv = fd_open(&fd, p, apr_pstrcat(p, dir, "/", name, NULL), O_RDONLY, 0);
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
        (rv = pos_read(p, dir, name, &seg->done, &seg->intent_end, &found))) {
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
    fd_close(p, fd);
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
        if (seg_name_parse(fi.name, NULL)) {
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
            seg_name_parse(seg, NULL)) {
            pos_orphan_remove(p, dir, seg);
        }
    }
    return APR_SUCCESS;
}

/*
 * The cut of one batch in data[0, n): leading empty lines and the first
 * row always, then lines while within max_lines rows and max_bytes bytes.
 * *more when no row is complete in data yet.
 */
static apr_size_t batch_cut(const char *data, apr_size_t n, int max_lines,
                            apr_size_t max_bytes, int *rows, int *more)
{
    apr_size_t pos = 0, cut = 0, ll;
    const char *nl;
    *rows = 0;
    while (pos < n && (nl = memchr(data + pos, '\n', n - pos)) != NULL) {
        ll = (apr_size_t)(nl - (data + pos)) + 1;
        if (*rows > 0 && max_bytes > 0 && pos + ll > max_bytes) {
            break;
        }
        if (ll > 1) {
            if (max_lines > 0 && *rows >= max_lines) {
                break;
            }
            (*rows)++;
        }
        pos += ll;
        cut = pos;
    }
    *more = *rows == 0;
    return cut;
}

apr_status_t imc_spool_read(apr_pool_t *p, const char *dir,
                            const imc_spool_segment *seg, apr_off_t from,
                            int max_lines, apr_size_t max_bytes,
                            const char **buf, apr_size_t *len, int *lines)
{
    apr_off_t avail = seg->ready_end - from;
    apr_size_t want, got = 0, lead = from > 0, cut = 0;
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
    want = max_bytes > 0 && (apr_off_t)max_bytes < avail ? max_bytes
                                                         : (apr_size_t)avail;
    rv =
        fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL), O_RDONLY, 0);
    if (APR_STATUS_IS_ENOENT(rv)) {
        return APR_SUCCESS; /* removed: it was delivered */
    }
    while (rv == APR_SUCCESS && more) {
        b = apr_palloc(p, want + lead + 1);
        rv = pread_full(*fd, b, want + lead, from - (apr_off_t)lead, &got);
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
        want = (apr_off_t)want * 2 < avail ? want * 2 : (apr_size_t)avail;
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
        fd_close(p, fd);
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
    rv =
        fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL), O_RDONLY, 0);
    if (APR_STATUS_IS_ENOENT(rv)) {
        rv = APR_SUCCESS;
    } else if (rv == APR_SUCCESS) {
        rv = scan_rows(p, *fd, from, seg->ready_end, 1, &rows);
        fd_close(p, fd);
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
    rv =
        fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL), O_RDONLY, 0);
    if (rv == APR_SUCCESS) {
        rv = pread_full(*fd, buf, (apr_size_t)(to - from), from, &got);
        fd_close(p, fd);
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
        sync_dir(fdir);
        rv = imc_spool_commit(p, dir, seg, to);
    }
    return rv;
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
    rv =
        fd_open(&fd, p, apr_pstrcat(p, dir, "/", seg->name, NULL), O_RDONLY, 0);
    if (rv == APR_SUCCESS) {
        rv = scan_rows(p, *fd, from, to, 0, rows);
        fd_close(p, fd);
    }
    return rv;
}
