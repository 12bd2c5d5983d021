"""Admission of unknown peers (sans-IO): what to do with an Initial packet
that matches no connection, before any connection state exists for it.

As quinn's ``Incoming``: accept, retry, refuse or ignore. With stateless retry
on, a client must first echo a token bound to its address (RFC 9000 §8.1);
until it does, the only cost to us is one HMAC and one Retry packet.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aioquic.quic.connection import TRANSPORT_CLOSE_FRAME_CAPACITY
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from ..accel import RetryTokens
from ..accel.types import QUIC_V1, DatagramInfo, PacketType, TokenError, address_bytes
from ..peer import Address

log = logging.getLogger(__name__)

#: RFC 9000 §14.1: a client's Initial datagram is at least 1200 bytes;
#: smaller ones are not answered (amplification defence).
MIN_INITIAL_DATAGRAM = 1200
SUPPORTED_VERSIONS = [QUIC_V1]


@dataclass(frozen=True)
class Accept:
    """Create the server connection (RFC 9000 §7.3 transport parameters)."""

    original_destination_cid: bytes
    retry_source_cid: bytes | None


@dataclass(frozen=True)
class Reply:
    """Send this datagram back, create nothing."""

    datagram: bytes
    what: str


@dataclass(frozen=True)
class Ignore:
    reason: str


Decision = Accept | Reply | Ignore


class Admission:
    """Decides the fate of Initials for unknown connection IDs."""

    def __init__(
        self,
        tokens: RetryTokens,
        *,
        random_bytes: Callable[[int], bytes],
        retry: bool = True,
        retry_above_rate: float = 0.0,
        cid_length: int = 8,
    ) -> None:
        self.tokens = tokens
        #: Where the Retry's source CID comes from (the driver passes
        #: ``os.urandom``; tests may pass something repeatable).
        self.random_bytes = random_bytes
        self.retry = retry
        #: Retry only while more than this many new handshakes per second
        #: arrive (0: always retry). Saves a round trip when not under load.
        self.retry_above_rate = retry_above_rate
        self.cid_length = cid_length
        self._recent: deque[float] = deque()
        self.counters: dict[str, int] = {}

    def decide(
        self,
        info: DatagramInfo,
        datagram_len: int,
        addr: Address,
        now: float,
        *,
        accepting: bool = True,
        skip_retry: bool = False,
    ) -> Decision:
        """``accepting=False`` (we are a Client, or at the connection limit)
        refuses Initials with CONNECTION_REFUSED instead of letting the peer
        time out. ``skip_retry``: the caller has validated this address
        otherwise (RFC 9000 §8.1), so a tokenless Initial is accepted."""
        if info.packet_type == PacketType.UNKNOWN_VERSION:
            return self._count(
                Reply(
                    encode_quic_version_negotiation(
                        source_cid=info.dcid,
                        destination_cid=info.scid,
                        supported_versions=SUPPORTED_VERSIONS,
                    ),
                    "version negotiation",
                )
            )
        if info.packet_type != PacketType.INITIAL:
            return self._count(Ignore("not an Initial for a known connection"))
        if datagram_len < MIN_INITIAL_DATAGRAM:
            return self._count(Ignore("Initial datagram below 1200 bytes"))
        if not accepting:
            close = stateless_close(
                info.version, info.dcid, info.scid, QuicErrorCode.CONNECTION_REFUSED
            )
            return self._count(Reply(close, "refused"))
        if not self.retry or (not info.token and (skip_retry or not self._under_load(now))):
            return self._count(Accept(info.dcid, None))
        addr_key = address_bytes(addr[0], addr[1])
        now_ms = int(now * 1000)
        if not info.token:
            retry_scid = self.random_bytes(self.cid_length)
            token = self.tokens.mint(addr_key, info.dcid, retry_scid, now_ms)
            return self._count(
                Reply(
                    encode_quic_retry(
                        version=info.version,
                        source_cid=retry_scid,
                        destination_cid=info.scid,
                        original_destination_cid=info.dcid,
                        retry_token=token,
                    ),
                    "retry",
                )
            )
        try:
            odcid = self.tokens.verify(info.token, addr_key, info.dcid, now_ms)
        except TokenError as exc:
            # RFC 9000 §8.1.2: the client will not accept another Retry, so
            # close at once with INVALID_TOKEN rather than let it time out.
            self._bump(f"invalid token: {exc.code.name.lower()}")
            log.info("invalid retry token from %s:%d: %s", addr[0], addr[1], exc)
            return self._count(
                Reply(
                    stateless_close(
                        info.version, info.dcid, info.scid, QuicErrorCode.INVALID_TOKEN
                    ),
                    "invalid token",
                )
            )
        return self._count(Accept(odcid, info.dcid))

    def _under_load(self, now: float) -> bool:
        if self.retry_above_rate <= 0:
            return True
        recent = self._recent
        recent.append(now)
        while recent and recent[0] < now - 1.0:
            recent.popleft()
        return len(recent) > self.retry_above_rate

    def _bump(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _count(self, decision: Decision) -> Decision:
        key = type(decision).__name__.lower()
        if isinstance(decision, Reply):
            key = decision.what
        elif isinstance(decision, Ignore):
            key = f"ignored: {decision.reason}"
        self._bump(key)
        return decision


def stateless_close(version: int, client_dcid: bytes, client_scid: bytes, error_code: int) -> bytes:
    """A server Initial closing the connection with a transport ``error_code``,
    built without connection state (Initial keys derive from the client's
    destination CID)."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=client_dcid,
        is_client=False,
        max_datagram_size=MIN_INITIAL_DATAGRAM,
        peer_cid=client_scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=TRANSPORT_CLOSE_FRAME_CAPACITY
    )
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)
    datagrams, _ = builder.flush()
    return datagrams[0]
