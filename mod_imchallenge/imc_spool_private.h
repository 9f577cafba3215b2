/* Licensed under the Apache License, Version 2.0. */

/*
 * Private declarations shared by the two halves of the spool: the writer
 * (imc_spool_writer.c) and the reader (imc_spool_reader.c); the functions
 * declared here are defined in imc_spool_file.c. Not part of the public
 * API, which is imc_spool.h. Include it after defining _GNU_SOURCE.
 */
#ifndef IMC_SPOOL_PRIVATE_H
#define IMC_SPOOL_PRIVATE_H

#include <errno.h>
#include <string.h>
#include <sys/types.h>

#include <apr_errno.h>
#include <apr_file_info.h>
#include <apr_pools.h>

#include "imc_spool.h"

#define SEG_EXT ".seg"
#define POS_EXT ".pos"
#define TMP_EXT ".tmp"

/* The longest segment file name, with its terminating NUL. */
#define IMC_SPOOL_NAME_MAX 64

/* ---- small helpers ---------------------------------------------------- */

static inline apr_status_t os_error(void)
{
    int e = errno;
    return e ? APR_FROM_OS_ERROR(e) : APR_EGENERAL;
}

static inline int ends_with(const char *s, apr_size_t n, const char *ext)
{
    apr_size_t e = strlen(ext);
    return n > e && memcmp(s + n - e, ext, e) == 0;
}

/* Next directory entry's name; 0 at the end. */
static inline int dir_next(apr_finfo_t *fi, apr_dir_t *d)
{
    apr_status_t rv = apr_dir_read(fi, APR_FINFO_NAME, d);
    return (rv == APR_SUCCESS || APR_STATUS_IS_INCOMPLETE(rv)) &&
           fi->name != NULL;
}

/* ---- defined in imc_spool_file.c -------------------------------------- */

/* open(2) with a pool cleanup that closes the descriptor. */
apr_status_t imc_spool_fd_open(int **fdp, apr_pool_t *p, const char *path,
                               int flags, mode_t mode);

/* Close a descriptor from imc_spool_fd_open() now, running its cleanup. */
void imc_spool_fd_close(apr_pool_t *p, int *fd);

/* pread until len bytes or end of file; *got tells how many. */
apr_status_t imc_spool_pread_full(int fd, char *buf, apr_size_t len,
                                  apr_off_t off, apr_size_t *got);

/* write(2) all of buf, retrying short writes and EINTR. */
apr_status_t imc_spool_write_full(int fd, const char *buf, apr_size_t len);

/* fsync the directory dir, so that the entries made in it are on disk. */
apr_status_t imc_spool_sync_dir(const char *dir);

/* "<16 hex>-<digits>-<digits>[-<16 hex>].seg"; *created (may be NULL)
 * from the first hex part. */
int imc_spool_seg_name_parse(const char *name, apr_time_t *created);

/* The stamp part of a segment name (from p); "" when it has none. */
const char *imc_spool_seg_stamp(apr_pool_t *p, const char *name);

/* The content of a .pos file, "<done> <intent_end>\n" with two
 * non-negative numbers; 0 when it is not that. */
int imc_spool_pos_parse(const char *s, apr_size_t n, apr_off_t *done,
                        apr_off_t *intent);

/* Read DIR/<name>.pos. No file: *found = 0. Bogus content: 0 0. */
apr_status_t imc_spool_pos_read(apr_pool_t *p, const char *dir,
                                const char *name, apr_off_t *done,
                                apr_off_t *intent, int *found);

#endif /* IMC_SPOOL_PRIVATE_H */
