/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_spool, the writer: append records to this process's segment, group
 * commit, roll over, the spool limit. The file layout and the guarantees
 * are described in imc_spool.h; the reader is imc_spool_reader.c, the
 * helpers both use are in imc_spool_file.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>

#include "imc_spool_private.h"

#if !APR_HAS_THREADS
#error "imc_spool needs APR with thread support"
#endif

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
    int fd;                        /* current segment, -1 when none */
    char name[IMC_SPOOL_NAME_MAX]; /* its file name */
    apr_off_t end;                 /* its size */
    apr_off_t durable;             /* its size at the last good fdatasync */
    pid_t pid;                     /* owner; a forked child starts afresh */
    unsigned generation;           /* fork_generation when pid was noted */
    apr_uint32_t seq;              /* per-process segment counter */
    apr_time_t last_created;       /* keeps names increasing */
    char stamp[20];                /* "-<stamp>" in segment names, or "" */
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
 * After a failed fdatasync (mutex held): cut off what was written since
 * the last good one, as none of it is acknowledged, unless the deliverer
 * has already taken some of it (its .pos is past durable): those rows may
 * be in ClickHouse, and cutting them off could not take them back but
 * would leave the spool behind its own progress file. They stay then, and
 * their requests are refused all the same (at least once: a client that
 * sends one again is counted once by the report).
 */
static void cut_unsynced(imc_spool *sp)
{
    char path[4096], buf[64];
    apr_off_t done = 0, intent = 0;
    ssize_t n = -1;
    int fd;
    apr_snprintf(path, sizeof(path), "%s/%s" POS_EXT, sp->dir, sp->name);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        n = pread(fd, buf, sizeof(buf), 0);
        close(fd);
    }
    if (n > 0 && imc_spool_pos_parse(buf, (apr_size_t)n, &done, &intent) &&
        (done > sp->durable || intent > sp->durable)) {
        return; /* taken by the deliverer: leave it */
    }
    if (ftruncate(sp->fd, sp->durable) != 0) {
        /* left without terminator: never delivered */
    }
}

/*
 * Close the current segment (mutex held, nobody syncing). With sync, the
 * writes still waiting are flushed first; if that fails they are cut off
 * (cut_unsynced).
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
            cut_unsynced(sp);
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
    if (fd < 0 || imc_spool_write_full(fd, "0 0\n", 4) != APR_SUCCESS) {
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
                     "%016" APR_UINT64_T_HEX_FMT "-%ld-%u%s" SEG_EXT,
                     (apr_uint64_t)now, (long)sp->pid, sp->seq++, sp->stamp);
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
        imc_spool_sync_dir(sp->dir);
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
            cut_unsynced(sp);
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

/* Bumped in the child of every fork(), so that a writer notices that it
 * was inherited without a getpid() system call on every append. glibc
 * drops the handler when the module is unloaded (dlclose). */
static volatile unsigned fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    ++fork_generation;
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
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
    sp->generation = fork_generation;
    sp->seq = 0;
}

