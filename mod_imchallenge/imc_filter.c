/* Licensed under the Apache License, Version 2.0. */

/*
 * The report filter: tokenizer, recursive-descent parser building a tree
 * and SQL generation from the tree; the tree's evaluation over an event is
 * imc_filter_eval.c's, and the tree itself imc_filter_private.h's. See
 * imc_filter.h for the grammar, the canonical SQL and the order of values.
 *
 * The tokenizer runs first over the whole filter and stops at the first
 * lexical problem, which it records as an error token; the parser reports
 * that token's message only when it reaches it, so the error returned is
 * always the first one met reading from left to right.
 */

#include <stdlib.h>
#include <string.h>

#include <apr_errno.h>
#include <apr_cstr.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "imc_filter.h"
#include "imc_filter_private.h"
#include "imc_syntax.h"

const char *const imc_filter_column_names[] = {"day", "site_id", "type", NULL};

/* The SQL of the comparisons (op_e). */
static const char *const op_sql[] = {"=", "!=", "<", "<=", ">", ">="};

typedef enum {
    TOK_END,    /* end of the filter */
    TOK_ERROR,  /* a lexical error; text is the message */
    TOK_WORD,   /* a keyword or a column name */
    TOK_STRING, /* a literal; text is its unescaped value */
    TOK_LPAREN,
    TOK_RPAREN,
    TOK_COMMA,
    TOK_OP /* a comparison; op says which, text is its SQL */
} tok_type_e;

typedef struct {
    tok_type_e type;
    int pos;          /* byte offset of the token's first byte */
    const char *src;  /* the token in the filter (not NUL-terminated) */
    apr_size_t len;   /* its length in the filter */
    const char *text; /* see tok_type_e; NUL-terminated */
    apr_size_t tlen;  /* length of text */
    op_e op;          /* TOK_OP */
} imc_token;

typedef struct {
    const char *name; /* as it may be written, lower case */
    col_e col;
} col_alias;

static const col_alias col_aliases[] = {
    {"site_id", COL_SITE_ID}, {"type", COL_TYPE}, {"day", COL_DAY},
    {"time", COL_DAY},        {"date", COL_DAY},  {NULL, COL_DAY}};

typedef struct {
    apr_pool_t *p;
    const char *src;
    apr_size_t len;
    apr_array_header_t *toks; /* imc_token, ends with TOK_END or TOK_ERROR */
    int next;                 /* index of the next token */
    int depth;                /* open parentheses and NOT */
    unsigned cols;            /* bit 1 << col for each column named */
    imc_filter_error *err;
} imc_parser;

typedef struct {
    apr_pool_t *p;
    char *buf;
    apr_size_t len;
    apr_size_t cap;
} imc_sbuf;

#define MSG_BADCHAR "unexpected character"
#define MSG_QUOTE                                                              \
    "unexpected character; enclose literals in ASCII single quotes"
#define MSG_DIGIT                                                              \
    "unexpected character; literals such as dates must be single-quoted"
#define MSG_COLUMN "expected a column name, NOT or '('"
#define MSG_UUID   "expects a UUID such as 0faf8b64-a33d-4db8-aaee-aa165d13cff6"
#define MSG_TYPE   "expects 'serve' or 'solve'"
#define MSG_DATE   "expects a date YYYY-MM-DD between 1970-01-01 and 2105-12-31"

static apr_status_t fail(imc_parser *ps, int kind, int pos, const char *msg)
{
    ps->err->kind = kind;
    ps->err->position = pos;
    ps->err->message = msg;
    ps->err->column = NULL;
    return APR_EINVAL;
}

/* ---- tokenizer ---------------------------------------------------------- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_word_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_word_char(char c)
{
    return is_word_start(c) || (c >= '0' && c <= '9');
}

/*
 * Read the literal whose opening quote is at src[at]. On success fills tok
 * as TOK_STRING and returns the offset just past the closing quote; on a
 * lexical error turns tok into TOK_ERROR.
 */
