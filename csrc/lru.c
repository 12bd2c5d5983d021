/*
 * lru.c - fixed-capacity LRU index: key bytes -> slot number (qp2p.h, section 3).
 *
 * Layout: per-slot arrays (key bytes, length, hash, recency links) plus an
 * open-addressing table of slot numbers with linear probing. The table has at
 * least twice as many buckets as slots, so a probe always meets an empty
 * bucket and stays short. Deletion shifts later entries back instead of
 * leaving tombstones, so constant churn (the cache's normal life) never
 * degrades probes. Free slots sit in a min-heap, which gives the header's
 * "lowest-numbered free slot" rule in O(log n).
 *
 * Keys come from the network (peer address + certificate hash), so the hash
 * is SipHash-1-3 under a per-index key: without the key nobody can craft keys
 * that pile up in one probe run. The Python wrapper reseeds every index from
 * the random_bytes its caller injects (the driver passes os.urandom); the seed
 * qp2p_lru_new picks itself is only a fallback.
 *
 * All memory is allocated once in qp2p_lru_new; no operation can fail for
 * lack of memory afterwards.
 */
#include <stdlib.h>
#include <string.h>

#include "qp2p.h"

#define EMPTY (-1)

struct qp2p_lru {
    uint32_t capacity;
    uint32_t max_key_len;
    uint32_t count;
    uint32_t nfree;
    uint32_t mask;        /* buckets - 1 (buckets is a power of two) */
    int32_t  head;        /* most recent slot, or EMPTY */
    int32_t  tail;        /* least recent slot, or EMPTY */
    uint64_t k0, k1;      /* SipHash key */
    int32_t  *buckets;    /* slot number or EMPTY */
    int32_t  *prev;       /* towards head (more recent) */
    int32_t  *next;       /* towards tail (less recent) */
    int32_t  *free_heap;  /* min-heap of free slot numbers, nfree entries */
    uint64_t *hash;       /* per slot: its key's hash (saves rehashing on probe/shift) */
    uint32_t *klen;       /* per slot: its key's length */
    uint8_t  *keys;       /* per slot: max_key_len bytes */
};

/* ---------------------------------------------------------------- SipHash-1-3 */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                         \
    do {                                                                 \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);        \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                           \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                           \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);        \
    } while (0)

/* Little-endian load, byte by byte: no alignment or endianness assumptions. */
static uint64_t load64_le(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
           (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static uint64_t siphash13(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
    uint64_t v3 = k1 ^ 0x7465646279746573ULL;
    const uint8_t *end = in + (len & ~(size_t)7);
    uint64_t b = (uint64_t)len << 56;
    size_t i;

    for (; in != end; in += 8) {
        uint64_t m = load64_le(in);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- free-slot heap */

static int32_t heap_pop(qp2p_lru_t *lru)
{
    int32_t *h = lru->free_heap;
    int32_t top = h[0];
    uint32_t n = --lru->nfree;
    int32_t moved = h[n];
    uint32_t i = 0;

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1] < h[c])
            c++;
        if (h[c] >= moved)
            break;
        h[i] = h[c];
        i = c;
    }
    if (n > 0)
        h[i] = moved;
    return top;
}

static void heap_push(qp2p_lru_t *lru, int32_t slot)
{
    int32_t *h = lru->free_heap;
    uint32_t i = lru->nfree++;

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h[parent] <= slot)
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = slot;
}

/* ---------------------------------------------------------------- recency list */

static void list_unlink(qp2p_lru_t *lru, int32_t s)
{
    int32_t p = lru->prev[s], n = lru->next[s];
    if (p != EMPTY)
        lru->next[p] = n;
    else
        lru->head = n;
    if (n != EMPTY)
        lru->prev[n] = p;
    else
        lru->tail = p;
}

static void list_push_front(qp2p_lru_t *lru, int32_t s)
{
    lru->prev[s] = EMPTY;
    lru->next[s] = lru->head;
    if (lru->head != EMPTY)
        lru->prev[lru->head] = s;
    else
        lru->tail = s;
    lru->head = s;
}

static void list_move_front(qp2p_lru_t *lru, int32_t s)
{
    if (lru->head != s) {
        list_unlink(lru, s);
        list_push_front(lru, s);
    }
}

/* ---------------------------------------------------------------- hash table */

/* Bucket index holding key, or, when absent, -(first empty bucket) - 1. */
static int64_t table_find(const qp2p_lru_t *lru, const uint8_t *key, size_t len, uint64_t h)
{
    uint32_t i = (uint32_t)h & lru->mask;
    for (;;) {
        int32_t s = lru->buckets[i];
        if (s == EMPTY)
            return -(int64_t)i - 1;
        if (lru->hash[s] == h && lru->klen[s] == len &&
            (len == 0 || memcmp(lru->keys + (size_t)s * lru->max_key_len, key, len) == 0))
            return i;
        i = (i + 1) & lru->mask;
    }
}

