/* Licensed under the Apache License, Version 2.0. */

#include <string.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "imc_private.h"
#include "imc_clickhouse.h"
#include "imc_config.h"
#include "imc_metrics.h"
#include "imc_rcache.h"
#include "imc_report_parts.h"
#include "imc_report_private.h"

/* The longest database, table or cluster name taken from an engine. */
#define NAME_MAX_LEN 128
/* More replicas than any shard has: the listing on 18.16 asks them all. */
#define ALL_REPLICAS "100"
/* Engines remembered per process, and the longest engine or URL kept. */
#define ENGINES        16
#define ENGINE_MAX_LEN 1024
#define URL_MAX_LEN    1024

/* What a Distributed engine reads: the cluster, the database and the
 * table on each shard. */
typedef struct {
    char cluster[NAME_MAX_LEN + 1], db[NAME_MAX_LEN + 1],
        table[NAME_MAX_LEN + 1];
} distributed;

/* The Distributed engine of events last found in a database through an
 * endpoint: engine_full as TabSeparated writes it, and whether that
 * server has clusterAllReplicas. */
typedef struct {
    char db[NAME_MAX_LEN + 1]; /* "": an unused entry */
    char url[URL_MAX_LEN + 1];
    char engine[ENGINE_MAX_LEN + 1];
    int all_replicas;
} engine_memory;

static apr_thread_mutex_t *lock;       /* NULL: nothing is remembered */
static engine_memory engines[ENGINES]; /* under lock */
static int next_engine;                /* the entry taken when all are */

/* A listing's answer: the parts, whether every partition key listed
 * tells days (and how many were), and the 'engine' row: engine_full of
 * events when it is Distributed (else NULL), and clusterAllReplicas. */
typedef struct {
    apr_array_header_t *list;
    int usable, keys;
    const char *engine;
    int all_replicas;
} listing;

/* pchild's end: what it held is gone. */
static apr_status_t forget_all(void *data)
{
    (void)data;
    lock = NULL;
    return APR_SUCCESS;
}

apr_status_t imc_report_parts_child_init(apr_pool_t *pchild)
{
    apr_status_t rv =
        apr_thread_mutex_create(&lock, APR_THREAD_MUTEX_DEFAULT, pchild);

    if (rv != APR_SUCCESS) {
        lock = NULL;
    }
    apr_pool_cleanup_register(pchild, NULL, forget_all, apr_pool_cleanup_null);
    memset(engines, 0, sizeof(engines));
    next_engine = 0;
    return rv;
}

/* The entry of db and url (lock held); NULL when there is none. */
static engine_memory *engine_entry(const char *db, const char *url)
{
    int i;

    for (i = 0; i < ENGINES; ++i) {
        if (*engines[i].db && !strcmp(engines[i].db, db) &&
            !strcmp(engines[i].url, url)) {
            return &engines[i];
        }
    }
    return NULL;
}

/* The engine remembered for db through url into engine (ENGINE_MAX_LEN + 1
 * bytes) and *all_replicas; 0 when none is. */
static int recall(const char *db, const char *url, char *engine,
                  int *all_replicas)
{
    engine_memory *m;

    if (!lock) {
        return 0;
    }
    apr_thread_mutex_lock(lock);
    if ((m = engine_entry(db, url)) != NULL) {
        memcpy(engine, m->engine, sizeof(m->engine));
        *all_replicas = m->all_replicas;
    }
    apr_thread_mutex_unlock(lock);
    return m != NULL;
}

/* Remembers engine (NULL: forgets it) for db through url; one longer than
 * an entry holds is not remembered. */
