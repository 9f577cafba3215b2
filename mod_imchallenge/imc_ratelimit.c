/* Licensed under the Apache License, Version 2.0. */

#include <string.h>

#include "imc_ratelimit.h"

#define MAGIC 0x696d6372u /* "imcr" */

typedef struct {
    apr_uint64_t key; /* the key's hash; 0: free */
    double tokens;    /* at `at` */
    apr_time_t at;
} bucket_t;

/* The lowest level of the buckets a set pushed out, at `at`. */
typedef struct {
    double low;
    apr_time_t at;
    int valid;
} floor_t;

struct imc_ratelimit {
    apr_uint32_t magic;
    apr_uint32_t nsets;
    unsigned char secret[16];
    /* then floor_t floors[nsets], bucket_t buckets[nsets * WAYS] */
};

#define HEADER_SIZE APR_ALIGN_DEFAULT(sizeof(struct imc_ratelimit))
#define FLOORS(t)   ((floor_t *)((char *)(t) + HEADER_SIZE))
#define BUCKETS(t)                                                             \
    ((bucket_t *)((char *)(t) + HEADER_SIZE +                                  \
                  APR_ALIGN_DEFAULT(sizeof(floor_t) * (t)->nsets)))

static apr_uint32_t sets_for(int slots)
{
    int n = (slots + IMC_RATELIMIT_WAYS - 1) / IMC_RATELIMIT_WAYS;

    return n > 0 ? (apr_uint32_t)n : 1;
}

apr_size_t imc_ratelimit_size(int slots)
{
    apr_uint32_t nsets = sets_for(slots);

    return HEADER_SIZE + APR_ALIGN_DEFAULT(sizeof(floor_t) * nsets) +
           sizeof(bucket_t) * nsets * IMC_RATELIMIT_WAYS;
}

imc_ratelimit *imc_ratelimit_init(void *mem, int slots,
                                  const unsigned char secret[16])
{
    imc_ratelimit *t = mem;

    memset(mem, 0, imc_ratelimit_size(slots));
    t->nsets = sets_for(slots);
    memcpy(t->secret, secret, sizeof(t->secret));
    t->magic = MAGIC;
    return t;
}

imc_ratelimit *imc_ratelimit_attach(void *mem)
{
    imc_ratelimit *t = mem;

    return t->magic == MAGIC ? t : NULL;
}

/* ---- SipHash-2-4 (Aumasson, Bernstein) -------------------------------- */

#define ROTL(x, b) (apr_uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1;                                                              \
        v1 = ROTL(v1, 13);                                                     \
        v1 ^= v0;                                                              \
        v0 = ROTL(v0, 32);                                                     \
        v2 += v3;                                                              \
        v3 = ROTL(v3, 16);                                                     \
        v3 ^= v2;                                                              \
        v0 += v3;                                                              \
        v3 = ROTL(v3, 21);                                                     \
        v3 ^= v0;                                                              \
        v2 += v1;                                                              \
        v1 = ROTL(v1, 17);                                                     \
        v1 ^= v2;                                                              \
        v2 = ROTL(v2, 32);                                                     \
    } while (0)

static apr_uint64_t load64(const unsigned char *p)
{
    apr_uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; --i) {
        v = (v << 8) | p[i];
    }
    return v;
}

apr_uint64_t imc_ratelimit_siphash(const unsigned char key[16],
                                   const void *data, apr_size_t len)
{
    const unsigned char *in = data, *end = in + (len - len % 8);
    apr_uint64_t k0 = load64(key), k1 = load64(key + 8);
    apr_uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    apr_uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    apr_uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    apr_uint64_t v3 = 0x7465646279746573ULL ^ k1;
    apr_uint64_t b = ((apr_uint64_t)len) << 56, m;
    int i;

    for (; in != end; in += 8) {
        m = load64(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (i = (int)(len % 8) - 1; i >= 0; --i) {
        b |= ((apr_uint64_t)in[i]) << (8 * i);
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- buckets ----------------------------------------------------------- */

/* What a level of tokens at `at` has become at now. */
static double level(double tokens, apr_time_t at, double rate, double burst,
                    apr_time_t now)
{
    double v = tokens;

    if (now > at) {
        v += rate * (double)(now - at) / (double)APR_USEC_PER_SEC;
    }
    return v < burst ? v : burst;
}

/* The bucket of h in its set: found, or taken for it. */
static bucket_t *bucket_of(imc_ratelimit *t, apr_uint64_t h, double rate,
                           double burst, apr_time_t now)
{
    apr_uint32_t set = (apr_uint32_t)((h >> 32) % t->nsets);
    bucket_t *ways = BUCKETS(t) + (apr_size_t)set * IMC_RATELIMIT_WAYS;
    floor_t *fl = &FLOORS(t)[set];
    bucket_t *victim = NULL;
    double best = 0, v, start = burst;
    int i;

    for (i = 0; i < IMC_RATELIMIT_WAYS; ++i) {
        if (ways[i].key == h) {
            return &ways[i];
        }
    }
    for (i = 0; i < IMC_RATELIMIT_WAYS && !victim; ++i) {
        if (ways[i].key == 0) {
            victim = &ways[i];
        }
    }
    if (!victim) {
        for (i = 0; i < IMC_RATELIMIT_WAYS; ++i) {
            v = level(ways[i].tokens, ways[i].at, rate, burst, now);
            if (!victim || v > best) {
                victim = &ways[i];
                best = v;
            }
        }
        if (best < burst) {
            v = fl->valid ? level(fl->low, fl->at, rate, burst, now) : burst;
            fl->low = v < best ? v : best;
            fl->at = now;
            fl->valid = 1;
        }
    }
    if (fl->valid) {
        start = level(fl->low, fl->at, rate, burst, now);
        if (start >= burst) {
            fl->valid = 0;
        }
    }
    victim->key = h;
    victim->tokens = start;
    victim->at = now;
    return victim;
}

int imc_ratelimit_take(imc_ratelimit *t, const char *key, apr_size_t klen,
                       double rate, double burst, int n, apr_time_t now,
                       int *retry_after)
{
    apr_uint64_t h = imc_ratelimit_siphash(t->secret, key, klen);
    bucket_t *b;
    double tokens, need, secs;

    if (h == 0) {
        h = 1;
    }
    b = bucket_of(t, h, rate, burst, now);
    tokens = level(b->tokens, b->at, rate, burst, now);
    b->at = now > b->at ? now : b->at;
    need = n > burst ? burst : (double)n;
    if (tokens >= need) {
        b->tokens = tokens - n;
        return 1;
    }
    b->tokens = tokens;
    secs = (need - tokens) / rate;
    *retry_after =
        secs >= 86400 ? 86400 : (int)secs + ((double)(int)secs < secs);
    if (*retry_after < 1) {
        *retry_after = 1;
    }
    return 0;
}
