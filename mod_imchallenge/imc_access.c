/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>
#include <string.h>

#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_strings.h>

#include "imc_access.h"
#include "imc_event.h"

#define UUID_LEN 36

struct imc_access_grant {
    int all;     /* "*": every site */
    int nsites;  /* sorted, distinct */
    char *sites; /* nsites canonical UUIDs of UUID_LEN + 1 bytes each */
};

struct imc_access {
    apr_hash_t *grants; /* principal -> imc_access_grant */
};

typedef struct {
    apr_pool_t *p;
    const char *name;
    int line;
    const char **why;
} parse_ctx;

static apr_status_t bad_line(parse_ctx *c, const char *what)
{
    *c->why = apr_psprintf(c->p, "%s:%d: %s", c->name, c->line, what);
    return APR_EINVAL;
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* The next word of [*s, end) into *w, *n; 0 at the end of the line or at a
 * comment. */
static int next_word(const char **s, const char *end, const char **w,
                     apr_size_t *n)
{
    const char *q = *s;

    while (q < end && is_space(*q)) {
        ++q;
    }
    if (q == end || *q == '#') {
        *s = end;
        return 0;
    }
    *w = q;
    while (q < end && !is_space(*q)) {
        ++q;
    }
    *n = (apr_size_t)(q - *w);
    *s = q;
    return 1;
}

static int cmp_site(const void *a, const void *b)
{
    return memcmp(a, b, UUID_LEN);
}

/* The sites of one line, after its principal, into g. */
static apr_status_t parse_sites(parse_ctx *c, const char *s, const char *end,
                                imc_access_grant *g)
{
    apr_size_t n, cap = (apr_size_t)(end - s) / (UUID_LEN + 1) + 1;
    const char *w;
    char *out;
    int k, i;

    g->all = 0;
    g->nsites = 0;
    g->sites = apr_palloc(c->p, cap * (UUID_LEN + 1));
    while (next_word(&s, end, &w, &n)) {
        if (n == 1 && *w == '*') {
            if (g->all || g->nsites) {
                return bad_line(c, "'*' must be the only site of a line");
            }
            g->all = 1;
            continue;
        }
        if (g->all) {
            return bad_line(c, "'*' must be the only site of a line");
        }
        out = g->sites + (apr_size_t)g->nsites * (UUID_LEN + 1);
        if (imc_event_canon_uuid(w, n, out) != APR_SUCCESS) {
            return bad_line(c, "a site must be a UUID such as "
                               "0faf8b64-a33d-4db8-aaee-aa165d13cff6, or *");
        }
        ++g->nsites;
    }
    if (!g->all && !g->nsites) {
        return bad_line(c, "the principal has no sites (UUIDs or *)");
    }
    qsort(g->sites, (size_t)g->nsites, UUID_LEN + 1, cmp_site);
    for (i = 1, k = 1; i < g->nsites; ++i) {
        char *prev = g->sites + (apr_size_t)(k - 1) * (UUID_LEN + 1);
        char *cur = g->sites + (apr_size_t)i * (UUID_LEN + 1);

        if (memcmp(prev, cur, UUID_LEN) != 0) {
            memmove(prev + UUID_LEN + 1, cur, UUID_LEN + 1);
            ++k;
        }
    }
    if (g->nsites) {
        g->nsites = k;
    }
    return APR_SUCCESS;
}

static apr_status_t parse_line(parse_ctx *c, imc_access *acc, const char *s,
                               const char *end)
{
    imc_access_grant *g;
    const char *w, *principal;
    apr_size_t n;

    if ((apr_size_t)(end - s) > IMC_ACCESS_MAX_LINE) {
        return bad_line(c, "the line is too long");
    }
    if (!next_word(&s, end, &w, &n)) {
        return APR_SUCCESS; /* blank or comment */
    }
    if (n > IMC_ACCESS_MAX_PRINCIPAL) {
        return bad_line(c, "the principal is too long");
    }
    if (memchr(w, '\0', n)) {
        return bad_line(c, "the principal holds a NUL byte");
    }
    principal = apr_pstrmemdup(c->p, w, n);
    if (apr_hash_get(acc->grants, principal, (apr_ssize_t)n)) {
        return bad_line(c, "the principal is already granted sites on an "
                           "earlier line");
    }
    g = apr_palloc(c->p, sizeof(*g));
    if (parse_sites(c, s, end, g) != APR_SUCCESS) {
        return APR_EINVAL;
    }
    apr_hash_set(acc->grants, principal, (apr_ssize_t)n, g);
    return APR_SUCCESS;
}

apr_status_t imc_access_parse(imc_access **acc, apr_pool_t *p, const char *name,
                              const char *text, apr_size_t len,
                              const char **why)
{
    const char *s = text, *end = text + len, *eol;
    imc_access *a = apr_palloc(p, sizeof(*a));
    parse_ctx c;

    c.p = p;
    c.name = name;
    c.line = 0;
    c.why = why;
    a->grants = apr_hash_make(p);
    while (s < end) {
        eol = memchr(s, '\n', (apr_size_t)(end - s));
        if (!eol) {
            eol = end;
        }
        ++c.line;
        if (parse_line(&c, a, s, eol) != APR_SUCCESS) {
            return APR_EINVAL;
        }
        s = eol + 1;
    }
    *acc = a;
    return APR_SUCCESS;
}

apr_status_t imc_access_load(imc_access **acc, apr_pool_t *p, const char *path,
                             const char **why)
{
    apr_finfo_t fi;
    apr_file_t *f;
    apr_size_t n = 0;
    char *buf = NULL;
    apr_status_t rv;

    rv = apr_file_open(&f, path, APR_FOPEN_READ, APR_OS_DEFAULT, p);
    if (rv == APR_SUCCESS) {
        rv = apr_file_info_get(&fi, APR_FINFO_SIZE | APR_FINFO_TYPE, f);
        if (rv == APR_SUCCESS && fi.filetype != APR_REG) {
            rv = APR_EINVAL;
        }
        if (rv == APR_SUCCESS) {
            buf = apr_palloc(p, (apr_size_t)fi.size + 1);
            rv = apr_file_read_full(f, buf, (apr_size_t)fi.size, &n);
            if (rv == APR_EOF) {
                rv = APR_SUCCESS;
            }
        }
        apr_file_close(f);
    }
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(p, "%s: cannot read the file (%pm)", path, &rv);
        return rv;
    }
    return imc_access_parse(acc, p, path, buf, n, why);
}

