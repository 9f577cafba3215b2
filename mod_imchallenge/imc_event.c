/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_event: parse, validate and normalise captcha events (README "API",
 * "Events") and build the ClickHouse rows they become.
 *
 * A request body is first walked by a small scanner that finds the byte
 * extent of every event (strings, escapes, nesting), enforcing the depth and
 * size limits before Jansson sees a byte. Each extent is then parsed by
 * Jansson and checked field by field. The rows of all events are written
 * into one buffer, sized once from what the scanner counted.
 */

#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <jansson.h>

#include "imc_event.h"
#include "imc_syntax.h"

/* Defaults used when no limits are given. */
#define IMC_EVENT_DEF_SIZE   (16 * 1024)
#define IMC_EVENT_DEF_EVENTS 10000

/*
 * The shortest text a valid event can have (a space separator, no fraction,
 * no zone, no white space, no other member): 150 bytes. Used only to guess
 * how many events a body can hold.
 */
#define IMC_EVENT_MIN_TEXT 150

/* 1970-01-01T00:00:00Z and 2105-12-31T23:59:59Z, the first and the last
 * second an event may carry: the days of the calendar's dates. */
#define IMC_EVENT_MIN_SEC (IMC_SYNTAX_FIRST_DAY * APR_INT64_C(86400))
#define IMC_EVENT_MAX_SEC ((IMC_SYNTAX_LAST_DAY + 1) * APR_INT64_C(86400) - 1)

/* The fixed parts of a row, in order. */
#define ROW_P1 "{\"time\":"
#define ROW_PM ",\"time_ms\":"
#define ROW_P2 ",\"type\":\""
#define ROW_P3 "\",\"correlation_id\":\""
#define ROW_P4 "\",\"site_id\":\""
#define ROW_P5 "\",\"received_at\":"
#define ROW_P6 ",\"raw\":\""
#define ROW_P7 "\"}\n"

#define LIT_LEN(s) (sizeof(s) - 1)

/* Longest decimal form of a 64-bit signed integer. */
#define INT_MAX_DIGITS 20

/* Longest row, raw text not counted. */
#define ROW_FIXED_MAX                                                          \
    (LIT_LEN(ROW_P1) + LIT_LEN(ROW_PM) + LIT_LEN(ROW_P2) + LIT_LEN(ROW_P3) +   \
     LIT_LEN(ROW_P4) + LIT_LEN(ROW_P5) + LIT_LEN(ROW_P6) + LIT_LEN(ROW_P7) +   \
     2 * INT_MAX_DIGITS + 3 + 5 + 2 * 36)

#define MSG_TIME_FORMAT                                                        \
    "time must be an RFC 3339 date-time such as 2026-11-28T12:00:00Z"
#define MSG_TIME_FIELDS "time must be a real calendar date and time of day"
#define MSG_TIME_OFFSET "time must have a zone offset between -23:59 and +23:59"
#define MSG_TIME_RANGE                                                         \
    "time must lie between 1970-01-01T00:00:00Z and 2105-12-31T23:59:59Z"

#define MSG_UUID      "0faf8b64-a33d-4db8-aaee-aa165d13cff6"
#define MSG_NOT_JSON  "the event is not valid JSON"
#define MSG_NOT_OBJ   "the event must be a JSON object"
#define MSG_NO_EVENTS "the request holds no events"
#define MSG_AFTER     "the request holds data after its event"
#define MSG_BOM       "the request must not start with a byte order mark"

/*
 * Extra bytes a raw byte needs once escaped inside a JSON string:
 * 1 for \" \\ \b \t \n \f \r, 5 for any other control (\u00XX), else 0.
 */
/* clang-format off */
static const unsigned char esc_extra[256] = {
    5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1, 5, 1, 1, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    ['"'] = 1, ['\\'] = 1};

/* The letter of the short escape of a byte, if it has one. */
static const char esc_letter[128] = {
    ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r',
    ['"'] = '"', ['\\'] = '\\'};
/* clang-format on */

static const char hex_digits[] = "0123456789abcdef";

