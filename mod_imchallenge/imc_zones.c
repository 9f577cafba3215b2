/* Licensed under the Apache License, Version 2.0. */

#include <string.h>

#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "imc_zone.h"
#include "imc_zones.h"

#define ZONEINFO "/usr/share/zoneinfo/"
/* Configurations remembered per process, and zones per configuration. */
#define KEYS  16
#define ZONES 32
/* Zones kept loaded per process (imc_zones_load). */
#define LOADED 64

typedef enum { PROBE_UNKNOWN = 0, PROBE_LISTS, PROBE_NO_LIST } probe_state;

typedef struct {
    const void *key; /* NULL: an unused entry */
    probe_state probe;
    char zones[ZONES][IMC_ZONE_MAX_NAME + 1];
    int next; /* the zone slot written next, round robin */
} zone_memory;

static apr_thread_mutex_t *lock; /* NULL: nothing is remembered */
static zone_memory memory[KEYS]; /* under lock */
/* The zones loaded, by name, each in a pool of its own under loaded_pool
 * (which has an allocator of its own: it is only used under lock). */
static apr_pool_t *loaded_pool;
static apr_hash_t *loaded;

/* pchild's end: what it held is gone. */
static apr_status_t forget(void *data)
{
    (void)data;
    lock = NULL;
    loaded = NULL;
    loaded_pool = NULL;
    return APR_SUCCESS;
}

apr_status_t imc_zones_child_init(apr_pool_t *pchild)
{
    apr_allocator_t *alloc = NULL;
    apr_status_t rv =
        apr_thread_mutex_create(&lock, APR_THREAD_MUTEX_DEFAULT, pchild);

    if (rv == APR_SUCCESS &&
        (rv = apr_allocator_create(&alloc)) == APR_SUCCESS &&
        (rv = apr_pool_create_ex(&loaded_pool, pchild, NULL, alloc)) ==
            APR_SUCCESS) {
        apr_allocator_owner_set(alloc, loaded_pool);
        loaded = apr_hash_make(loaded_pool);
    } else if (alloc) {
        apr_allocator_destroy(alloc);
    }
    if (rv != APR_SUCCESS) {
        lock = NULL;
    }
    apr_pool_cleanup_register(pchild, NULL, forget, apr_pool_cleanup_null);
    memset(memory, 0, sizeof(memory));
    return rv;
}

apr_status_t imc_zones_load(const imc_zone **zone, apr_pool_t *p,
                            const char *tz)
{
    apr_pool_t *own;
    imc_zone *z = NULL;
    apr_status_t rv = APR_SUCCESS;
    int tried = 0;

    *zone = NULL;
    if (lock) {
        apr_thread_mutex_lock(lock);
        if ((*zone = apr_hash_get(loaded, tz, APR_HASH_KEY_STRING)) == NULL &&
            apr_hash_count(loaded) < LOADED &&
            apr_pool_create(&own, loaded_pool) == APR_SUCCESS) {
            tried = 1;
            if ((rv = imc_zone_load(&z, own, tz)) == APR_SUCCESS) {
                apr_hash_set(loaded, apr_pstrdup(own, tz), APR_HASH_KEY_STRING,
                             z);
                *zone = z;
            } else {
                apr_pool_destroy(own); /* nothing kept of a bad name */
            }
        }
        apr_thread_mutex_unlock(lock);
        if (*zone || tried) {
            return rv;
        }
    }
    rv = imc_zone_load(&z, p, tz);
    *zone = z;
    return rv;
}

/* A compiled zone file (magic "TZif") in the zone database, so that text
 * files such as leapseconds are no zones. The right/ variants count leap
 * seconds, which ClickHouse cannot load. */
static int in_zoneinfo(apr_pool_t *p, const char *tz)
{
    apr_file_t *f;
    char magic[4];
    apr_size_t n = 0;
    apr_status_t rv;

    if (apr_file_open(&f, apr_pstrcat(p, ZONEINFO, tz, NULL), APR_FOPEN_READ,
                      APR_FPROT_OS_DEFAULT, p) != APR_SUCCESS) {
        return 0;
    }
    rv = apr_file_read_full(f, magic, sizeof(magic), &n);
    apr_file_close(f);
    return rv == APR_SUCCESS && n == sizeof(magic) &&
           !memcmp(magic, "TZif", sizeof(magic));
}

/* key's entry, made when there is room (lock held); NULL when full. */
static zone_memory *entry(const void *key)
{
    int i;

    for (i = 0; i < KEYS; ++i) {
        if (memory[i].key == key) {
            return &memory[i];
        }
    }
    for (i = 0; i < KEYS; ++i) {
        if (!memory[i].key) {
            memory[i].key = key;
            return &memory[i];
        }
    }
    return NULL;
}

/* What the memory says of key and tz: *probe, and whether tz is known. */
static int recall(const void *key, const char *tz, probe_state *probe)
{
    zone_memory *m;
    int i, found = 0;

    *probe = PROBE_UNKNOWN;
    if (!lock) {
        return 0;
    }
    apr_thread_mutex_lock(lock);
    if ((m = entry(key)) != NULL) {
        *probe = m->probe;
        for (i = 0; i < ZONES && !found; ++i) {
            found = !strcmp(m->zones[i], tz);
        }
    }
    apr_thread_mutex_unlock(lock);
    return found;
}

/* Remembers key's probe and, when not NULL, tz as known. */
static void remember(const void *key, probe_state probe, const char *tz)
{
    zone_memory *m;

    if (!lock) {
        return;
    }
    apr_thread_mutex_lock(lock);
    if ((m = entry(key)) != NULL) {
        m->probe = probe;
        if (tz) {
            apr_cpystrn(m->zones[m->next], tz, sizeof(m->zones[0]));
            m->next = (m->next + 1) % ZONES;
        }
    }
    apr_thread_mutex_unlock(lock);
}

/* The single number ClickHouse answers sql with into *n. */
static apr_status_t ask_count(apr_pool_t *p, imc_clickhouse *ch,
                              const char *sql, int *n)
{
    imc_clickhouse_result res;
    apr_status_t rv = imc_clickhouse_query(ch, p, sql, NULL, &res);

    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (!strcmp(res.body, "0\n") || !strcmp(res.body, "1\n")) {
        *n = res.body[0] - '0';
        return APR_SUCCESS;
    }
    return APR_EGENERAL;
}

int imc_zones_known(apr_pool_t *p, const void *key, imc_clickhouse *ch,
                    const char *tz)
{
    probe_state probe;
    int n, known;

    if (!strcmp(tz, "UTC") || recall(key, tz, &probe)) {
        return 1;
    }
    if (probe == PROBE_UNKNOWN &&
        ask_count(p, ch,
                  "SELECT count() FROM system.tables WHERE database = "
                  "'system' AND name = 'time_zones' FORMAT TabSeparated",
                  &n) == APR_SUCCESS) {
        probe = n ? PROBE_LISTS : PROBE_NO_LIST;
    }
    if (probe == PROBE_LISTS &&
        ask_count(p, ch,
                  apr_pstrcat(p,
                              "SELECT count() FROM system.time_zones WHERE "
                              "time_zone = '",
                              tz, "' FORMAT TabSeparated", NULL),
                  &n) == APR_SUCCESS) {
        known = n > 0;
    } else {
        known = in_zoneinfo(p, tz);
    }
    remember(key, probe, known ? tz : NULL);
    return known;
}
