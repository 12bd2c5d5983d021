/*
 * token.c - stateless retry tokens (layout in qp2p.h, section 2).
 *
 * The MAC input is assembled in one stack buffer and hashed in a single HMAC
 * call: at most 11 + 20 + 1 + 255 + 1 + 20 = 308 bytes, so a typical token
 * (short CIDs, an IPv4/IPv6 address) costs two compressions with the key's
 * precomputed pads.
 */
#include <string.h>

#include "qp2p.h"

#define HEAD 11 /* version, key_id, issued_at_ms, odcid_len */
#define MAC_INPUT_MAX (HEAD + QP2P_MAX_CID_LEN + 1 + QP2P_TOKEN_MAX_ADDR + 1 + QP2P_MAX_CID_LEN)

/* memcpy with a NULL source is undefined even for n == 0, and callers may pass
 * NULL for empty fields. */
static uint8_t *put(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n)
        memcpy(dst, src, n);
    return dst + n;
}

/* Appends u8 addr_len || addr || u8 rscid_len || rscid after the token's head
 * (already at msg[0..head_len)) and returns the MAC input's total length. */
static size_t mac_input(uint8_t *msg, size_t head_len, const uint8_t *addr, size_t addr_len,
                        const uint8_t *rscid, size_t rscid_len)
{
    uint8_t *p = msg + head_len;
    *p++ = (uint8_t)addr_len;
    p = put(p, addr, addr_len);
    *p++ = (uint8_t)rscid_len;
    p = put(p, rscid, rscid_len);
    return (size_t)(p - msg);
}

int qp2p_token_mint(const qp2p_hmac_key_t *key, uint8_t key_id,
                    const uint8_t *addr, size_t addr_len,
                    const uint8_t *odcid, size_t odcid_len,
                    const uint8_t *rscid, size_t rscid_len,
                    uint64_t issued_at_ms, uint8_t *out, size_t out_cap)
{
    uint8_t msg[MAC_INPUT_MAX];
    size_t head_len, token_len, n;
    int i;

    if (key == NULL || out == NULL || addr_len > QP2P_TOKEN_MAX_ADDR ||
        odcid_len > QP2P_MAX_CID_LEN || rscid_len > QP2P_MAX_CID_LEN ||
        (addr == NULL && addr_len) || (odcid == NULL && odcid_len) ||
        (rscid == NULL && rscid_len))
        return QP2P_E_ARG;
    head_len = HEAD + odcid_len;
    token_len = head_len + QP2P_SHA256_SIZE;
    if (out_cap < token_len)
        return QP2P_E_BUFFER;

    msg[0] = QP2P_TOKEN_VERSION;
    msg[1] = key_id;
    for (i = 0; i < 8; i++)
        msg[2 + i] = (uint8_t)(issued_at_ms >> (56 - 8 * i));
    msg[10] = (uint8_t)odcid_len;
    put(msg + HEAD, odcid, odcid_len);
    n = mac_input(msg, head_len, addr, addr_len, rscid, rscid_len);

    memcpy(out, msg, head_len);
    qp2p_hmac_sha256(key, msg, n, out + head_len);
    return (int)token_len;
}

int qp2p_token_verify(const qp2p_hmac_key_t *current, uint8_t current_id,
                      const qp2p_hmac_key_t *previous, uint8_t previous_id,
                      const uint8_t *token, size_t token_len,
                      const uint8_t *addr, size_t addr_len,
                      const uint8_t *rscid, size_t rscid_len,
                      uint64_t now_ms, uint64_t lifetime_ms, uint64_t skew_ms,
                      size_t *odcid_offset, size_t *odcid_len)
{
    uint8_t msg[MAC_INPUT_MAX];
    uint8_t mac[QP2P_SHA256_SIZE];
    const qp2p_hmac_key_t *key;
    size_t head_len, n, cid_len;
    uint64_t issued = 0;
    int i;

    if (current == NULL || addr_len > QP2P_TOKEN_MAX_ADDR || rscid_len > QP2P_MAX_CID_LEN ||
        (token == NULL && token_len) || (addr == NULL && addr_len) ||
        (rscid == NULL && rscid_len))
        return QP2P_E_ARG;

    /* Layout: the exact length follows from odcid_len, so nothing below can
     * read past token_len. */
    if (token_len < QP2P_TOKEN_FIXED || token[0] != QP2P_TOKEN_VERSION)
        return QP2P_E_TOKEN_MALFORMED;
    cid_len = token[10];
    if (cid_len > QP2P_MAX_CID_LEN || token_len != QP2P_TOKEN_FIXED + cid_len)
        return QP2P_E_TOKEN_MALFORMED;

    /* One MAC at most: the key id picks the key, so a forged token costs a
     * flood the same as a real one, never twice. */
    if (token[1] == current_id)
        key = current;
    else if (previous != NULL && token[1] == previous_id)
        key = previous;
    else
        return QP2P_E_TOKEN_UNKNOWN_KEY;

    head_len = HEAD + cid_len;
    memcpy(msg, token, head_len);
    n = mac_input(msg, head_len, addr, addr_len, rscid, rscid_len);
    qp2p_hmac_sha256(key, msg, n, mac);
    if (!qp2p_ct_equal(mac, token + head_len, QP2P_SHA256_SIZE))
        return QP2P_E_TOKEN_BAD_MAC;

    /* Age only once authentic, so a forger learns nothing about our clock.
     * Written as differences: now + skew could wrap around 2^64. */
    for (i = 0; i < 8; i++)
        issued = (issued << 8) | token[2 + i];
    if (issued > now_ms && issued - now_ms > skew_ms)
        return QP2P_E_TOKEN_FUTURE;
    if (now_ms > issued && now_ms - issued > lifetime_ms)
        return QP2P_E_TOKEN_EXPIRED;

    if (odcid_offset != NULL)
        *odcid_offset = HEAD;
    if (odcid_len != NULL)
        *odcid_len = cid_len;
    return QP2P_OK;
}

int qp2p_token_verify_keys(const qp2p_token_keys_t *keys,
                           const uint8_t *token, size_t token_len,
                           const uint8_t *addr, size_t addr_len,
                           const uint8_t *rscid, size_t rscid_len, uint64_t now_ms)
{
    if (keys == NULL)
        return QP2P_E_ARG;
    return qp2p_token_verify(&keys->current, keys->current_id,
                             keys->has_previous ? &keys->previous : NULL, keys->previous_id,
                             token, token_len, addr, addr_len, rscid, rscid_len,
                             now_ms, keys->lifetime_ms, keys->skew_ms, NULL, NULL);
}
