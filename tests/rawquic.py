"""A raw aioquic client on its own UDP socket, for peers our own endpoint
would never be: one presenting no certificate, or a certificate whose key it
does not hold. Real TLS on loopback; only the client side is hand-driven."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from quic_p2p.tls import ALPN

from netutil import WAIT

#: A client's first unidirectional stream: its control stream.
CONTROL = 2


def raw_configuration() -> QuicConfiguration:
    """A client that speaks our ALPN, checks nothing and presents nothing."""
    return QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)


@dataclass(eq=False)
class RawClient(asyncio.DatagramProtocol):
    configuration: QuicConfiguration
    quic: QuicConnection = field(init=False)
    events: list[qe.QuicEvent] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    timer: asyncio.TimerHandle | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Sent on the control stream the moment the handshake completes, so it
    #: leaves in the same datagram as the client's Finished (and certificate).
    first_flight: bytes = b""

    def __post_init__(self) -> None:
        self.quic = QuicConnection(configuration=self.configuration)

    @classmethod
    async def open(
        cls, target: tuple[str, int], configuration: QuicConfiguration, first_flight: bytes = b""
    ) -> RawClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_datagram_endpoint(
            lambda: cls(configuration, first_flight=first_flight), local_addr=("127.0.0.1", 0)
        )
        client.quic.connect(target, now=loop.time())
        client.flush()
        return client

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

    @property
    def completed(self) -> bool:
        return any(isinstance(e, qe.HandshakeCompleted) for e in self.events)

    @property
    def terminated(self) -> qe.ConnectionTerminated | None:
        for e in self.events:
            if isinstance(e, qe.ConnectionTerminated):
                return e
        return None

    async def until_terminated(self) -> qe.ConnectionTerminated:
        await self.wait(lambda: self.terminated is not None)
        term = self.terminated
        assert term is not None
        return term

    def send(self, stream_id: int, data: bytes) -> None:
        self.quic.send_stream_data(stream_id, data)
        self.flush()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
