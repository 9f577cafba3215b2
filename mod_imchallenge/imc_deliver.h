/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_deliver: the delivery worker. Every child process runs one thread per
 * spool directory; the thread that holds the directory's deliverer lock
 * sends the spool to ClickHouse in batches, oldest events first across all
 * segments, retries with capped exponential back-off and jitter (a batch
 * whose fate is unknown is sent again as it was, with its deduplication
 * token), quarantines what ClickHouse can never take, pings ClickHouse for
 * readiness, applies the schema and logs the backlog while deliveries
 * fail. A stopping child delivers for up to GracefulShutdownTimeout less
 * 2 s, then leaves the rest in the spool.
 */
#ifndef IMC_DELIVER_H
#define IMC_DELIVER_H

#include <httpd.h>

void imc_deliver_child_init(apr_pool_t *pchild, server_rec *s);

/* Now on CLOCK_MONOTONIC, in microseconds: the clock of the deliverer's
 * intervals, of the ClickHouse gauges (IMC_G_CLICKHOUSE_OK / _FAIL) and of
 * the report slots' ages (imc_slots). */
apr_time_t imc_deliver_clock(void);

/*
 * The number of batches this process's delivery threads have committed
 * (stored or quarantined) so far, for imc_deliver_wait_commit().
 */
apr_uint64_t imc_deliver_commits(void);

/*
 * Wait until this process commits a batch after imc_deliver_commits()
 * returned seen, or until timeout; returns 1 when woken by a commit. The
 * spool of a directory is delivered by whichever process holds its lock,
 * so a caller waiting for a batch of another process rechecks on the
 * timeout.
 */
int imc_deliver_wait_commit(apr_uint64_t seen, apr_interval_time_t timeout);

/* ClickHouse answered within this long: ready. */
#define IMC_DELIVER_READY_WINDOW apr_time_from_sec(5)

#endif /* IMC_DELIVER_H */
