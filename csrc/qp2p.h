/*
 * qp2p.h - the C contract of quic-p2p's accelerator.
 *
 * Three hot paths: message framing (+ a QUIC datagram classifier), retry
 * tokens (self-contained SHA-256 / HMAC-SHA256), and an LRU index.
 *
 * Rules every function here follows:
 *   - caller-owned buffers only; nothing allocates except qp2p_lru_new;
 *   - never touches Python objects; never reads or writes past a length
 *     it was given (any input is safe, garbage included);
 *   - errors are negative status codes (QP2P_E_*), success is QP2P_OK (0)
 *     or a documented non-negative value.
 *
 * Each function has a pure-Python twin in quic_p2p/accel/pyimpl with the
 * same contract; tests prove they agree on results and on errors.
 * All multi-byte integers on the wire are big-endian (network order).
 */
#ifndef QP2P_H
#define QP2P_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------- */
/* Status codes                                                           */
/* ---------------------------------------------------------------------- */
#define QP2P_OK                    0
/* framing */
#define QP2P_E_FRAME_VERSION      -1  /* header version is not QP2P_FRAME_VERSION */
#define QP2P_E_FRAME_KIND         -2  /* kind is 0 or above QP2P_KIND_MAX */
#define QP2P_E_FRAME_FLAGS        -3  /* reserved flag bits set */
#define QP2P_E_FRAME_TOO_LARGE    -4  /* declared body length above the maximum */
/* datagram classifier */
#define QP2P_E_DGRAM_TRUNCATED   -10  /* datagram ends inside a header field */
#define QP2P_E_DGRAM_FIXED_BIT   -11  /* QUIC v1 fixed bit (0x40) is zero */
#define QP2P_E_DGRAM_CID_LENGTH  -12  /* v1 connection ID longer than 20 bytes */
/* retry tokens */
#define QP2P_E_TOKEN_MALFORMED   -20  /* wrong size, version or field length */
#define QP2P_E_TOKEN_UNKNOWN_KEY -21  /* key id is neither current nor previous */
#define QP2P_E_TOKEN_BAD_MAC     -22  /* forged, altered, other address or other CID */
#define QP2P_E_TOKEN_EXPIRED     -23  /* authentic, but older than its lifetime */
#define QP2P_E_TOKEN_FUTURE      -24  /* authentic, but issued after `now` + skew */
/* arguments (the caller's fault; Python wrappers check before crossing) */
#define QP2P_E_ARG               -30  /* a length or value out of range */
#define QP2P_E_BUFFER            -31  /* output buffer too small */
/* LRU */
#define QP2P_E_LRU_KEY_LENGTH    -40  /* key longer than the index's max_key_len */
#define QP2P_E_LRU_NOMEM         -41

/* ---------------------------------------------------------------------- */
/* 1. Framing                                                             */
/* ---------------------------------------------------------------------- */
/*
 * Frame (all fields big-endian):
 *   offset size field
 *   0      1    version   QP2P_FRAME_VERSION
 *   1      1    kind      1..QP2P_KIND_MAX (QP2P_KIND_*)
 *   2      2    flags     reserved, must be zero
 *   4      4    length    body length in bytes
 *   8      8    msg_id    sender-chosen id (0 where the kind carries none)
 *   16     length body
 *
 * A decoder rejects a header as soon as its 16 bytes are present: an unknown
 * version/kind, set flags, or a length above the receiver's maximum are
 * errors before a single byte of the body is buffered.
 */
#define QP2P_FRAME_VERSION        1
#define QP2P_FRAME_HEADER_SIZE    16
#define QP2P_KIND_HANDSHAKE_NODE   1  /* body: our certificate (DER) */
#define QP2P_KIND_HANDSHAKE_CLIENT 2  /* body: empty */
#define QP2P_KIND_ECHO_REQUEST     3  /* body: empty */
#define QP2P_KIND_ECHO_RESPONSE    4  /* body: observed address */
#define QP2P_KIND_USER_MESSAGE     5  /* body: the user's bytes; msg_id set */
#define QP2P_KIND_ACK              6  /* body: msg_ids received (8 bytes each) */
#define QP2P_KIND_REJECT           7  /* msg_id refused; body: u8 reason */
#define QP2P_KIND_PUNCH_REQUEST    8  /* to a rendezvous; body: target address */
#define QP2P_KIND_PUNCH_INFO       9  /* from a rendezvous; body: see wire.py */
#define QP2P_KIND_RELAY_REQUEST   10  /* to a relay; body: target address */
#define QP2P_KIND_RELAY_OPEN      11  /* from a relay; body: see wire.py */
#define QP2P_KIND_RELAY_PACKET    12  /* msg_id: session; body: one QUIC datagram */
#define QP2P_KIND_RELAY_CLOSE     13  /* msg_id: session; body: u8 code + reason */
#define QP2P_KIND_REACH_REQUEST   14  /* to a node: dial me from a fresh socket */
#define QP2P_KIND_REACH_RESULT    15  /* body: u8 reached + the address dialled */
#define QP2P_KIND_MAX             15

