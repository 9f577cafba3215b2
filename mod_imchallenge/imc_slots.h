/* Licensed under the Apache License, Version 2.0. */

/*
 * imc_slots: the cap on a server's concurrent reports across all httpd
 * processes (IMChallengeMaxReports). One shared memory segment, made in
 * post_config and inherited by the children, holds every server's slots.
 * A slot is one 64-bit word: 0 when free, else the holder's pid (high 32
 * bits) and the second it was taken (low 32 bits, on the monotonic clock,
 * which steps of the wall clock leave alone), taken and given back with
 * compare-and-swap, no lock. A slot whose process is gone, or that
 * was taken more than twice the server's IMChallengeTimeout ago, is free:
 * a child killed while it held one leaks it for that long at most.
 */
#ifndef IMC_SLOTS_H
#define IMC_SLOTS_H

#include <httpd.h>

typedef struct {
    apr_uint64_t *word; /* NULL: no slot was needed (no segment) */
    apr_uint64_t value;
} imc_slot;

/* Makes the segment with IMChallengeMaxReports slots for each server. */
apr_status_t imc_slots_post_config(apr_pool_t *pconf, server_rec *s);

/* Takes one of s's slots into *slot; APR_EBUSY when every one is held. */
apr_status_t imc_slots_take(server_rec *s, imc_slot *slot);

/* Gives the slot back (nothing when it was taken over as stale). */
void imc_slots_give_back(imc_slot *slot);

#endif /* IMC_SLOTS_H */