static void remember(const char *db, const char *url, const char *engine,
                     int all_replicas)
{
    engine_memory *m;
    int i;

    if (!lock) {
        return;
    }
    apr_thread_mutex_lock(lock);
    m = engine_entry(db, url);
    if (!engine || strlen(engine) > ENGINE_MAX_LEN ||
        strlen(db) > NAME_MAX_LEN || strlen(url) > URL_MAX_LEN) {
        if (m) {
            *m->db = '\0';
        }
        apr_thread_mutex_unlock(lock);
        return;
    }
    for (i = 0; !m && i < ENGINES; ++i) {
        if (!*engines[i].db) {
            m = &engines[i];
        }
    }
    if (!m) {
        m = &engines[next_engine];
        next_engine = (next_engine + 1) % ENGINES;
    }
    apr_cpystrn(m->db, db, sizeof(m->db));
    apr_cpystrn(m->url, url, sizeof(m->url));
    apr_cpystrn(m->engine, engine, sizeof(m->engine));
    m->all_replicas = all_replicas;
    apr_thread_mutex_unlock(lock);
}

/* Whether s holds word as a whole SQL identifier. */
static int mentions(const char *s, const char *word)
{
    apr_size_t n = strlen(word);
    const char *at;

    for (at = strstr(s, word); at; at = strstr(at + 1, word)) {
        if ((at == s || !(apr_isalnum(at[-1]) || at[-1] == '_')) &&
            !(apr_isalnum(at[n]) || at[n] == '_')) {
            return 1;
        }
    }
    return 0;
}

/* Whether a partition key lets the parts' times tell their events' days:
 * one on time alone (conf/schema.sql: toDate(time); toYYYYMM(time) before). */
static int key_usable(const char *key)
{
    return mentions(key, "time") && !mentions(key, "received_at");
}

/* Runs sql (params: extra URL parameters, or NULL). *answered is 0 when
 * ClickHouse refused it (no grant, an unknown cluster, a shard down): the
 * cache is then left out. An exception after a 200 began is a broken
 * answer and fails the report, like a malformed line. */
static apr_status_t ask(request_rec *r, imc_clickhouse *ch, const char *what,
                        const char *sql, const char *params, int *answered,
                        imc_clickhouse_result *res)
{
    apr_status_t rv = imc_clickhouse_query(ch, r->pool, sql, params, res);

    imc_metrics_observe(IMC_H_CLICKHOUSE, res->elapsed);
    *answered = rv == APR_SUCCESS;
    if (rv == IMC_CLICKHOUSE_EREJECTED && res->http_status != HTTP_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r,
                      IMC_LOGNO(00402) "report: no %s (HTTP %d, code %d), "
                                       "no cache",
                      what, res->http_status, res->code);
        return APR_SUCCESS;
    }
    return rv;
}

/* Reads one part's line (its fields f: first day, last day, id, recent,
 * rows) into a new element of list; 0 when a field does not parse. */
static int read_part(apr_array_header_t *list, char **f)
{
    imc_rcache_part *part = apr_array_push(list);
    apr_uint64_t first, last;

    if (!imc_report_parse_uint(f[0], 65535, &first) ||
        !imc_report_parse_uint(f[1], 65535, &last) ||
        !imc_report_parse_uint(f[2], APR_UINT64_MAX, &part->id) ||
        (strcmp(f[3], "0") && strcmp(f[3], "1")) ||
        !imc_report_parse_uint(f[4], APR_UINT64_MAX, &part->rows)) {
        return 0;
    }
    part->first = (int)first;
    part->last = (int)last;
    part->recent = !strcmp(f[3], "1");
    return 1;
}

/* The 'engine' row of the listings: engine_full of events when it is
 * Distributed (none otherwise), with whether the server has
 * clusterAllReplicas, in the columns of the 'part' and 'key' rows. It
 * reads this server's system.tables, whichever table function the rest
 * of the listing goes through. */
static const char *engine_row(apr_pool_t *p, const char *db)
{
    return apr_pstrcat(p,
                       " UNION ALL SELECT 'engine', toUInt16(0), toUInt16(0), "
                       "toUInt64(0), toUInt8((SELECT count() FROM "
                       "system.table_functions WHERE name = "
                       "'clusterAllReplicas')), engine_full FROM system.tables "
                       "WHERE database = '",
                       db, "' AND name = 'events' AND engine = 'Distributed'",
                       NULL);
}