/* State of one request being parsed. */
typedef struct {
    apr_pool_t *p;
    const char *body;
    apr_size_t len;
    apr_size_t max_size;
    int max_events;
    apr_array_header_t *events; /* of imc_event */
    apr_size_t raw_total;       /* bytes of all raw texts */
    apr_size_t esc_total;       /* extra bytes their escaping needs */
    apr_array_header_t *escs;   /* of apr_size_t: each event's share */
    imc_event_error *err;
} req_ctx;

/* A parsed request, its rows still to be written (imc_event_batch_fill). */
struct imc_event_batch {
    const imc_event *events;
    const apr_size_t *escs;
    int count, next;
    apr_int64_t received; /* whole seconds */
    apr_size_t bound;     /* all rows at most */
    apr_size_t row_max;   /* one row at most */
};

static apr_status_t fail(imc_event_error *err, int status, int index,
                         const char *field, const char *message)
{
    err->status = status;
    err->index = index;
    err->field = field;
    err->message = message;
    return APR_EINVAL;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static apr_size_t skip_ws(const char *s, apr_size_t i, apr_size_t end)
{
    while (i < end && is_ws(s[i])) {
        i++;
    }
    return i;
}

/* The end of s[first..last) without its trailing white space. */
static apr_size_t trim_end(const char *s, apr_size_t first, apr_size_t last)
{
    while (last > first && is_ws(s[last - 1])) {
        last--;
    }
    return last;
}

static int has_bom(const char *s, apr_size_t len)
{
    return len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0;
}

/* ---- date-time ------------------------------------------------------- */

/* Reads n decimal digits; returns -1 if any is not a digit. */
static int read_digits(const char *s, int n)
{
    int v = 0, k;

    for (k = 0; k < n; k++) {
        if (s[k] < '0' || s[k] > '9') {
            return -1;
        }
        v = v * 10 + (s[k] - '0');
    }
    return v;
}

/* The broken-down fields of a date-time as written. */
typedef struct {
    int year, mon, day, hour, min, sec;
    apr_int64_t usec;
    int offset; /* seconds east of UTC */
} dt_fields;

/* Reads the optional fraction and zone from s[i..len). */
static apr_status_t read_tail(const char *s, apr_size_t len, apr_size_t i,
                              dt_fields *f, const char **why)
{
    int n = 0, oh, om;

    f->usec = 0;
    f->offset = 0;
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, n++) {
            if (n < 6) {
                f->usec = f->usec * 10 + (s[i] - '0');
            }
        }
        if (n < 1 || n > 9) {
            *why = MSG_TIME_FORMAT;
            return APR_EINVAL;
        }
        for (; n < 6; n++) {
            f->usec *= 10;
        }
    }
    if (i == len || ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len)) {
        return APR_SUCCESS;
    }
    if ((s[i] != '+' && s[i] != '-') || len - i != 6 || s[i + 3] != ':' ||
        (oh = read_digits(s + i + 1, 2)) < 0 ||
        (om = read_digits(s + i + 4, 2)) < 0) {
        *why = MSG_TIME_FORMAT;
        return APR_EINVAL;
    }
    if (oh > 23 || om > 59) {
        *why = MSG_TIME_OFFSET;
        return APR_EINVAL;
    }
    f->offset = (s[i] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
    return APR_SUCCESS;
}

