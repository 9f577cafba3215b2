/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_http: what every handler of the module needs to answer: JSON bodies
 * with the right headers, error bodies, the capped request body read.
 */
#ifndef IMC_HTTP_H
#define IMC_HTTP_H

#include <httpd.h>

#define IMC_JSON_TYPE "application/json; charset=utf-8"

/* s as the body of a JSON string (no quotes), control characters, quote
 * and backslash escaped. */
const char *imc_http_json_escape(apr_pool_t *p, const char *s);

/* Percent-decodes src[0..len) into a new NUL-terminated string, as in a
 * URL path ('+' stays '+', an encoded '/' is decoded). NULL on a bad
 * escape or an encoded NUL. */
char *imc_http_unescape(apr_pool_t *p, const char *src, apr_size_t len,
                        apr_size_t *outlen);

/* Answer status with a JSON body (already serialised). Returns OK for the
 * handler to return. */
int imc_http_json(request_rec *r, int status, const char *json);

/* Answer status with {"error":"<message>"}. */
int imc_http_error(request_rec *r, int status, const char *message);

/* May a body read take total bytes? 0: no (the read stops). */
typedef int (*imc_http_budget_fn)(void *ctx, apr_size_t total);

/*
 * Read the whole request body into one buffer (NUL-terminated) through a
 * capped ap_get_brigade loop, so chunked bodies are capped too. Small
 * bodies live in r->pool; past 64 KB the buffer is memory of its own,
 * grown without copies and freed with r->pool, so that a body costs
 * about its size. budget (may be NULL) is asked after each read with the
 * bytes so far. Returns APR_SUCCESS, APR_ENOSPC when it is longer than
 * max, APR_ENOMEM (*http_status 503) when budget refused or memory ran
 * out, or the input filters' error (mapped into *http_status:
 * AP_FILTER_ERROR when a filter already answered, else 400, 408 or 413).
 */
apr_status_t imc_http_read_body(request_rec *r, apr_size_t max,
                                imc_http_budget_fn budget, void *ctx,
                                const char **body, apr_size_t *len,
                                int *http_status);

#endif /* IMC_HTTP_H */