/* Reads a listing's answer into *l: 'part' rows (first day, last day, id,
 * recent, rows), 'key' rows (0, 0, 0, 0, a partition key) and at most one
 * 'engine' row (0, 0, 0, clusterAllReplicas, engine_full), in any order.
 * Every key must be usable, and one at least. */
static apr_status_t read_listing(request_rec *r, const char *what, char *body,
                                 listing *l)
{
    char *pos = body, *line, *f[6];
    int lineno = 0, cut = 0;

    l->list = apr_array_make(r->pool, 16, sizeof(imc_rcache_part));
    l->usable = 1;
    l->keys = 0;
    l->engine = NULL;
    l->all_replicas = 0;
    while ((line = imc_report_next_line(&pos, &cut)) != NULL) {
        char *end = line + strlen(line);
        int ok = imc_report_split_tabs(line, f, 6) == 6;

        ++lineno;
        if (ok && !strcmp(f[0], "part")) {
            ok = read_part(l->list, f + 1);
        } else if (ok && !strcmp(f[0], "key")) {
            ok = !strcmp(f[1], "0") && !strcmp(f[2], "0") &&
                 !strcmp(f[3], "0") && !strcmp(f[4], "0");
            ++l->keys;
            l->usable = l->usable && key_usable(f[5]);
        } else if (ok && !strcmp(f[0], "engine")) {
            ok = !l->engine && !strcmp(f[1], "0") && !strcmp(f[2], "0") &&
                 !strcmp(f[3], "0") &&
                 (!strcmp(f[4], "0") || !strcmp(f[4], "1")) && *f[5];
            l->engine = f[5];
            l->all_replicas = !strcmp(f[4], "1");
        } else {
            ok = 0;
        }
        if (!ok) {
            l->list = NULL;
            return imc_report_malformed(r, what, lineno, line, end);
        }
    }
    if (cut) {
        l->list = NULL;
        return imc_report_malformed(r, what, lineno + 1, NULL, NULL);
    }
    l->usable = l->usable && l->keys;
    return APR_SUCCESS;
}

/* The parts of events on this server, its partition key, and its engine
 * when it is Distributed (which has no parts here). A part's first and
 * last times are those of the partition key's time column, so they are
 * the events' only with a key on time alone: the partition key alone
 * decides (a part at the epoch, or one a mutation emptied, has a first
 * time of 0 and is one like any other). l->list is NULL when ClickHouse
 * refused the listing. */
static apr_status_t local_parts(request_rec *r, const char *db, const char *tz,
                                imc_clickhouse *ch, listing *l,
                                imc_clickhouse_result *res)
{
    const char *sql = apr_pstrcat(
        r->pool, "SELECT 'part', toUInt16(toDate(min_time, '", tz,
        "')), toUInt16(toDate(max_time, '", tz,
        "')), cityHash64(name, rows, modification_time), "
        "modification_time >= now(), toString(rows) FROM system.parts WHERE "
        "database = '",
        db,
        "' AND table = 'events' AND active UNION ALL SELECT 'key', "
        "toUInt16(0), toUInt16(0), toUInt64(0), toUInt8(0), partition_key "
        "FROM system.tables WHERE database = '",
        db, "' AND name = 'events'", engine_row(r->pool, db),
        " FORMAT TabSeparated", NULL);
    int answered;
    apr_status_t rv;

    l->list = NULL;
    if ((rv = ask(r, ch, "parts list", sql, NULL, &answered, res)) !=
            APR_SUCCESS ||
        !answered) {
        return rv;
    }
    return read_listing(r, "parts list", (char *)res->body, l);
}

/* One name of a Distributed engine's arguments at *s into out: a plain
 * identifier, or one in quotes ('...' as TabSeparated writes it, \'...\',
 * `...` or "..."), of letters, digits and '_' only; then the ',' or ')'
 * after it (any other: 0). Names the SQL is built of need no escaping. */
