"""A raw aioquic client connection driven by hand, on its own UDP socket: how
tests play a peer that writes our frames (docs/wire.md) as it likes, or one our
own endpoint would never be (no certificate, a certificate whose key it does
not hold, no flow-control credit). It accepts no incoming connection (a
Client-like peer, or a Node that never answers the reverse connection). Real
TLS on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from quic_p2p.certfiles import generate_self_signed
from quic_p2p.peer import PeerId
from quic_p2p.proto.tls import ALPN

from netutil import WAIT


def header(kind: int, msg_id: int = 0, length: int = 0, version: int = 1, flags: int = 0) -> bytes:
    """A frame header built field by field (csrc/qp2p.h), independent of the encoder."""
    return (
        version.to_bytes(1, "big")
        + kind.to_bytes(1, "big")
        + flags.to_bytes(2, "big")
        + length.to_bytes(4, "big")
        + msg_id.to_bytes(8, "big")
    )


CONTROL = 2  # a client's first unidirectional stream: its control stream


def raw_configuration(*, present: bool = True) -> QuicConfiguration:
    """A client that speaks our ALPN and checks nothing. It presents a fresh
    self-signed certificate (every peer must: its key is its id), or, with
    ``present=False``, nothing."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    if present:
        ours = generate_self_signed("raw peer")
        cfg.certificate = x509.load_der_x509_certificate(ours.cert_der)
        cfg.private_key = serialization.load_der_private_key(ours.key_der, None)  # type: ignore[assignment]
    return cfg


@dataclass(eq=False)
class RawPeer(asyncio.DatagramProtocol):
    """An aioquic client connection we drive by hand."""

    target: tuple[str, int]
    #: Flow-control credit we grant (None: aioquic's default); a tiny one
    #: plays a peer that withholds credit.
    max_data: int | None = None
    max_stream_data: int | None = None
    #: None: ``raw_configuration()``.
    configuration: QuicConfiguration | None = None
    #: Sent on the control stream the moment the handshake completes, so it
    #: leaves in the same datagram as the client's Finished (and certificate).
    first_flight: bytes = b""
    quic: QuicConnection = field(init=False)
    events: list[qe.QuicEvent] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    timer: asyncio.TimerHandle | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def cert_der(self) -> bytes:
        """The certificate this peer presents (DER; b"": none)."""
        cert = self.quic.configuration.certificate
        return b"" if cert is None else cert.public_bytes(serialization.Encoding.DER)

    @property
    def peer_id(self) -> PeerId | None:
        """The id of the certificate this peer presents (None: it presents none)."""
        cert = self.quic.configuration.certificate
        return None if cert is None else PeerId.from_public_key(cert.public_key())

    def __post_init__(self) -> None:
        cfg = self.configuration or raw_configuration()
        if self.max_data is not None:
            cfg.max_data = self.max_data
        if self.max_stream_data is not None:
            cfg.max_stream_data = self.max_stream_data
        self.quic = QuicConnection(configuration=cfg)

    @classmethod
    async def open(
        cls, target: tuple[str, int], local_ip: str = "127.0.0.1", **options: Any
    ) -> RawPeer:
        """A connection to ``target``, its first Initial sent."""
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(
            lambda: cls(target, **options), local_addr=(local_ip, 0)
        )
        peer.quic.connect(target, now=loop.time())
        peer.flush()
        return peer

    @classmethod
    async def connect(
        cls, target: tuple[str, int], local_ip: str = "127.0.0.1", **options: Any
    ) -> RawPeer:
        """A connection to ``target`` whose TLS handshake completed."""
        peer = await cls.open(target, local_ip, **options)
        await peer.wait(lambda: peer.completed)
        return peer

    @property
    def completed(self) -> bool:
        return any(isinstance(e, qe.HandshakeCompleted) for e in self.events)

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.quic.receive_datagram(data, addr, now=asyncio.get_running_loop().time())
        self.flush()

    def flush(self) -> None:
        loop = asyncio.get_running_loop()
        while (ev := self.quic.next_event()) is not None:
            self.events.append(ev)
            self.changed.set()
            if isinstance(ev, qe.HandshakeCompleted) and self.first_flight:
                self.quic.send_stream_data(CONTROL, self.first_flight)
        if self.transport is not None and not self.transport.is_closing():
            for data, addr in self.quic.datagrams_to_send(now=loop.time()):
                self.transport.sendto(data, addr)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        at = self.quic.get_timer()
        if at is not None:
            self.timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.quic.handle_timer(now=asyncio.get_running_loop().time())
        self.flush()

    async def wait(self, pred: Callable[[], bool], timeout: float = WAIT) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.quic.send_stream_data(stream_id, data, end_stream=end)
        self.flush()

    def new_stream(self) -> int:
        return self.quic.get_next_available_stream_id(is_unidirectional=True)

    def new_stream_bidi(self) -> int:
        return self.quic.get_next_available_stream_id(is_unidirectional=False)

    def resets(self) -> dict[int, int]:
        """The error code of each stream the victim reset, by stream id."""
        return {e.stream_id: e.error_code for e in self.events if isinstance(e, qe.StreamReset)}

    def stream_data(self, stream_id: int) -> bytes:
        return b"".join(
            e.data
            for e in self.events
            if isinstance(e, qe.StreamDataReceived) and e.stream_id == stream_id
        )

    async def until_terminated(self, timeout: float = WAIT) -> qe.ConnectionTerminated:  # noqa: ASYNC109
        await self.wait(lambda: self.terminated is not None, timeout)
        term = self.terminated
        assert term is not None
        return term

    async def closed_with(self, timeout: float = WAIT) -> int:  # noqa: ASYNC109
        """The error code the victim closed the connection with."""
        return (await self.until_terminated(timeout)).error_code

    @property
    def terminated(self) -> qe.ConnectionTerminated | None:
        for e in self.events:
            if isinstance(e, qe.ConnectionTerminated):
                return e
        return None

    def received(self) -> bytes:
        return b"".join(
            e.data for e in self.events if isinstance(e, qe.StreamDataReceived) and e.stream_id == 3
        )

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()
