/* Licensed under the Apache License, Version 2.0. */

#include <stdlib.h>
#include <sys/mman.h>

#include <apr_buckets.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <http_protocol.h>
#include <util_filter.h>

#include "imc_private.h"
#include "imc_http.h"

const char *imc_http_json_escape(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    apr_size_t n = 0;
    const unsigned char *c;
    char *out, *o;

    for (c = (const unsigned char *)s; *c; ++c) {
        n += (*c < 0x20) ? 6 : (*c == '"' || *c == '\\') ? 2 : 1;
    }
    o = out = apr_palloc(p, n + 1);
    for (c = (const unsigned char *)s; *c; ++c) {
        if (*c == '"' || *c == '\\') {
            *o++ = '\\';
            *o++ = (char)*c;
        } else if (*c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[*c >> 4];
            o[5] = hex[*c & 15];
            o += 6;
        } else {
            *o++ = (char)*c;
        }
    }
    *o = '\0';
    return out;
}

static int hex_value(char c)
{
    return apr_isdigit(c) ? c - '0' : apr_tolower(c) - 'a' + 10;
}

char *imc_http_unescape(apr_pool_t *p, const char *src, apr_size_t len,
                        apr_size_t *outlen)
{
    char *out = apr_palloc(p, len + 1), *o = out;
    apr_size_t i;

    for (i = 0; i < len; ++i) {
        if (src[i] != '%') {
            *o++ = src[i];
            continue;
        }
        if (i + 2 >= len || !apr_isxdigit(src[i + 1]) ||
            !apr_isxdigit(src[i + 2])) {
            return NULL;
        }
        *o = (char)(hex_value(src[i + 1]) << 4 | hex_value(src[i + 2]));
        if (*o++ == '\0') {
            return NULL;
        }
        i += 2;
    }
    *o = '\0';
    *outlen = (apr_size_t)(o - out);
    return out;
}

int imc_http_json(request_rec *r, int status, const char *json)
{
    r->status = status;
    ap_set_content_type(r, IMC_JSON_TYPE);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    ap_set_content_length(r, (apr_off_t)strlen(json));
    if (!r->header_only) {
        ap_rputs(json, r);
    }
    return OK;
}

int imc_http_error(request_rec *r, int status, const char *message)
{
    return imc_http_json(r, status,
                         apr_pstrcat(r->pool, "{\"error\":\"",
                                     imc_http_json_escape(r->pool, message),
                                     "\"}", NULL));
}

/* Copies the data buckets of bb into buf (capacity max + 1). */
static apr_status_t drain_brigade(apr_bucket_brigade *bb, char *buf,
                                  apr_size_t max, apr_size_t *len, int *eos)
{
    apr_bucket *b;
    apr_status_t rv = APR_SUCCESS;

    for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
         b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t n;

        if (APR_BUCKET_IS_EOS(b)) {
            *eos = 1;
            break;
        }
        if (APR_BUCKET_IS_METADATA(b)) {
            continue;
        }
        rv = apr_bucket_read(b, &data, &n, APR_BLOCK_READ);
        if (rv != APR_SUCCESS) {
            break;
        }
        if (n > max - *len) {
            rv = APR_ENOSPC;
            break;
        }
        memcpy(buf + *len, data, n);
        *len += n;
    }
    apr_brigade_cleanup(bb);
    return rv;
}

/*
 * A body past SMALL_BODY moves out of the pool into memory of its own,
 * grown by doubling without copying (mremap), so that it costs its size
 * in resident memory: the pages past what was read are never touched.
 * The pool's cleanup gives it back.
 */
#define SMALL_BODY ((apr_size_t)64 * 1024)

typedef struct {
    char *base;
    apr_size_t size;
} big_buffer;

static apr_status_t big_buffer_free(void *data)
{
    big_buffer *bb = data;

#ifdef MREMAP_MAYMOVE
    munmap(bb->base, bb->size);
#else
    free(bb->base);
#endif
    bb->base = NULL;
    return APR_SUCCESS;
}

/* buf (got bytes used) grown to hold size bytes; NULL when out of
 * memory. *bbp is NULL while buf is pool memory. */
static char *body_grow(apr_pool_t *p, big_buffer **bbp, char *buf,
                       apr_size_t got, apr_size_t size)
{
    big_buffer *bb = *bbp;
    char *nbuf;

    if (size <= SMALL_BODY) {
        nbuf = apr_palloc(p, size);
        memcpy(nbuf, buf, got);
        return nbuf;
    }
    if (!bb) {
        bb = apr_pcalloc(p, sizeof(*bb));
#ifdef MREMAP_MAYMOVE
        nbuf = mmap(NULL, size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        nbuf = nbuf == MAP_FAILED ? NULL : nbuf;
#else
        nbuf = malloc(size);
#endif
        if (!nbuf) {
            return NULL;
        }
        memcpy(nbuf, buf, got);
        bb->base = nbuf;
        bb->size = size;
        apr_pool_cleanup_register(p, bb, big_buffer_free,
                                  apr_pool_cleanup_null);
        *bbp = bb;
        return nbuf;
    }
#ifdef MREMAP_MAYMOVE
    nbuf = mremap(bb->base, bb->size, size, MREMAP_MAYMOVE);
    nbuf = nbuf == MAP_FAILED ? NULL : nbuf;
#else
    nbuf = realloc(bb->base, size);
#endif
    if (nbuf) {
        bb->base = nbuf;
        bb->size = size;
    }
    return nbuf;
}

apr_status_t imc_http_read_body(request_rec *r, apr_size_t max,
                                imc_http_budget_fn budget, void *ctx,
                                const char **body, apr_size_t *len,
                                int *http_status)
{
    apr_bucket_brigade *bb =
        apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_size_t cap = 8192, got = 0;
    char *buf = apr_palloc(r->pool, cap + 1);
    big_buffer *big = NULL;
    int eos = 0;
    apr_status_t rv = APR_SUCCESS;

    *http_status = 0;
    while (!eos) {
        rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                            APR_BLOCK_READ, HUGE_STRING_LEN);
        if (rv != APR_SUCCESS) {
            *http_status = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
            break;
        }
        if (cap - got < HUGE_STRING_LEN && cap < max) {
            /* Grow geometrically: copies stay linear in the body size,
             * and past SMALL_BODY there are none. */
            apr_size_t ncap = cap * 2 < max ? cap * 2 : max;
            char *nbuf = body_grow(r->pool, &big, buf, got, ncap + 1);

            if (!nbuf) {
                rv = APR_ENOMEM;
                *http_status = HTTP_SERVICE_UNAVAILABLE;
                break;
            }
            buf = nbuf;
            cap = ncap;
        }
        rv = drain_brigade(bb, buf, cap, &got, &eos);
        if (rv != APR_SUCCESS) {
            break;
        }
        if (budget && !budget(ctx, got)) {
            rv = APR_ENOMEM;
            *http_status = HTTP_SERVICE_UNAVAILABLE;
            break;
        }
    }
    apr_brigade_destroy(bb);
    buf[got] = '\0';
    *body = buf;
    *len = got;
    return rv;
}
