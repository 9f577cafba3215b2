/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_scache: a cache of byte strings in one block of memory that every
 * process mapping it shares (the report's cache, IMChallengeReportCache).
 *
 * The block holds a header with a process-shared robust mutex, a hash
 * index and a ring of records. A record is its key, a 64-bit tag (the
 * caller's fingerprint: a lookup names the tag it wants, and a record of
 * another tag is a miss) and its value. New records go at the ring's
 * head; the oldest go first when it is full. A record found in the older
 * half of the ring is written again at the head, so that what readers use
 * stays and what nobody asked for goes: least recently used first, to
 * within half the ring.
 *
 * Every access holds the mutex only while it copies bytes in or out;
 * nothing else is done under it. A process killed while holding it
 * (kill -9 in the middle of a copy) leaves it to the next taker with
 * EOWNERDEAD: the cache is then emptied, so no reader ever takes a half
 * written record for a valid one.
 *
 * APR and pthreads only, no httpd headers; the block may be any memory
 * (shared memory of httpd's parent, or plain memory in the unit tests).
 */
#ifndef IMC_SCACHE_H
#define IMC_SCACHE_H

#include <apr_pools.h>

/* The smallest block a cache is made in. */
#define IMC_SCACHE_MIN_SIZE ((apr_size_t)64 * 1024)

typedef struct imc_scache imc_scache;

/* A value in pieces, stored joined in their order. */
typedef struct {
    const void *data;
    apr_size_t len;
} imc_scache_piece;

typedef struct {
    apr_size_t size;  /* of the block */
    apr_size_t bytes; /* records held (keys, values, headers) */
    apr_uint64_t entries, evictions, resets;
} imc_scache_stats;

/* Makes an empty cache in the size bytes at mem (size at least
 * IMC_SCACHE_MIN_SIZE). */
apr_status_t imc_scache_format(imc_scache **cache, void *mem, apr_size_t size);

/* The cache formatted at mem for size bytes, or NULL if there is none. */
imc_scache *imc_scache_attach(void *mem, apr_size_t size);

/*
 * The value kept under key with tag, copied into p (its length in *len;
 * the copy is followed by a NUL not counted), or NULL.
 */
void *imc_scache_get(imc_scache *cache, apr_pool_t *p, const void *key,
                     apr_size_t klen, apr_uint64_t tag, apr_size_t *len);

/*
 * Keeps the pieces joined under key and tag, in place of any value of
 * key. Returns 0 (and keeps nothing, the old value gone too) when the
 * record would take more than a quarter of the ring.
 */
int imc_scache_put(imc_scache *cache, const void *key, apr_size_t klen,
                   apr_uint64_t tag, const imc_scache_piece *pieces, int n);

/* The largest value imc_scache_put keeps under a key of klen bytes. */
apr_size_t imc_scache_max_value(const imc_scache *cache, apr_size_t klen);

void imc_scache_stats_get(imc_scache *cache, imc_scache_stats *st);

#endif /* IMC_SCACHE_H */