typedef struct {
    uint64_t msg_id;
    uint64_t offset;   /* offset of the body within the scanned buffer */
    uint32_t length;   /* body length */
    uint8_t  kind;
} qp2p_frame_t;

/* Writes one QP2P_FRAME_HEADER_SIZE-byte header to out. QP2P_E_ARG for a kind outside 1..KIND_MAX or a
 * length above max_body. */
int qp2p_frame_encode_header(uint8_t *out, uint8_t kind,
                             uint64_t msg_id, uint64_t length, uint32_t max_body);

/* Scans buf[0..len) for complete frames, from the start, writing at most
 * max_frames descriptors to out. Returns how many it wrote (n).
 *   *consumed = bytes covered by those n frames (headers and bodies);
 *   *status   = QP2P_OK, or the error of the header at buf[*consumed]
 *               (the stream is then corrupt: the caller stops decoding);
 *   *need     = on QP2P_OK with n < max_frames: total bytes, counted from
 *               *consumed, that the next frame needs (QP2P_FRAME_HEADER_SIZE
 *               while its header is incomplete), so a caller can wait for
 *               that many without rescanning. */
size_t qp2p_frame_scan(const uint8_t *buf, size_t len, uint32_t max_body,
                       qp2p_frame_t *out, size_t max_frames,
                       size_t *consumed, int *status, size_t *need);

/* Coalesces n frames into one stream write: for each i, a header (kinds[i],
 * msg_ids[i], lengths[i]) then the next lengths[i] bytes of bodies, which
 * holds all the bodies back to back. *written = bytes written to out (written
 * may be NULL: a caller that sized out exactly knows it). QP2P_E_ARG for a bad
 * kind, a length above max_body, or lengths that do not add up to bodies_len;
 * QP2P_E_BUFFER when out_cap is too small. */
int qp2p_frame_encode_batch(uint8_t *out, size_t out_cap,
                            const uint8_t *bodies, size_t bodies_len,
                            const uint8_t *kinds, const uint64_t *msg_ids,
                            const uint32_t *lengths, size_t n, uint32_t max_body,
                            size_t *written);

/* Datagram classifier (RFC 8999 invariants, RFC 9000 §17 for version 1). */
#define QP2P_FORM_SHORT 0
#define QP2P_FORM_LONG  1
#define QP2P_PT_INITIAL             0
#define QP2P_PT_ZERO_RTT            1
#define QP2P_PT_HANDSHAKE           2
#define QP2P_PT_RETRY               3
#define QP2P_PT_VERSION_NEGOTIATION 4  /* long header, version 0 */
#define QP2P_PT_ONE_RTT             5  /* short header */
#define QP2P_PT_UNKNOWN_VERSION     6  /* long header of a version we don't speak */
#define QP2P_QUIC_V1 0x00000001u
#define QP2P_MAX_CID_LEN 20

typedef struct {
    uint8_t  form;          /* QP2P_FORM_* */
    uint8_t  packet_type;   /* QP2P_PT_* */
    uint32_t version;       /* 0 for short headers */
    uint32_t dcid_offset, dcid_length;
    uint32_t scid_offset, scid_length;    /* long headers only, else 0 */
    uint32_t token_offset, token_length;  /* v1 Initial only, else 0 */
} qp2p_dgram_info_t;

/* Classifies the first packet of a UDP datagram. short_dcid_len is the
 * length of the connection IDs we issue (short headers carry no length).
 * Returns the packet type (QP2P_PT_*, >= 0) and fills *out, or a negative
 * status: QP2P_E_DGRAM_*, or QP2P_E_ARG for short_dcid_len above
 * QP2P_MAX_CID_LEN or len above UINT32_MAX (offsets are 32-bit). out may be
 * NULL: a short header needs nothing but the type (its DCID is
 * buf[1 .. 1 + short_dcid_len)), so a caller can skip the struct for it. */
int qp2p_classify_datagram(const uint8_t *buf, size_t len, size_t short_dcid_len,
                           qp2p_dgram_info_t *out);

