"""QUIC datagram classifier in plain Python (RFC 8999 invariants, RFC 9000 section 17).

Fields are walked in wire order and each is bounds-checked before it is read,
so the first problem met is the one reported, exactly as in csrc/classify.c.
"""

from __future__ import annotations

from ..types import MAX_CID_LEN, QUIC_V1, DatagramError, DatagramErrorCode, DatagramInfo, PacketType

_TRUNCATED = DatagramErrorCode.TRUNCATED
_ONE_RTT = PacketType.ONE_RTT
#: v1 long-header type bits (0x30) in order: Initial, 0-RTT, Handshake, Retry.
_V1_TYPES = (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE, PacketType.RETRY)


def classify_datagram(data: bytes, short_dcid_len: int) -> DatagramInfo:
    """Classifies the first packet of ``data``; raises DatagramError if it cannot be routed.

    ``short_dcid_len`` (0..20) is the length of the connection IDs we issue,
    since short headers do not carry it. Raises ValueError when out of range.
    """
    if (
        data
        and data[0] & 0xC0 == 0x40  # short header, fixed bit set: nearly all traffic
        and short_dcid_len < len(data)
        and 0 <= short_dcid_len <= MAX_CID_LEN
    ):
        return DatagramInfo(False, _ONE_RTT, 0, data[1 : 1 + short_dcid_len], b"", b"")
    if not 0 <= short_dcid_len <= MAX_CID_LEN:
        raise ValueError(f"short_dcid_len must be in 0..{MAX_CID_LEN}, got {short_dcid_len}")
    if not data:
        raise DatagramError(_TRUNCATED)
    first = data[0]
    if not first & 0x80:
        if not first & 0x40:
            raise DatagramError(DatagramErrorCode.FIXED_BIT)
        if len(data) <= short_dcid_len:
            raise DatagramError(_TRUNCATED)
        return DatagramInfo(False, _ONE_RTT, 0, data[1 : 1 + short_dcid_len], b"", b"")

    end = len(data)
    if end < 5:
        raise DatagramError(_TRUNCATED)
    version = int.from_bytes(data[1:5], "big")
    is_v1 = version == QUIC_V1
    if is_v1 and not first & 0x40:
        raise DatagramError(DatagramErrorCode.FIXED_BIT)
    pos = 5
    cids = []
    for _ in range(2):  # destination, then source connection ID
        if pos >= end:
            raise DatagramError(_TRUNCATED)
        cid_len = data[pos]
        pos += 1
        if is_v1 and cid_len > MAX_CID_LEN:
            raise DatagramError(DatagramErrorCode.CID_LENGTH)
        if cid_len > end - pos:
            raise DatagramError(_TRUNCATED)
        cids.append(data[pos : pos + cid_len])
        pos += cid_len
    dcid, scid = cids

    if version == 0:
        return DatagramInfo(True, PacketType.VERSION_NEGOTIATION, 0, dcid, scid, b"")
    if not is_v1:
        return DatagramInfo(True, PacketType.UNKNOWN_VERSION, version, dcid, scid, b"")
    packet_type = _V1_TYPES[(first >> 4) & 0x03]
    token = b""
    if packet_type is PacketType.INITIAL:
        # RFC 9000 section 16: the two top bits give the varint's size.
        if pos >= end:
            raise DatagramError(_TRUNCATED)
        size = 1 << (data[pos] >> 6)
        if size > end - pos:
            raise DatagramError(_TRUNCATED)
        token_len = int.from_bytes(data[pos : pos + size], "big") & ((1 << (8 * size - 2)) - 1)
        pos += size
        if token_len > end - pos:
            raise DatagramError(_TRUNCATED)
        token = data[pos : pos + token_len]
    return DatagramInfo(True, packet_type, version, dcid, scid, token)