static apr_status_t read_fields(const char *s, apr_size_t len, dt_fields *f,
                                const char **why)
{
    *why = MSG_TIME_FORMAT;
    if (len < 19 || s[13] != ':' || s[16] != ':' ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !imc_syntax_date_fields(s, &f->year, &f->mon, &f->day)) {
        return APR_EINVAL;
    }
    f->hour = read_digits(s + 11, 2);
    f->min = read_digits(s + 14, 2);
    f->sec = read_digits(s + 17, 2);
    if (f->hour < 0 || f->min < 0 || f->sec < 0) {
        return APR_EINVAL;
    }
    if (read_tail(s, len, 19, f, why) != APR_SUCCESS) {
        return APR_EINVAL;
    }
    /* Year 0000 is answered as a field error, not as out of range. */
    if (f->year < 1 || !imc_syntax_date_valid(f->year, f->mon, f->day) ||
        f->hour > 23 || f->min > 59 || f->sec > 59) {
        *why = MSG_TIME_FIELDS;
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

apr_status_t imc_event_parse_time(const char *s, apr_size_t len, apr_time_t *t,
                                  const char **why)
{
    dt_fields f;
    apr_int64_t secs;

    if (read_fields(s, len, &f, why) != APR_SUCCESS) {
        return APR_EINVAL;
    }
    secs = imc_syntax_day(f.year, f.mon, f.day) * 86400 + f.hour * 3600 +
           f.min * 60 + f.sec - f.offset;
    if (secs < IMC_EVENT_MIN_SEC || secs > IMC_EVENT_MAX_SEC) {
        *why = MSG_TIME_RANGE;
        return APR_EINVAL;
    }
    *t = secs * APR_USEC_PER_SEC + f.usec;
    return APR_SUCCESS;
}

/* ---- UUID ------------------------------------------------------------ */

apr_status_t imc_event_canon_uuid(const char *s, apr_size_t len, char out[37])
{
    return imc_syntax_uuid(s, len, out);
}

/* ---- one event ------------------------------------------------------- */

/* The mandatory members, in the order they are checked. */
enum { M_TIME, M_TYPE, M_CID, M_SID, M_COUNT };

static const struct {
    const char *name;
    const char *required;
    const char *not_string;
} members[M_COUNT] = {
    {"time", "time is required", "time must be a string"},
    {"type", "type is required", "type must be a string"},
    {"correlation_id", "correlation_id is required",
     "correlation_id must be a string"},
    {"site_id", "site_id is required", "site_id must be a string"}};

/* Checks the value of mandatory member m, s[0..n), into ev. */
static apr_status_t check_value(int m, const char *s, apr_size_t n,
                                imc_event *ev, imc_event_error *err)
{
    const char *why;

    switch (m) {
        case M_TIME:
            if (imc_event_parse_time(s, n, &ev->time, &why) != APR_SUCCESS) {
                return fail(err, 400, 0, "time", why);
            }
            return APR_SUCCESS;
        case M_TYPE:
            if (n == 5 && memcmp(s, "serve", 5) == 0) {
                ev->type = "serve";
            } else if (n == 5 && memcmp(s, "solve", 5) == 0) {
                ev->type = "solve";
            } else {
                return fail(err, 400, 0, "type",
                            "type must be 'serve' or 'solve'");
            }
            return APR_SUCCESS;
        case M_CID:
            if (imc_syntax_uuid(s, n, ev->correlation_id) != APR_SUCCESS) {
                return fail(err, 400, 0, "correlation_id",
                            "correlation_id must be a UUID such as " MSG_UUID);
            }
            return APR_SUCCESS;
        default:
            if (imc_syntax_uuid(s, n, ev->site_id) != APR_SUCCESS) {
                return fail(err, 400, 0, "site_id",
                            "site_id must be a UUID such as " MSG_UUID);
            }
            return APR_SUCCESS;
    }
}

static apr_status_t check_members(json_t *o, imc_event *ev,
                                  imc_event_error *err)
{
    int m;

    for (m = 0; m < M_COUNT; m++) {
        json_t *v = json_object_get(o, members[m].name);

        if (v == NULL) {
            return fail(err, 400, 0, members[m].name, members[m].required);
        }
        if (!json_is_string(v)) {
            return fail(err, 400, 0, members[m].name, members[m].not_string);
        }
        if (check_value(m, json_string_value(v), json_string_length(v), ev,
                        err) != APR_SUCCESS) {
            return APR_EINVAL;
        }
    }
    return APR_SUCCESS;
}

/* Turns a Jansson load error into ours, never quoting Jansson's text. */
static apr_status_t load_error(const json_error_t *jerr, imc_event_error *err)
{
    switch (json_error_code(jerr)) {
        case json_error_out_of_memory:
            fail(err, 500, 0, NULL, "the event could not be parsed");
            return APR_ENOMEM;
        case json_error_stack_overflow:
            return fail(err, 400, 0, NULL, "the event is nested too deeply");
        case json_error_invalid_utf8:
            return fail(err, 400, 0, NULL, "the event is not valid UTF-8");
        case json_error_null_character:
        case json_error_null_byte_in_key:
            return fail(err, 400, 0, NULL,
                        "the event must not hold a \\u0000 character");
        case json_error_duplicate_key:
            return fail(err, 400, 0, NULL,
                        "the event must not repeat a member name");
        case json_error_numeric_overflow:
            return fail(err, 400, 0, NULL,
                        "the event holds a number too large to represent");
        default:
            return fail(err, 400, 0, NULL, MSG_NOT_JSON);
    }
}

apr_status_t imc_event_parse_one(apr_pool_t *p, const char *text,
                                 apr_size_t len, imc_event *ev,
                                 imc_event_error *err)
{
    json_error_t jerr;
    json_t *root;
    apr_status_t rv;

    (void)p;
    root = json_loadb(text, len,
                      JSON_REJECT_DUPLICATES | JSON_DECODE_ANY |
                          JSON_DECODE_INT_AS_REAL,
                      &jerr);
    if (root == NULL) {
        return load_error(&jerr, err);
    }
    if (!json_is_object(root)) {
        rv = fail(err, 400, 0, NULL, MSG_NOT_OBJ);
    } else {
        rv = check_members(root, ev, err);
    }
    json_decref(root);
    if (rv == APR_SUCCESS) {
        ev->raw = text;
        ev->raw_len = len;
    }
    return rv;
}

/* ---- rows ------------------------------------------------------------ */

static char *put_lit(char *o, const char *s, apr_size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

static char *put_int(char *o, apr_int64_t v)
{
    char tmp[INT_MAX_DIGITS];
    apr_uint64_t u = v < 0 ? 0 - (apr_uint64_t)v : (apr_uint64_t)v;
    int n = 0;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) {
        *o++ = '-';
    }
    while (n > 0) {
        *o++ = tmp[--n];
    }
    return o;
}

static char *put_raw(char *o, const char *raw, apr_size_t len)
{
    const unsigned char *s = (const unsigned char *)raw;
    apr_size_t k;

    for (k = 0; k < len; k++) {
        unsigned char c = s[k];

        if (!esc_extra[c]) {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        if (esc_letter[c]) {
            *o++ = esc_letter[c];
        } else {
            o = put_lit(o, "u00", 3);
            *o++ = hex_digits[c >> 4];
            *o++ = hex_digits[c & 15];
        }
    }
    return o;
}

/* Whole seconds of t, rounded down. */
static apr_int64_t floor_sec(apr_time_t t)
{
    apr_int64_t q = t / APR_USEC_PER_SEC;

    return (t % APR_USEC_PER_SEC < 0) ? q - 1 : q;
}

/* The milliseconds of t within its second, truncated (0..999): rounding
 * could carry into the next second, which is not the one time holds. */
static apr_int64_t msec_of(apr_time_t t)
{
    return (t - floor_sec(t) * APR_USEC_PER_SEC) / 1000;
}

static char *put_row(char *o, const imc_event *ev, apr_int64_t received)
{
    o = put_lit(o, ROW_P1, LIT_LEN(ROW_P1));
    o = put_int(o, floor_sec(ev->time));
    o = put_lit(o, ROW_PM, LIT_LEN(ROW_PM));
    o = put_int(o, msec_of(ev->time));
    o = put_lit(o, ROW_P2, LIT_LEN(ROW_P2));
    o = put_lit(o, ev->type, 5);
    o = put_lit(o, ROW_P3, LIT_LEN(ROW_P3));
    o = put_lit(o, ev->correlation_id, 36);
    o = put_lit(o, ROW_P4, LIT_LEN(ROW_P4));
    o = put_lit(o, ev->site_id, 36);
    o = put_lit(o, ROW_P5, LIT_LEN(ROW_P5));
    o = put_int(o, received);
    o = put_lit(o, ROW_P6, LIT_LEN(ROW_P6));
    o = put_raw(o, ev->raw, ev->raw_len);
    return put_lit(o, ROW_P7, LIT_LEN(ROW_P7));
}

/* A row's site_id is the first ROW_P4 in it: the fields before it are two
 * numbers, a type word and a UUID; the raw text, which comes after, has
 * every line end escaped. */
char *imc_event_row(apr_pool_t *p, const imc_event *ev, apr_time_t received_at)
{
    const unsigned char *s = (const unsigned char *)ev->raw;
    apr_size_t k, size = ROW_FIXED_MAX + ev->raw_len + 1;
    char *buf, *o;

    for (k = 0; k < ev->raw_len; k++) {
        size += esc_extra[s[k]];
    }
    buf = apr_palloc(p, size);
    o = put_row(buf, ev, floor_sec(received_at));
    *o = '\0';
    return buf;
}

/* ---- the request ----------------------------------------------------- */

/*
 * Finds the end of the object starting at body[start] ('{'), looking no
 * further than stop. Counts the escaping cost of its bytes into *esc.
 */
static apr_status_t scan_event(req_ctx *c, apr_size_t start, apr_size_t stop,
                               apr_size_t *end, apr_size_t *esc)
{
    const unsigned char *s = (const unsigned char *)c->body;
    apr_size_t lim = stop - start > c->max_size ? start + c->max_size : stop;
    apr_size_t i, x = 0;
    apr_uint32_t kinds = 0; /* one bit per open level: 1 for '[' */
    int depth = 0, in_str = 0, index = c->events->nelts;

    for (i = start; i < lim; i++) {
        unsigned char ch = s[i];

        /* Jansson lets a raw NUL after a number pass: refuse all controls
         * but white space here (inside strings Jansson refuses them) */
        if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') {
            return fail(c->err, 400, index, NULL, MSG_NOT_JSON);
        }
        x += esc_extra[ch];
        if (in_str) {
            if (ch == '\\') {
                if (++i == lim) {
                    break;
                }
                x += esc_extra[s[i]];
            } else if (ch == '"') {
                in_str = 0;
            }
            continue;
        }
        if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            if (depth == IMC_EVENT_MAX_DEPTH) {
                return fail(c->err, 400, index, NULL,
                            apr_psprintf(c->p,
                                         "the event is nested deeper than %d "
                                         "levels",
                                         IMC_EVENT_MAX_DEPTH));
            }
            kinds = (kinds << 1) | (ch == '[');
            depth++;
        } else if (ch == '}' || ch == ']') {
            if ((kinds & 1) != (ch == ']')) {
                return fail(c->err, 400, index, NULL, MSG_NOT_JSON);
            }
            kinds >>= 1;
            if (--depth == 0) {
                *end = i + 1;
                *esc = x;
                return APR_SUCCESS;
            }
        }
    }
    if (lim < stop) {
        return fail(c->err, 413, index, NULL,
                    apr_psprintf(c->p,
                                 "the event is larger than %" APR_SIZE_T_FMT
                                 " bytes",
                                 c->max_size));
    }
    return fail(c->err, 400, index, NULL,
                "the event ends before it is complete");
}

/* Scans, parses and keeps the event at body[start], looking up to stop. */
static apr_status_t add_event(req_ctx *c, apr_size_t start, apr_size_t stop,
                              apr_size_t *end)
{
    int index = c->events->nelts;
    apr_size_t esc;
    imc_event ev;
    apr_status_t rv;

    if (index >= c->max_events) {
        return fail(c->err, 413, index, NULL,
                    apr_psprintf(c->p, "the request holds more than %d events",
                                 c->max_events));
    }
    if (start >= stop || c->body[start] != '{') {
        return fail(c->err, 400, index, NULL, MSG_NOT_OBJ);
    }
    rv = scan_event(c, start, stop, end, &esc);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rv = imc_event_parse_one(c->p, c->body + start, *end - start, &ev, c->err);
    if (rv != APR_SUCCESS) {
        c->err->index = index;
        return rv;
    }
    *(imc_event *)apr_array_push(c->events) = ev;
    *(apr_size_t *)apr_array_push(c->escs) = esc;
    c->raw_total += ev.raw_len;
    c->esc_total += esc;
    return APR_SUCCESS;
}

/*
 * One object from body[i] up to stop, with nothing but white space after
 * it. Used for the single form, a top-level object and an NDJSON line.
 */
static apr_status_t parse_lone(req_ctx *c, apr_size_t i, apr_size_t stop,
                               const char *trailing)
{
    apr_status_t rv = add_event(c, i, stop, &i);

    if (rv == APR_SUCCESS && skip_ws(c->body, i, stop) != stop) {
        rv = fail(c->err, 400, c->events->nelts - 1, NULL, trailing);
    }
    return rv;
}

/*
 * The array form, i just past '['. A syntax error of the array itself is
 * reported at the index of the event that would come next.
 */
static apr_status_t parse_array(req_ctx *c, apr_size_t i)
{
    const char *s = c->body;
    apr_status_t rv;

    i = skip_ws(s, i, c->len);
    if (i < c->len && s[i] == ']') {
        return fail(c->err, 400, 0, NULL, MSG_NO_EVENTS);
    }
    for (;;) {
        if (i < c->len && s[i] == ']') {
            return fail(c->err, 400, c->events->nelts, NULL,
                        "the array must not end with a comma");
        }
        rv = add_event(c, i, c->len, &i);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        i = skip_ws(s, i, c->len);
        if (i == c->len) {
            return fail(c->err, 400, c->events->nelts, NULL,
                        "the request ends before its array is closed");
        }
        if (s[i] == ']') {
            break;
        }
        if (s[i] != ',') {
            return fail(c->err, 400, c->events->nelts, NULL,
                        "the events of the array must be separated by commas");
        }
        i = skip_ws(s, i + 1, c->len);
    }
    if (skip_ws(s, i + 1, c->len) != c->len) {
        return fail(c->err, 400, c->events->nelts, NULL,
                    "the request holds data after its array");
    }
    return APR_SUCCESS;
}

static apr_status_t parse_json(req_ctx *c)
{
    apr_size_t i = skip_ws(c->body, 0, c->len);

    if (i == c->len) {
        return fail(c->err, 400, 0, NULL, MSG_NO_EVENTS);
    }
    if (c->body[i] == '[') {
        return parse_array(c, i + 1);
    }
    if (c->body[i] == '{') {
        return parse_lone(c, i, c->len, MSG_AFTER);
    }
    return fail(c->err, 400, 0, NULL,
                "the request must hold an event object or an array of "
                "event objects");
}

static apr_status_t parse_ndjson(req_ctx *c)
{
    const char *s = c->body, *nl;
    apr_size_t i = 0, end, first, last;
    apr_status_t rv;

    while (i < c->len) {
        nl = memchr(s + i, '\n', c->len - i);
        end = nl ? (apr_size_t)(nl - s) : c->len;
        first = skip_ws(s, i, end);
        last = trim_end(s, first, end);
        if (first < last) {
            rv = parse_lone(c, first, last,
                            "a line must hold exactly one event");
            if (rv != APR_SUCCESS) {
                return rv;
            }
        }
        i = end + 1;
    }
    if (c->events->nelts == 0) {
        return fail(c->err, 400, 0, NULL, MSG_NO_EVENTS);
    }
    return APR_SUCCESS;
}

static apr_status_t parse_single(req_ctx *c)
{
    apr_size_t first = skip_ws(c->body, 0, c->len);
    apr_size_t last = trim_end(c->body, first, c->len);

    if (first == last) {
        return fail(c->err, 400, 0, NULL, MSG_NO_EVENTS);
    }
    return parse_lone(c, first, last, MSG_AFTER);
}

/* Writes the rows of all events of b into one buffer. */
static void build_rows(apr_pool_t *p, imc_event_batch *b, imc_event_rows *rows)
{
    char *buf = apr_palloc(p, b->bound + 1);
    apr_size_t len = imc_event_batch_fill(b, buf, b->bound);

    buf[len] = '\0';
    rows->data = buf;
    rows->len = len;
    rows->count = b->count;
}

apr_size_t imc_event_batch_fill(imc_event_batch *b, char *buf, apr_size_t cap)
{
    char *o = buf;

    while (b->next < b->count) {
        const imc_event *ev = &b->events[b->next];

        if ((apr_size_t)(o - buf) + ROW_FIXED_MAX + ev->raw_len +
                b->escs[b->next] >
            cap) {
            break;
        }
        o = put_row(o, ev, b->received);
        b->next++;
    }
    return (apr_size_t)(o - buf);
}

int imc_event_batch_count(const imc_event_batch *b)
{
    return b->count;
}

const char *imc_event_batch_site(const imc_event_batch *b, int i)
{
    return b->events[i].site_id;
}

apr_size_t imc_event_batch_bound(const imc_event_batch *b)
{
    return b->bound;
}

apr_size_t imc_event_batch_row_max(const imc_event_batch *b)
{
    return b->row_max;
}

apr_status_t imc_event_parse_batch(apr_pool_t *p, const char *body,
                                   apr_size_t len, imc_event_format_e fmt,
                                   const imc_event_limits *limits,
                                   apr_time_t received_at,
                                   imc_event_batch **batch,
                                   imc_event_error *err)
{
    req_ctx c;
    imc_event_batch *b;
    apr_size_t guess;
    apr_status_t rv;
    int k;

    memset(&c, 0, sizeof(c));
    c.p = p;
    c.body = body;
    c.len = len;
    c.max_size = limits ? limits->max_event_size : IMC_EVENT_DEF_SIZE;
    c.max_events = limits ? limits->max_events : IMC_EVENT_DEF_EVENTS;
    c.err = err;
    *batch = NULL;
    if (has_bom(body, len)) {
        return fail(err, 400, 0, NULL, MSG_BOM);
    }
    guess = len / IMC_EVENT_MIN_TEXT + 1;
    if (guess > (apr_size_t)(c.max_events > 0 ? c.max_events : 1)) {
        guess = (apr_size_t)(c.max_events > 0 ? c.max_events : 1);
    }
    c.events = apr_array_make(p, (int)guess, sizeof(imc_event));
    c.escs = apr_array_make(p, (int)guess, sizeof(apr_size_t));
    rv = fmt == IMC_EVENT_JSON     ? parse_json(&c)
         : fmt == IMC_EVENT_NDJSON ? parse_ndjson(&c)
                                   : parse_single(&c);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    b = apr_pcalloc(p, sizeof(*b));
    b->events = (const imc_event *)c.events->elts;
    b->escs = (const apr_size_t *)c.escs->elts;
    b->count = c.events->nelts;
    b->received = floor_sec(received_at);
    b->bound = (apr_size_t)b->count * ROW_FIXED_MAX + c.raw_total + c.esc_total;
    for (k = 0; k < b->count; k++) {
        apr_size_t n = ROW_FIXED_MAX + b->events[k].raw_len + b->escs[k];

        b->row_max = n > b->row_max ? n : b->row_max;
    }
    *batch = b;
    return APR_SUCCESS;
}

apr_status_t imc_event_parse_request(apr_pool_t *p, const char *body,
                                     apr_size_t len, imc_event_format_e fmt,
                                     const imc_event_limits *limits,
                                     apr_time_t received_at,
                                     imc_event_rows *rows, imc_event_error *err)
{
    imc_event_batch *b;
    apr_status_t rv;

    rows->data = NULL;
    rows->len = 0;
    rows->count = 0;
    rv = imc_event_parse_batch(p, body, len, fmt, limits, received_at, &b, err);
    if (rv == APR_SUCCESS) {
        build_rows(p, b, rows);
    }
    return rv;
}

static int blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

imc_event_format_e imc_event_text_format(const char *body, apr_size_t len)
{
    const char *p = body, *end = body + len, *eol, *last;

    while (p < end && blank(*p)) {
        ++p;
    }
    if (p == end || *p != '{' ||
        !(eol = memchr(p, '\n', (apr_size_t)(end - p)))) {
        return IMC_EVENT_JSON;
    }
    for (last = eol; last > p && blank(last[-1]); --last) {
    }
    if (last - p < 2 || last[-1] != '}') {
        return IMC_EVENT_JSON; /* "{" alone: one object over several lines */
    }
    for (p = eol; p < end && blank(*p); ++p) {
    }
    return p < end ? IMC_EVENT_NDJSON : IMC_EVENT_JSON;
}
