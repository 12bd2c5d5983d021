/*
 * sha256.c - SHA-256 (FIPS 180-4), HMAC-SHA256 (RFC 2104) and a
 * constant-time compare, self-contained so the module links only libc.
 *
 * Every hash funnels through one block function: portable C99, or the x86
 * SHA extensions (SHA-NI) when the CPU has them, chosen once at load time.
 */
#include <string.h>

#include "qp2p.h"

#define BLOCK 64

typedef void (*compress_fn)(uint32_t state[8], const uint8_t *blocks, size_t nblocks);

/* FIPS 180-4 §4.2.2; 16-byte aligned so the SHA-NI path can load it whole. */
#if defined(__GNUC__)
__attribute__((aligned(16)))
#endif
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

/* FIPS 180-4 §5.3.3 */
static const uint32_t IV[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---------------------------------------------------------------- portable */

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define BSIG0(x) (ROTR(x, 2) ^ ROTR(x, 13) ^ ROTR(x, 22))
#define BSIG1(x) (ROTR(x, 6) ^ ROTR(x, 11) ^ ROTR(x, 25))
#define SSIG0(x) (ROTR(x, 7) ^ ROTR(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (ROTR(x, 17) ^ ROTR(x, 19) ^ ((x) >> 10))

static void compress_portable(uint32_t state[8], const uint8_t *p, size_t nblocks)
{
    uint32_t w[64];
    while (nblocks--) {
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        int t;
        for (t = 0; t < 16; t++)
            w[t] = load_be32(p + 4 * t);
        for (t = 16; t < 64; t++)
            w[t] = SSIG1(w[t - 2]) + w[t - 7] + SSIG0(w[t - 15]) + w[t - 16];
        /* Plain FIPS 180-4 §6.2.2 loop: at -O3 compilers unroll it and rename
         * the registers themselves (a hand-unrolled version measured no faster). */
        for (t = 0; t < 64; t++) {
            uint32_t t1 = h + BSIG1(e) + CH(e, f, g) + K[t] + w[t];
            uint32_t t2 = BSIG0(a) + MAJ(a, b, c);
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
        p += BLOCK;
    }
}

/* ---------------------------------------------------------------- SHA-NI */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(QP2P_NO_SHANI) && (defined(__clang__) || __GNUC__ >= 5)
#define HAVE_SHANI 1
#include <immintrin.h>

/*
 * The SHA extensions keep the state as two vectors, ABEF and CDGH, and do two
 * rounds per sha256rnds2; the message schedule is four vectors of four words
 * (w[i-4..i-1]) rotated through sha256msg1/msg2. The fixed-count loops unroll
 * fully at -O2, so the vector arrays live in registers.
 */
__attribute__((target("sha,sse4.1")))
static void compress_shani(uint32_t state[8], const uint8_t *p, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)(const void *)&state[0]); /* DCBA */
    __m128i s1 = _mm_loadu_si128((const __m128i *)(const void *)&state[4]);  /* HGFE */
    __m128i s0;

    tmp = _mm_shuffle_epi32(tmp, 0xB1);    /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);      /* EFGH */
    s0 = _mm_alignr_epi8(tmp, s1, 8);      /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);   /* CDGH */

    while (nblocks--) {
        const __m128i abef = s0, cdgh = s1;
        __m128i w[4], msg;
        int i;
        for (i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)),
                                    bswap);
        for (i = 0; i < 16; i++) {
            if (i >= 4) {
                /* w[i%4] holds w[i-4]; the other three are w[i-3], w[i-2], w[i-1]. */
                __m128i x = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
                w[i & 3] = _mm_sha256msg2_epu32(x, w[(i + 3) & 3]);
            }
            msg = _mm_add_epi32(w[i & 3], _mm_load_si128((const __m128i *)(const void *)&K[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        p += BLOCK;
    }

    tmp = _mm_shuffle_epi32(s0, 0x1B);     /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);      /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);   /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);      /* HGFE */
    _mm_storeu_si128((__m128i *)(void *)&state[0], s0);
    _mm_storeu_si128((__m128i *)(void *)&state[4], s1);
}

static int cpu_has_shani(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
}
#else
#define HAVE_SHANI 0
#endif

/* ---------------------------------------------------------------- dispatch */