static int engine_name(const char **s, char *out, int last)
{
    const char *p = *s, *quote = "";
    apr_size_t n = 0, qlen = 0;

    while (*p == ' ') {
        ++p;
    }
    if (!strncmp(p, "\\'", 2)) {
        quote = "\\'";
    } else if (*p == '\'') {
        quote = "'";
    } else if (*p == '`') {
        quote = "`";
    } else if (*p == '"') {
        quote = "\"";
    }
    qlen = strlen(quote);
    p += qlen;
    while (apr_isalnum(p[n]) || p[n] == '_') {
        if (n == NAME_MAX_LEN) {
            return 0;
        }
        out[n] = p[n];
        ++n;
    }
    out[n] = '\0';
    p += n;
    if (!n || strncmp(p, quote, qlen)) {
        return 0;
    }
    p += qlen;
    while (*p == ' ') {
        ++p;
    }
    if (*p != ',' && !(last && *p == ')')) {
        return 0;
    }
    *s = p + 1;
    return 1;
}

/* engine_full of a Distributed table (as TabSeparated writes it):
 * "Distributed(cluster, db, table[, ...])". 0 unless its first three
 * arguments are plain names. */
static int parse_distributed(const char *engine, distributed *d)
{
    static const char prefix[] = "Distributed(";
    const char *p = engine;

    if (strncmp(p, prefix, sizeof(prefix) - 1)) {
        return 0;
    }
    p += sizeof(prefix) - 1;
    return engine_name(&p, d->cluster, 0) && engine_name(&p, d->db, 0) &&
           engine_name(&p, d->table, 1);
}

/* The parts of the shards' table under a Distributed events, on every
 * shard of its cluster; the partition key of that table on each, all of
 * which must be usable; and the engine of events on this server, which
 * tells whether d is still what events reads. A part's id holds the
 * server that has it (hostName() and the part's path, both of the shard:
 * two shards may have a part of the same name, rows and second). Every
 * replica is listed (clusterAllReplicas, or max_parallel_replicas on
 * releases without it), since the report's query may read any: a lagging
 * one's parts are then in the fingerprint, which changes once it catches
 * up. No shard may be skipped. l->list is NULL when ClickHouse refused
 * the listing. */
static apr_status_t shard_parts(request_rec *r, const char *db, const char *tz,
                                imc_clickhouse *ch, const distributed *d,
                                int all_replicas, listing *l,
                                imc_clickhouse_result *res)
{
    const char *fn = apr_pstrcat(
        r->pool, all_replicas ? "clusterAllReplicas('" : "cluster('",
        d->cluster, "', system.", NULL);
    const char *sql = apr_pstrcat(
        r->pool, "SELECT 'part', toUInt16(toDate(min_time, '", tz,
        "')), toUInt16(toDate(max_time, '", tz,
        "')), cityHash64(hostName(), path, name, rows, modification_time), "
        "modification_time >= now(), toString(rows) FROM ",
        fn, "parts) WHERE database = '", d->db, "' AND table = '", d->table,
        "' AND active UNION ALL SELECT 'key', toUInt16(0), toUInt16(0), "
        "toUInt64(0), toUInt8(0), partition_key FROM ",
        fn, "tables) WHERE database = '", d->db, "' AND name = '", d->table,
        "'", engine_row(r->pool, db), " FORMAT TabSeparated", NULL);
    const char *params =
        all_replicas ? "&skip_unavailable_shards=0"
                     : "&skip_unavailable_shards=0&prefer_localhost_replica=0"
                       "&max_parallel_replicas=" ALL_REPLICAS;
    int answered;
    apr_status_t rv;

    l->list = NULL;
    if ((rv = ask(r, ch, "parts list on the shards", sql, params, &answered,
                  res)) != APR_SUCCESS ||
        !answered) {
        return rv;
    }
    return read_listing(r, "parts list on the shards", (char *)res->body, l);
}

/* Whether a listing of the shards is of the engine it was made from. */
static int same_engine(const listing *l, const char *engine, int all_replicas)
{
    return l->engine && !strcmp(l->engine, engine) &&
           l->all_replicas == all_replicas;
}