static apr_size_t lex_string(imc_parser *ps, apr_size_t at, imc_token *tok)
{
    char *out = apr_palloc(ps->p, ps->len - at);
    apr_size_t n = 0, j = at + 1;

    for (;;) {
        char c;

        if (j >= ps->len) {
            tok->type = TOK_ERROR;
            tok->text = "unterminated string literal";
            return j;
        }
        c = ps->src[j];
        if (c == '\0') {
            tok->type = TOK_ERROR;
            tok->pos = (int)j;
            tok->text = "unexpected NUL byte";
            return j;
        }
        if (c == '\'') {
            if (j + 1 < ps->len && ps->src[j + 1] == '\'') {
                out[n++] = '\'';
                j += 2;
                continue;
            }
            break;
        }
        if (c == '\\') {
            if (j + 1 >= ps->len) {
                j = ps->len; /* reported as unterminated above */
                continue;
            }
            if (ps->src[j + 1] != '\\' && ps->src[j + 1] != '\'') {
                tok->type = TOK_ERROR;
                tok->pos = (int)j;
                tok->text = "invalid escape sequence in a string literal; "
                            "only \\\\ and \\' are allowed";
                return j;
            }
            out[n++] = ps->src[j + 1];
            j += 2;
            continue;
        }
        out[n++] = c;
        j++;
    }
    out[n] = '\0';
    tok->type = TOK_STRING;
    tok->text = out;
    tok->tlen = n;
    return j + 1;
}

/* Read a comparison operator at src[at]; returns the offset past it. */
static apr_size_t lex_op(imc_parser *ps, apr_size_t at, imc_token *tok)
{
    char c = ps->src[at];
    char d = at + 1 < ps->len ? ps->src[at + 1] : '\0';
    apr_size_t n = 1;

    if (c == '=') {
        tok->op = OP_EQ;
    } else if (c == '!') {
        if (d != '=') {
            tok->type = TOK_ERROR;
            tok->text = "expected '=' after '!'";
            return at;
        }
        tok->op = OP_NE;
        n = 2;
    } else if (d == '=') {
        tok->op = c == '<' ? OP_LE : OP_GE;
        n = 2;
    } else if (c == '<' && d == '>') {
        tok->op = OP_NE;
        n = 2;
    } else {
        tok->op = c == '<' ? OP_LT : OP_GT;
    }
    tok->type = TOK_OP;
    tok->text = op_sql[tok->op];
    return at + n;
}

/* Read one token starting at src[at] (not white space, not the end). */
static apr_size_t lex_one(imc_parser *ps, apr_size_t at, imc_token *tok)
{
    unsigned char c = (unsigned char)ps->src[at];
    apr_size_t j;

    switch (c) {
        case '(':
            tok->type = TOK_LPAREN;
            return at + 1;
        case ')':
            tok->type = TOK_RPAREN;
            return at + 1;
        case ',':
            tok->type = TOK_COMMA;
            return at + 1;
        case '\'':
            return lex_string(ps, at, tok);
        case '=':
        case '!':
        case '<':
        case '>':
            return lex_op(ps, at, tok);
        default:
            break;
    }
    if (is_word_start((char)c)) {
        for (j = at + 1; j < ps->len && is_word_char(ps->src[j]); j++) {
        }
        tok->type = TOK_WORD;
        tok->text = apr_pstrmemdup(ps->p, ps->src + at, j - at);
        tok->tlen = j - at;
        return j;
    }
    tok->type = TOK_ERROR;
    if (c == '\0') {
        tok->text = "unexpected NUL byte";
    } else if (c == '"' || c == '`' || c >= 0x80) {
        tok->text = MSG_QUOTE;
    } else if (c >= '0' && c <= '9') {
        tok->text = MSG_DIGIT;
    } else {
        tok->text = MSG_BADCHAR;
    }
    return at;
}

/*
 * Split the whole filter into tokens, up to the end or the first lexical
 * error. Fails only when there are too many literals.
 */
