/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_cors: cross-origin requests from browsers (SPEC section 10). Which
 * origins IMChallengeCORS allows, and the Access-Control-* headers of
 * preflight and actual answers.
 *
 * APR only: no httpd headers, so it is unit-tested on its own.
 */
#ifndef IMC_CORS_H
#define IMC_CORS_H

#include <apr_pools.h>
#include <apr_tables.h>

/* The entry of an IMChallengeCORS list that allows every origin. */
#define IMC_CORS_ANY "*"

/* How long a browser may keep a preflight answer, in seconds. */
#define IMC_CORS_MAX_AGE "600"

/* Request headers a page may send (beyond the CORS-safelisted ones). */
#define IMC_CORS_ALLOW_HEADERS "Authorization, Content-Type, Content-Encoding"

/* Answer headers a page may read (beyond the CORS-safelisted ones). */
#define IMC_CORS_EXPOSE_HEADERS "Retry-After"

/*
 * The canonical form of an origin as a browser sends it in Origin:
 * scheme "://" host [":" port], scheme and host in lower case, the
 * scheme's default port (80 for http, 443 for https) left out. No path,
 * query, user or trailing '/'. Returns APR_SUCCESS with *out from p, or
 * APR_EINVAL (including for "null", the origin of sandboxed documents
 * and local files, which names no site).
 */
apr_status_t imc_cors_origin_canonical(apr_pool_t *p, const char *origin,
                                       const char **out);

/*
 * Whether origin (an Origin header, may be NULL) is allowed by allowed,
 * an array of canonical origins and/or IMC_CORS_ANY. *named is set to 1
 * when it is listed by name (it may then send credentials), else 0.
 */
int imc_cors_allowed(apr_pool_t *p, const apr_array_header_t *allowed,
                     const char *origin, int *named);

/* Whether a request is a CORS preflight: OPTIONS with an Origin and an
 * Access-Control-Request-Method header. */
int imc_cors_is_preflight(const char *method, const char *origin,
                          const char *request_method);

/*
 * Add the CORS headers of an answer to out (the answer's headers), for a
 * request with Origin origin to a URL whose methods are methods ("GET,
 * POST"). allowed NULL or empty: CORS is off, nothing is added. Else
 * Vary: Origin always (the answer depends on Origin), and for an allowed
 * origin Access-Control-Allow-Origin (that origin), -Allow-Credentials for
 * origins listed by name, and either the preflight's -Allow-Methods,
 * -Allow-Headers, -Max-Age or the actual answer's -Expose-Headers.
 * Returns 1 when the origin is allowed, else 0.
 */
int imc_cors_headers(apr_pool_t *p, const apr_array_header_t *allowed,
                     const char *origin, int preflight, const char *methods,
                     apr_table_t *out);

#endif /* IMC_CORS_H */