/* ---------------------------------------------------------------------- */
/* 2. SHA-256, HMAC-SHA256, retry tokens                                  */
/* ---------------------------------------------------------------------- */
#define QP2P_SHA256_SIZE 32

/* out receives QP2P_SHA256_SIZE bytes. */
void qp2p_sha256(const uint8_t *data, size_t len, uint8_t *out);

/* The block function is chosen at load time: x86 SHA extensions when the CPU
 * has them, else portable C99. qp2p_sha256_backend(request) switches it, for
 * tests and benchmarks that must check both paths (call it while no other
 * thread is hashing): QP2P_SHA256_AUTO picks the best again. Returns the
 * backend now in use (SHANI falls back to PORTABLE without CPU support), or
 * QP2P_E_ARG for an unknown request. */
#define QP2P_SHA256_AUTO     0
#define QP2P_SHA256_PORTABLE 1
#define QP2P_SHA256_SHANI    2
int qp2p_sha256_backend(int request);

/* A key with its inner/outer padded states precomputed once, so each MAC
 * costs only the message blocks plus one outer block. */
typedef struct {
    uint32_t inner[8];
    uint32_t outer[8];
} qp2p_hmac_key_t;

void qp2p_hmac_key_init(qp2p_hmac_key_t *key, const uint8_t *secret, size_t secret_len);
void qp2p_hmac_sha256(const qp2p_hmac_key_t *key, const uint8_t *msg, size_t len,
                      uint8_t *out);
/* 1 when equal, 0 otherwise; time depends only on n. */
int qp2p_ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

/*
 * Retry token v1 (big-endian):
 *   0     1  version        QP2P_TOKEN_VERSION
 *   1     1  key_id         which key minted it (rotation)
 *   2     8  issued_at_ms   milliseconds since the Unix epoch
 *   10    1  odcid_len      0..QP2P_MAX_CID_LEN
 *   11    n  odcid          the client's original destination CID
 *   11+n  32 mac            HMAC-SHA256(key, token[0 .. 11+n)
 *                                        || u8 addr_len  || addr
 *                                        || u8 rscid_len || rscid)
 * addr is the client's address as bytes (IP octets + 2-byte port); rscid is
 * the Source CID of our Retry, which the client returns as the Destination CID
 * of its next Initial. So a token is bound to address, both CIDs and time.
 */
#define QP2P_TOKEN_VERSION   1
#define QP2P_TOKEN_FIXED     (11 + QP2P_SHA256_SIZE)
#define QP2P_TOKEN_MAX       (QP2P_TOKEN_FIXED + QP2P_MAX_CID_LEN)
#define QP2P_TOKEN_MAX_ADDR  255

/* Writes the token to out (cap >= QP2P_TOKEN_MAX is always enough) and
 * returns its length, or QP2P_E_ARG / QP2P_E_BUFFER. */
int qp2p_token_mint(const qp2p_hmac_key_t *key, uint8_t key_id,
                    const uint8_t *addr, size_t addr_len,
                    const uint8_t *odcid, size_t odcid_len,
                    const uint8_t *rscid, size_t rscid_len,
                    uint64_t issued_at_ms, uint8_t *out, size_t out_cap);

/* Verifies a token against the current key and, when previous is not NULL,
 * the previous key (chosen by key_id, so at most one MAC is computed).
 * Checks, in order: layout, key id, MAC (constant time), then age:
 * issued_at_ms > now_ms + skew_ms is QP2P_E_TOKEN_FUTURE, and
 * now_ms - issued_at_ms > lifetime_ms is QP2P_E_TOKEN_EXPIRED.
 * On QP2P_OK, the original DCID is token[*odcid_offset .. + *odcid_len)
 * (either pointer may be NULL: the layout above already locates it). */
int qp2p_token_verify(const qp2p_hmac_key_t *current, uint8_t current_id,
                      const qp2p_hmac_key_t *previous, uint8_t previous_id,
                      const uint8_t *token, size_t token_len,
                      const uint8_t *addr, size_t addr_len,
                      const uint8_t *rscid, size_t rscid_len,
                      uint64_t now_ms, uint64_t lifetime_ms, uint64_t skew_ms,
                      size_t *odcid_offset, size_t *odcid_len);

/* A verifier's fixed state in one struct, so the per-token call crosses the
 * FFI with 8 arguments instead of 15 (each costs tens of ns in cffi). Treat it
 * as immutable once filled: rotation builds a new one, so a verification in
 * flight (without the GIL) never sees half a rotation. */
