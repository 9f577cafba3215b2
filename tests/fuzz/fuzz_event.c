/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_event: every input is parsed in the three request
 * forms with small limits. Rejections must be well-formed errors; for every
 * accepted request each row must be valid JSON whose raw text parses again
 * to the same event as the row's typed columns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <jansson.h>

#include "imc_event.h"

#define FUZZ_MAX_SIZE   512
#define FUZZ_MAX_EVENTS 8
#define FUZZ_RECEIVED   ((apr_time_t)1764331200123456LL)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            abort();                                                           \
        }                                                                      \
    } while (0)

static apr_pool_t *root;

static void check_error(const imc_event_error *err, const imc_event_rows *rows)
{
    const unsigned char *m = (const unsigned char *)err->message;

    CHECK(err->status == 400 || err->status == 413);
    CHECK(err->index >= 0 && err->index <= FUZZ_MAX_EVENTS);
    CHECK(rows->data == NULL && rows->len == 0 && rows->count == 0);
    CHECK(m != NULL && *m != '\0');
    /* a human sentence of our own: printable ASCII, never input bytes */
    for (; *m; m++) {
        CHECK(*m >= 0x20 && *m < 0x7f);
    }
}

static const char *str_member(json_t *row, const char *name, size_t *len)
{
    json_t *v = json_object_get(row, name);

    CHECK(json_is_string(v));
    *len = json_string_length(v);
    return json_string_value(v);
}

/* One row: valid JSON, and its raw parses again to the same event. */
static void check_row(apr_pool_t *p, const uint8_t *body, size_t size,
                      const char *line, size_t len)
{
    json_error_t jerr;
    json_t *row = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *t, *ms, *r;
    const char *type, *cid, *sid, *raw;
    size_t type_len, cid_len, sid_len, raw_len;
    imc_event ev;
    imc_event_error err;

    CHECK(row != NULL && json_is_object(row));
    CHECK(json_object_size(row) == 7);
    t = json_object_get(row, "time");
    ms = json_object_get(row, "time_ms");
    r = json_object_get(row, "received_at");
    CHECK(json_is_integer(t) && json_is_integer(ms) && json_is_integer(r));
    CHECK(json_integer_value(r) == FUZZ_RECEIVED / APR_USEC_PER_SEC);
    type = str_member(row, "type", &type_len);
    cid = str_member(row, "correlation_id", &cid_len);
    sid = str_member(row, "site_id", &sid_len);
    raw = str_member(row, "raw", &raw_len);
    CHECK(raw_len <= FUZZ_MAX_SIZE);
    CHECK(memmem(body, size, raw, raw_len) != NULL);

    CHECK(imc_event_parse_one(p, raw, raw_len, &ev, &err) == APR_SUCCESS);
    CHECK(json_integer_value(t) == ev.time / APR_USEC_PER_SEC);
    CHECK(json_integer_value(ms) == ev.time % APR_USEC_PER_SEC / 1000);
    CHECK(json_integer_value(t) >= 0 && json_integer_value(t) <= 4291747199LL);
    CHECK(type_len == 5 && strcmp(type, ev.type) == 0);
    CHECK(cid_len == 36 && strcmp(cid, ev.correlation_id) == 0);
    CHECK(sid_len == 36 && strcmp(sid, ev.site_id) == 0);
    json_decref(row);
}

static void check_rows(apr_pool_t *p, const uint8_t *body, size_t size,
                       const imc_event_rows *rows)
{
    const char *line = rows->data, *end = rows->data + rows->len, *nl;
    int n = 0;

    CHECK(rows->count >= 1 && rows->count <= FUZZ_MAX_EVENTS);
    CHECK(rows->len > 0 && end[-1] == '\n');
    while (line < end) {
        nl = memchr(line, '\n', (size_t)(end - line));
        CHECK(nl != NULL);
        check_row(p, body, size, line, (size_t)(nl - line));
        line = nl + 1;
        n++;
    }
    CHECK(n == rows->count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const imc_event_format_e forms[] = {IMC_EVENT_JSON, IMC_EVENT_NDJSON,
                                               IMC_EVENT_SINGLE};
    imc_event_limits limits = {FUZZ_MAX_SIZE, FUZZ_MAX_EVENTS};
    apr_pool_t *p;
    size_t k;

    if (root == NULL) {
        CHECK(apr_initialize() == APR_SUCCESS);
        CHECK(apr_pool_create(&root, NULL) == APR_SUCCESS);
    }
    CHECK(apr_pool_create(&p, root) == APR_SUCCESS);
    for (k = 0; k < sizeof(forms) / sizeof(forms[0]); k++) {
        imc_event_rows rows;
        imc_event_error err;
        apr_status_t rv;

        memset(&err, 0, sizeof(err));
        rv = imc_event_parse_request(p, (const char *)data, size, forms[k],
                                     &limits, FUZZ_RECEIVED, &rows, &err);
        if (rv == APR_SUCCESS) {
            check_rows(p, data, size, &rows);
        } else {
            CHECK(rv == APR_EINVAL);
            check_error(&err, &rows);
        }
    }
    apr_pool_destroy(p);
    return 0;
}