int imc_access_count(const imc_access *acc)
{
    return (int)apr_hash_count(acc->grants);
}

apr_array_header_t *imc_access_principals(const imc_access *acc, apr_pool_t *p)
{
    apr_array_header_t *out = apr_array_make(
        p, (int)apr_hash_count(acc->grants) + 1, sizeof(const char *));
    apr_hash_index_t *hi;

    for (hi = apr_hash_first(p, acc->grants); hi; hi = apr_hash_next(hi)) {
        APR_ARRAY_PUSH(out, const char *) = apr_hash_this_key(hi);
    }
    return out;
}

const imc_access_grant *imc_access_lookup(const imc_access *acc,
                                          const char *principal)
{
    if (!principal) {
        return NULL;
    }
    return apr_hash_get(acc->grants, principal, APR_HASH_KEY_STRING);
}

int imc_access_all_sites(const imc_access_grant *g)
{
    return g->all;
}

int imc_access_may(const imc_access_grant *g, const char *site)
{
    if (g->all) {
        return 1;
    }
    return bsearch(site, g->sites, (size_t)g->nsites, UUID_LEN + 1, cmp_site) !=
           NULL;
}

const char *imc_access_clause(apr_pool_t *p, const imc_access_grant *g,
                              const char *column)
{
    static const char head[] = " IN (", item[] = "toUUID('')", sep[] = ", ";
    apr_size_t clen = strlen(column), size;
    char *buf, *o;
    int i;

    if (g->all) {
        return "1";
    }
    size = 1 + clen + sizeof(head) - 1 +
           (apr_size_t)g->nsites * (sizeof(item) - 1 + UUID_LEN + 2) + 3;
    o = buf = apr_palloc(p, size);
    *o++ = '(';
    memcpy(o, column, clen);
    o += clen;
    memcpy(o, head, sizeof(head) - 1);
    o += sizeof(head) - 1;
    for (i = 0; i < g->nsites; ++i) {
        if (i) {
            memcpy(o, sep, 2);
            o += 2;
        }
        memcpy(o, "toUUID('", 8);
        memcpy(o + 8, g->sites + (apr_size_t)i * (UUID_LEN + 1), UUID_LEN);
        memcpy(o + 8 + UUID_LEN, "')", 2);
        o += 8 + UUID_LEN + 2;
    }
    *o++ = ')';
    *o++ = ')';
    *o = '\0';
    return buf;
}
