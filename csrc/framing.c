/*
 * framing.c - the 16-byte frame header: encode, batch-encode and scan.
 *
 * The scanner only reports where frames are; the caller slices the bodies out
 * of its own buffer, so nothing is copied here and a body never crosses the
 * FFI twice. Every bound is checked with subtractions against what is left
 * (never `pos + n <= len`), so a hostile 32-bit length cannot wrap an index.
 */
#include <string.h>

#include "qp2p.h"

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
           (uint32_t)p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return ((uint64_t)get_be32(p) << 32) | (uint64_t)get_be32(p + 4);
}

int qp2p_frame_encode_header(uint8_t *out, uint8_t kind,
                             uint64_t msg_id, uint64_t length, uint32_t max_body)
{
    if (kind < 1 || kind > QP2P_KIND_MAX || length > max_body)
        return QP2P_E_ARG;
    out[0] = QP2P_FRAME_VERSION;
    out[1] = kind;
    out[2] = 0;
    out[3] = 0;
    put_be32(out + 4, (uint32_t)length);
    put_be64(out + 8, msg_id);
    return QP2P_OK;
}

/* The order of the checks is part of the contract (the twin follows it): a
 * header with several faults reports the first field that is wrong. */
static int check_header(const uint8_t *h, uint32_t max_body, uint32_t *length)
{
    if (h[0] != QP2P_FRAME_VERSION)
        return QP2P_E_FRAME_VERSION;
    if (h[1] == 0 || h[1] > QP2P_KIND_MAX)
        return QP2P_E_FRAME_KIND;
    if (h[2] != 0 || h[3] != 0)
        return QP2P_E_FRAME_FLAGS;
    *length = get_be32(h + 4);
    if (*length > max_body)
        return QP2P_E_FRAME_TOO_LARGE;
    return QP2P_OK;
}

static size_t need_for(uint32_t body)
{
#if SIZE_MAX <= UINT32_MAX
    /* 32-bit size_t: saturate rather than wrap, so the caller waits for "more
     * than it can ever hold" instead of a few bytes. */
    if (body > SIZE_MAX - QP2P_FRAME_HEADER_SIZE)
        return SIZE_MAX;
#endif
    return (size_t)body + QP2P_FRAME_HEADER_SIZE;
}

size_t qp2p_frame_scan(const uint8_t *buf, size_t len, uint32_t max_body,
                       qp2p_frame_t *out, size_t max_frames,
                       size_t *consumed, int *status, size_t *need)
{
    size_t pos = 0, n = 0;

    *status = QP2P_OK;
    *need = 0;
    while (n < max_frames) {
        size_t avail = len - pos;
        uint32_t body;
        int st;

        if (avail < QP2P_FRAME_HEADER_SIZE) {
            *need = QP2P_FRAME_HEADER_SIZE;
            break;
        }
        st = check_header(buf + pos, max_body, &body);
        if (st != QP2P_OK) {
            *status = st;
            break;
        }
        if (body > avail - QP2P_FRAME_HEADER_SIZE) {
            *need = need_for(body);
            break;
        }
        out[n].msg_id = get_be64(buf + pos + 8);
        out[n].offset = (uint64_t)(pos + QP2P_FRAME_HEADER_SIZE);
        out[n].length = body;
        out[n].kind = buf[pos + 1];
        n++;
        pos += QP2P_FRAME_HEADER_SIZE + (size_t)body;
    }
    *consumed = pos;
    return n;
}

int qp2p_frame_encode_batch(uint8_t *out, size_t out_cap,
                            const uint8_t *bodies, size_t bodies_len,
                            const uint8_t *kinds, const uint64_t *msg_ids,
                            const uint32_t *lengths, size_t n, uint32_t max_body,
                            size_t *written)
{
    size_t pos = 0, src = 0, i;

    if (written != NULL)
        *written = 0;
    for (i = 0; i < n; i++) {
        size_t body = lengths[i];

        if (body > bodies_len - src)
            return QP2P_E_ARG;
        if (out_cap - pos < QP2P_FRAME_HEADER_SIZE ||
            body > out_cap - pos - QP2P_FRAME_HEADER_SIZE)
            return QP2P_E_BUFFER;
        if (qp2p_frame_encode_header(out + pos, kinds[i], msg_ids[i], body, max_body) != QP2P_OK)
            return QP2P_E_ARG;
        pos += QP2P_FRAME_HEADER_SIZE;
        if (body > 0) /* memcpy with a NULL source is undefined even for 0 bytes */
            memcpy(out + pos, bodies + src, body);
        pos += body;
        src += body;
    }
    /* Bodies left over mean the lengths and the bodies disagree: a caller bug
     * that would otherwise silently drop data. */
    if (src != bodies_len)
        return QP2P_E_ARG;
    if (written != NULL)
        *written = pos;
    return QP2P_OK;
}
