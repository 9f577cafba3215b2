/* Licensed under the Apache License, Version 2.0. */

/*
 * Private declarations shared by the files of mod_imchallenge that include
 * httpd headers: the module record and its log numbers.
 */
#ifndef IMC_PRIVATE_H
#define IMC_PRIVATE_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>

extern module AP_MODULE_DECLARE_DATA imchallenge_module;

/* mod_imchallenge.c declares the module with AP_DECLARE_MODULE, which
 * already says this. */
#if defined(APLOG_USE_MODULE) && !defined(IMC_MODULE_RECORD)
APLOG_USE_MODULE(imchallenge);
#endif

/* The module's own log message numbers, "IMC00001" ... */
#define IMC_LOGNO(n) "IMC" #n ": "

#endif /* IMC_PRIVATE_H */