static apr_status_t lex_all(imc_parser *ps)
{
    apr_size_t at = 0;
    int literals = 0;

    ps->toks = apr_array_make(ps->p, 16, sizeof(imc_token));
    for (;;) {
        imc_token *tok;

        while (at < ps->len && is_space(ps->src[at])) {
            at++;
        }
        tok = apr_array_push(ps->toks);
        memset(tok, 0, sizeof(*tok));
        tok->pos = (int)at;
        tok->src = ps->src + at;
        if (at >= ps->len) {
            tok->type = TOK_END;
            return APR_SUCCESS;
        }
        at = lex_one(ps, at, tok);
        tok->len = ps->src + at - tok->src;
        if (tok->type == TOK_ERROR) {
            return APR_SUCCESS;
        }
        if (tok->type == TOK_STRING && ++literals > IMC_FILTER_MAX_LITERALS) {
            return fail(ps, IMC_FILTER_ELIMIT, tok->pos,
                        apr_psprintf(ps->p,
                                     "the filter has more than %d literals",
                                     IMC_FILTER_MAX_LITERALS));
        }
    }
}

/* ---- parser ------------------------------------------------------------- */

static imc_token *peek(imc_parser *ps)
{
    return &APR_ARRAY_IDX(ps->toks, ps->next, imc_token);
}

/* The current token; moves on unless it is the last one. */
static imc_token *take(imc_parser *ps)
{
    imc_token *tok = peek(ps);

    if (ps->next + 1 < ps->toks->nelts) {
        ps->next++;
    }
    return tok;
}

static int is_keyword(const imc_token *tok, const char *kw)
{
    return tok->type == TOK_WORD && apr_cstr_casecmp(tok->text, kw) == 0;
}

/* A syntax error at tok: its own message for an error token, else msg. */
static apr_status_t unexpected(imc_parser *ps, const imc_token *tok,
                               const char *msg)
{
    if (tok->type == TOK_ERROR) {
        msg = tok->text;
    }
    return fail(ps, IMC_FILTER_ESYNTAX, tok->pos, msg);
}

static apr_status_t enter(imc_parser *ps, const imc_token *tok)
{
    if (++ps->depth > IMC_FILTER_MAX_DEPTH) {
        return fail(ps, IMC_FILTER_ELIMIT, tok->pos,
                    apr_psprintf(ps->p,
                                 "the filter nests parentheses and NOT "
                                 "more than %d deep",
                                 IMC_FILTER_MAX_DEPTH));
    }
    return APR_SUCCESS;
}

static imc_node *node_new(imc_parser *ps, node_e kind)
{
    imc_node *n = apr_pcalloc(ps->p, sizeof(*n));

    n->kind = kind;
    return n;
}

/* ---- values ------------------------------------------------------------- */

/* num_key, uuid_key and key_cmp are imc_filter_private.h's. */

static apr_int64_t key_num(const imc_key *k)
{
    return (apr_int64_t)(k->lo ^ KEY_SIGN);
}

/* The canonical text of the UUID of key k into out (37 bytes). */
static void uuid_text(const imc_key *k, char *out)
{
    static const char hex[] = "0123456789abcdef";
    int i, n = 32;

    for (i = IMC_SYNTAX_UUID_LEN - 1; i >= 0; i--) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            out[i] = '-';
            continue;
        }
        n--;
        out[i] = hex[((n < 16 ? k->lo : k->hi) >> (4 * (15 - n % 16))) & 0xf];
    }
    out[IMC_SYNTAX_UUID_LEN] = '\0';
}

static int key_qsort_cmp(const void *a, const void *b)
{
    return key_cmp(a, b);
}

/* ---- parser, continued -------------------------------------------------- */

/* Validate the literal tok for column al and set *key to its value. */
static apr_status_t literal_key(imc_parser *ps, const col_alias *al,
                                const imc_token *tok, imc_key *key)
{
    char uuid[IMC_SYNTAX_UUID_LEN + 1];
    apr_int64_t day;
    const char *what;

    switch (al->col) {
        case COL_SITE_ID:
            if (imc_syntax_uuid(tok->text, tok->tlen, uuid) == APR_SUCCESS) {
                uuid_key(uuid, key);
                return APR_SUCCESS;
            }
            what = MSG_UUID;
            break;
        case COL_TYPE:
            if (strcmp(tok->text, "serve") == 0) {
                *key = num_key(IMC_FILTER_SERVE);
                return APR_SUCCESS;
            }
            if (strcmp(tok->text, "solve") == 0) {
                *key = num_key(IMC_FILTER_SOLVE);
                return APR_SUCCESS;
            }
            what = MSG_TYPE;
            break;
        default:
            if (imc_syntax_date_parse(tok->text, tok->tlen, &day) ==
                APR_SUCCESS) {
                *key = num_key(day);
                return APR_SUCCESS;
            }
            what = MSG_DATE;
            break;
    }
    return fail(ps, IMC_FILTER_ELITERAL, tok->pos,
                apr_pstrcat(ps->p, al->name, " ", what, NULL));
}

