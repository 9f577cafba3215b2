/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_filter: the report filter language (README "API", "Report").
 *
 * A filter such as
 *
 *     site_id='0faf8b64-a33d-4db8-aaee-aa165d13cff6' AND NOT type IN ('serve')
 *
 * is tokenized, parsed by recursive descent into a pool-allocated tree, and
 * ClickHouse SQL is generated from that tree (imc_filter_compile), or the
 * tree is kept to be applied to events here (imc_filter_parse,
 * imc_filter_match). The filter text is never pasted into SQL: every
 * literal is validated for its column, kept as a value, and re-emitted in
 * canonical form, so no byte of the filter reaches SQL unchecked.
 *
 * Grammar (keywords and column names case-insensitive, white space free):
 *
 *     filter := or
 *     or     := and ( "OR" and )*
 *     and    := not ( "AND" not )*
 *     not    := "NOT" not | "(" or ")" | cond
 *     cond   := column op literal
 *             | column "IN" "(" literal ( "," literal )* ")"
 *     op     := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
 *     column := "site_id" | "type" | "day"   ("time", "date": aliases of day)
 *     literal:= single-quoted string; '' and \' stand for a quote and \\ for
 *               a backslash; any other backslash sequence is an error
 *
 * Literals: site_id takes a UUID (8-4-4-4-12 hex digits, any case), type
 * takes exactly serve or solve, day takes a calendar date YYYY-MM-DD from
 * 1970-01-01 to 2105-12-31 (both forms are imc_syntax's).
 *
 * Canonical SQL, fully parenthesised:
 *
 *     comparison  (COL OP LIT)            OP one of = != < <= > >=
 *                                         ("<>" is written "!=")
 *     IN list     (COL IN (LIT, LIT))     literals kept in the given order
 *     NOT         (NOT X)
 *     AND, OR     (X AND Y AND Z)         a chain of one operator is one
 *                                         group; grouping parentheses of the
 *                                         filter leave no trace of their own
 *     empty       1                       empty or all-white-space filter
 *
 * where COL is the trusted expression from imc_filter_columns and LIT is
 * toUUID('<lower-case uuid>') for site_id, 'serve' or 'solve' for type and
 * toDate('YYYY-MM-DD') for day. For example the filter above becomes
 *
 *     ((site_id = toUUID('0faf8b64-a33d-4db8-aaee-aa165d13cff6'))
 *      AND (NOT (type IN ('serve'))))
 *
 * (on one line, single spaces). Outside the column expressions the SQL
 * consists only of ASCII letters, digits, space and the characters
 * ( ) ' , - = ! < >.
 *
 * Limits: a filter over IMC_FILTER_MAX_LEN bytes, nesting of parentheses
 * and NOT deeper than IMC_FILTER_MAX_DEPTH, or more than
 * IMC_FILTER_MAX_LITERALS literals is refused with IMC_FILTER_ELIMIT.
 * Limits are checked before the filter is parsed, so they win over any
 * other error; the error position is -1 for the length, else the offset of
 * the first literal or the first "(" or NOT beyond the limit. Otherwise
 * the error reported is the first one met reading the filter from left to
 * right: a lexical error (such as an unexpected character) after the first
 * syntax error is not reported.
 *
 * Evaluation (imc_filter_match) answers what ClickHouse answers for the
 * SQL over an event's site_id (UUID), type (Enum8('serve' = 1,
 * 'solve' = 2)) and day (Date); 18.16 and current releases (checked on
 * 26.7) agree on all of it:
 *
 * - site_id compares as ClickHouse compares UUIDs: as a UInt128 whose high
 *   half is the UUID's bytes 8..15 and whose low half is its bytes 0..7,
 *   each read big-endian. In text form: the last 16 hex digits (groups 4
 *   and 5, "dddd-eeeeeeeeeeee") decide first, then the first 16 (groups 1
 *   to 3). So 'ffffffff-ffff-ffff-0000-000000000000' <
 *   '00000000-0000-0000-0000-000000000001', although the text orders them
 *   the other way. Within each half the order is the text's.
 * - type compares by its Enum8 value: serve (1) < solve (2), which is also
 *   the order of the names;
 * - day compares as a number of days;
 * - AND, OR and NOT are the usual two-valued logic (no column is
 *   Nullable); an empty filter passes everything.
 *
 * APR only: no httpd headers, so it is unit-tested and fuzzed on its own.
 */
#ifndef IMC_FILTER_H
#define IMC_FILTER_H

#include <apr_pools.h>

/* The event types, as imc_filter_match takes them: their Enum8 values. */
#define IMC_FILTER_SERVE 1
#define IMC_FILTER_SOLVE 2

