/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_spool: the on-disk queue between acceptance and delivery
 * (README "Guarantees").
 *
 * Writers (request threads of any httpd process) append each accepted
 * request as one record to a segment file they hold a shared flock on; one
 * deliverer per spool directory reads complete records, records its
 * progress in a ".pos" file next to each segment and removes a segment once
 * it is sealed (no live writer) and fully delivered.
 *
 * Files in the spool directory DIR:
 *   <16 hex digits creation usec>-<pid>-<seq>[-<stamp>].seg  a segment;
 *                         the stamp names its destination (imc_spool_stamp)
 *   <segment>.pos         "<done> <intent_end>\n": delivery progress; made
 *                         ("0 0") with the segment, so that it can always
 *                         be rewritten, in place when the disk is full
 *   <name>.tmp            being created; leftovers are removed after 60 s
 *   failed/<base>-<from>-<to>.rows  batches rejected for good
 *   .deliver.lock         flock held by the one deliverer
 *
 * Segment format: a sequence of records, one per append. A record is the
 * request's rows (each non-empty and ending in '\n') followed by one empty
 * line, its terminator. Only rows of records whose terminator is on disk
 * are ever delivered, so a write cut short (kill -9 during write(), a
 * failed write, a crash) never delivers part of a request. Empty lines are
 * white space to ClickHouse's JSONEachRow, so a batch may carry them.
 *
 * Locks are flock(2), never apr_file_lock (fcntl locks): an fcntl lock
 * belongs to the process, so the writer's shared lock on its segment would
 * not conflict with the deliverer's exclusive probe of it in the same
 * process, and closing any descriptor of the file would drop it. flock
 * locks belong to the open file, whichever thread or process holds it: a
 * segment whose writer lives is never taken for sealed, even by the
 * deliverer thread of that writer's own process.
 *
 * APR and POSIX only: no httpd headers.
 */
#ifndef IMC_SPOOL_H
#define IMC_SPOOL_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_file_io.h>
#include <apr_time.h>
#include <sys/types.h>

/* The spool holds its limit of pending bytes (imc_spool_set_limit). */
#define IMC_SPOOL_EOVERLIMIT (APR_OS_START_USERERR + 11)
/* The way to the spool directory could be changed by others than root. */
#define IMC_SPOOL_EUNSAFE (APR_OS_START_USERERR + 12)

/* A writer: one per process, shared by its threads. */
typedef struct imc_spool imc_spool;

/* Where an appended request lies: delivered once done >= end. */
typedef struct {
    char segment[64]; /* segment file name, no directory */
    apr_off_t start;  /* offset of the request's first row */
    apr_off_t end;    /* offset just past the request's last row */
} imc_spool_pos;

/* State of the spool directory, for limits, status and readiness. */
typedef struct {
    apr_off_t pending;              /* bytes not yet confirmed delivered */
    int segments;                   /* number of segment files */
    apr_time_t oldest;              /* creation of the oldest segment with
                                       pending bytes; 0 when none */
    apr_interval_time_t oldest_age; /* now - oldest; 0 when none */
    int writable;                   /* DIR can take new files */
    apr_off_t avail;                /* bytes free on its file system for
                                       unprivileged users; -1 if unknown */
} imc_spool_usage_t;

/* One segment as seen by imc_spool_list(). */
typedef struct {
    const char *name;     /* file name, no directory */
    apr_off_t size;       /* file size (final when sealed) */
    apr_off_t done;       /* bytes confirmed stored, at a line start */
    apr_off_t intent_end; /* end of the batch being sent; == done if idle */
    int sealed;           /* no live writer: size is final */
    apr_time_t created;   /* from the name */
    apr_off_t ready_end;  /* end of the last complete record: bytes in
                             [done, ready_end) may be delivered */
    const char *stamp;    /* its destination's stamp (imc_spool_stamp), ""
                             for a segment made before stamps */
} imc_spool_segment;

/* ---- the directory (imc_spool_dir.c) -------------------------------- */

/*
 * As root: make dir (absolute; mode 0750, missing parents 0755) and give
 * it to uid:gid, through a descriptor opened without following symbolic
 * links. IMC_SPOOL_EUNSAFE, with *why (from p) saying what, when dir is a
 * symbolic link or not a directory, or when a directory on the way (or a
 * symbolic link followed on the way) could be changed by others than root;
 * the rule is described in imc_spool_dir.c. Nothing is changed then.
 */
