/* Licensed under the Apache License, Version 2.0. */

/*
 * Private declarations shared by the two halves of the report filter: the
 * parser and SQL generation (imc_filter.c) and the evaluation of a parsed
 * filter over an event (imc_filter_eval.c). Not part of the public API,
 * which is imc_filter.h: the parse tree stays inside the module.
 */
#ifndef IMC_FILTER_PRIVATE_H
#define IMC_FILTER_PRIVATE_H

#include <apr.h>
#include <apr_tables.h>

#include "imc_filter.h"
#include "imc_syntax.h"

/* The comparisons; imc_filter.c holds their SQL. */
typedef enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } op_e;

/* The columns; also the indexes of an event's values in eval()'s row. */
typedef enum { COL_DAY, COL_SITE_ID, COL_TYPE, COL_COUNT } col_e;

/*
 * A value of a column in the order ClickHouse compares that column (the
 * same on 18.16 and current releases): hi first, then lo, both unsigned.
 * A UUID is the UInt128 ClickHouse keeps: hi is its bytes 8..15 (the last
 * 16 hex digits of its text), lo its bytes 0..7, each read big-endian; a
 * type is its Enum8 value (serve 1, solve 2) and a day its number, both in
 * lo with the sign bit flipped (num_key), so that any int compares as a
 * number.
 */
typedef struct {
    apr_uint64_t hi;
    apr_uint64_t lo;
} imc_key;

#define KEY_SIGN (APR_UINT64_C(1) << 63)

typedef enum { NODE_OR, NODE_AND, NODE_NOT, NODE_CMP, NODE_IN } node_e;

typedef struct imc_node imc_node;
struct imc_node {
    node_e kind;
    col_e col;                 /* NODE_CMP, NODE_IN */
    op_e op;                   /* NODE_CMP */
    imc_key key;               /* NODE_CMP: the literal */
    apr_array_header_t *items; /* NODE_AND, NODE_OR: imc_node *;
                                  NODE_IN: imc_key, the literals as written */
    const imc_key *set;        /* NODE_IN: the literals sorted, each once */
    int nset;                  /* NODE_IN: how many in set */
    imc_node *child;           /* NODE_NOT */
};

struct imc_filter {
    const imc_node *root; /* NULL for the empty filter */
    unsigned cols;        /* bit 1 << col for each column it names */
};

/* ---- values, used by the parser and the evaluation ---------------------- */

static inline imc_key num_key(apr_int64_t v)
{
    imc_key k;

    k.hi = 0;
    k.lo = (apr_uint64_t)v ^ KEY_SIGN;
    return k;
}

/* The key of the UUID text s (36 bytes, 8-4-4-4-12 hex digits); a NUL
 * ends it early. Other bytes give some key, never a fault. */
static inline void uuid_key(const char *s, imc_key *k)
{
    apr_uint64_t half[2] = {0, 0};
    int i, n = 0;

    for (i = 0; i < IMC_SYNTAX_UUID_LEN && s[i]; i++) {
        unsigned c = (unsigned char)s[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            continue;
        }
        c = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
        half[n >> 4] = half[n >> 4] << 4 | (c & 0xf);
        n++;
    }
    k->lo = half[0];
    k->hi = half[1];
}

static inline int key_cmp(const imc_key *a, const imc_key *b)
{
    if (a->hi != b->hi) {
        return a->hi < b->hi ? -1 : 1;
    }
    return a->lo < b->lo ? -1 : a->lo > b->lo;
}

#endif /* IMC_FILTER_PRIVATE_H */
