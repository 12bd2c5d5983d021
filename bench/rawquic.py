"""Raw aioquic reference for endpoint benchmarks: the same bytes on a single
stream, with the same TLS, flow-control and datagram-size settings our
endpoint uses (``quic_p2p.proto.tls`` builds both configurations), and no framing,
roles or acknowledgements of ours. aioquic's own ``serve()``/``connect()``
drive it (one socket per connection, transmit after every datagram).

Two more references for the stream benchmarks (bench/test_bench_streams.py):
``RawPair.send_bulk``, one large transfer on one stream with the same
write size and drain water marks as our ``StreamWriter``, and
``RawRequests``, a request/response client that opens one bidirectional
stream per request against an echo server (what a request of ours is on
the wire, without our header, routing and limits)."""

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
from quic_p2p.proto.flow import unacknowledged
from quic_p2p.proto.limits import DRAIN_HIGH_WATER, DRAIN_LOW_WATER
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


class _Sender(QuicConnectionProtocol):
    """A client that can wait, as our ``StreamWriter.drain`` does, until no
    more than a low-water mark of a stream's bytes are unacknowledged: the
    check runs after each datagram received (acknowledgements arrive in
    them), so the wait costs no polling."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drain: tuple[int, int, asyncio.Future[None]] | None = None
        #: stream id -> the future its reply's end resolves (with the reply).
        self.replies: dict[int, asyncio.Future[bytes]] = {}
        self._parts: dict[int, list[bytes]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id in self.replies:
            parts = self._parts.setdefault(event.stream_id, [])
            parts.append(event.data)
            if event.end_stream:
                del self._parts[event.stream_id]
                fut = self.replies.pop(event.stream_id)
                if not fut.done():
                    fut.set_result(b"".join(parts))
            return
        super().quic_event_received(event)

    def request(self, data: bytes) -> asyncio.Future[bytes]:
        """``data`` on a new bidirectional stream, ended; the future gets the
        stream's reply once the peer ends it."""
        stream_id = self._quic.get_next_available_stream_id()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.replies[stream_id] = fut
        self._quic.send_stream_data(stream_id, data, end_stream=True)
        self.transmit()
        return fut

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self._drain is not None:
            stream_id, low, fut = self._drain
            if (unacknowledged(self._quic, stream_id) or 0) <= low and not fut.done():
                fut.set_result(None)

    async def drain(self, stream_id: int, high: int, low: int) -> None:
        if (unacknowledged(self._quic, stream_id) or 0) <= high:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drain = (stream_id, low, fut)
        try:
            await fut
        finally:
            self._drain = None


def config(**kw: Any) -> Config:
    """The configuration of every benchmark endpoint, ours and raw: loopback,
    any port, no idle timeout (a connection waits, unused, while other
    benchmarks run)."""
    return Config(ip="127.0.0.1", port=0, idle_timeout_msec=0, **kw)


class _Raw:
    """An aioquic server and the context manager of its connected client."""

    def __init__(self) -> None:
        self.server: Any = None
        self._client_cm: Any = None

    async def close(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
        if self.server is not None:
            self.server.close()
        await asyncio.sleep(0)


class RawPair(_Raw):
    """A server and a connected client, on loopback."""

    def __init__(self) -> None:
        super().__init__()
        self.client: QuicConnectionProtocol | None = None
        self._sink: _Sink | None = None

    @property
    def port(self) -> int:
        port: int = self.server._transport.get_extra_info("sockname")[1]
        return port

    async def start(self) -> None:
        self.server = await serve(
            "127.0.0.1",
            0,
            configuration=server_configuration(config(), generate_self_signed()),
            create_protocol=_Sink,
        )
        self._client_cm = connect(
            "127.0.0.1",
            self.port,
            configuration=client_configuration(config(), None),
            create_protocol=_Sender,
        )
        self.client = await self._client_cm.__aenter__()
        await self.client.ping()  # the server has accepted it: its sink is the latest
        self._sink = _Sink.latest

    async def handshake(self) -> Any:
        """A bare handshake: a fresh client connection to the same server, up
        once the client's handshake completed and one PING round trip (so the
        server has completed too). Returns the open connection's context
        manager; close it with :meth:`close_handshake` (not part of the timing)."""
        cm = connect("127.0.0.1", self.port, configuration=client_configuration(config(), None))
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

    async def send_bulk(self, total: int, chunk: int) -> None:
        """``total`` bytes on one new stream, ``chunk`` bytes a write, waiting
        after each write above our writer's high-water mark until the
        unacknowledged bytes are down to its low-water mark (what
        ``write(); await drain()`` does on ours); then the server's reply
        after the last byte."""
        client = self.client
        assert isinstance(client, _Sender)
        quic = client._quic
        stream_id = quic.get_next_available_stream_id()
        data = bytes(chunk)
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        client.replies[stream_id] = reply
        for offset in range(0, total, chunk):
            piece = data if total - offset >= chunk else data[: total - offset]
            quic.send_stream_data(stream_id, piece, end_stream=False)
            client.transmit()
            await client.drain(stream_id, DRAIN_HIGH_WATER, DRAIN_LOW_WATER)
        quic.send_stream_data(stream_id, b"", end_stream=True)
        client.transmit()
        await reply

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


class _Echo(QuicConnectionProtocol):
    """Answers each stream with what it carried, once it ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parts: dict[int, list[bytes]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            parts = self._parts.setdefault(event.stream_id, [])
            parts.append(event.data)
            if event.end_stream:
                del self._parts[event.stream_id]
                self._quic.send_stream_data(event.stream_id, b"".join(parts), end_stream=True)
                self.transmit()


class RawRequests(_Raw):
    """An echo server and a connected client that sends each request on a
    bidirectional stream of its own (aioquic's default limits: 128 open
    streams, raised as streams finish)."""

    def __init__(self) -> None:
        super().__init__()
        self.client: _Sender | None = None

    async def start(self) -> None:
        self.server = await serve(
            "127.0.0.1",
            0,
            configuration=server_configuration(config(), generate_self_signed()),
            create_protocol=_Echo,
        )
        port = self.server._transport.get_extra_info("sockname")[1]
        self._client_cm = connect(
            "127.0.0.1",
            port,
            configuration=client_configuration(config(), None),
            create_protocol=_Sender,
        )
        client = await self._client_cm.__aenter__()
        assert isinstance(client, _Sender)
        self.client = client

    async def requests(self, payload: bytes, count: int, concurrency: int) -> int:
        """``count`` requests, ``concurrency`` in flight at a time; returns the
        number of replies equal to the request."""
        assert self.client is not None
        client = self.client
        ok = 0

        async def worker(n: int) -> None:
            nonlocal ok
            for _ in range(n):
                if await client.request(payload) == payload:
                    ok += 1

        share, extra = divmod(count, concurrency)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
        return ok
