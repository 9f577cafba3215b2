/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_zones: which time zone names a report accepts. Only names the
 * ClickHouse server knows: each distinct zone makes it build and keep a
 * table of that zone, so the names are never left to clients. Where the
 * server lists its zones (system.time_zones; ClickHouse 18.16 has no such
 * table) a name must be there; elsewhere it must be a compiled zone of
 * this machine's zone database. Whether the table exists is asked once per
 * server configuration and process; the last zones found are remembered
 * (a few per configuration), so a report asks again only for a new one.
 * The zones a process loads for the report's forms are kept too, so that
 * their files are read and parsed once per process, not per request.
 * No httpd headers.
 */
#ifndef IMC_ZONES_H
#define IMC_ZONES_H

#include <apr_pools.h>

#include "imc_clickhouse.h"
#include "imc_zone.h"

/* Call once per process (child_init); without it nothing is remembered. */
apr_status_t imc_zones_child_init(apr_pool_t *pchild);

/*
 * Whether the server ch reaches (for the configuration key) knows tz,
 * which must be well formed. ClickHouse is asked, through ch, only when
 * key's probe or this zone is not remembered; when it cannot answer, the
 * machine's zone database decides.
 */
int imc_zones_known(apr_pool_t *p, const void *key, imc_clickhouse *ch,
                    const char *tz);

/*
 * imc_zone_load(zone, p, tz), once per process: a zone loaded before is
 * the one kept (never changed: shared by the process's requests), a new
 * one is kept from now on, up to a few dozen zones; past them, or before
 * imc_zones_child_init, the zone is loaded from p each time.
 */
apr_status_t imc_zones_load(const imc_zone **zone, apr_pool_t *p,
                            const char *tz);

#endif /* IMC_ZONES_H */
