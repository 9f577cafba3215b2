/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_event: parse, validate and normalise captcha events (README "API",
 * "Events") and turn each accepted event into the ClickHouse row it will
 * become.
 *
 * APR and Jansson only: no httpd headers, so it is unit-tested and fuzzed
 * on its own.
 */
#ifndef IMC_EVENT_H
#define IMC_EVENT_H

#include <apr_pools.h>
#include <apr_time.h>

/*
 * How the request carried its events. In every form an event's raw text is
 * exactly its object, from '{' to '}': an array element's extent, an NDJSON
 * line without its line end and surrounding white space, or the single
 * object trimmed of surrounding white space.
 */
typedef enum {
    IMC_EVENT_JSON,   /* one object, or an array of objects */
    IMC_EVENT_NDJSON, /* one object per line; blank lines are ignored */
    IMC_EVENT_SINGLE  /* exactly one object (the GET form) */
} imc_event_format_e;

/* Limits of one request. */
typedef struct {
    apr_size_t max_event_size; /* bytes of one event's JSON text */
    int max_events;            /* events in one request */
} imc_event_limits;

/* Deepest nesting of an event; the event object itself is level 1. */
#define IMC_EVENT_MAX_DEPTH 32

/* The first problem found in a request. */
typedef struct {
    int status;          /* 400 or 413 (500: out of memory) */
    int index;           /* position of the event, 0 for a single event */
    const char *field;   /* offending member, NULL for the whole event */
    const char *message; /* one human sentence; no input bytes echoed raw */
} imc_event_error;

/* One validated event, in canonical form. */
typedef struct {
    apr_time_t time;         /* UTC, microseconds since the epoch */
    const char *type;        /* "serve" or "solve" (static strings) */
    char correlation_id[37]; /* canonical lower-case UUID */
    char site_id[37];        /* canonical lower-case UUID */
    const char *raw;         /* the original text of the event */
    apr_size_t raw_len;
} imc_event;

/* The rows produced from an accepted request. */
typedef struct {
    const char *data; /* JSONEachRow: one row per event, each ending '\n' */
    apr_size_t len;
    int count; /* number of events */
} imc_event_rows;

/*
 * Parse and validate every event of a request body and build their rows,
 * all in one buffer. All or nothing: on any error rows is emptied and only
 * *err is filled, for the first problem in body order.
 * Returns APR_SUCCESS, or APR_EINVAL with err filled (err->status tells
 * 400 or 413), or APR_ENOMEM (err->status 500) if Jansson runs out of
 * memory. limits NULL means 16k and 10000. body need not be NUL-terminated
 * and rows never point into it. Memory comes from p
 * (Jansson's own is freed before returning).
 */
apr_status_t imc_event_parse_request(apr_pool_t *p, const char *body,
                                     apr_size_t len, imc_event_format_e fmt,
                                     const imc_event_limits *limits,
                                     apr_time_t received_at,
                                     imc_event_rows *rows,
                                     imc_event_error *err);

/*
 * A parsed request whose rows are written a piece at a time, so that a
 * big request never holds all its rows in memory at once.
 */
typedef struct imc_event_batch imc_event_batch;

/*
 * Parse and validate a request as imc_event_parse_request does, without
 * building its rows. The batch (from p) points into body, which must
 * outlive it.
 */
apr_status_t imc_event_parse_batch(apr_pool_t *p, const char *body,
                                   apr_size_t len, imc_event_format_e fmt,
                                   const imc_event_limits *limits,
                                   apr_time_t received_at,
                                   imc_event_batch **batch,
                                   imc_event_error *err);

/* Its number of events; the bytes of all its rows at most; of one. */
int imc_event_batch_count(const imc_event_batch *b);
/* The canonical site_id of its event i (0 <= i < count). */
const char *imc_event_batch_site(const imc_event_batch *b, int i);
apr_size_t imc_event_batch_bound(const imc_event_batch *b);
apr_size_t imc_event_batch_row_max(const imc_event_batch *b);

/*
 * Write the rows of the next events of b (whole rows, in order, the same
 * bytes imc_event_parse_request makes) into buf, no more than cap bytes;
 * returns the bytes written, 0 once every row was written. With cap >=
 * imc_event_batch_row_max(b) every call but the last writes a row at
 * least. Not NUL-terminated.
 */
apr_size_t imc_event_batch_fill(imc_event_batch *b, char *buf, apr_size_t cap);

/*
 * Validate one event's JSON text and fill ev (ev->raw points into text).
 * No depth or size limit is applied here: imc_event_parse_request does
 * that before calling it. On error fills err (index 0) and returns
 * APR_EINVAL (or APR_ENOMEM, status 500).
 */
apr_status_t imc_event_parse_one(apr_pool_t *p, const char *text,
                                 apr_size_t len, imc_event *ev,
                                 imc_event_error *err);

/*
 * Parse an RFC 3339 / ISO-8601 date-time per README "API", "Events", into UTC
 * microseconds since the epoch. Returns APR_SUCCESS or APR_EINVAL with a
 * static human message in *why.
 */
apr_status_t imc_event_parse_time(const char *s, apr_size_t len, apr_time_t *t,
                                  const char **why);

/*
 * Check a UUID (8-4-4-4-12 hex, any case) and write its canonical lower-case
 * form (36 chars + NUL) to out. Returns APR_SUCCESS or APR_EINVAL. The
 * module's one UUID form, imc_syntax_uuid, under the event's name.
 */
apr_status_t imc_event_canon_uuid(const char *s, apr_size_t len, char out[37]);

/*
 * The format of a text/plain body (what navigator.sendBeacon sends for a
 * string): NDJSON when it holds more than one line and its first line is
 * a whole object by itself, else JSON (one object, a pretty-printed one
 * included, or an array).
 */
imc_event_format_e imc_event_text_format(const char *body, apr_size_t len);

/*
 * ev's ClickHouse row (JSONEachRow, '\n'-terminated, then NUL-terminated),
 * the same bytes imc_event_parse_request writes for it; allocated from p.
 */
char *imc_event_row(apr_pool_t *p, const imc_event *ev, apr_time_t received_at);

#endif /* IMC_EVENT_H */
