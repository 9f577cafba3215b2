/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_access: the site-access file of IMChallengeSiteAccess (README
 * "Tenants and limits"): which sites each principal may write and read.
 *
 * One principal a line, then its sites: UUIDs (any case, kept in canonical
 * lower-case form) or a single "*" for every site. White space separates
 * the words; a word starting with '#' starts a comment to the end of the
 * line; blank lines are ignored:
 *
 *     # principal   sites
 *     acme          0faf8b64-a33d-4db8-aaee-aa165d13cff6 5c22c469-...
 *     captcha-svc   *
 *
 * A principal is one word of at most IMC_ACCESS_MAX_PRINCIPAL bytes. A
 * principal given twice, a line without sites, a word that is no UUID, or
 * "*" next to UUIDs is an error naming the file and line.
 *
 * APR only: no httpd headers, so it is unit-tested and fuzzed on its own.
 */
#ifndef IMC_ACCESS_H
#define IMC_ACCESS_H

#include <apr_pools.h>
#include <apr_tables.h>

/* Longest principal, in bytes. */
#define IMC_ACCESS_MAX_PRINCIPAL 1024
/* Longest line, in bytes. */
#define IMC_ACCESS_MAX_LINE (1024 * 1024)

typedef struct imc_access imc_access;
typedef struct imc_access_grant imc_access_grant;

/*
 * Parse the text of an access file (len bytes, need not be NUL-terminated);
 * name is the file's name for messages. Returns APR_SUCCESS with *acc, or
 * APR_EINVAL with *why set to "name:line: what is wrong" (it quotes no byte
 * of the file). Memory comes from p.
 */
apr_status_t imc_access_parse(imc_access **acc, apr_pool_t *p, const char *name,
                              const char *text, apr_size_t len,
                              const char **why);

/*
 * Read and parse the file at path. On error *why names the file (and the
 * line, for a bad line, or the system's reason it could not be read).
 */
apr_status_t imc_access_load(imc_access **acc, apr_pool_t *p, const char *path,
                             const char **why);

/* The number of principals in acc. */
int imc_access_count(const imc_access *acc);

/* The principals of acc (const char *), in no order, allocated from p. */
apr_array_header_t *imc_access_principals(const imc_access *acc, apr_pool_t *p);

/* The grant of principal (NULL: none, also for a NULL principal). */
const imc_access_grant *imc_access_lookup(const imc_access *acc,
                                          const char *principal);

/* Whether the grant covers every site ("*"). */
int imc_access_all_sites(const imc_access_grant *g);

/* Whether g may write and read site, a canonical lower-case UUID. */
int imc_access_may(const imc_access_grant *g, const char *site);

/*
 * The SQL condition that narrows a report to g's sites, over the trusted
 * column expression column: "1" for every site, else
 * "(COLUMN IN (toUUID('<uuid>'), ...))" with canonical UUIDs, in sorted
 * order, from the file and never from a request. Allocated from p.
 */
const char *imc_access_clause(apr_pool_t *p, const imc_access_grant *g,
                              const char *column);

#endif /* IMC_ACCESS_H */
