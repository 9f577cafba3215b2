/* Licensed under the Apache License, Version 2.0. */

/*
 * libFuzzer target for imc_access_parse.
 *
 * For every input: parsing twice gives the same answer. When refused, the
 * message is "name:LINE: ..." with a line within the input. When accepted,
 * every principal's clause is "1" or an IN list of canonical
 * toUUID('<lower-case uuid>') items only, and each listed site is one the
 * grant allows. Any violation aborts.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "imc_access.h"
#include "fuzz_common.h"

static int is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Checks a clause of canonical items; each site must be allowed by g. */
static void check_clause(apr_pool_t *p, const imc_access_grant *g)
{
    const char *c = imc_access_clause(p, g, "site_id"), *s;
    char site[37];
    int k;

    if (imc_access_all_sites(g)) {
        must(!strcmp(c, "1"));
        return;
    }
    must(!strncmp(c, "(site_id IN (", 13));
    for (s = c + 13;; s += 2) {
        must(!strncmp(s, "toUUID('", 8));
        for (k = 0; k < 36; ++k) {
            char ch = s[8 + k];

            must((k == 8 || k == 13 || k == 18 || k == 23) ? ch == '-'
                                                           : is_hex_lower(ch));
            site[k] = ch;
        }
        site[36] = '\0';
        must(imc_access_may(g, site));
        s += 8 + 36;
        must(s[0] == '\'' && s[1] == ')');
        s += 2;
        if (!strcmp(s, "))")) {
            break;
        }
        must(s[0] == ',' && s[1] == ' ');
    }
}

static int count_lines(const uint8_t *data, size_t size)
{
    int n = size ? 1 : 0;
    size_t i;

    for (i = 0; i < size; ++i) {
        n += data[i] == '\n' && i + 1 < size;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    imc_access *a1 = NULL, *a2 = NULL;
    const char *why1 = NULL, *why2 = NULL;
    apr_status_t rv1, rv2;

    if (apr_pool_create(&p, root) != APR_SUCCESS) {
        abort();
    }
    rv1 = imc_access_parse(&a1, p, "f", (const char *)data, size, &why1);
    rv2 = imc_access_parse(&a2, p, "f", (const char *)data, size, &why2);
    must(rv1 == rv2);
    if (rv1 != APR_SUCCESS) {
        char *end = NULL;
        long line;

        must(rv1 == APR_EINVAL && why1 && why2 && !strcmp(why1, why2));
        must(!strncmp(why1, "f:", 2));
        line = strtol(why1 + 2, &end, 10);
        must(line >= 1 && line <= count_lines(data, size) &&
             !strncmp(end, ": ", 2));
    } else {
        apr_array_header_t *names = imc_access_principals(a1, p);
        int i;

        must(imc_access_count(a1) == imc_access_count(a2));
        must(names->nelts == imc_access_count(a1));
        for (i = 0; i < names->nelts; ++i) {
            const char *name = APR_ARRAY_IDX(names, i, const char *);
            const imc_access_grant *g = imc_access_lookup(a1, name);

            must(g != NULL && imc_access_lookup(a2, name) != NULL);
            must(*name && strlen(name) <= IMC_ACCESS_MAX_PRINCIPAL);
            check_clause(p, g);
        }
    }
    apr_pool_destroy(p);
    return 0;
}
