/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_home: the imchallenge-home handler, the dashboard page (home.html,
 * embedded at build time).
 */
#ifndef IMC_HOME_H
#define IMC_HOME_H

#include <httpd.h>

int imc_home_handler(request_rec *r);

#endif /* IMC_HOME_H */