static uint32_t table_free_bucket(const qp2p_lru_t *lru, uint64_t h)
{
    uint32_t i = (uint32_t)h & lru->mask;
    while (lru->buckets[i] != EMPTY)
        i = (i + 1) & lru->mask;
    return i;
}

/* Empties bucket i and shifts later members of its probe run back, so every
 * entry stays reachable from its home bucket without tombstones. */
static void table_delete(qp2p_lru_t *lru, uint32_t i)
{
    uint32_t j = i;
    lru->buckets[i] = EMPTY;
    for (;;) {
        int32_t s;
        uint32_t home;
        j = (j + 1) & lru->mask;
        s = lru->buckets[j];
        if (s == EMPTY)
            return;
        home = (uint32_t)lru->hash[s] & lru->mask;
        /* The entry at j may stay only if its home lies cyclically in (i, j]. */
        if (((j - home) & lru->mask) < ((j - i) & lru->mask))
            continue;
        lru->buckets[i] = s;
        lru->buckets[j] = EMPTY;
        i = j;
    }
}

static int32_t find_slot(const qp2p_lru_t *lru, const uint8_t *key, size_t len, uint32_t *bucket)
{
    int64_t b;
    if (len > lru->max_key_len)
        return EMPTY; /* could never have been inserted */
    b = table_find(lru, key, len, siphash13(lru->k0, lru->k1, key, len));
    if (b < 0)
        return EMPTY;
    if (bucket)
        *bucket = (uint32_t)b;
    return lru->buckets[b];
}

/* ---------------------------------------------------------------- public API */

qp2p_lru_t *qp2p_lru_new(uint32_t capacity, uint32_t max_key_len)
{
    qp2p_lru_t *lru;
    uint64_t buckets = 2, seed;
    uint32_t i;

    if (capacity == 0 || capacity > QP2P_LRU_MAX_CAPACITY || max_key_len == 0 ||
        max_key_len > QP2P_LRU_MAX_KEY_LEN)
        return NULL;
    while (buckets < 2 * (uint64_t)capacity)
        buckets <<= 1;
    /* capacity * max_key_len <= 2^32: fits size_t on 64-bit; refuse on 32-bit. */
    if ((uint64_t)capacity * max_key_len > (uint64_t)(size_t)-1 / 2)
        return NULL;

    lru = calloc(1, sizeof *lru);
    if (lru == NULL)
        return NULL;
    lru->capacity = capacity;
    lru->max_key_len = max_key_len;
    lru->mask = (uint32_t)(buckets - 1);
    lru->head = lru->tail = EMPTY;
    lru->buckets = malloc((size_t)buckets * sizeof *lru->buckets);
    lru->prev = malloc((size_t)capacity * sizeof *lru->prev);
    lru->next = malloc((size_t)capacity * sizeof *lru->next);
    lru->free_heap = malloc((size_t)capacity * sizeof *lru->free_heap);
    lru->hash = malloc((size_t)capacity * sizeof *lru->hash);
    lru->klen = malloc((size_t)capacity * sizeof *lru->klen);
    /* Pages of key storage are only touched as slots fill, so a large
     * capacity * max_key_len costs address space, not resident memory. */
    lru->keys = malloc((size_t)capacity * max_key_len);
    if (!lru->buckets || !lru->prev || !lru->next || !lru->free_heap || !lru->hash ||
        !lru->klen || !lru->keys) {
        qp2p_lru_free(lru);
        return NULL;
    }
    for (i = 0; i < (uint32_t)buckets; i++)
        lru->buckets[i] = EMPTY;
    /* Ascending order is already a valid min-heap. */
    for (i = 0; i < capacity; i++)
        lru->free_heap[i] = (int32_t)i;
    lru->nfree = capacity;

    /* Fallback seed only (ASLR-dependent addresses); the wrapper reseeds. */
    seed = (uint64_t)(uintptr_t)lru ^ ((uint64_t)(uintptr_t)&seed << 17) ^
           ((uint64_t)(uintptr_t)lru->keys >> 3);
    lru->k0 = splitmix64(&seed);
    lru->k1 = splitmix64(&seed);
    return lru;
}

void qp2p_lru_free(qp2p_lru_t *lru)
{
    if (lru == NULL)
        return;
    free(lru->buckets);
    free(lru->prev);
    free(lru->next);
    free(lru->free_heap);
    free(lru->hash);
    free(lru->klen);
    free(lru->keys);
    free(lru);
}

void qp2p_lru_seed(qp2p_lru_t *lru, uint64_t k0, uint64_t k1)
{
    uint32_t i;
    int32_t s;

    lru->k0 = k0;
    lru->k1 = k1;
    for (i = 0; i <= lru->mask; i++)
        lru->buckets[i] = EMPTY;
    for (s = lru->head; s != EMPTY; s = lru->next[s]) {
        uint64_t h = siphash13(k0, k1, lru->keys + (size_t)s * lru->max_key_len, lru->klen[s]);
        lru->hash[s] = h;
        lru->buckets[table_free_bucket(lru, h)] = s;
    }
}