typedef struct {
    qp2p_hmac_key_t current;
    qp2p_hmac_key_t previous;   /* used only when has_previous */
    uint64_t lifetime_ms;
    uint64_t skew_ms;
    uint8_t  current_id;
    uint8_t  previous_id;
    uint8_t  has_previous;
} qp2p_token_keys_t;

/* qp2p_token_verify with the keys, ids and limits taken from *keys; same
 * checks, same statuses. On QP2P_OK the original DCID is token[11 .. 11 + token[10]). */
int qp2p_token_verify_keys(const qp2p_token_keys_t *keys,
                           const uint8_t *token, size_t token_len,
                           const uint8_t *addr, size_t addr_len,
                           const uint8_t *rscid, size_t rscid_len, uint64_t now_ms);

/* ---------------------------------------------------------------------- */
/* 3. LRU index: key bytes -> slot number; C keeps the order, Python keeps */
/*    the objects in a list indexed by slot.                               */
/* ---------------------------------------------------------------------- */
/*
 * Slots are 0..capacity-1. A new key takes the slot of the key it evicts,
 * else the lowest-numbered free slot. Insert of a present key is a touch.
 * capacity is 1..QP2P_LRU_MAX_CAPACITY, max_key_len 1..QP2P_LRU_MAX_KEY_LEN.
 * An index is not thread-safe (cffi calls run without the GIL).
 */
#define QP2P_LRU_MAX_CAPACITY (1u << 20)
#define QP2P_LRU_MAX_KEY_LEN  4096u
typedef struct qp2p_lru qp2p_lru_t;

qp2p_lru_t *qp2p_lru_new(uint32_t capacity, uint32_t max_key_len); /* NULL: bad args/no memory */
void     qp2p_lru_free(qp2p_lru_t *lru);
uint32_t qp2p_lru_len(const qp2p_lru_t *lru);
/* slot, or -1 when absent; order unchanged */
int32_t  qp2p_lru_lookup(const qp2p_lru_t *lru, const uint8_t *key, size_t len);
/* slot, or -1 when absent; makes the key most recent */
int32_t  qp2p_lru_touch(qp2p_lru_t *lru, const uint8_t *key, size_t len);
/* slot (>= 0), or QP2P_E_LRU_KEY_LENGTH; *evicted = evicted slot or -1 */
int32_t  qp2p_lru_insert(qp2p_lru_t *lru, const uint8_t *key, size_t len, int32_t *evicted);
/* qp2p_lru_insert with one value back, no out-parameter (one less argument
 * to convert per call from Python): the slot, with QP2P_LRU_EVICTED added
 * when the key evicted the least recent one (whose slot it always takes);
 * or QP2P_E_LRU_KEY_LENGTH. */
#define QP2P_LRU_EVICTED (1 << 30)
int32_t  qp2p_lru_put(qp2p_lru_t *lru, const uint8_t *key, size_t len);
/* slot removed, or -1 when absent */
int32_t  qp2p_lru_remove(qp2p_lru_t *lru, const uint8_t *key, size_t len);
/* Writes up to cap slots, most recent first; returns how many. */
uint32_t qp2p_lru_order(const qp2p_lru_t *lru, int32_t *out, uint32_t cap);
/* Sets the SipHash key (the keys come from the network; a secret per-index
 * key stops crafted collisions) and rehashes; order and slots are unchanged. */
void     qp2p_lru_seed(qp2p_lru_t *lru, uint64_t k0, uint64_t k1);
/* n inserts in one call, in order (the last key ends most recent). Key i is
 * keys[sum(lens[0..i)) .. + lens[i]); slots[i] / evicted[i] as for insert.
 * Every length is checked before any change: QP2P_E_LRU_KEY_LENGTH, or
 * QP2P_E_ARG when the lengths overrun keys_len. Else returns how many
 * inserts evicted a key (>= 0). */
int32_t  qp2p_lru_insert_many(qp2p_lru_t *lru, const uint8_t *keys, size_t keys_len,
                              const uint32_t *lens, size_t n,
                              int32_t *slots, int32_t *evicted);
/* Copies up to cap keys, most recent first, back to back into out[0..out_cap)
 * with their lengths in lens; stops early where the next key would not fit.
 * Returns how many keys it wrote. */
uint32_t qp2p_lru_keys(const qp2p_lru_t *lru, uint8_t *out, size_t out_cap,
                       uint32_t *lens, uint32_t cap);

#endif /* QP2P_H */
