"""Our protocol's messages, as frames (sans-IO).

Every frame is ``header(16) + body`` (csrc/qp2p.h). Each side of a QUIC
connection owns one long-lived unidirectional *control stream* carrying the
handshake, echo, acknowledgements and user messages up to
``SMALL_MESSAGE_MAX``; each larger user message travels alone on a fresh
unidirectional stream, so it never delays the small ones (no head-of-line
blocking) and a receiver can refuse it without closing the connection.

Bodies:
  HANDSHAKE_NODE    the sender's certificate (DER)
  HANDSHAKE_CLIENT  empty
  ECHO_REQUEST      empty (msg_id correlates the response)
  ECHO_RESPONSE     the requester's address as seen by us (see encode_address)
  USER_MESSAGE      the user's bytes (msg_id: the sender's id, acknowledged)
  ACK               msg_ids received, 8 bytes each, big-endian
  REJECT            one byte: RejectReason (msg_id: the refused message)
  PUNCH_REQUEST     the target's address (as the rendezvous knows it); msg_id
                    correlates the answer
  PUNCH_INFO        u16 start delay (ms) | u8 address length | the other side's
                    address as the rendezvous sees it | its certificate (DER,
                    may be empty); msg_id: the request's, or 0 for the target
  RELAY_REQUEST     the target's address (as the relay knows it); msg_id
                    correlates the answer
  RELAY_OPEN        u32 session | u8 address length | the other side's address
                    as the relay sees it | its certificate (DER, may be empty);
                    msg_id: the request's, or 0 for the target
  RELAY_PACKET      one QUIC datagram of the two sides' own connection;
                    msg_id: the session, bit 63 set when the relay sends it
  RELAY_CLOSE       u8 RelayClose | UTF-8 reason; msg_id as for RELAY_PACKET
  REACH_REQUEST     empty; msg_id correlates the answer
  REACH_RESULT      u8 reached (0/1) | the address dialled (the requester's as
                    seen); msg_id: the request's

Bidirectional streams carry the application's named protocols (streams and
requests) instead; they never carry frames. The opener's first bytes are a
stream header, ``u8 mode | u8 name length | the protocol name (UTF-8)``
(``encode_stream_header``): mode 1 (a stream) is answered by one ACCEPT byte
(0x00) before anything else the acceptor sends; mode 2 (a request) is not:
the request is the rest of the opener's side, the reply the acceptor's whole
side. A stream the acceptor will not take is reset and stopped with a
``StreamCode`` (no handler, its limits, a bad header), as is one that fails
later (too large, the handler failed, the application aborted it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from enum import IntEnum

from ..accel import encode_frame_header
from ..accel.types import Frame, FrameKind, address_bytes
from ..errors import RemoteProtocolError
from ..peer import Address, InvalidContactError, NodeInfo

#: User messages up to this size share the control stream; larger ones get a
#: stream each. Also the smallest max_msg_size_allowed we accept, so a peer's
#: limit can only ever refuse a message on its own stream.
SMALL_MESSAGE_MAX = 16 * 1024
#: Non-user frames (handshake with a certificate, echo, acks) are small; a
#: control stream frame above this is a protocol violation.
CONTROL_FRAME_MAX = 64 * 1024
#: Most message ids one ACK frame carries (bounded body).
ACK_BATCH_MAX = 1024
#: Longest reason a RELAY_CLOSE carries (bytes, UTF-8).
RELAY_REASON_MAX = 200


class ErrorCode(IntEnum):
    """QUIC application error codes we close connections (or stop streams) with.

    In a range of their own (0x300 + n): QUIC's transport codes are 0x00-0x10
    and 0x100-0x1ff (TLS alerts), so a bare number in a log or a test (0x1
    INTERNAL_ERROR, 0x10 NO_VIABLE_PATH) never reads as one of ours."""

    NO_ERROR = 0x300
    PROTOCOL_VIOLATION = 0x301
    BAD_FRAME = 0x310
    BAD_HANDSHAKE = 0x311
    DUPLICATE_HANDSHAKE = 0x312
    ROLE_MISMATCH = 0x313
    REVERSE_CONNECT_FAILED = 0x314
    CERTIFICATE_MISMATCH = 0x315
    #: Retired: bidirectional streams carry the application's protocols now.
    BIDI_STREAM = 0x316
    TOO_MANY_STREAMS = 0x317
    REFUSED = 0x318
    HANDSHAKE_TIMEOUT = 0x319
    DISCONNECTED = 0x31A
    MESSAGE_TOO_LARGE = 0x31B
    SHUTDOWN = 0x31C
    #: We refused the certificate the peer presented, or its absence (a CA
    #: mode's chain, or a validity period); not a pin mismatch.
    CERTIFICATE_REFUSED = 0x31D


class RejectReason(IntEnum):
    TOO_LARGE = 1  # above the receiver's max_msg_size_allowed
    BUSY = 2  # the receiver's user is not reading events fast enough
    UNKNOWN_PEER = 3  # a rendezvous is not connected to the punch target
    RELAY_REFUSED = 4  # the node does not relay, or is at its relay limits
    CHECK_REFUSED = 5  # reachability checks: not for a Client, or too many at once
    RATE_LIMITED = 6  # a rendezvous: too many punch/relay requests from this asker


class RelayClose(IntEnum):
    """What a RELAY_CLOSE says about its session."""

    DIRECT = 0  # to the relay: the sender now sends directly (it still receives)
    CLOSED = 1  # the session is over (either way)


class StreamCode(IntEnum):
    """Application error codes of RESET_STREAM / STOP_SENDING on
    bidirectional streams (0x380 + n: beside ``ErrorCode``'s range)."""

    #: The application closed or aborted the stream (no other reason).
    CLOSED = 0x380
    #: No handler for the protocol the header names.
    NO_HANDLER = 0x381
    #: The acceptor's stream limits (per peer, per protocol), or the peer is
    #: not proven yet and its budget is spent.
    BUSY = 0x382
    #: The stream header (or the ACCEPT byte) is malformed.
    BAD_HEADER = 0x383
    #: A request or reply above the receiver's limit.
    TOO_LARGE = 0x384
    #: The handler raised (what it raised stays with its endpoint).
    HANDLER_FAILED = 0x385
    #: The endpoint is closing.
    SHUTDOWN = 0x386
    #: The request's caller stopped waiting (its timeout, or cancelled).
    CANCELLED = 0x387


class StreamMode(IntEnum):
    """What a stream header opens."""

    STREAM = 1
    REQUEST = 2


#: The message protocol's name: ``send`` and ``NewMessage``, on the
#: unidirectional streams (which need no header: every one of them is its).
#: Names under its prefix are reserved.
MESSAGE_PROTOCOL = "quic-p2p/messages/1"
RESERVED_PREFIX = "quic-p2p/"

#: The byte an acceptor sends first on a stream opened in ``StreamMode.STREAM``.
STREAM_ACCEPT = 0x00
#: The longest protocol name (UTF-8 bytes).
PROTOCOL_NAME_MAX = 255


def encode_stream_header(mode: StreamMode, protocol: str) -> bytes:
    name = protocol.encode()
    if not 0 < len(name) <= PROTOCOL_NAME_MAX:
        raise ValueError(f"a protocol name is 1 to {PROTOCOL_NAME_MAX} bytes of UTF-8")
    return bytes([mode, len(name)]) + name


def decode_stream_header(data: bytes | bytearray) -> tuple[StreamMode, str, int] | None:
    """``(mode, protocol, header length)`` once ``data`` (a stream's first
    bytes) holds the whole header, None while it is incomplete. Raises
    ``WireError`` for a malformed one."""
    if len(data) < 2:
        return None
    mode, size = data[0], data[1]
    if mode not in (StreamMode.STREAM, StreamMode.REQUEST):
        raise WireError(f"unknown stream mode {mode}")
    if size == 0:
        raise WireError("empty protocol name")
    if len(data) < 2 + size:
        return None
    try:
        name = bytes(data[2 : 2 + size]).decode()
    except UnicodeDecodeError:
        raise WireError("protocol name is not UTF-8") from None
    return StreamMode(mode), name, 2 + size


class WireError(RemoteProtocolError):
    """A frame's body does not fit its kind."""

    error_code = ErrorCode.BAD_FRAME


def frame(kind: FrameKind, body: bytes = b"", msg_id: int = 0) -> bytes:
    return encode_frame_header(kind, msg_id, len(body)) + body


def encode_address(addr: Address) -> bytes:
    return address_bytes(addr[0], addr[1])


def decode_address(body: bytes) -> Address:
    if len(body) == 6:
        return (str(ipaddress.IPv4Address(body[:4])), int.from_bytes(body[4:], "big"))
    if len(body) == 18:
        ip6 = ipaddress.IPv6Address(body[:16])
        host = ip6.ipv4_mapped if ip6.ipv4_mapped is not None else ip6
        return (str(host), int.from_bytes(body[16:], "big"))
    raise WireError(f"address must be 6 or 18 bytes, got {len(body)}")


def encode_ack(msg_ids: Iterable[int]) -> bytes:
    body = b"".join(i.to_bytes(8, "big") for i in msg_ids)
    return frame(FrameKind.ACK, body)


def decode_ack(body: bytes) -> list[int]:
    if len(body) % 8 or len(body) > 8 * ACK_BATCH_MAX:
        raise WireError(f"ACK body of {len(body)} bytes")
    return [int.from_bytes(body[i : i + 8], "big") for i in range(0, len(body), 8)]


def encode_reject(msg_id: int, reason: RejectReason) -> bytes:
    return frame(FrameKind.REJECT, bytes([reason]), msg_id)


def decode_reject(f: Frame) -> RejectReason:
    try:
        (reason,) = f.body
        return RejectReason(reason)
    except ValueError:
        raise WireError("REJECT body must be one known reason byte") from None


def _encode_contact(head: bytes, addr: Address, cert_der: bytes) -> bytes:
    packed = encode_address(addr)
    return head + bytes([len(packed)]) + packed + cert_der


def _decode_contact(body: bytes, head: int, what: str) -> tuple[bytes, NodeInfo]:
    """(head bytes, the node named) of a ``head | u8 len | addr | cert``
    body; a certificate that does not parse is a ``WireError`` like any
    other bad field (an empty one names no key)."""
    if len(body) < head + 1 or len(body) < head + 1 + body[head]:
        raise WireError(f"{what} body too short")
    alen = body[head]
    rest = head + 1
    addr = decode_address(body[rest : rest + alen])
    try:
        return body[:head], NodeInfo(addr, body[rest + alen :])
    except InvalidContactError as exc:
        raise WireError(f"{what}: {exc}") from None


def encode_punch_info(msg_id: int, delay_ms: int, addr: Address, cert_der: bytes) -> bytes:
    head = max(0, min(delay_ms, 0xFFFF)).to_bytes(2, "big")
    return frame(FrameKind.PUNCH_INFO, _encode_contact(head, addr, cert_der), msg_id)


def decode_punch_info(body: bytes) -> tuple[int, NodeInfo]:
    """(start delay in ms, the other side: its address and certificate)."""
    head, node = _decode_contact(body, 2, "PUNCH_INFO")
    return int.from_bytes(head, "big"), node


def encode_relay_open(msg_id: int, session: int, addr: Address, cert_der: bytes) -> bytes:
    head = session.to_bytes(4, "big")
    return frame(FrameKind.RELAY_OPEN, _encode_contact(head, addr, cert_der), msg_id)


def decode_relay_open(body: bytes) -> tuple[int, NodeInfo]:
    """(session, the other side: its address and certificate)."""
    head, node = _decode_contact(body, 4, "RELAY_OPEN")
    return int.from_bytes(head, "big"), node


def encode_reach_result(msg_id: int, reached: bool, addr: Address) -> bytes:
    return frame(FrameKind.REACH_RESULT, bytes([reached]) + encode_address(addr), msg_id)


def decode_reach_result(body: bytes) -> tuple[bool, Address]:
    if not body or body[0] > 1:
        raise WireError("REACH_RESULT must start with 0 or 1")
    return bool(body[0]), decode_address(body[1:])


def encode_relay_close(session: int, code: RelayClose, reason: str) -> bytes:
    text = reason.encode("utf-8")[:RELAY_REASON_MAX]
    return frame(FrameKind.RELAY_CLOSE, bytes([code]) + text, session)


def decode_relay_close(body: bytes) -> tuple[RelayClose, str]:
    if not body or len(body) > 1 + RELAY_REASON_MAX:
        raise WireError(f"RELAY_CLOSE body of {len(body)} bytes")
    try:
        code = RelayClose(body[0])
    except ValueError:
        raise WireError(f"unknown RELAY_CLOSE code {body[0]}") from None
    return code, body[1:].decode("utf-8", "replace")