apr_status_t imc_spool_dir_prepare(apr_pool_t *p, const char *dir, uid_t uid,
                                   gid_t gid, const char **why);

/*
 * What names the directory dir itself: its device and inode, so that two
 * spellings of one directory (a trailing slash, a symbolic link) are one
 * key; its path without repeated or trailing slashes while it does not
 * exist.
 */
const char *imc_spool_dir_key(apr_pool_t *p, const char *dir);

/* ---- writer (imc_spool_writer.c; imc_spool_stamp in imc_spool_file.c) */

/*
 * Open a writer on dir (created with mode 0750 if missing). Segments roll
 * over once the next record would take them past segment_max bytes (a
 * record is never split). With sync, every append is on stable storage
 * (fdatasync with group commit) before it returns success. The writer is
 * closed by imc_spool_close() or when p is destroyed.
 */
apr_status_t imc_spool_open(imc_spool **sp, apr_pool_t *p, const char *dir,
                            apr_off_t segment_max, int sync);

/*
 * Refuse appends with IMC_SPOOL_EOVERLIMIT, without writing, once the
 * spool's pending bytes plus the new record would exceed bytes (0: no
 * limit).
 * Pending bytes are recounted from the directory at most every 250 ms.
 */
void imc_spool_set_limit(imc_spool *sp, apr_off_t bytes);

/*
 * Append one request: data is 1..N rows, each non-empty and ending in
 * '\n' (APR_EINVAL otherwise; len 0 writes nothing and its pos counts as
 * delivered). Thread-safe. All or nothing: on error no
 * part of data remains in the spool. On success pos (may be NULL) tells
 * where the request ended, for imc_spool_is_delivered(). APR_EACCES when
 * the directory is not writable (checked with the limit, at most every
 * 250 ms), IMC_SPOOL_EOVERLIMIT over the limit (imc_spool_set_limit). A
 * failed write (e.g. APR_ENOSPC: a full disk) seals the current segment,
 * so that it can be removed once delivered and its space comes back.
 */
apr_status_t imc_spool_append(imc_spool *sp, const char *data, apr_size_t len,
                              imc_spool_pos *pos);

/*
 * The stamp of a destination: 16 hex digits naming the database the events
 * belong to. Segments carry the stamp of the destination they were
 * accepted for in their name, <16 hex>-<pid>-<seq>-<stamp>.seg, so that a
 * deliverer can tell its own from those of another database. The
 * ClickHouse URLs are left out: they say how to reach the database, and an
 * administrator who fixes or adds one expects the backlog delivered.
 */
const char *imc_spool_stamp(apr_pool_t *p, const char *database);

/* Name the writer's next segments with stamp (NULL or "": no stamp). Call
 * it before the first append. */
void imc_spool_set_stamp(imc_spool *sp, const char *stamp);

/*
 * Whether a record of len bytes would be taken now: APR_SUCCESS, or what
 * imc_spool_append would refuse it with (IMC_SPOOL_EOVERLIMIT,
 * APR_EACCES, APR_EBADF). Writes nothing, reserves nothing: for a request
 * to be refused before its body is read.
 */
apr_status_t imc_spool_admit(imc_spool *sp, apr_size_t len);

/*
 * Writes the next piece of a record into buf (at most cap bytes): whole
 * rows, as imc_spool_append takes them. Returns its length, 0 at the end.
 */
typedef apr_size_t (*imc_spool_fill_fn)(void *ctx, char *buf, apr_size_t cap);

/*
 * Append one request as imc_spool_append does, its rows made a piece at
 * a time by fill into buf (cap bytes) and written as they come, so that
 * they are never all in memory. bound: the rows' bytes at most, for the
 * limit and the segment roll-over (a record is never split); a piece
 * past it, a piece that is not whole rows, or no rows at all is
 * APR_EINVAL. All or nothing, as imc_spool_append. The writer's other
 * appends wait while the pieces are made.
 */
apr_status_t imc_spool_append_pieces(imc_spool *sp, apr_size_t bound,
                                     imc_spool_fill_fn fill, void *ctx,
                                     char *buf, apr_size_t cap,
                                     imc_spool_pos *pos);

