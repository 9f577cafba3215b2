/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_filter: the report filter language (README "API", "Report").
 *
 * A filter such as
 *
 *     site_id='0faf8b64-a33d-4db8-aaee-aa165d13cff6' AND NOT type IN ('serve')
 *
 * is tokenized, parsed by recursive descent into a pool-allocated tree, and
 * ClickHouse SQL is generated from that tree. The filter text is never
 * pasted into SQL: every literal is validated for its column and re-emitted
 * in canonical form, so no byte of the filter reaches SQL unchecked.
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
 * APR only: no httpd headers, so it is unit-tested and fuzzed on its own.
 */
#ifndef IMC_FILTER_H
#define IMC_FILTER_H

#include <apr_pools.h>

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

#endif /* IMC_FILTER_H */
