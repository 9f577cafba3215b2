/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_spool, the helpers the writer (imc_spool_writer.c) and the reader
 * (imc_spool_reader.c) share, declared in imc_spool_private.h: descriptors
 * tied to a pool, whole reads and writes, directory sync, segment names
 * and stamps, progress files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_lib.h>
#include <apr_strings.h>

#include "imc_spool_private.h"

/* The cleanup of imc_spool_fd_open(), run by imc_spool_fd_close(): one
 * definition, as apr_pool_cleanup_run() finds a cleanup by its address. */
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
apr_status_t imc_spool_fd_open(int **fdp, apr_pool_t *p, const char *path,
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

void imc_spool_fd_close(apr_pool_t *p, int *fd)
{
    apr_pool_cleanup_run(p, fd, fd_cleanup);
}

/* pread until len bytes or end of file; *got tells how many. */
apr_status_t imc_spool_pread_full(int fd, char *buf, apr_size_t len,
                                  apr_off_t off, apr_size_t *got)
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

apr_status_t imc_spool_write_full(int fd, const char *buf, apr_size_t len)
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

apr_status_t imc_spool_sync_dir(const char *dir)
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

/* "<16 hex>-<digits>-<digits>[-<16 hex>].seg"; *created from the first
 * hex part. */
int imc_spool_seg_name_parse(const char *name, apr_time_t *created)
{
    static const char digits[] = "0123456789", hex[] = "0123456789abcdef";
    apr_size_t n = strnlen(name, IMC_SPOOL_NAME_MAX), a, b, end;
    if (n >= IMC_SPOOL_NAME_MAX || !ends_with(name, n, SEG_EXT) ||
        strspn(name, hex) != 16 || name[16] != '-' ||
        (a = strspn(name + 17, digits)) == 0 || name[17 + a] != '-' ||
        (b = strspn(name + 18 + a, digits)) == 0) {
        return 0;
    }
    end = 18 + a + b;
    if (end != n - 4 && !(end + 17 == n - 4 && name[end] == '-' &&
                          strspn(name + end + 1, hex) == 16)) {
        return 0;
    }
    if (created) {
        *created = (apr_time_t)apr_strtoi64(name, NULL, 16);
    }
    return 1;
}

const char *imc_spool_seg_stamp(apr_pool_t *p, const char *name)
{
    apr_size_t n = strlen(name);
    const char *dash;
    /* the stamp is the fourth part: after the third '-' */
    if (!imc_spool_seg_name_parse(name, NULL) ||
        !(dash = strchr(name + 17, '-')) || !(dash = strchr(dash + 1, '-'))) {
        return "";
    }
    return apr_pstrndup(p, dash + 1, (apr_size_t)(name + n - 4 - dash - 1));
}

/* FNV-1a, 64 bits, over the database's name. */
const char *imc_spool_stamp(apr_pool_t *p, const char *database)
{
    apr_uint64_t h = APR_UINT64_C(14695981039346656037);
    const char *s;

    for (s = database; *s; s++) {
        h = (h ^ (unsigned char)*s) * APR_UINT64_C(1099511628211);
    }
    return apr_psprintf(p, "%016" APR_UINT64_T_HEX_FMT, h);
}

/* "<done> <intent_end>\n" with two non-negative numbers. */
int imc_spool_pos_parse(const char *s, apr_size_t n, apr_off_t *done,
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
apr_status_t imc_spool_pos_read(apr_pool_t *p, const char *dir,
                                const char *name, apr_off_t *done,
                                apr_off_t *intent, int *found)
{
    char buf[64];
    apr_size_t got = 0;
    apr_status_t rv;
    int *fd;
    *done = *intent = 0;
    *found = 0;
    rv = imc_spool_fd_open(
        &fd, p, apr_pstrcat(p, dir, "/", name, POS_EXT, NULL), O_RDONLY, 0);
    if (rv != APR_SUCCESS) {
        return APR_STATUS_IS_ENOENT(rv) ? APR_SUCCESS : rv;
    }
    *found = 1;
    rv = imc_spool_pread_full(*fd, buf, sizeof(buf), 0, &got);
    imc_spool_fd_close(p, fd);
    if (rv == APR_SUCCESS && !imc_spool_pos_parse(buf, got, done, intent)) {
        *done = *intent = 0;
    }
    return rv;
}