/* Writes and fdatasync calls so far (group commit makes syncs < writes). */
void imc_spool_counters(imc_spool *sp, apr_uint64_t *writes,
                        apr_uint64_t *syncs);

/* Close the current segment (it becomes sealed). Idempotent. */
apr_status_t imc_spool_close(imc_spool *sp);

/*
 * *done = 1 when the deliverer confirmed everything up to pos->end, or the
 * segment is gone; else 0, also when the request's last row went to
 * DIR/failed instead.
 */
apr_status_t imc_spool_is_delivered(apr_pool_t *p, const char *dir,
                                    const imc_spool_pos *pos, int *done);

/* Fill u from dir. Cheap: one directory scan and one stat per segment. */
apr_status_t imc_spool_usage(apr_pool_t *p, const char *dir,
                             imc_spool_usage_t *u);

/* ---- reader, for the deliverer (imc_spool_reader.c) ----------------- */

/*
 * Become dir's one deliverer: holds a flock on DIR/.deliver.lock until
 * *lock is closed (apr_file_close) or p is destroyed. APR_EAGAIN when
 * another deliverer, in any process, holds it.
 */
apr_status_t imc_spool_lock_deliverer(apr_file_t **lock, apr_pool_t *p,
                                      const char *dir);

/*
 * List the segments, oldest first, as an array of imc_spool_segment
 * (values, not pointers). Removes sealed segments with nothing left to
 * deliver, .pos files whose segment is gone and .tmp leftovers older than
 * a minute; a segment that cannot be read is skipped, and kept. A missing
 * or unreadable .pos counts as nothing delivered; done and intent_end are
 * clamped to [0, ready_end] and to line starts.
 */
apr_status_t imc_spool_list(apr_pool_t *p, const char *dir,
                            apr_array_header_t **segs);

/*
 * Read complete rows of seg starting at from (a line start, e.g. seg->done
 * or a previous from + len) and not past seg->ready_end: at most max_lines
 * rows (<= 0: no limit) and at most max_bytes bytes, but at least one row
 * when one is ready. *buf (from p) holds the bytes [from, from + *len) of
 * the file, which may include empty lines (white space to JSONEachRow:
 * send *buf as it is, count events with *lines, never by '\n'). *len is 0
 * when no row is ready (or the segment is gone). The next batch starts at
 * from + *len. A resend after a crash, from = done, max_lines <= 0,
 * max_bytes = intent_end - done, returns exactly [done, intent_end).
 * max_bytes == 0 means no byte limit (the whole ready part in memory).
 */
apr_status_t imc_spool_read(apr_pool_t *p, const char *dir,
                            const imc_spool_segment *seg, apr_off_t from,
                            int max_lines, apr_size_t max_bytes,
                            const char **buf, apr_size_t *len, int *lines);

/* Record that the batch [seg->done, end) is being sent. */
apr_status_t imc_spool_intent(apr_pool_t *p, const char *dir,
                              imc_spool_segment *seg, apr_off_t end);

/*
 * Record that everything before end is stored (done = end). Removes the
 * segment and its .pos when it is sealed and no row is left to deliver
 * (a torn record at its tail never will be), without writing the .pos
 * first; seg->done then becomes seg->ready_end.
 */
apr_status_t imc_spool_commit(apr_pool_t *p, const char *dir,
                              imc_spool_segment *seg, apr_off_t end);

/*
 * Copy the bytes [from, to) of seg to DIR/failed/<base>-<from>-<to>.rows,
 * then commit up to to.
 */
apr_status_t imc_spool_quarantine(apr_pool_t *p, const char *dir,
                                  imc_spool_segment *seg, apr_off_t from,
                                  apr_off_t to);

/* What DIR/failed holds: *files quarantined batches of *bytes in all.
 * Never retried, and not counted against the limit. */
apr_status_t imc_spool_quarantined(apr_pool_t *p, const char *dir,
                                   apr_int64_t *files, apr_int64_t *bytes);

/* *rows = number of rows (non-empty lines) in [from, to) of seg. */
apr_status_t imc_spool_count_lines(apr_pool_t *p, const char *dir,
                                   const imc_spool_segment *seg, apr_off_t from,
                                   apr_off_t to, apr_uint64_t *rows);

#endif /* IMC_SPOOL_H */