/* Set at load time by the constructor below (or on first use where there is
 * none), and switched only by qp2p_sha256_backend. Both functions compute the
 * same digests, so a hash racing a switch is still correct. */
static compress_fn compress = NULL;

static int select_backend(int request)
{
#if HAVE_SHANI
    if (request != QP2P_SHA256_PORTABLE && cpu_has_shani()) {
        compress = compress_shani;
        return QP2P_SHA256_SHANI;
    }
#endif
    (void)request;
    compress = compress_portable;
    return QP2P_SHA256_PORTABLE;
}

#if defined(__GNUC__)
__attribute__((constructor)) static void init_backend(void)
{
    select_backend(QP2P_SHA256_AUTO);
}
#endif

int qp2p_sha256_backend(int request)
{
    if (request != QP2P_SHA256_AUTO && request != QP2P_SHA256_PORTABLE &&
        request != QP2P_SHA256_SHANI)
        return QP2P_E_ARG;
    return select_backend(request);
}

static void blocks(uint32_t state[8], const uint8_t *p, size_t nblocks)
{
    if (compress == NULL)
        select_backend(QP2P_SHA256_AUTO);
    if (nblocks)
        compress(state, p, nblocks);
}

/*
 * Hashes data[0..len) into state, pads and writes the digest. `prefix` is how
 * many bytes state has already absorbed (a multiple of 64: 0 for a plain hash,
 * one block for the HMAC pads), since the padding encodes the total length.
 */
static void finish(uint32_t state[8], uint64_t prefix, const uint8_t *data, size_t len,
                   uint8_t *out)
{
    uint8_t tail[2 * BLOCK];
    size_t full = len / BLOCK, rest = len % BLOCK, tail_len;
    uint64_t bits = (prefix + (uint64_t)len) * 8u;
    size_t i;

    blocks(state, data, full);
    memset(tail, 0, sizeof tail);
    if (rest)
        memcpy(tail, data + full * BLOCK, rest);
    tail[rest] = 0x80;
    /* 1 + 8 bytes of padding must fit after the data, else a second block. */
    tail_len = rest + 9 <= BLOCK ? BLOCK : 2 * BLOCK;
    for (i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    blocks(state, tail, tail_len / BLOCK);
    for (i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

/* Key material must not linger on the stack; volatile keeps the stores. */
static void wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--)
        *v++ = 0;
}

void qp2p_sha256(const uint8_t *data, size_t len, uint8_t *out)
{
    uint32_t state[8];
    memcpy(state, IV, sizeof state);
    finish(state, 0, data, len, out);
}

void qp2p_hmac_key_init(qp2p_hmac_key_t *key, const uint8_t *secret, size_t secret_len)
{
    uint8_t pad[BLOCK];
    size_t i;

    memset(pad, 0, sizeof pad);
    /* RFC 2104 §2: a key longer than the block is replaced by its hash. */
    if (secret_len > BLOCK)
        qp2p_sha256(secret, secret_len, pad);
    else if (secret_len)
        memcpy(pad, secret, secret_len);

    for (i = 0; i < BLOCK; i++)
        pad[i] ^= 0x36;
    memcpy(key->inner, IV, sizeof key->inner);
    blocks(key->inner, pad, 1);

    for (i = 0; i < BLOCK; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    memcpy(key->outer, IV, sizeof key->outer);
    blocks(key->outer, pad, 1);

    wipe(pad, sizeof pad);
}

void qp2p_hmac_sha256(const qp2p_hmac_key_t *key, const uint8_t *msg, size_t len, uint8_t *out)
{
    uint32_t state[8];
    uint8_t inner[QP2P_SHA256_SIZE];

    memcpy(state, key->inner, sizeof state);
    finish(state, BLOCK, msg, len, inner);
    memcpy(state, key->outer, sizeof state);
    finish(state, BLOCK, inner, sizeof inner, out);
}

int qp2p_ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    /* No early exit: a MAC check that stops at the first differing byte
     * tells a forger how many leading bytes were right. */
    uint32_t acc = 0;
    size_t i;
    for (i = 0; i < n; i++)
        acc |= (uint32_t)(a[i] ^ b[i]);
    return (int)((acc - 1u) >> 31);
}