/* Read one literal for column al; after names what came before it. */
static apr_status_t parse_literal(imc_parser *ps, const col_alias *al,
                                  const char *after, imc_key *key)
{
    imc_token *tok = take(ps);

    if (tok->type != TOK_STRING) {
        return unexpected(ps, tok,
                          apr_pstrcat(ps->p,
                                      "expected a single-quoted "
                                      "literal ",
                                      after, NULL));
    }
    return literal_key(ps, al, tok, key);
}

/* The IN list's literals sorted, each once, for a binary search. */
static void in_set(imc_parser *ps, imc_node *n)
{
    int count = n->items->nelts, i, j = 0;
    imc_key *set = apr_palloc(ps->p, count * sizeof(*set));

    memcpy(set, n->items->elts, count * sizeof(*set));
    qsort(set, count, sizeof(*set), key_qsort_cmp);
    for (i = 0; i < count; i++) {
        if (j == 0 || key_cmp(&set[j - 1], &set[i]) != 0) {
            set[j++] = set[i];
        }
    }
    n->set = set;
    n->nset = j;
}

/* The IN list after "column IN". */
static apr_status_t parse_in(imc_parser *ps, const col_alias *al,
                             imc_node **out)
{
    imc_node *n = node_new(ps, NODE_IN);
    imc_token *tok = take(ps);
    imc_key key;
    apr_status_t rv;

    if (tok->type != TOK_LPAREN) {
        return unexpected(ps, tok, "expected '(' after IN");
    }
    n->col = al->col;
    n->items = apr_array_make(ps->p, 4, sizeof(imc_key));
    for (;;) {
        rv = parse_literal(ps, al, "in the IN list", &key);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        APR_ARRAY_PUSH(n->items, imc_key) = key;
        tok = take(ps);
        if (tok->type == TOK_RPAREN) {
            break;
        }
        if (tok->type != TOK_COMMA) {
            return unexpected(ps, tok, "expected ',' or ')' in the IN list");
        }
    }
    in_set(ps, n);
    *out = n;
    return APR_SUCCESS;
}

/* cond := column op literal | column IN ( literal, ... ) */
static apr_status_t parse_cond(imc_parser *ps, imc_node **out)
{
    imc_token *tok = take(ps);
    const col_alias *al;
    imc_node *n;

    if (tok->type != TOK_WORD || is_keyword(tok, "AND") ||
        is_keyword(tok, "OR") || is_keyword(tok, "IN")) {
        return unexpected(ps, tok, MSG_COLUMN);
    }
    for (al = col_aliases; al->name; al++) {
        if (apr_cstr_casecmp(tok->text, al->name) == 0) {
            break;
        }
    }
    if (!al->name) {
        fail(ps, IMC_FILTER_ECOLUMN, tok->pos, NULL);
        ps->err->column =
            tok->tlen > IMC_FILTER_MAX_COLUMN
                ? apr_pstrmemdup(ps->p, tok->text, IMC_FILTER_MAX_COLUMN)
                : tok->text;
        ps->err->message =
            apr_pstrcat(ps->p, "unknown column '", ps->err->column, "'", NULL);
        return APR_EINVAL;
    }
    ps->cols |= 1u << al->col;
    tok = take(ps);
    if (is_keyword(tok, "IN")) {
        return parse_in(ps, al, out);
    }
    if (tok->type != TOK_OP) {
        return unexpected(ps, tok,
                          apr_pstrcat(ps->p,
                                      "expected an operator after column '",
                                      al->name, "'", NULL));
    }
    n = node_new(ps, NODE_CMP);
    n->col = al->col;
    n->op = tok->op;
    *out = n;
    return parse_literal(ps, al,
                         apr_pstrcat(ps->p, "after '",
                                     apr_pstrmemdup(ps->p, tok->src, tok->len),
                                     "'", NULL),
                         &n->key);
}

