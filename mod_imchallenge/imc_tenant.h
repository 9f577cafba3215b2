/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_tenant: the request side of IMChallengeSiteAccess and
 * IMChallengeRateLimit (README "Tenants and limits"): who the principal
 * is, what it may write and read, and the shared-memory token buckets with
 * their cross-process lock. The handlers make one call each; the rules
 * live in imc_access and imc_ratelimit.
 */
#ifndef IMC_TENANT_H
#define IMC_TENANT_H

#include <httpd.h>

#include "imc_access.h"
#include "imc_event.h"

/* post_config: the buckets' shared memory and its lock, when a server
 * has IMChallengeRateLimit. */
apr_status_t imc_tenant_post_config(apr_pool_t *pconf, server_rec *s);

/*
 * Event handler, before the body is read: *g is the principal's grant
 * (NULL without IMChallengeSiteAccess: every site). Returns DECLINED to go
 * on, or what the handler returns after a 403 answered here.
 */
int imc_tenant_admit(request_rec *r, const imc_access_grant **g);

/*
 * Event handler, after the events are parsed: every event's site must be
 * g's (else 403 naming the first event that is not), then the rate limit
 * must let all of them pass (else 429 + Retry-After). Returns DECLINED to
 * store them, or what the handler returns after an answer here.
 */
int imc_tenant_admit_events(request_rec *r, const imc_access_grant *g,
                            const imc_event_batch *b);

/*
 * Report handler: narrows *where (SQL over site_id) to the principal's
 * sites, and sets *grant to them (NULL: every site), for rows the report
 * filters itself (imc_access_may). Returns DECLINED to go on, or what the
 * handler returns after a 403 answered here.
 */
int imc_tenant_narrow(request_rec *r, const char **where,
                      const imc_access_grant **grant);

#endif /* IMC_TENANT_H */
