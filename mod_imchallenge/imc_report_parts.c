/* Licensed under the Apache License, Version 2.0. */

#include <string.h>

#include <apr_lib.h>
#include <apr_strings.h>

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

/* What a Distributed engine reads: the cluster, the database and the
 * table on each shard. */
typedef struct {
    char cluster[NAME_MAX_LEN + 1], db[NAME_MAX_LEN + 1],
        table[NAME_MAX_LEN + 1];
} distributed;

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

/* Reads one part's line (its fields f: first day, last day, id, recent)
 * into a new element of list; 0 when a field does not parse. */
static int read_part(apr_array_header_t *list, char **f)
{
    imc_rcache_part *part = apr_array_push(list);
    apr_uint64_t first, last;

    if (!imc_report_parse_uint(f[0], 65535, &first) ||
        !imc_report_parse_uint(f[1], 65535, &last) ||
        !imc_report_parse_uint(f[2], APR_UINT64_MAX, &part->id) ||
        (strcmp(f[3], "0") && strcmp(f[3], "1"))) {
        return 0;
    }
    part->first = (int)first;
    part->last = (int)last;
    part->recent = !strcmp(f[3], "1");
    return 1;
}

/* The parts of events on this server. A part's first and last times are
 * those of the partition key's time column, so they are the events' only
 * with a key on time alone: the partition key alone decides (a part at
 * the epoch, or one a mutation emptied, has a first time of 0 and is one
 * like any other). */
static apr_status_t local_parts(request_rec *r, const char *db, const char *tz,
                                imc_clickhouse *ch, apr_array_header_t **list,
                                int *usable, imc_clickhouse_result *res)
{
    const char *sql = apr_pstrcat(
        r->pool, "SELECT toUInt16(toDate(min_time, '", tz,
        "')), toUInt16(toDate(max_time, '", tz,
        "')), cityHash64(name, rows, modification_time), "
        "modification_time >= now(), "
        "(SELECT partition_key FROM system.tables WHERE database = '",
        db, "' AND name = 'events') FROM system.parts WHERE database = '", db,
        "' AND table = 'events' AND active FORMAT TabSeparated", NULL);
    char *pos, *line, *f[5];
    int lineno = 0, cut = 0, answered;
    apr_status_t rv;

    *list = NULL;
    if ((rv = ask(r, ch, "parts list", sql, NULL, &answered, res)) !=
            APR_SUCCESS ||
        !answered) {
        return rv;
    }
    pos = (char *)res->body;
    *list = apr_array_make(r->pool, 16, sizeof(imc_rcache_part));
    *usable = 1;
    while ((line = imc_report_next_line(&pos, &cut)) != NULL) {
        char *end = line + strlen(line);

        ++lineno;
        if (imc_report_split_tabs(line, f, 5) != 5 || !read_part(*list, f)) {
            return imc_report_malformed(r, "parts list", lineno, line, end);
        }
        *usable = *usable && key_usable(f[4]);
    }
    if (cut) {
        return imc_report_malformed(r, "parts list", lineno + 1, NULL, NULL);
    }
    return APR_SUCCESS;
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

/* Whether events is Distributed: its engine's names into *d (*found 0
 * otherwise), and whether the server has clusterAllReplicas. */
static apr_status_t find_distributed(request_rec *r, const char *db,
                                     imc_clickhouse *ch, distributed *d,
                                     int *found, int *all_replicas,
                                     imc_clickhouse_result *res)
{
    const char *sql = apr_pstrcat(
        r->pool,
        "SELECT engine_full, (SELECT count() FROM system.table_functions "
        "WHERE name = 'clusterAllReplicas') FROM system.tables WHERE "
        "database = '",
        db,
        "' AND name = 'events' AND engine = 'Distributed' "
        "FORMAT TabSeparated",
        NULL);
    char *pos, *line, *f[2], *end;
    apr_uint64_t n;
    int cut = 0, answered;
    apr_status_t rv;

    *found = 0;
    if ((rv = ask(r, ch, "engine of events", sql, NULL, &answered, res)) !=
            APR_SUCCESS ||
        !answered) {
        return rv;
    }
    pos = (char *)res->body;
    if (!(line = imc_report_next_line(&pos, &cut))) {
        return cut ? imc_report_malformed(r, "engine lookup", 1, NULL, NULL)
                   : APR_SUCCESS; /* not Distributed */
    }
    end = line + strlen(line);
    if (*pos || imc_report_split_tabs(line, f, 2) != 2 ||
        !imc_report_parse_uint(f[1], 1, &n)) {
        return imc_report_malformed(r, "engine lookup", 1, line, end);
    }
    *all_replicas = n == 1;
    if (!parse_distributed(f[0], d)) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                      IMC_LOGNO(00403) "report: events is %.300s, whose "
                                       "cluster and table are not plain "
                                       "names: no cache",
                      f[0]);
        return APR_SUCCESS;
    }
    *found = 1;
    return APR_SUCCESS;
}

