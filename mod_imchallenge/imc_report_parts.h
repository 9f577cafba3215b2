/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_report_parts: the events table's active parts, as the report's cache
 * (imc_rcache) fingerprints them: the days of each part's first and last
 * event in the report's zone, an id of the part and its content, and
 * whether it was written in the database's current second.
 *
 * A MergeTree events table lists its parts in the server's system.parts.
 * A Distributed one has none there: its engine names the cluster and the
 * table on the shards, whose parts are listed on every shard (every
 * replica where the release can say so) through the cluster's table
 * functions, each part's id holding the server that has it. Each process
 * remembers the last Distributed engine found per database and endpoint:
 * its listings of the shards then check the engine in the same request,
 * and only one that no longer matches is listed again from the start.
 */
#ifndef IMC_REPORT_PARTS_H
#define IMC_REPORT_PARTS_H

#include <httpd.h>

#include "imc_clickhouse.h"
#include "imc_config.h"

/* Call once per process (child_init); without it no engine is
 * remembered. */
apr_status_t imc_report_parts_child_init(apr_pool_t *pchild);

/*
 * The active parts (imc_rcache_part) of c's events table in zone tz (a
 * zone name the report checked) into *parts, allocated from r's pool.
 * *parts is NULL when the cache cannot tell the days apart: no parts (an
 * empty table), a partition key other than on time alone (on any shard),
 * a Distributed table whose engine does not name its cluster and table
 * plainly, or ClickHouse refused a listing (res then holds its answer).
 * The report then runs without the cache. A line of an answer that does
 * not parse fails it (IMC_REPORT_EMALFORMED), as does a database that
 * could not be reached. res->endpoint is that of the listing whose parts
 * are returned.
 */
apr_status_t imc_report_parts_list(request_rec *r, const imc_config *c,
                                   const char *tz, imc_clickhouse *ch,
                                   apr_array_header_t **parts,
                                   imc_clickhouse_result *res);

#endif /* IMC_REPORT_PARTS_H */