static apr_status_t parse_or(imc_parser *ps, imc_node **out);

/* not := NOT not | ( or ) | cond */
static apr_status_t parse_not(imc_parser *ps, imc_node **out)
{
    imc_token *tok = peek(ps);
    imc_node *n;
    apr_status_t rv;

    if (!is_keyword(tok, "NOT") && tok->type != TOK_LPAREN) {
        return parse_cond(ps, out);
    }
    if ((rv = enter(ps, tok)) != APR_SUCCESS) {
        return rv;
    }
    take(ps);
    if (tok->type == TOK_LPAREN) {
        if ((rv = parse_or(ps, out)) != APR_SUCCESS) {
            return rv;
        }
        tok = take(ps);
        if (tok->type != TOK_RPAREN) {
            return unexpected(ps, tok, "expected ')'");
        }
    } else {
        n = node_new(ps, NODE_NOT);
        if ((rv = parse_not(ps, &n->child)) != APR_SUCCESS) {
            return rv;
        }
        *out = n;
    }
    ps->depth--;
    return APR_SUCCESS;
}

/* A chain of sub-terms joined by the keyword kw (AND or OR). */
static apr_status_t parse_chain(imc_parser *ps, const char *kw, node_e kind,
                                apr_status_t (*sub)(imc_parser *, imc_node **),
                                imc_node **out)
{
    imc_node *first, *n = NULL, *next;
    apr_status_t rv;

    if ((rv = sub(ps, &first)) != APR_SUCCESS) {
        return rv;
    }
    while (is_keyword(peek(ps), kw)) {
        take(ps);
        if ((rv = sub(ps, &next)) != APR_SUCCESS) {
            return rv;
        }
        if (!n) {
            n = node_new(ps, kind);
            n->items = apr_array_make(ps->p, 4, sizeof(imc_node *));
            APR_ARRAY_PUSH(n->items, imc_node *) = first;
        }
        APR_ARRAY_PUSH(n->items, imc_node *) = next;
    }
    *out = n ? n : first;
    return APR_SUCCESS;
}

static apr_status_t parse_and(imc_parser *ps, imc_node **out)
{
    return parse_chain(ps, "AND", NODE_AND, parse_not, out);
}

static apr_status_t parse_or(imc_parser *ps, imc_node **out)
{
    return parse_chain(ps, "OR", NODE_OR, parse_and, out);
}

/* ---- SQL generation ----------------------------------------------------- */

