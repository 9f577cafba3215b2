/* Licensed under the Apache License, Version 2.0. */

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "imc_scache.h"

#define MAGIC   APR_UINT64_C(0x696d6373636163) /* "imcscac" */
#define LIVE    1u
#define PADDING 2u

/*
 * Positions in the ring are logical: they only grow, and a position's
 * byte is at (position % ring) in the ring's memory. The records held lie
 * in [tail, head); a record never wraps around the ring's end: the bytes
 * left before it are padding (a PADDING record, or nothing when fewer
 * than a header's size are left).
 */
struct imc_scache {
    apr_uint64_t magic;
    apr_uint64_t size; /* of the block */
    apr_uint64_t ring; /* bytes of the ring */
    apr_uint64_t nbuckets;
    apr_uint64_t head, tail;
    apr_uint64_t live, entries, evictions, resets;
    pthread_mutex_t lock;
    /* then apr_uint64_t buckets[nbuckets] (a record's position + 1, 0:
     * none), then the ring */
};

typedef struct {
    apr_uint64_t len; /* of the record, header included, a multiple of 8 */
    apr_uint64_t hash, tag;
    apr_uint64_t next; /* the next record of its bucket: position + 1 */
    apr_uint64_t vlen;
    apr_uint32_t klen, flags;
    /* then the key, then the value */
} record;

#define ALIGN8(n)        (((n) + 7) & ~(apr_uint64_t)7)
#define HEADER           ALIGN8(sizeof(struct imc_scache))
#define BUCKETS(c)       ((apr_uint64_t *)((char *)(c) + HEADER))
#define RING(c)          ((char *)(c) + HEADER + (c)->nbuckets * 8)
#define AT(c, pos)       ((record *)(RING(c) + (pos) % (c)->ring))
#define RECORD_LEN(k, v) ALIGN8(sizeof(record) + (k) + (v))

/* A record of every 512 bytes of ring may be found in one probe. */
static apr_uint64_t buckets_for(apr_size_t size)
{
    apr_uint64_t n = 1;

    while (n * 1024 < size) {
        n <<= 1;
    }
    return n;
}

static apr_uint64_t hash_key(const void *key, apr_size_t klen)
{
    const unsigned char *k = key;
    apr_uint64_t h = APR_UINT64_C(0xcbf29ce484222325);
    apr_size_t i;

    for (i = 0; i < klen; ++i) {
        h = (h ^ k[i]) * APR_UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= APR_UINT64_C(0xff51afd7ed558ccd);
    return h ^ (h >> 33);
}

static void empty(imc_scache *c)
{
    memset(BUCKETS(c), 0, c->nbuckets * 8);
    c->head = c->tail = 0;
    c->live = c->entries = 0;
}

static int lock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int e;

    if ((e = pthread_mutexattr_init(&attr)) != 0) {
        return e;
    }
    if ((e = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED)) ==
            0 &&
        (e = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST)) == 0) {
        e = pthread_mutex_init(m, &attr);
    }
    pthread_mutexattr_destroy(&attr);
    return e;
}

/* Takes the lock; a holder that died leaves the cache emptied. */
static int lock_take(imc_scache *c)
{
    int e = pthread_mutex_lock(&c->lock);

    if (e == EOWNERDEAD) {
        empty(c);
        ++c->resets;
        e = pthread_mutex_consistent(&c->lock);
    }
    return e == 0;
}

apr_status_t imc_scache_format(imc_scache **cache, void *mem, apr_size_t size)
{
    imc_scache *c = mem;
    apr_uint64_t nb = buckets_for(size);
    int e;

    *cache = NULL;
    if (size < IMC_SCACHE_MIN_SIZE || HEADER + nb * 8 + 4096 > size) {
        return APR_EINVAL;
    }
    memset(c, 0, HEADER);
    c->size = size;
    c->nbuckets = nb;
    c->ring = (size - HEADER - nb * 8) & ~(apr_uint64_t)7;
    if ((e = lock_init(&c->lock)) != 0) {
        return APR_FROM_OS_ERROR(e);
    }
    empty(c);
    c->magic = MAGIC;
    *cache = c;
    return APR_SUCCESS;
}

imc_scache *imc_scache_attach(void *mem, apr_size_t size)
{
    imc_scache *c = mem;

    return c->magic == MAGIC && c->size == size ? c : NULL;
}

apr_size_t imc_scache_max_value(const imc_scache *c, apr_size_t klen)
{
    apr_uint64_t most = c->ring / 4;

    return most > sizeof(record) + klen + 8 ? most - sizeof(record) - klen - 8
                                            : 0;
}

/* Takes the record at pos out of its bucket's chain (lock held). */
static void unlink_record(imc_scache *c, apr_uint64_t pos)
{
    record *r = AT(c, pos);
    apr_uint64_t *link = &BUCKETS(c)[r->hash & (c->nbuckets - 1)];

    while (*link) {
        if (*link - 1 == pos) {
            *link = r->next;
            break;
        }
        link = &AT(c, *link - 1)->next;
    }
    r->flags &= ~LIVE;
    c->live -= r->len;
    c->entries -= 1;
}

