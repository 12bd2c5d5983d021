"""Shared contract of the accelerated hot paths: constants, result types and
exceptions. Both implementations (``cimpl`` over C, ``pyimpl`` in plain Python)
import everything here, so they cannot disagree on a constant or an error type.
Values mirror csrc/qp2p.h; tests check them against the compiled module.
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum
from typing import NamedTuple

from ..errors import RemoteProtocolError

# ---------------------------------------------------------------- framing
FRAME_VERSION = 1
FRAME_HEADER_SIZE = 16
#: Largest body a frame header can declare (the length field is 32 bits).
FRAME_MAX_BODY = 0xFFFF_FFFF


class FrameKind(IntEnum):
    HANDSHAKE_NODE = 1
    HANDSHAKE_CLIENT = 2
    ECHO_REQUEST = 3
    ECHO_RESPONSE = 4
    USER_MESSAGE = 5
    ACK = 6
    REJECT = 7
    PUNCH_REQUEST = 8
    PUNCH_INFO = 9
    RELAY_REQUEST = 10
    RELAY_OPEN = 11
    RELAY_PACKET = 12
    RELAY_CLOSE = 13
    REACH_REQUEST = 14
    REACH_RESULT = 15


KIND_MAX = max(FrameKind)


class Frame(NamedTuple):
    """One decoded frame. ``kind`` is a plain int (a FrameKind value)."""

    kind: int
    msg_id: int
    body: bytes


class FrameErrorCode(IntEnum):
    VERSION = -1
    KIND = -2
    FLAGS = -3
    TOO_LARGE = -4


class FrameError(RemoteProtocolError):
    """The byte stream holds an invalid frame header.

    ``frames`` holds the valid frames decoded before the bad header in the same
    ``feed`` call, so none of a peer's earlier messages are lost.
    """

    error_code = 0x310  # quic_p2p.proto.wire.ErrorCode.BAD_FRAME (wire imports this module)

    def __init__(self, code: FrameErrorCode, frames: list[Frame] | None = None) -> None:
        super().__init__(f"invalid frame: {code.name.lower()}")
        self.code = code
        self.frames: list[Frame] = frames if frames is not None else []


# ---------------------------------------------------------------- datagrams
QUIC_V1 = 0x0000_0001
MAX_CID_LEN = 20


class PacketType(IntEnum):
    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3
    VERSION_NEGOTIATION = 4
    ONE_RTT = 5
    UNKNOWN_VERSION = 6


class DatagramInfo(NamedTuple):
    """What the demultiplexer needs from a datagram's first packet."""

    long_header: bool
    packet_type: PacketType
    version: int  # 0 for short headers
    dcid: bytes
    scid: bytes  # long headers only, else b""
    token: bytes  # v1 Initial only, else b""


class DatagramErrorCode(IntEnum):
    TRUNCATED = -10
    FIXED_BIT = -11
    CID_LENGTH = -12


class DatagramError(ValueError):
    """The datagram is not a QUIC packet we can route; the endpoint drops it."""

    def __init__(self, code: DatagramErrorCode) -> None:
        super().__init__(f"undecodable datagram: {code.name.lower()}")
        self.code = code


# ---------------------------------------------------------------- retry tokens
SHA256_SIZE = 32
TOKEN_VERSION = 1
TOKEN_FIXED = 11 + SHA256_SIZE
TOKEN_MAX = TOKEN_FIXED + MAX_CID_LEN
TOKEN_MAX_ADDR = 255

# ---------------------------------------------------------------- LRU index
LRU_MAX_CAPACITY = 1 << 20
LRU_MAX_KEY_LEN = 4096


class TokenErrorCode(IntEnum):
    MALFORMED = -20
    UNKNOWN_KEY = -21
    BAD_MAC = -22
    EXPIRED = -23
    FUTURE = -24


class TokenError(RemoteProtocolError):
    """A retry token failed validation (RFC 9000 §8.1: INVALID_TOKEN)."""

    error_code = 0x0B  # INVALID_TOKEN transport error code

    def __init__(self, code: TokenErrorCode) -> None:
        super().__init__(f"invalid retry token: {code.name.lower()}")
        self.code = code


def address_bytes(host: str, port: int) -> bytes:
    """A UDP address as retry tokens bind it: the packed IPv4 (4) or IPv6 (16)
    octets, then the port as 2 bytes big-endian. ValueError for anything else."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be in 0..65535, got {port}")
    return ipaddress.ip_address(host).packed + port.to_bytes(2, "big")
