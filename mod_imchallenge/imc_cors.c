/* Licensed under the Apache License, Version 2.0. */

#include <apr_lib.h>
#include <apr_strings.h>

#include "imc_cors.h"

/* The longest origin considered; longer Origin headers match nothing. */
#define MAX_ORIGIN 512

static int scheme_char(char c)
{
    return apr_isalnum(c) || c == '+' || c == '-' || c == '.';
}

static int host_char(char c)
{
    return apr_isalnum(c) || c == '-' || c == '.' || c == '_';
}

/* The end of the host of s (after "scheme://"), or NULL when there is
 * none: a name, an IPv4 address or a bracketed IPv6 address. */
static const char *host_end(const char *s)
{
    const char *e = s;

    if (*e == '[') {
        for (++e; apr_isxdigit(*e) || *e == ':' || *e == '.'; ++e) {
        }
        return (*e == ']' && e > s + 1) ? e + 1 : NULL;
    }
    while (host_char(*e)) {
        ++e;
    }
    return e > s ? e : NULL;
}

/* The port after ':' (1-65535, digits only) or -1. */
static long port_of(const char *s)
{
    long v = 0;
    const char *d;

    for (d = s; apr_isdigit(*d) && d - s < 6; ++d) {
        v = v * 10 + (*d - '0');
    }
    return (d > s && !*d && v >= 1 && v <= 65535) ? v : -1;
}

static char *lower(char *s)
{
    char *c;

    for (c = s; *c; ++c) {
        *c = (char)apr_tolower(*c);
    }
    return s;
}

apr_status_t imc_cors_origin_canonical(apr_pool_t *p, const char *origin,
                                       const char **out)
{
    const char *s, *host, *end;
    char *scheme, *name;
    long port = -1;

    if (!origin || strlen(origin) > MAX_ORIGIN || !apr_isalpha(*origin)) {
        return APR_EINVAL;
    }
    for (s = origin; scheme_char(*s); ++s) {
    }
    if (strncmp(s, "://", 3) != 0) {
        return APR_EINVAL;
    }
    host = s + 3;
    if (!(end = host_end(host))) {
        return APR_EINVAL;
    }
    if (*end == ':') {
        if ((port = port_of(end + 1)) < 0) {
            return APR_EINVAL;
        }
    } else if (*end) {
        return APR_EINVAL; /* a path, '/', query, user or stray byte */
    }
    scheme = lower(apr_pstrmemdup(p, origin, (apr_size_t)(s - origin)));
    name = lower(apr_pstrmemdup(p, host, (apr_size_t)(end - host)));
    if ((port == 80 && !strcmp(scheme, "http")) ||
        (port == 443 && !strcmp(scheme, "https"))) {
        port = -1;
    }
    *out = port < 0 ? apr_pstrcat(p, scheme, "://", name, NULL)
                    : apr_psprintf(p, "%s://%s:%ld", scheme, name, port);
    return APR_SUCCESS;
}

int imc_cors_allowed(apr_pool_t *p, const apr_array_header_t *allowed,
                     const char *origin, int *named)
{
    const char *canon;
    int any = 0, i;

    *named = 0;
    if (!allowed || !origin ||
        imc_cors_origin_canonical(p, origin, &canon) != APR_SUCCESS) {
        return 0;
    }
    for (i = 0; i < allowed->nelts; ++i) {
        const char *a = APR_ARRAY_IDX(allowed, i, const char *);

        if (!strcmp(a, IMC_CORS_ANY)) {
            any = 1;
        } else if (!strcmp(a, canon)) {
            *named = 1;
            return 1;
        }
    }
    return any;
}

int imc_cors_is_preflight(const char *method, const char *origin,
                          const char *request_method)
{
    return method && !strcmp(method, "OPTIONS") && origin && request_method;
}

/* Whether a Vary value already names Origin. */
static int varies_by_origin(const char *vary)
{
    const char *t = vary;

    while (t && *t) {
        t += strspn(t, " \t,");
        if (!strncasecmp(t, "Origin", 6) &&
            (t[6] == '\0' || t[6] == ',' || t[6] == ' ' || t[6] == '\t')) {
            return 1;
        }
        t += strcspn(t, ",");
    }
    return 0;
}

int imc_cors_headers(apr_pool_t *p, const apr_array_header_t *allowed,
                     const char *origin, int preflight, const char *methods,
                     apr_table_t *out)
{
    int named;

    if (!allowed || allowed->nelts == 0) {
        return 0;
    }
    if (!varies_by_origin(apr_table_get(out, "Vary"))) {
        apr_table_mergen(out, "Vary", "Origin");
    }
    if (!imc_cors_allowed(p, allowed, origin, &named)) {
        return 0;
    }
    /* The origin exactly as the browser sent it: it compares bytes. */
    apr_table_setn(out, "Access-Control-Allow-Origin", apr_pstrdup(p, origin));
    if (named) {
        apr_table_setn(out, "Access-Control-Allow-Credentials", "true");
    }
    if (preflight) {
        apr_table_setn(out, "Access-Control-Allow-Methods", methods);
        apr_table_setn(out, "Access-Control-Allow-Headers",
                       IMC_CORS_ALLOW_HEADERS);
        apr_table_setn(out, "Access-Control-Max-Age", IMC_CORS_MAX_AGE);
    } else {
        apr_table_setn(out, "Access-Control-Expose-Headers",
                       IMC_CORS_EXPOSE_HEADERS);
    }
    return 1;
}
