/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_ratelimit: token buckets of IMChallengeRateLimit (README "Tenants and
 * limits") in one fixed-size table, laid out in memory the caller gives
 * (shared memory, so that all httpd processes share the buckets).
 *
 * A bucket holds up to burst events and fills at rate events a second; a
 * request of n events passes when the bucket holds n, and takes them. A
 * request of more than burst events passes only from a full bucket and
 * leaves a debt, so that the long-run rate holds for big batches too.
 *
 * Keys are hashed with SipHash-2-4 under a random secret kept in the table,
 * so that no client can choose keys that share another's bucket. The table
 * is set-associative (IMC_RATELIMIT_WAYS buckets per set): a new key takes
 * a free bucket of its set, else the one fullest now. Pushing out a bucket
 * that is not full loses what it owes, so each set keeps the lowest level
 * of what it pushed out (filling at the same rate) and a new key of the set
 * starts at that level: a key pushed out comes back with no more than it
 * left with, never with a fresh burst.
 *
 * No locking here: the caller serialises calls on one table. APR only.
 */
#ifndef IMC_RATELIMIT_H
#define IMC_RATELIMIT_H

#include <apr_time.h>

#define IMC_RATELIMIT_WAYS 8

typedef struct imc_ratelimit imc_ratelimit;

/* Bytes of a table of (at least) slots buckets. */
apr_size_t imc_ratelimit_size(int slots);

/* Lays out an empty table of slots buckets in mem (imc_ratelimit_size
 * bytes), with secret (16 bytes) for the key hash. */
imc_ratelimit *imc_ratelimit_init(void *mem, int slots,
                                  const unsigned char secret[16]);

/* The table laid out in mem before (by this or another process). */
imc_ratelimit *imc_ratelimit_attach(void *mem);

/*
 * Takes n events for key (klen bytes) at now from a bucket of rate events a
 * second holding at most burst. Returns 1 when they pass; else 0 with
 * *retry_after the whole seconds (>= 1) until they would.
 */
int imc_ratelimit_take(imc_ratelimit *t, const char *key, apr_size_t klen,
                       double rate, double burst, int n, apr_time_t now,
                       int *retry_after);

/* SipHash-2-4 of data under key (16 bytes). */
apr_uint64_t imc_ratelimit_siphash(const unsigned char key[16],
                                   const void *data, apr_size_t len);

#endif /* IMC_RATELIMIT_H */