/* Drops the record at the tail (lock held); 0 when the ring is found
 * damaged (it is then emptied). */
static int drop_tail(imc_scache *c)
{
    apr_uint64_t left = c->ring - c->tail % c->ring;
    record *r;

    if (left < sizeof(record)) {
        c->tail += left;
        return 1;
    }
    r = AT(c, c->tail);
    if (r->len < sizeof(record) || r->len > left || r->len % 8 ||
        c->tail + r->len > c->head) {
        empty(c);
        ++c->resets;
        return 0;
    }
    if (r->flags & LIVE) {
        unlink_record(c, c->tail);
        ++c->evictions;
    }
    c->tail += r->len;
    return 1;
}

/* Room for a record of len bytes at the head, older records dropped as
 * needed; returns its position (lock held). */
static apr_uint64_t make_room(imc_scache *c, apr_uint64_t len)
{
    apr_uint64_t left = c->ring - c->head % c->ring;
    apr_uint64_t pad = left < len ? left : 0;

    while (c->head + pad + len - c->tail > c->ring) {
        if (!drop_tail(c)) {
            left = c->ring;
            pad = 0;
        }
    }
    if (pad >= sizeof(record)) {
        record *r = AT(c, c->head);

        memset(r, 0, sizeof(*r));
        r->len = pad;
        r->flags = PADDING;
    }
    c->head += pad;
    return c->head;
}

/* The live record of key, or NULL (lock held); *pos is its position. */
static record *find(imc_scache *c, const void *key, apr_size_t klen,
                    apr_uint64_t hash, apr_uint64_t *pos)
{
    apr_uint64_t link = BUCKETS(c)[hash & (c->nbuckets - 1)];

    while (link) {
        record *r = AT(c, link - 1);

        if (link - 1 < c->tail || link - 1 >= c->head) {
            return NULL; /* cannot be: the chain is damaged */
        }
        if (r->hash == hash && r->klen == klen && (r->flags & LIVE) &&
            !memcmp(r + 1, key, klen)) {
            *pos = link - 1;
            return r;
        }
        link = r->next;
    }
    return NULL;
}

/* Writes a record at the head (lock held); 0 when it is too big. */
static int put_locked(imc_scache *c, const void *key, apr_size_t klen,
                      apr_uint64_t hash, apr_uint64_t tag,
                      const imc_scache_piece *pieces, int n)
{
    apr_uint64_t vlen = 0, len, pos, *bucket;
    record *r;
    char *at;
    int i;

    if ((r = find(c, key, klen, hash, &pos)) != NULL) {
        unlink_record(c, pos);
    }
    for (i = 0; i < n; ++i) {
        vlen += pieces[i].len;
    }
    if (vlen > imc_scache_max_value(c, klen)) {
        return 0;
    }
    len = RECORD_LEN(klen, vlen);
    pos = make_room(c, len);
    r = AT(c, pos);
    r->len = len;
    r->hash = hash;
    r->tag = tag;
    r->vlen = vlen;
    r->klen = (apr_uint32_t)klen;
    r->flags = LIVE;
    at = (char *)(r + 1);
    memcpy(at, key, klen);
    at += klen;
    for (i = 0; i < n; ++i) {
        if (pieces[i].len) {
            memcpy(at, pieces[i].data, pieces[i].len);
            at += pieces[i].len;
        }
    }
    bucket = &BUCKETS(c)[hash & (c->nbuckets - 1)];
    r->next = *bucket;
    *bucket = pos + 1;
    c->head = pos + len;
    c->live += len;
    c->entries += 1;
    return 1;
}

void *imc_scache_get(imc_scache *c, apr_pool_t *p, const void *key,
                     apr_size_t klen, apr_uint64_t tag, apr_size_t *len)
{
    apr_uint64_t hash = hash_key(key, klen), pos;
    imc_scache_piece piece;
    char *copy = NULL;
    record *r;

    if (!lock_take(c)) {
        return NULL;
    }
    r = find(c, key, klen, hash, &pos);
    if (r && r->tag == tag) {
        copy = apr_palloc(p, r->vlen + 1);
        memcpy(copy, (char *)(r + 1) + klen, r->vlen);
        copy[r->vlen] = '\0';
        *len = r->vlen;
        if (pos - c->tail < (c->head - c->tail) / 2) {
            piece.data = copy; /* in the older half: to the head */
            piece.len = *len;
            put_locked(c, key, klen, hash, tag, &piece, 1);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return copy;
}

int imc_scache_put(imc_scache *c, const void *key, apr_size_t klen,
                   apr_uint64_t tag, const imc_scache_piece *pieces, int n)
{
    int kept;

    if (!lock_take(c)) {
        return 0;
    }
    kept = put_locked(c, key, klen, hash_key(key, klen), tag, pieces, n);
    pthread_mutex_unlock(&c->lock);
    return kept;
}

void imc_scache_stats_get(imc_scache *c, imc_scache_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->size = (apr_size_t)c->size;
    if (lock_take(c)) {
        st->bytes = (apr_size_t)c->live;
        st->entries = c->entries;
        st->evictions = c->evictions;
        st->resets = c->resets;
        pthread_mutex_unlock(&c->lock);
    }
}
