/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_spool, the directory itself: make it and hand it to the server's user
 * without following anyone's symbolic link (imc_spool_dir_prepare), and
 * name it by what it is rather than how it is written (imc_spool_dir_key).
 *
 * The parent process is root when it prepares the spool, at every start and
 * restart. chown(2) by path follows symbolic links, so whoever could change
 * a directory on the way could have root give any file to the server's user
 * at the next reload. The path is therefore walked one name at a time with
 * openat(O_NOFOLLOW), from "/", and the directory is changed through the
 * descriptor that was opened (fchownat with AT_EMPTY_PATH). Descriptors are
 * O_PATH: walking needs search permission on each parent only, so a root
 * without CAP_DAC_OVERRIDE (a container that grants CHOWN alone) still
 * hands over a spool that already belongs to the server's user, mode 0750.
 * The rule for the walk:
 *
 *  - every directory on the way belongs to root and only root can write it
 *    (its group may write it when the group is root's);
 *  - a sticky directory writable by others (/tmp) is allowed above the
 *    spool's parent: there, others cannot rename or remove root's entries,
 *    and the next directory must be root's. It is refused as the spool's
 *    own parent: anyone could create the spool there first, with their own
 *    content, and read what is queued;
 *  - a symbolic link on the way is followed only when root owns it (in a
 *    directory that passed the rule, only root can have made it);
 *  - the spool directory itself is opened with O_NOFOLLOW|O_DIRECTORY: a
 *    symbolic link there is refused, whoever owns it.
 *
 * APR and POSIX only: no httpd headers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>

#include "imc_spool_private.h"

#define MAX_LINKS 40 /* as the kernel's own path walk */
#define MAX_DEPTH 256

typedef struct {
    apr_pool_t *p;
    int fds[MAX_DEPTH]; /* open directories from "/" down; fds[0] is "/" */
    int depth;
    char real[PATH_MAX]; /* where the walk is, for messages */
    const char *why;
} walk_t;

static void walk_close(walk_t *w)
{
    while (w->depth > 0) {
        close(w->fds[--w->depth]);
    }
}

/* The walk went up: drop the last name of w->real. */
static void real_up(walk_t *w)
{
    char *slash = strrchr(w->real, '/');

    if (slash && slash != w->real) {
        *slash = '\0';
    } else {
        strcpy(w->real, "/");
    }
}

static apr_status_t real_down(walk_t *w, const char *name)
{
    apr_size_t n = strlen(w->real);

    if (n + 1 + strlen(name) + 1 > sizeof(w->real)) {
        return APR_ENAMETOOLONG;
    }
    if (n > 1) {
        w->real[n++] = '/';
    }
    strcpy(w->real + n, name);
    return APR_SUCCESS;
}

/* Whether the open directory fd may hold the way to the spool (parent: it
 * is the spool's own parent). */
static apr_status_t dir_check(walk_t *w, int fd, int parent)
{
    struct stat st;
    int others;

    if (fstat(fd, &st) != 0) {
        return os_error();
    }
    if (!S_ISDIR(st.st_mode)) {
        return APR_ENOTDIR;
    }
    others = (st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) && st.st_gid);
    if (st.st_uid != 0) {
        w->why = apr_psprintf(w->p, "%s belongs to uid %ld, not to root",
                              w->real, (long)st.st_uid);
    } else if (others && (parent || !(st.st_mode & S_ISVTX))) {
        w->why = apr_psprintf(w->p, "%s can be written by others than root%s",
                              w->real,
                              (st.st_mode & S_ISVTX) ? " (sticky, but it is "
                                                       "the spool's parent)"
                                                     : "");
    }
    return w->why ? IMC_SPOOL_EUNSAFE : APR_SUCCESS;
}

/* The next name of *rest (advanced past it), skipping "" and "."; NULL at
 * the end. */
static char *next_name(char **rest)
{
    char *s = *rest, *e;

    while (*s == '/' || (s[0] == '.' && (s[1] == '/' || s[1] == '\0'))) {
        s++;
    }
    if (!*s) {
        *rest = s;
        return NULL;
    }
    e = strchr(s, '/');
    if (e) {
        *e = '\0';
        *rest = e + 1;
    } else {
        *rest = s + strlen(s);
    }
    return s;
}

/* Whether rest holds another name than "" or ".". */
static int more_names(const char *rest)
{
    const char *s = rest;

    while (*s == '/' || (s[0] == '.' && (s[1] == '/' || s[1] == '\0'))) {
        s++;
    }
    return *s != '\0';
}

/* Replace the walk's remaining path by the target of the link `name` in the
 * top directory, followed by what was left. */