uint32_t qp2p_lru_len(const qp2p_lru_t *lru)
{
    return lru->count;
}

int32_t qp2p_lru_lookup(const qp2p_lru_t *lru, const uint8_t *key, size_t len)
{
    return find_slot(lru, key, len, NULL);
}

int32_t qp2p_lru_touch(qp2p_lru_t *lru, const uint8_t *key, size_t len)
{
    int32_t s = find_slot(lru, key, len, NULL);
    if (s != EMPTY)
        list_move_front(lru, s);
    return s;
}

/* Insert of a key whose length is already checked. */
static int32_t insert_one(qp2p_lru_t *lru, const uint8_t *key, size_t len, int32_t *evicted)
{
    uint64_t h = siphash13(lru->k0, lru->k1, key, len);
    int64_t b = table_find(lru, key, len, h);
    uint32_t bucket;
    int32_t s;

    if (b >= 0) {
        s = lru->buckets[b];
        list_move_front(lru, s);
        *evicted = EMPTY;
        return s;
    }
    bucket = (uint32_t)(-(b + 1));
    if (lru->count == lru->capacity) {
        uint32_t vb;
        s = lru->tail;
        /* The victim is in its own probe run; its stored hash finds it. */
        vb = (uint32_t)lru->hash[s] & lru->mask;
        while (lru->buckets[vb] != s)
            vb = (vb + 1) & lru->mask;
        table_delete(lru, vb);
        list_unlink(lru, s);
        lru->count--;
        *evicted = s;
        /* The shift may have moved entries into or out of our bucket's run. */
        bucket = table_free_bucket(lru, h);
    } else {
        s = heap_pop(lru);
        *evicted = EMPTY;
    }
    if (len)
        memcpy(lru->keys + (size_t)s * lru->max_key_len, key, len);
    lru->klen[s] = (uint32_t)len;
    lru->hash[s] = h;
    lru->buckets[bucket] = s;
    list_push_front(lru, s);
    lru->count++;
    return s;
}

int32_t qp2p_lru_insert(qp2p_lru_t *lru, const uint8_t *key, size_t len, int32_t *evicted)
{
    if (len > lru->max_key_len) {
        *evicted = EMPTY;
        return QP2P_E_LRU_KEY_LENGTH;
    }
    return insert_one(lru, key, len, evicted);
}

int32_t qp2p_lru_put(qp2p_lru_t *lru, const uint8_t *key, size_t len)
{
    int32_t evicted, s;
    if (len > lru->max_key_len)
        return QP2P_E_LRU_KEY_LENGTH;
    s = insert_one(lru, key, len, &evicted);
    return evicted == EMPTY ? s : s + QP2P_LRU_EVICTED;
}

int32_t qp2p_lru_insert_many(qp2p_lru_t *lru, const uint8_t *keys, size_t keys_len,
                             const uint32_t *lens, size_t n,
                             int32_t *slots, int32_t *evicted)
{
    size_t i, off = 0;
    int32_t nevicted = 0;

    /* Validate everything first: a bad batch leaves the index untouched. */
    for (i = 0; i < n; i++) {
        if (lens[i] > lru->max_key_len)
            return QP2P_E_LRU_KEY_LENGTH;
        if (lens[i] > keys_len - off)
            return QP2P_E_ARG;
        off += lens[i];
    }
    if (n > (size_t)INT32_MAX)
        return QP2P_E_ARG;
    off = 0;
    for (i = 0; i < n; i++) {
        slots[i] = insert_one(lru, keys + off, lens[i], &evicted[i]);
        nevicted += evicted[i] != EMPTY;
        off += lens[i];
    }
    return nevicted;
}

int32_t qp2p_lru_remove(qp2p_lru_t *lru, const uint8_t *key, size_t len)
{
    uint32_t bucket = 0;
    int32_t s = find_slot(lru, key, len, &bucket);
    if (s == EMPTY)
        return EMPTY;
    table_delete(lru, bucket);
    list_unlink(lru, s);
    heap_push(lru, s);
    lru->count--;
    return s;
}

uint32_t qp2p_lru_order(const qp2p_lru_t *lru, int32_t *out, uint32_t cap)
{
    uint32_t n = 0;
    int32_t s;
    for (s = lru->head; s != EMPTY && n < cap; s = lru->next[s])
        out[n++] = s;
    return n;
}

uint32_t qp2p_lru_keys(const qp2p_lru_t *lru, uint8_t *out, size_t out_cap,
                       uint32_t *lens, uint32_t cap)
{
    uint32_t n = 0;
    size_t off = 0;
    int32_t s;
    for (s = lru->head; s != EMPTY && n < cap; s = lru->next[s]) {
        uint32_t len = lru->klen[s];
        if (len > out_cap - off)
            break;
        if (len)
            memcpy(out + off, lru->keys + (size_t)s * lru->max_key_len, len);
        lens[n++] = len;
        off += len;
    }
    return n;
}