/* Longest filter accepted, in bytes. */
#define IMC_FILTER_MAX_LEN 4096
/* Deepest nesting of parentheses and NOT together. */
#define IMC_FILTER_MAX_DEPTH 32
/* Most literals in one filter (IN lists included). */
#define IMC_FILTER_MAX_LITERALS 1000
/* Longest column name repeated in an unknown-column error, in bytes. */
#define IMC_FILTER_MAX_COLUMN 64

/* Kinds of error (imc_filter_error.kind). */
#define IMC_FILTER_ESYNTAX  1 /* malformed filter; position says where */
#define IMC_FILTER_ECOLUMN  2 /* unknown column; column names it */
#define IMC_FILTER_ELITERAL 3 /* literal not valid for its column */
#define IMC_FILTER_ELIMIT   4 /* a limit above was exceeded */

/*
 * The SQL expressions standing for each column. They are trusted: supplied
 * by the module, never by the user, and copied into the SQL as they are.
 * A NULL member (or a NULL pointer to the whole structure) stands for the
 * column's own name: "day", "site_id" or "type".
 */
typedef struct {
    const char *day;     /* e.g. "toDate(time, 'Europe/Paris')" */
    const char *site_id; /* e.g. "site_id" */
    const char *type;    /* e.g. "type" */
} imc_filter_columns;

/* Why a filter was refused. */
typedef struct {
    const char *message; /* one human sentence, no trailing period; it
                            quotes no byte of the filter except the name of
                            a column (ASCII letters, digits, underscore) */
    int position;        /* 0-based byte offset in the filter, -1 if none */
    const char *column;  /* the unknown column name as written, at most
                            IMC_FILTER_MAX_COLUMN bytes, for
                            IMC_FILTER_ECOLUMN; NULL otherwise */
    int kind;            /* IMC_FILTER_ESYNTAX, IMC_FILTER_ECOLUMN,
                            IMC_FILTER_ELITERAL or IMC_FILTER_ELIMIT */
} imc_filter_error;

/*
 * The known column names, for the unknown-column error:
 * "day", "site_id", "type", then NULL.
 */
extern const char *const imc_filter_column_names[];

/*
 * Compile the filter (len bytes at filter; it need not be NUL-terminated
 * and is never read beyond len) into a boolean SQL expression over the
 * columns cols.
 *
 * Returns APR_SUCCESS with *sql set to the canonical expression ("1" for an
 * empty or all-white-space filter), or APR_EINVAL with *err filled (err
 * may be NULL) and *sql untouched. All memory, the SQL and the error
 * strings included, comes from p.
 */
apr_status_t imc_filter_compile(apr_pool_t *p, const char *filter,
                                apr_size_t len, const imc_filter_columns *cols,
                                const char **sql, imc_filter_error *err);

/* A parsed filter, for imc_filter_match; read-only once made, so several
 * threads may match with one filter at the same time. */
typedef struct imc_filter imc_filter;

/*
 * Parse the filter exactly as imc_filter_compile does (the same limits, the
 * same acceptance, the same error in *err) into *f. The literals are kept
 * as values in ClickHouse's order, the literals of an IN list sorted, so
 * that matching parses no text.
 *
 * Returns APR_SUCCESS with *f set, or APR_EINVAL with *err filled (err may
 * be NULL) and *f untouched. All memory comes from p; *f lives as long as
 * p.
 */
apr_status_t imc_filter_parse(apr_pool_t *p, const char *filter, apr_size_t len,
                              const imc_filter **f, imc_filter_error *err);

/* Whether the filter names the day column (a filter that does not
 * answers the same for an event whatever its day). */
int imc_filter_names_day(const imc_filter *f);

/*
 * Whether an event passes the filter f (1) or not (0): exactly what
 * ClickHouse answers for the SQL that imc_filter_compile makes of the same
 * filter, for a row of that event (see "Evaluation" above).
 *
 * site is the event's site_id as canonical UUID text: 36 bytes, lower
 * case (upper-case hex digits are read the same; other text gives some
 * answer, never a fault, and is not read past a NUL). It is read only when
 * the filter names site_id: it may be NULL for a filter that does not.
 * type is IMC_FILTER_SERVE or IMC_FILTER_SOLVE; day is the event's day in
 * the report's zone, in days since 1970-01-01 (any int compares as a
 * number).
 *
 * Allocates nothing and costs a walk of the tree, IN lists by binary
 * search. A NULL f passes everything, as the empty filter does.
 */
int imc_filter_match(const imc_filter *f, const char *site, int type, int day);

#endif /* IMC_FILTER_H */