/* The URL of the configured endpoint at, or NULL. */
static const char *endpoint_url(const imc_config *c, int at)
{
    const apr_array_header_t *urls = imc_config_clickhouse(c);

    return urls && at >= 0 && at < urls->nelts
               ? APR_ARRAY_IDX(urls, at, const char *)
               : NULL;
}

/* The listing of the shards through the engine remembered for db at the
 * endpoint that ch asks first, when one is: *done once l holds the parts
 * that this endpoint's events reads. Otherwise (a listing refused, an
 * answer of another endpoint, or an engine that is no longer the one
 * remembered: events dropped and made again, another cluster or table,
 * no longer Distributed) the caller lists as on first sight; the engine
 * is forgotten unless another endpoint answered. */
static apr_status_t remembered_parts(request_rec *r, const imc_config *c,
                                     const char *tz, imc_clickhouse *ch,
                                     listing *l, int *done,
                                     imc_clickhouse_result *res)
{
    const char *db = imc_config_database(c);
    int at = imc_clickhouse_current(ch), all_replicas;
    const char *url = endpoint_url(c, at);
    char engine[ENGINE_MAX_LEN + 1];
    distributed d;
    apr_status_t rv;

    *done = 0;
    if (!url || !recall(db, url, engine, &all_replicas) ||
        !parse_distributed(engine, &d)) {
        return APR_SUCCESS;
    }
    if ((rv = shard_parts(r, db, tz, ch, &d, all_replicas, l, res)) !=
        APR_SUCCESS) {
        return rv;
    }
    if (res->endpoint != at) {
        return APR_SUCCESS; /* failed over: another server's engine */
    }
    if (l->list && same_engine(l, engine, all_replicas)) {
        *done = 1;
        return APR_SUCCESS;
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  IMC_LOGNO(00404) "report: events is no longer %.300s, "
                                   "or its shards refused the listing: "
                                   "listed again",
                  engine);
    remember(db, url, NULL, 0);
    return APR_SUCCESS;
}

apr_status_t imc_report_parts_list(request_rec *r, const imc_config *c,
                                   const char *tz, imc_clickhouse *ch,
                                   apr_array_header_t **parts,
                                   imc_clickhouse_result *res)
{
    const char *db = imc_config_database(c), *url;
    listing l;
    distributed d;
    int done, endpoint, all_replicas;
    const char *engine;
    apr_status_t rv;

    *parts = NULL;
    if ((rv = remembered_parts(r, c, tz, ch, &l, &done, res)) != APR_SUCCESS) {
        return rv;
    }
    if (!done) {
        if ((rv = local_parts(r, db, tz, ch, &l, res)) != APR_SUCCESS ||
            !l.list) {
            return rv;
        }
        if (!l.list->nelts && l.engine) {
            /* None here: a Distributed table, whose parts are on the
             * shards. */
            if (!parse_distributed(l.engine, &d)) {
                ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                              IMC_LOGNO(00403) "report: events is %.300s, "
                                               "whose cluster and table "
                                               "are not plain names: no "
                                               "cache",
                              l.engine);
                return APR_SUCCESS;
            }
            engine = l.engine;
            all_replicas = l.all_replicas;
            endpoint = res->endpoint;
            url = endpoint_url(c, endpoint);
            if (url) {
                remember(db, url, engine, all_replicas);
            }
            if ((rv = shard_parts(r, db, tz, ch, &d, all_replicas, &l, res)) !=
                    APR_SUCCESS ||
                !l.list || res->endpoint != endpoint) {
                /* Failed over in between: another server's engine. */
                return rv;
            }
            if (!same_engine(&l, engine, all_replicas)) {
                /* Made again in between: the next report lists again. */
                if (url) {
                    remember(db, url, NULL, 0);
                }
                return APR_SUCCESS;
            }
        }
    }
    *parts = l.usable && l.list->nelts ? l.list : NULL;
    return APR_SUCCESS;
}