static apr_status_t spool_cleanup(void *data)
{
    imc_spool *sp = data;
    apr_thread_mutex_lock(sp->mutex);
    if (sp->generation != fork_generation) {
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
    pthread_once(&atfork_once, atfork_register);
    s->pid = getpid();
    s->generation = fork_generation;
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

void imc_spool_set_stamp(imc_spool *sp, const char *stamp)
{
    apr_thread_mutex_lock(sp->mutex);
    if (stamp && *stamp && strlen(stamp) == 16) {
        apr_snprintf(sp->stamp, sizeof(sp->stamp), "-%s", stamp);
    } else {
        sp->stamp[0] = '\0';
    }
    apr_thread_mutex_unlock(sp->mutex);
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

/* Rows: non-empty, '\n'-terminated, so no "\n\n" inside. One memchr per
 * row (the last byte is a '\n': one is always found), cheaper than
 * memmem's set-up for a single short event. */
static int rows_valid(const char *data, apr_size_t len)
{
    const char *p = data, *end = data + len, *nl;

    if (len == 0 || data[0] == '\n' || data[len - 1] != '\n') {
        return 0;
    }
    while ((nl = memchr(p, '\n', (apr_size_t)(end - p))) + 1 < end) {
        if (nl[1] == '\n') {
            return 0;
        }
        p = nl + 1;
    }
    return 1;
}

/* Whether a record of len bytes may be written now (mutex held). */
static apr_status_t admit_locked(imc_spool *sp, apr_size_t len)
{
    if (sp->generation != fork_generation) {
        forked(sp);
    }
    usage_refresh(sp);
    if (sp->closed) {
        return APR_EBADF;
    }
    if (!sp->writable) {
        /* the deliverer could not record its progress either */
        return APR_EACCES;
    }
    if (sp->limit > 0 && sp->pending + (apr_off_t)len + 1 > sp->limit) {
        return IMC_SPOOL_EOVERLIMIT;
    }
    return APR_SUCCESS;
}

/* A segment that can take a record of len bytes (mutex held). */
static apr_status_t segment_ready(imc_spool *sp, apr_size_t len)
{
    roll_if_needed(sp, (apr_off_t)len + 1);
    return sp->fd < 0 ? segment_create(sp) : APR_SUCCESS;
}

/* After a failed write: seal the segment now, as on a full disk its
 * delivered bytes can only be freed once it is sealed and removed. */
static void write_failed(imc_spool *sp)
{
    sp->broken = sp->broken || sp->end > 0;
    roll_if_needed(sp, 0);
}

/* The record of len bytes is written (mutex held): count it, tell where
 * it lies, and wait for its fdatasync with sync. */
static apr_status_t record_done(imc_spool *sp, apr_size_t len,
                                imc_spool_pos *pos)
{
    ticket me = {APR_SUCCESS, 0, NULL};

    sp->writes++;
    sp->pending += (apr_off_t)len + 1;
    if (pos) {
        apr_cpystrn(pos->segment, sp->name, sizeof(pos->segment));
        pos->end = sp->end - 1;
        pos->start = pos->end - (apr_off_t)len;
    }
    if (!sp->sync) {
        return APR_SUCCESS;
    }
    me.next = sp->waiting;
    sp->waiting = &me;
    return sync_wait(sp, &me);
}

apr_status_t imc_spool_admit(imc_spool *sp, apr_size_t len)
{
    apr_status_t rv;

    apr_thread_mutex_lock(sp->mutex);
    rv = admit_locked(sp, len);
    apr_thread_mutex_unlock(sp->mutex);
    return rv;
}

apr_status_t imc_spool_append(imc_spool *sp, const char *data, apr_size_t len,
                              imc_spool_pos *pos)
{
    apr_status_t rv;

    if (len == 0 && pos) { /* nothing to keep: delivered already */
        memset(pos, 0, sizeof(*pos));
    }
    if (len == 0 || !rows_valid(data, len)) {
        return len == 0 ? APR_SUCCESS : APR_EINVAL;
    }
    apr_thread_mutex_lock(sp->mutex);
    if ((rv = admit_locked(sp, len)) != APR_SUCCESS ||
        (rv = segment_ready(sp, len)) != APR_SUCCESS) {
        goto out;
    }
    if ((rv = record_write(sp, data, len)) != APR_SUCCESS) {
        write_failed(sp);
        goto out;
    }
    rv = record_done(sp, len, pos);
out:
    apr_thread_mutex_unlock(sp->mutex);
    return rv;
}

/* Writes the pieces of fill and the terminator at the segment's end;
 * *len: the rows' bytes. On failure nothing of them remains. */
static apr_status_t pieces_write(imc_spool *sp, apr_size_t bound,
                                 imc_spool_fill_fn fill, void *ctx, char *buf,
                                 apr_size_t cap, apr_size_t *len)
{
    apr_status_t rv = APR_SUCCESS;
    apr_size_t n;

    *len = 0;
    while (rv == APR_SUCCESS && (n = fill(ctx, buf, cap)) > 0) {
        rv = n > bound - *len || !rows_valid(buf, n)
                 ? APR_EINVAL
                 : imc_spool_write_full(sp->fd, buf, n);
        *len += rv == APR_SUCCESS ? n : 0;
    }
    if (rv == APR_SUCCESS) {
        rv = *len ? imc_spool_write_full(sp->fd, "\n", 1) : APR_EINVAL;
    }
    if (rv != APR_SUCCESS && ftruncate(sp->fd, sp->end) != 0) {
        sp->broken = 1; /* torn bytes stay: the next append rolls over */
    }
    if (rv == APR_SUCCESS) {
        sp->end += (apr_off_t)*len + 1;
    }
    return rv;
}

apr_status_t imc_spool_append_pieces(imc_spool *sp, apr_size_t bound,
                                     imc_spool_fill_fn fill, void *ctx,
                                     char *buf, apr_size_t cap,
                                     imc_spool_pos *pos)
{
    apr_size_t len = 0;
    apr_status_t rv;

    if (bound == 0) {
        return APR_EINVAL;
    }
    apr_thread_mutex_lock(sp->mutex);
    if ((rv = admit_locked(sp, bound)) != APR_SUCCESS ||
        (rv = segment_ready(sp, bound)) != APR_SUCCESS) {
        goto out;
    }
    if ((rv = pieces_write(sp, bound, fill, ctx, buf, cap, &len)) !=
        APR_SUCCESS) {
        write_failed(sp);
        goto out;
    }
    rv = record_done(sp, len, pos);
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
        if (!imc_spool_seg_name_parse(fi.name, &created) ||
            apr_stat(&st, apr_pstrcat(p, dir, "/", fi.name, NULL),
                     APR_FINFO_SIZE, p) != APR_SUCCESS ||
            imc_spool_pos_read(p, dir, fi.name, &done, &intent, &found) !=
                APR_SUCCESS) {
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
