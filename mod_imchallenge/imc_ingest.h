/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_ingest: the imchallenge-event handler (README "Events"): method and
 * content type, the capped body read, the three request forms, all or
 * nothing, the spool append before the acknowledgement, ?wait=1.
 */
#ifndef IMC_INGEST_H
#define IMC_INGEST_H

#include <httpd.h>

/* Open this process's spool writers, one per spool directory. */
void imc_ingest_child_init(apr_pool_t *pchild, server_rec *s);

int imc_ingest_handler(request_rec *r);

#endif /* IMC_INGEST_H */
