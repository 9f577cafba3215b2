/* Licensed under the Apache License, Version 2.0. */

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <apr_hash.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "imc_private.h"
#include "imc_config.h"
#include "imc_deliver.h"
#include "imc_slots.h"

/* A server's slots in the segment. */
typedef struct {
    apr_size_t first;
    int n;
} slot_range;

static apr_uint64_t *words; /* the segment; NULL: no cap */
static apr_hash_t *ranges;  /* const imc_config * -> slot_range */

apr_status_t imc_slots_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_size_t total = 0;
    apr_shm_t *shm;
    apr_status_t rv;
    server_rec *v;

    words = NULL;
    ranges = apr_hash_make(pconf);
    for (v = s; v; v = v->next) {
        const imc_config *c = imc_config_get(v);
        slot_range *rg;

        if (apr_hash_get(ranges, &c, sizeof(c))) {
            continue;
        }
        rg = apr_palloc(pconf, sizeof(*rg));
        rg->first = total;
        rg->n = imc_config_max_reports(c);
        total += (apr_size_t)rg->n;
        apr_hash_set(ranges, apr_pmemdup(pconf, &c, sizeof(c)), sizeof(c), rg);
    }
    /* The generation's pool: a restart starts with free slots, while the
     * old generation's children finish with the segment they inherited. */
    rv = apr_shm_create(&shm, total * sizeof(*words), NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     IMC_LOGNO(00421) "cannot create the shared memory for "
                                      "IMChallengeMaxReports");
        return rv;
    }
    words = apr_shm_baseaddr_get(shm);
    memset(words, 0, total * sizeof(*words));
    return APR_SUCCESS;
}

/* Whether the holder of word (taken at its low 32 bits, a second of
 * imc_deliver_clock) no longer counts at second now: gone, or older than
 * limit seconds. */
static int stale(apr_uint64_t word, apr_uint32_t now, apr_uint32_t limit)
{
    pid_t pid = (pid_t)(word >> 32);

    if ((apr_int32_t)(now - (apr_uint32_t)word) > (apr_int32_t)limit) {
        return 1;
    }
    return kill(pid, 0) == -1 && errno == ESRCH;
}

apr_status_t imc_slots_take(server_rec *s, imc_slot *slot)
{
    const imc_config *c = imc_config_get(s);
    const slot_range *rg;
    /* the monotonic clock, which all processes share and no step of the
     * wall clock moves: a step forward would make every slot old at once */
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(imc_deliver_clock());
    apr_uint32_t limit = (apr_uint32_t)apr_time_sec(2 * imc_config_timeout(c) +
                                                    APR_USEC_PER_SEC - 1);
    apr_uint64_t mine = ((apr_uint64_t)(apr_uint32_t)getpid() << 32) | now;
    int i;

    slot->word = NULL;
    if (!words || !(rg = apr_hash_get(ranges, &c, sizeof(c)))) {
        return APR_SUCCESS;
    }
    for (i = 0; i < rg->n; ++i) {
        apr_uint64_t *w = &words[rg->first + (apr_size_t)i];
        apr_uint64_t cur = __atomic_load_n(w, __ATOMIC_ACQUIRE);

        if (cur && !stale(cur, now, limit)) {
            continue;
        }
        if (__atomic_compare_exchange_n(w, &cur, mine, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            slot->word = w;
            slot->value = mine;
            return APR_SUCCESS;
        }
    }
    return APR_EBUSY;
}

void imc_slots_give_back(imc_slot *slot)
{
    apr_uint64_t expected = slot->value;

    if (slot->word) {
        __atomic_compare_exchange_n(slot->word, &expected, 0, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        slot->word = NULL;
    }
}
