/*
 * classify.c - what the endpoint's demultiplexer needs from a datagram's
 * first packet, before any connection state exists (RFC 8999 invariants,
 * RFC 9000 section 17 for version 1).
 *
 * Fields are walked in wire order and each one is bounds-checked before it is
 * read, so the first problem met is the one reported; the Python twin walks
 * in the same order and therefore reports the same error for the same bytes.
 * Lengths past the parsed fields (Length, packet number, payload) are not
 * looked at: the connection that owns the packet validates those.
 */
#include <string.h>

#include "qp2p.h"

#define LONG_HEADER_BIT 0x80u
#define FIXED_BIT       0x40u

/* Reads a one-byte connection ID length and skips the ID. Versions other
 * than 1 follow only the invariants, which allow IDs of up to 255 bytes. */
static int take_cid(const uint8_t *buf, size_t len, size_t *pos, int is_v1,
                    uint32_t *offset, uint32_t *length)
{
    size_t cid_len;

    if (len - *pos < 1)
        return QP2P_E_DGRAM_TRUNCATED;
    cid_len = buf[*pos];
    *pos += 1;
    if (is_v1 && cid_len > QP2P_MAX_CID_LEN)
        return QP2P_E_DGRAM_CID_LENGTH;
    if (len - *pos < cid_len)
        return QP2P_E_DGRAM_TRUNCATED;
    *offset = (uint32_t)*pos;
    *length = (uint32_t)cid_len;
    *pos += cid_len;
    return QP2P_OK;
}

int qp2p_classify_datagram(const uint8_t *buf, size_t len, size_t short_dcid_len,
                           qp2p_dgram_info_t *out_opt)
{
    /* Filled locally and copied out on success only: *out_opt is never left
     * half-written, and NULL costs nothing for a caller that needs just the type. */
    qp2p_dgram_info_t info, *out = &info;
    size_t pos;
    uint8_t first;
    uint32_t version;
    int is_v1, st, pt;

    if (short_dcid_len > QP2P_MAX_CID_LEN)
        return QP2P_E_ARG;
#if SIZE_MAX > UINT32_MAX
    if (len > UINT32_MAX)
        return QP2P_E_ARG;
#endif
    memset(out, 0, sizeof *out);
    if (len < 1)
        return QP2P_E_DGRAM_TRUNCATED;
    first = buf[0];

    if (!(first & LONG_HEADER_BIT)) {
        /* A short header carries no version and no CID length: the DCID is
         * as long as the IDs we hand out, so that is all we can check. */
        if (!(first & FIXED_BIT))
            return QP2P_E_DGRAM_FIXED_BIT;
        if (len - 1 < short_dcid_len)
            return QP2P_E_DGRAM_TRUNCATED;
        out->form = QP2P_FORM_SHORT;
        out->packet_type = QP2P_PT_ONE_RTT;
        out->dcid_offset = 1;
        out->dcid_length = (uint32_t)short_dcid_len;
        if (out_opt != NULL)
            *out_opt = info;
        return QP2P_PT_ONE_RTT;
    }

    if (len < 5)
        return QP2P_E_DGRAM_TRUNCATED;
    version = ((uint32_t)buf[1] << 24) | ((uint32_t)buf[2] << 16) |
              ((uint32_t)buf[3] << 8) | (uint32_t)buf[4];
    is_v1 = version == QP2P_QUIC_V1;
    /* Version negotiation and unknown versions leave the low 7 bits to the
     * version, so only v1 has a fixed bit to check. */
    if (is_v1 && !(first & FIXED_BIT))
        return QP2P_E_DGRAM_FIXED_BIT;
    pos = 5;
    st = take_cid(buf, len, &pos, is_v1, &out->dcid_offset, &out->dcid_length);
    if (st != QP2P_OK)
        return st;
    st = take_cid(buf, len, &pos, is_v1, &out->scid_offset, &out->scid_length);
    if (st != QP2P_OK)
        return st;

    if (version == 0)
        pt = QP2P_PT_VERSION_NEGOTIATION;
    else if (!is_v1)
        pt = QP2P_PT_UNKNOWN_VERSION;
    else
        pt = (first >> 4) & 0x03; /* v1 long packet types map onto QP2P_PT_INITIAL.. */

    if (pt == QP2P_PT_INITIAL) {
        /* RFC 9000 section 16: the two top bits give the varint's size. */
        size_t vlen, i;
        uint64_t token_len;

        if (len - pos < 1)
            return QP2P_E_DGRAM_TRUNCATED;
        vlen = (size_t)1 << (buf[pos] >> 6);
        if (len - pos < vlen)
            return QP2P_E_DGRAM_TRUNCATED;
        token_len = buf[pos] & 0x3fu;
        for (i = 1; i < vlen; i++)
            token_len = (token_len << 8) | buf[pos + i];
        pos += vlen;
        if (token_len > len - pos)
            return QP2P_E_DGRAM_TRUNCATED;
        out->token_offset = (uint32_t)pos;
        out->token_length = (uint32_t)token_len;
    }

    out->form = QP2P_FORM_LONG;
    out->packet_type = (uint8_t)pt;
    out->version = version;
    if (out_opt != NULL)
        *out_opt = info;
    return pt;
}
