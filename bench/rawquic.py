"""Raw aioquic reference for endpoint benchmarks: the same bytes on a single
stream, with the same TLS, flow-control and datagram-size settings our
endpoint uses (``quic_p2p.proto.tls`` builds both configurations), and no framing,
roles or acknowledgements of ours. aioquic's own ``serve()``/``connect()``
drive it (one socket per connection, transmit after every datagram)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.events import DatagramFrameReceived, QuicEvent, StreamDataReceived

from quic_p2p import Config
from quic_p2p.certfiles import generate_self_signed
from quic_p2p.proto.tls import client_configuration, server_configuration


class _Sink(QuicConnectionProtocol):
    """Counts the bytes of each stream; answers one byte when the stream ends.
    Counts datagrams, and sets ``arrived`` once ``expect`` of them came."""

    #: The latest connection the server accepted.
    latest: _Sink | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counts: dict[int, int] = {}
        self.datagrams = 0
        self.expect = 0
        self.arrived = asyncio.Event()
        _Sink.latest = self

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, DatagramFrameReceived):
            self.datagrams += 1
            if self.datagrams >= self.expect:
                self.arrived.set()
        elif isinstance(event, StreamDataReceived):
            self._counts[event.stream_id] = self._counts.get(event.stream_id, 0) + len(event.data)
            if event.end_stream:
                self._quic.send_stream_data(event.stream_id, b"k", end_stream=True)
                self.transmit()


def _cfg() -> Config:
    # No idle timeout: the connection waits, unused, while other benchmarks run.
    return Config(ip="127.0.0.1", idle_timeout_msec=0)


class RawPair:
    """A server and a connected client, on loopback."""

    def __init__(self) -> None:
        self.server: Any = None
        self.client: QuicConnectionProtocol | None = None
        self._client_cm: Any = None
        self._sink: _Sink | None = None

    @property
    def port(self) -> int:
        port: int = self.server._transport.get_extra_info("sockname")[1]
        return port

    async def start(self) -> None:
        self.server = await serve(
            "127.0.0.1",
            0,
            configuration=server_configuration(_cfg(), generate_self_signed()),
            create_protocol=_Sink,
        )
        self._client_cm = connect(
            "127.0.0.1", self.port, configuration=client_configuration(_cfg(), None)
        )
        self.client = await self._client_cm.__aenter__()
        await self.client.ping()  # the server has accepted it: its sink is the latest
        self._sink = _Sink.latest

    async def handshake(self) -> Any:
        """A bare handshake: a fresh client connection to the same server, up
        once the client's handshake completed and one PING round trip (so the
        server has completed too). Returns the open connection's context
        manager; close it with :meth:`close_handshake` (not part of the timing)."""
        cm = connect("127.0.0.1", self.port, configuration=client_configuration(_cfg(), None))
        client = await cm.__aenter__()
        await client.ping()
        return cm

    @staticmethod
    async def close_handshake(cm: Any) -> None:
        await cm.__aexit__(None, None, None)

    async def send_messages(self, messages: list[bytes]) -> None:
        """All messages, back to back, on one new stream; waits for the reply
        the server sends once it has every byte."""
        assert self.client is not None
        reader, writer = await self.client.create_stream()
        for m in messages:
            writer.write(m)
        writer.write_eof()
        await reader.read()

    async def send_datagrams(self, payload: bytes, bursts: int, burst: int, wait: float) -> int:
        """``bursts`` bursts of ``burst`` datagrams, each burst waited for at
        the server (at most ``wait`` s: datagrams may be lost); returns how
        many arrived."""
        assert self.client is not None
        quic = self.client._quic
        sink = self._sink  # (not _Sink.latest: handshake benchmarks add connections)
        assert sink is not None
        start = sink.datagrams
        for _ in range(bursts):
            sink.expect = sink.datagrams + burst
            sink.arrived.clear()
            for _ in range(burst):
                quic.send_datagram_frame(payload)
            self.client.transmit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.arrived.wait(), wait)
        return sink.datagrams - start

    async def close(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
        if self.server is not None:
            self.server.close()
        await asyncio.sleep(0)
