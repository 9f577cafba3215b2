/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_health: the imchallenge-health handler (README "Health, status,
 * metrics"): liveness (.../healthz), readiness (.../readyz) and delivery
 * status (.../status).
 */
#ifndef IMC_HEALTH_H
#define IMC_HEALTH_H

#include <httpd.h>

int imc_health_handler(request_rec *r);

#endif /* IMC_HEALTH_H */
