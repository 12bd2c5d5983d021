"""Raw aioquic reference for endpoint benchmarks: the same bytes on a single
stream, with the same TLS and flow-control settings our endpoint uses, and no
framing, roles or acknowledgements of ours."""

from __future__ import annotations

import asyncio
from typing import Any

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.events import QuicEvent, StreamDataReceived

from quic_p2p import Config
from quic_p2p.certs import generate_self_signed
from quic_p2p.tls import client_configuration, server_configuration


class _Sink(QuicConnectionProtocol):
    """Counts the bytes of each stream; answers one byte when the stream ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counts: dict[int, int] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._counts[event.stream_id] = self._counts.get(event.stream_id, 0) + len(event.data)
            if event.end_stream:
                self._quic.send_stream_data(event.stream_id, b"k", end_stream=True)
                self.transmit()


class RawPair:
    """A server and a connected client, on loopback."""

    def __init__(self) -> None:
        self.server: Any = None
        self.client: QuicConnectionProtocol | None = None
        self._client_cm: Any = None

    async def start(self) -> None:
        # No idle timeout: the connection waits, unused, while other benchmarks run.
        cfg = Config(ip="127.0.0.1", idle_timeout_msec=0)
        self.server = await serve(
            "127.0.0.1",
            0,
            configuration=server_configuration(cfg, generate_self_signed()),
            create_protocol=_Sink,
        )
        port = self.server._transport.get_extra_info("sockname")[1]
        self._client_cm = connect("127.0.0.1", port, configuration=client_configuration(cfg, None))
        self.client = await self._client_cm.__aenter__()

    async def handshake_once(self) -> None:
        """A bare handshake: a fresh client connection to the same server."""
        port = self.server._transport.get_extra_info("sockname")[1]
        async with connect(
            "127.0.0.1", port, configuration=client_configuration(Config(), None)
        ) as client:
            await client.ping()

    async def send_messages(self, messages: list[bytes]) -> None:
        """All messages, back to back, on one new stream; waits for the reply
        the server sends once it has every byte."""
        assert self.client is not None
        reader, writer = await self.client.create_stream()
        for m in messages:
            writer.write(m)
        writer.write_eof()
        await reader.read()

    async def close(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
        if self.server is not None:
            self.server.close()
        await asyncio.sleep(0)