static void sb_add(imc_sbuf *b, const char *s)
{
    apr_size_t n = strlen(s);

    if (b->len + n + 1 > b->cap) {
        apr_size_t cap = b->cap ? b->cap : 256;
        char *buf;

        while (b->len + n + 1 > cap) {
            cap *= 2;
        }
        buf = apr_palloc(b->p, cap);
        if (b->len) {
            memcpy(buf, b->buf, b->len);
        }
        b->buf = buf;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}

static const char *col_sql(const imc_filter_columns *cols, col_e col)
{
    const char *s = NULL;

    if (cols) {
        s = col == COL_DAY       ? cols->day
            : col == COL_SITE_ID ? cols->site_id
                                 : cols->type;
    }
    if (!s) {
        s = col == COL_DAY ? "day" : col == COL_SITE_ID ? "site_id" : "type";
    }
    return s;
}

/* Append the SQL of the literal k of column col. */
static void emit_literal(imc_sbuf *b, col_e col, const imc_key *k)
{
    char text[IMC_SYNTAX_UUID_LEN + 1];

    switch (col) {
        case COL_SITE_ID:
            uuid_text(k, text);
            sb_add(b, "toUUID('");
            sb_add(b, text);
            sb_add(b, "')");
            break;
        case COL_TYPE:
            sb_add(b, key_num(k) == IMC_FILTER_SERVE ? "'serve'" : "'solve'");
            break;
        default:
            imc_syntax_day_text(text, key_num(k));
            sb_add(b, "toDate('");
            sb_add(b, text);
            sb_add(b, "')");
            break;
    }
}

/* Append the SQL of n; recursion is bounded by the parser's depth limit. */
static void emit(imc_sbuf *b, const imc_node *n, const imc_filter_columns *cols)
{
    int i;

    sb_add(b, "(");
    switch (n->kind) {
        case NODE_OR:
        case NODE_AND:
            for (i = 0; i < n->items->nelts; i++) {
                if (i) {
                    sb_add(b, n->kind == NODE_OR ? " OR " : " AND ");
                }
                emit(b, APR_ARRAY_IDX(n->items, i, imc_node *), cols);
            }
            break;
        case NODE_NOT:
            sb_add(b, "NOT ");
            emit(b, n->child, cols);
            break;
        case NODE_CMP:
            sb_add(b, col_sql(cols, n->col));
            sb_add(b, " ");
            sb_add(b, op_sql[n->op]);
            sb_add(b, " ");
            emit_literal(b, n->col, &n->key);
            break;
        case NODE_IN:
            sb_add(b, col_sql(cols, n->col));
            sb_add(b, " IN (");
            for (i = 0; i < n->items->nelts; i++) {
                if (i) {
                    sb_add(b, ", ");
                }
                emit_literal(b, n->col, &APR_ARRAY_IDX(n->items, i, imc_key));
            }
            sb_add(b, ")");
            break;
    }
    sb_add(b, ")");
}

/* ---- entry points ------------------------------------------------------- */

/* Parse the filter into *f (its root NULL for an empty filter). */
static apr_status_t parse_filter(apr_pool_t *p, const char *filter,
                                 apr_size_t len, imc_filter *f,
                                 imc_filter_error *err)
{
    imc_filter_error dummy;
    imc_parser ps;
    imc_node *root;
    imc_token *tok;
    apr_status_t rv;

    memset(&ps, 0, sizeof(ps));
    ps.p = p;
    ps.src = filter;
    ps.len = len;
    ps.err = err ? err : &dummy;
    if (len > IMC_FILTER_MAX_LEN) {
        return fail(&ps, IMC_FILTER_ELIMIT, -1,
                    apr_psprintf(p, "the filter is longer than %d bytes",
                                 IMC_FILTER_MAX_LEN));
    }
    if (!filter) {
        if (len) {
            return fail(&ps, IMC_FILTER_ESYNTAX, -1, "no filter text");
        }
        ps.src = "";
    }
    if ((rv = lex_all(&ps)) != APR_SUCCESS) {
        return rv;
    }
    if (peek(&ps)->type == TOK_END) {
        f->root = NULL;
        f->cols = 0;
        return APR_SUCCESS;
    }
    if ((rv = parse_or(&ps, &root)) != APR_SUCCESS) {
        return rv;
    }
    tok = peek(&ps);
    if (tok->type != TOK_END) {
        return unexpected(&ps, tok,
                          "unexpected input after the end of the filter");
    }
    f->root = root;
    f->cols = ps.cols;
    return APR_SUCCESS;
}

apr_status_t imc_filter_compile(apr_pool_t *p, const char *filter,
                                apr_size_t len, const imc_filter_columns *cols,
                                const char **sql, imc_filter_error *err)
{
    imc_filter f;
    imc_sbuf b;
    apr_status_t rv;

    if ((rv = parse_filter(p, filter, len, &f, err)) != APR_SUCCESS) {
        return rv;
    }
    if (!f.root) {
        *sql = "1";
        return APR_SUCCESS;
    }
    memset(&b, 0, sizeof(b));
    b.p = p;
    emit(&b, f.root, cols);
    *sql = b.buf;
    return APR_SUCCESS;
}

apr_status_t imc_filter_parse(apr_pool_t *p, const char *filter, apr_size_t len,
                              const imc_filter **f, imc_filter_error *err)
{
    imc_filter *out = apr_palloc(p, sizeof(*out));
    apr_status_t rv;

    if ((rv = parse_filter(p, filter, len, out, err)) == APR_SUCCESS) {
        *f = out;
    }
    return rv;
}
