/* Licensed under the Apache License, Version 2.0. */

/*
 * mod_imchallenge_noop: the benchmark's baseline. Its handler "bench-noop"
 * reads the request body through the same kind of ap_get_brigade loop as
 * the event handler, throws it away and answers 202 with a small JSON body
 * and the same response headers. The ratio of the event handler's
 * throughput to this one is what the module costs beyond httpd's own
 * request handling. The handler's name does not start with "imchallenge-"
 * on purpose: the module treats such handlers as its own and spares them
 * httpd's directory walk, and the baseline is a plain handler.
 */

#include <apr_buckets.h>
#include <apr_strings.h>
#include <httpd.h>
#include <http_config.h>
#include <http_protocol.h>
#include <util_filter.h>

#define NOOP_BODY "{\"status\":\"accepted\",\"accepted\":1}"

/* Reads the body to its end, counting bytes; returns an HTTP status. */
static int noop_discard_body(request_rec *r, apr_off_t *total)
{
    apr_bucket_brigade *bb =
        apr_brigade_create(r->pool, r->connection->bucket_alloc);
    int eos = 0, status = OK;

    *total = 0;
    while (!eos) {
        apr_bucket *b;
        apr_status_t rv =
            ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                           APR_BLOCK_READ, HUGE_STRING_LEN);

        if (rv != APR_SUCCESS) {
            status = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
            break;
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t n;

            if (APR_BUCKET_IS_EOS(b)) {
                eos = 1;
                break;
            }
            if (!APR_BUCKET_IS_METADATA(b) &&
                apr_bucket_read(b, &data, &n, APR_BLOCK_READ) == APR_SUCCESS) {
                *total += (apr_off_t)n;
            }
        }
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    return status;
}

static int noop_handler(request_rec *r)
{
    apr_off_t total;
    int status;

    if (!r->handler || strcmp(r->handler, "bench-noop") != 0) {
        return DECLINED;
    }
    if (r->method_number != M_POST) {
        apr_table_setn(r->headers_out, "Allow", "POST");
        return HTTP_METHOD_NOT_ALLOWED;
    }
    status = noop_discard_body(r, &total);
    if (status != OK) {
        return status;
    }
    r->status = total > 0 ? HTTP_ACCEPTED : HTTP_BAD_REQUEST;
    ap_set_content_type(r, "application/json; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    ap_set_content_length(r, (apr_off_t)(sizeof(NOOP_BODY) - 1));
    if (!r->header_only) {
        ap_rwrite(NOOP_BODY, (int)(sizeof(NOOP_BODY) - 1), r);
    }
    return OK;
}

static void noop_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_handler(noop_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA imchallenge_noop_module = {
    STANDARD20_MODULE_STUFF,
    NULL, /* per-directory config */
    NULL, /* merge per-directory config */
    NULL, /* per-server config */
    NULL, /* merge per-server config */
    NULL, /* directives */
    noop_register_hooks,
#if defined(AP_MODULE_FLAG_NONE)
    AP_MODULE_FLAG_NONE
#endif
};