static apr_status_t follow(walk_t *w, const char *name, char **rest)
{
    char target[PATH_MAX];
    ssize_t n =
        readlinkat(w->fds[w->depth - 1], name, target, sizeof(target) - 1);

    if (n < 0) {
        return os_error();
    }
    target[n] = '\0';
    if (target[0] == '/') {
        while (w->depth > 1) {
            close(w->fds[--w->depth]);
        }
        strcpy(w->real, "/");
    }
    *rest = apr_pstrcat(w->p, target, "/", *rest, NULL);
    return APR_SUCCESS;
}

/* Descend into (or create, mode 0755) the directory `name` of the top. */
static apr_status_t descend(walk_t *w, const char *name)
{
    int top = w->fds[w->depth - 1], fd;
    apr_status_t rv;

    if (w->depth == MAX_DEPTH) {
        return APR_ENAMETOOLONG;
    }
    if ((rv = real_down(w, name)) != APR_SUCCESS) {
        return rv;
    }
    fd = openat(top, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT &&
        (mkdirat(top, name, 0755) == 0 || errno == EEXIST)) {
        fd = openat(top, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        return os_error();
    }
    w->fds[w->depth++] = fd;
    return APR_SUCCESS;
}

/*
 * Walk dir up to its last name: on success the top of w is the spool's
 * parent, checked, and *leaf its last name.
 */
static apr_status_t walk(walk_t *w, const char *dir, const char **leaf)
{
    char *rest = apr_pstrdup(w->p, dir), *name;
    struct stat st;
    apr_status_t rv;
    int links = 0, fd;

    if (dir[0] != '/') {
        return APR_EINVAL;
    }
    if ((fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
        return os_error();
    }
    w->fds[w->depth++] = fd;
    strcpy(w->real, "/");
    while ((name = next_name(&rest)) != NULL) {
        int top = w->fds[w->depth - 1];

        if (!strcmp(name, "..")) {
            if (w->depth > 1) {
                close(w->fds[--w->depth]);
                real_up(w);
            }
            continue;
        }
        if (!more_names(rest)) {
            *leaf = name;
            return dir_check(w, top, 1);
        }
        if ((rv = dir_check(w, top, 0)) != APR_SUCCESS) {
            return rv;
        }
        if (fstatat(top, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode)) {
            if (st.st_uid != 0) {
                w->why = apr_psprintf(w->p,
                                      "%s/%s is a symbolic link of uid %ld, "
                                      "not of root",
                                      strcmp(w->real, "/") ? w->real : "", name,
                                      (long)st.st_uid);
                return IMC_SPOOL_EUNSAFE;
            }
            if (++links > MAX_LINKS) {
                return APR_FROM_OS_ERROR(ELOOP);
            }
            if ((rv = follow(w, name, &rest)) != APR_SUCCESS) {
                return rv;
            }
            continue;
        }
        if ((rv = descend(w, name)) != APR_SUCCESS) {
            return rv;
        }
    }
    return APR_EINVAL; /* "/" itself */
}

apr_status_t imc_spool_dir_prepare(apr_pool_t *p, const char *dir, uid_t uid,
                                   gid_t gid, const char **why)
{
    walk_t w;
    const char *leaf = NULL;
    apr_status_t rv;
    int top, fd = -1;

    memset(&w, 0, sizeof(w));
    w.p = p;
    *why = NULL;
    rv = walk(&w, dir, &leaf);
    if (rv != APR_SUCCESS) {
        goto out;
    }
    top = w.fds[w.depth - 1];
    fd = openat(top, leaf, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT &&
        (mkdirat(top, leaf, 0750) == 0 || errno == EEXIST)) {
        fd = openat(top, leaf, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        struct stat st;

        rv = os_error();
        if (fstatat(top, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            w.why = S_ISLNK(st.st_mode)
                        ? "it is a symbolic link: name the directory it "
                          "points to"
                    : S_ISDIR(st.st_mode) ? NULL
                                          : "it is not a directory";
            rv = w.why ? IMC_SPOOL_EUNSAFE : rv;
        }
        goto out;
    }
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH) != 0) {
        rv = os_error();
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    walk_close(&w);
    *why = w.why;
    return rv;
}

const char *imc_spool_dir_key(apr_pool_t *p, const char *dir)
{
    struct stat st;
    char *norm, *q;
    const char *s;

    if (stat(dir, &st) == 0) {
        return apr_psprintf(p, "dev %lu inode %lu", (unsigned long)st.st_dev,
                            (unsigned long)st.st_ino);
    }
    /* Not there (yet): its path without repeated or trailing slashes. */
    norm = q = apr_palloc(p, strlen(dir) + 1);
    for (s = dir; *s; ++s) {
        if (*s != '/' || q == norm || q[-1] != '/') {
            *q++ = *s;
        }
    }
    while (q - norm > 1 && q[-1] == '/') {
        --q;
    }
    *q = '\0';
    return apr_pstrcat(p, "path ", norm, NULL);
}
