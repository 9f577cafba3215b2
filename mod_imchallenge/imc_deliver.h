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
 * intervals and of the ClickHouse gauges (IMC_G_CLICKHOUSE_OK / _FAIL). */
apr_time_t imc_deliver_clock(void);

/* ClickHouse answered within this long: ready. */
#define IMC_DELIVER_READY_WINDOW apr_time_from_sec(5)

#endif /* IMC_DELIVER_H */
