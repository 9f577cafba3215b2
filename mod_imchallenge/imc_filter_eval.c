/* Licensed under the Apache License, Version 2.0. */

/*
 * The report filter's evaluation: a tree made by imc_filter_parse
 * (imc_filter.c) applied to an event, answering what ClickHouse answers
 * for the filter's SQL (imc_filter.h, "Evaluation"). It allocates nothing
 * and reads the tree only, so several threads may share one filter.
 */

#include "imc_filter.h"
#include "imc_filter_private.h"

/* Whether k is one of the IN list's literals. */
static int in_list(const imc_node *n, const imc_key *k)
{
    int lo = 0, hi = n->nset;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = key_cmp(&n->set[mid], k);

        if (c == 0) {
            return 1;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

/* Whether the event of values row (indexed by col_e) passes n; recursion
 * is bounded by the parser's depth limit. */
static int eval(const imc_node *n, const imc_key *row)
{
    const imc_node *const *kids;
    int i, c;

    switch (n->kind) {
        case NODE_OR:
        case NODE_AND:
            kids = (const imc_node *const *)n->items->elts;
            for (i = 0; i < n->items->nelts; i++) {
                if (eval(kids[i], row) == (n->kind == NODE_OR)) {
                    return n->kind == NODE_OR;
                }
            }
            return n->kind == NODE_AND;
        case NODE_NOT:
            return !eval(n->child, row);
        case NODE_IN:
            return in_list(n, &row[n->col]);
        default:
            break;
    }
    c = key_cmp(&row[n->col], &n->key);
    switch (n->op) {
        case OP_EQ:
            return c == 0;
        case OP_NE:
            return c != 0;
        case OP_LT:
            return c < 0;
        case OP_LE:
            return c <= 0;
        case OP_GT:
            return c > 0;
        default:
            return c >= 0;
    }
}

/* ---- entry point -------------------------------------------------------- */

int imc_filter_match(const imc_filter *f, const char *site, int type, int day)
{
    imc_key row[COL_COUNT];

    if (!f || !f->root) {
        return 1;
    }
    if (f->cols & (1u << COL_SITE_ID)) {
        uuid_key(site, &row[COL_SITE_ID]);
    }
    row[COL_TYPE] = num_key(type);
    row[COL_DAY] = num_key(day);
    return eval(f->root, row);
}

int imc_filter_names_day(const imc_filter *f)
{
    return f && f->root && (f->cols & (1u << COL_DAY));
}