/* The parts of the shards' table under a Distributed events, on every
 * shard of its cluster; the partition key of that table on each, all of
 * which must be usable. A part's id holds the server that has it
 * (hostName() and the part's path, both of the shard: two shards may have
 * a part of the same name, rows and second). Every replica is listed
 * (clusterAllReplicas, or max_parallel_replicas on releases without it),
 * since the report's query may read any: a lagging one's parts are then
 * in the fingerprint, which changes once it catches up. No shard may be
 * skipped. */
static apr_status_t shard_parts(request_rec *r, const char *tz,
                                imc_clickhouse *ch, const distributed *d,
                                int all_replicas, apr_array_header_t **list,
                                int *usable, imc_clickhouse_result *res)
{
    const char *fn = apr_pstrcat(
        r->pool, all_replicas ? "clusterAllReplicas('" : "cluster('",
        d->cluster, "', system.", NULL);
    const char *sql = apr_pstrcat(
        r->pool, "SELECT 'part', toUInt16(toDate(min_time, '", tz,
        "')), toUInt16(toDate(max_time, '", tz,
        "')), cityHash64(hostName(), path, name, rows, modification_time), "
        "modification_time >= now(), '' FROM ",
        fn, "parts) WHERE database = '", d->db, "' AND table = '", d->table,
        "' AND active UNION ALL SELECT 'key', toUInt16(0), toUInt16(0), "
        "toUInt64(0), toUInt8(0), partition_key FROM ",
        fn, "tables) WHERE database = '", d->db, "' AND name = '", d->table,
        "' FORMAT TabSeparated", NULL);
    const char *params =
        all_replicas ? "&skip_unavailable_shards=0"
                     : "&skip_unavailable_shards=0&prefer_localhost_replica=0"
                       "&max_parallel_replicas=" ALL_REPLICAS;
    char *pos, *line, *f[6];
    int lineno = 0, cut = 0, keys = 0, answered;
    apr_status_t rv;

    *list = NULL;
    if ((rv = ask(r, ch, "parts list on the shards", sql, params, &answered,
                  res)) != APR_SUCCESS ||
        !answered) {
        return rv;
    }
    pos = (char *)res->body;
    *list = apr_array_make(r->pool, 16, sizeof(imc_rcache_part));
    *usable = 1;
    while ((line = imc_report_next_line(&pos, &cut)) != NULL) {
        char *end = line + strlen(line);

        int ok = imc_report_split_tabs(line, f, 6) == 6;

        ++lineno;
        if (ok && !strcmp(f[0], "part")) {
            ok = !*f[5] && read_part(*list, f + 1);
        } else if (ok && !strcmp(f[0], "key")) {
            ok = !strcmp(f[1], "0") && !strcmp(f[2], "0") &&
                 !strcmp(f[3], "0") && !strcmp(f[4], "0");
            ++keys;
            *usable = *usable && key_usable(f[5]);
        } else {
            ok = 0;
        }
        if (!ok) {
            return imc_report_malformed(r, "parts list on the shards", lineno,
                                        line, end);
        }
    }
    if (cut) {
        return imc_report_malformed(r, "parts list on the shards", lineno + 1,
                                    NULL, NULL);
    }
    *usable = *usable && keys;
    return APR_SUCCESS;
}

apr_status_t imc_report_parts_list(request_rec *r, const imc_config *c,
                                   const char *tz, imc_clickhouse *ch,
                                   apr_array_header_t **parts,
                                   imc_clickhouse_result *res)
{
    const char *db = imc_config_database(c);
    apr_array_header_t *list;
    distributed d;
    int usable = 0, found, all_replicas = 0, endpoint;
    apr_status_t rv;

    *parts = NULL;
    if ((rv = local_parts(r, db, tz, ch, &list, &usable, res)) != APR_SUCCESS ||
        !list) {
        return rv;
    }
    if (!list->nelts) {
        /* None here: an empty table, or a Distributed one, whose parts
         * are on the shards. */
        if ((rv = find_distributed(r, db, ch, &d, &found, &all_replicas,
                                   res)) != APR_SUCCESS ||
            !found) {
            return rv;
        }
        endpoint = res->endpoint;
        if ((rv = shard_parts(r, tz, ch, &d, all_replicas, &list, &usable,
                              res)) != APR_SUCCESS ||
            !list || res->endpoint != endpoint) {
            /* Failed over in between: another server's engine. */
            return rv;
        }
    }
    *parts = usable && list->nelts ? list : NULL;
    return APR_SUCCESS;
}
