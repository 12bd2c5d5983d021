"""Streams and requests on the peers' own connections, routed by protocol
name: asyncio's reader/writer methods, backpressure and bounded memory
whatever the peer does, refusals, resets, handler failures, limits, and
handlers cancelled on close; a raw QUIC peer sending garbage headers and
ignoring our windows; engine to engine on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import pytest
from test_engine_pair import connect

from quic_p2p import (
    Cause,
    OurType,
    Peer,
    QuicP2p,
    QuicP2pError,
    RequestError,
    StreamError,
    StreamReader,
    StreamRefusedError,
    StreamResetError,
    StreamWriter,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto.flow import INITIAL_STREAM_WINDOW, STREAM_WINDOW, PeerConnection
from quic_p2p.proto.limits import DRAIN_HIGH_WATER
from quic_p2p.proto.wire import StreamCode, StreamMode, encode_stream_header, frame

from enginepair import Net
from netutil import WAIT, endpoints, node_config, until
from rawpeer import RawPeer, raw_configuration

UNREAD = "streams: bytes received, unread"


async def echo(peer: Peer, reader: StreamReader, writer: StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@contextlib.asynccontextmanager
async def pair(our_type: OurType = OurType.NODE, **options: object):  # type: ignore[no-untyped-def]
    async with endpoints(node_config(), node_config(our_type=our_type), **options) as (n, c):
        peer = await asyncio.wait_for(c.connect_to(n.node_info), WAIT)
        yield n, c, peer


@pytest.mark.parametrize("our_type", [OurType.NODE, OurType.CLIENT])
async def test_a_stream_reads_and_writes_like_asyncio(our_type: OurType) -> None:
    async with pair(our_type) as (n, c, peer):
        seen: list[object] = []

        async def handler(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            seen.append(p.peer_id)
            seen.append(writer.get_extra_info("peer_id"))
            line = await reader.readline()
            head = await reader.readexactly(3)
            rest = await reader.readuntil(b"!")
            writer.writelines([line.upper(), head, rest])
            await writer.drain()
            assert await reader.read() == b"tail"
            assert reader.at_eof()
            writer.write_eof()

        n.set_stream_handler("app/chat/1", handler)
        reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/chat/1"), WAIT)
        assert writer.get_extra_info("peer_id") == n.peer_id
        assert writer.get_extra_info("protocol") == "app/chat/1"
        writer.write(b"hello\nabcdef!tail")
        writer.write_eof()
        async with asyncio.timeout(WAIT):
            assert await reader.read() == b"HELLO\nabcdef!"
        assert reader.at_eof()
        assert seen == [c.peer_id, c.peer_id]
        await asyncio.wait_for(writer.wait_closed(), WAIT)
        await until(lambda: n.stats()["streams open"] == 0 and c.stats()["streams open"] == 0)


async def test_streams_both_ways_by_id_and_many_at_once() -> None:
    async with pair() as (n, c, _peer):
        n.set_stream_handler("app/echo/1", echo)
        c.set_stream_handler("app/echo/1", echo)

        async def one(ep: QuicP2p, other: QuicP2p, i: int) -> bytes:
            reader, writer = await ep.open_stream(other.peer_id, "app/echo/1")
            writer.write(i.to_bytes(4, "big") * 1000)
            writer.write_eof()
            return await reader.read()

        async with asyncio.timeout(WAIT):
            got = await asyncio.gather(
                *(one(c, n, i) for i in range(20)), *(one(n, c, i) for i in range(20))
            )
        assert got == [i.to_bytes(4, "big") * 1000 for i in range(20)] * 2


async def test_an_unknown_protocol_is_refused_clearly() -> None:
    async with pair() as (n, c, peer):
        with pytest.raises(StreamRefusedError, match="no handler for 'app/none/1'") as info:
            await asyncio.wait_for(c.open_stream(peer, "app/none/1"), WAIT)
        assert info.value.reason.cause is Cause.NO_HANDLER
        with pytest.raises(RequestError) as req:
            await c.request(peer, b"x", "app/none/1", timeout=WAIT)
        assert req.value.reason.cause is Cause.NO_HANDLER
        assert n.stats()["streams refused: no handler"] == 2
        # A handler removed: new streams are refused the same way.
        n.set_stream_handler("app/echo/1", echo)
        _, writer = await asyncio.wait_for(c.open_stream(peer, "app/echo/1"), WAIT)
        writer.close()
        n.set_stream_handler("app/echo/1", None)
        with pytest.raises(StreamRefusedError):
            await asyncio.wait_for(c.open_stream(peer, "app/echo/1"), WAIT)


async def test_bad_protocol_names_are_caller_errors() -> None:
    async with pair() as (n, c, peer):
        with pytest.raises(QuicP2pError, match="reserved"):
            n.set_stream_handler("quic-p2p/messages/1", echo)
        with pytest.raises(ValueError, match="1 to 255 bytes"):
            await c.open_stream(peer, "")
        with pytest.raises(ValueError, match="1 to 255 bytes"):
            await c.open_stream(peer, "x" * 256)


async def test_a_reset_mid_stream_raises_on_both_sides() -> None:
    async with pair() as (n, c, peer):
        handler_saw: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def handler(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            try:
                while await reader.read(1000):
                    pass
            except StreamResetError as exc:
                handler_saw.set_result(exc)
                raise

        n.set_stream_handler("app/reset/1", handler)
        reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/reset/1"), WAIT)
        writer.write(b"some data")
        await writer.drain()
        writer.abort()
        exc = await asyncio.wait_for(handler_saw, WAIT)
        assert isinstance(exc, StreamResetError) and isinstance(exc, ConnectionResetError)
        assert exc.reason.cause is Cause.STREAM_RESET
        with pytest.raises(StreamResetError):
            await reader.read()
        with pytest.raises(StreamResetError):
            writer.write(b"more")

        # The other way round: the acceptor aborts while the opener reads.
        async def aborts(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            writer.write(b"partial")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.abort()

        n.set_stream_handler("app/abort/1", aborts)
        reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/abort/1"), WAIT)
        with pytest.raises(StreamResetError) as info:
            async with asyncio.timeout(WAIT):
                while await reader.read(100):
                    pass
        assert info.value.reason.cause is Cause.STREAM_RESET
        await until(lambda: n.stats()["streams open"] == 0 and c.stats()["streams open"] == 0)


async def test_a_handler_that_raises_resets_the_stream_and_stays_here() -> None:
    async with pair() as (n, c, peer):

        async def fails(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            await reader.readexactly(1)
            raise RuntimeError("a secret the peer must not see")

        async def fails_request(p: Peer, data: bytes) -> bytes:
            raise RuntimeError("a secret the peer must not see")

        async def not_bytes(p: Peer, data: bytes) -> bytes:
            return "text"  # type: ignore[return-value]

        n.set_stream_handler("app/fails/1", fails)
        n.set_request_handler("app/fails-req/1", fails_request)
        n.set_request_handler("app/not-bytes/1", not_bytes)
        reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/fails/1"), WAIT)
        writer.write(b"x")
        with pytest.raises(StreamResetError) as info:
            await asyncio.wait_for(reader.read(), WAIT)
        assert info.value.reason.cause is Cause.HANDLER_FAILED
        assert "secret" not in str(info.value)
        for proto in ("app/fails-req/1", "app/not-bytes/1"):
            with pytest.raises(RequestError) as req:
                await c.request(peer, b"x", proto, timeout=WAIT)
            assert req.value.reason.cause is Cause.HANDLER_FAILED
            assert "secret" not in str(req.value)
        # The endpoint and the connection carry on.
        n.set_request_handler("app/ok/1", lambda p, d: _upper(d))
        assert await c.request(peer, b"ok", "app/ok/1", timeout=WAIT) == b"OK"


async def _upper(data: bytes) -> bytes:
    return data.upper()


@pytest.mark.parametrize("our_type", [OurType.NODE, OurType.CLIENT])
async def test_request_and_reply(our_type: OurType) -> None:
    async with pair(our_type) as (n, c, peer):
        got: list[tuple[object, bytes]] = []

        async def kv(p: Peer, data: bytes) -> bytes:
            got.append((p.peer_id, data))
            return data[::-1]

        n.set_request_handler("app/kv/1", kv)
        c.set_request_handler("app/kv/1", kv)
        assert await c.request(peer, b"abc", "app/kv/1", timeout=WAIT) == b"cba"
        assert await n.request(c.peer_id, b"xyz", "app/kv/1", timeout=WAIT) == b"zyx"
        assert await c.request(n.peer_id, b"", "app/kv/1", timeout=WAIT) == b""
        async with asyncio.timeout(WAIT):
            many = await asyncio.gather(
                *(c.request(peer, str(i).encode(), "app/kv/1") for i in range(64))
            )
        assert many == [str(i).encode()[::-1] for i in range(64)]
        assert got[0] == (c.peer_id, b"abc") and got[1] == (n.peer_id, b"xyz")
        await until(lambda: n.stats()["streams open"] == 0 and c.stats()["streams open"] == 0)


async def test_request_size_limits_each_way() -> None:
    async with pair() as (n, c, peer):

        async def big_reply(p: Peer, data: bytes) -> bytes:
            return bytes(int(data))

        n.set_request_handler("app/small/1", lambda p, d: _upper(d), max_request_size=1000)
        n.set_request_handler("app/big/1", big_reply)
        assert await c.request(peer, b"a" * 1000, "app/small/1", timeout=WAIT) == b"A" * 1000
        with pytest.raises(RequestError) as req:
            await c.request(peer, bytes(1001), "app/small/1", timeout=WAIT)
        assert req.value.reason.cause is Cause.MESSAGE_TOO_LARGE
        assert len(await c.request(peer, b"5000", "app/big/1", max_reply_size=5000)) == 5000
        with pytest.raises(RequestError) as big:
            await c.request(peer, b"5001", "app/big/1", max_reply_size=5000, timeout=WAIT)
        assert big.value.reason.cause is Cause.MESSAGE_TOO_LARGE
        # A large request, well past one window, within its limit.
        n.set_request_handler("app/len/1", lambda p, d: _length(d), max_request_size=8 << 20)
        assert await c.request(peer, bytes(5 << 20), "app/len/1", timeout=WAIT) == b"5242880"


async def _length(data: bytes) -> bytes:
    return str(len(data)).encode()


async def test_a_request_that_times_out_is_cancelled_at_the_peer() -> None:
    async with pair() as (n, c, peer):

        async def slow(p: Peer, data: bytes) -> bytes:
            await asyncio.sleep(3600)
            return b""

        n.set_request_handler("app/slow/1", slow)
        with pytest.raises(RequestError, match=r"no reply within 0\.2 s") as req:
            await c.request(peer, b"x", "app/slow/1", timeout=0.2)
        assert req.value.reason.cause is Cause.NO_ANSWER
        await until(lambda: c.stats()["streams open"] == 0 and n.stats()["streams open"] == 0)


async def test_a_peer_that_never_reads_stops_the_writer_and_bounds_memory() -> None:
    """The acceptor's handler never reads: the peer has at most one window
    of credit, so the writer's backlog stops growing and ``drain`` waits; the
    acceptor holds at most the window unread."""
    async with pair() as (n, c, peer):
        stuck = asyncio.Event()

        async def never_reads(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            await stuck.wait()

        n.set_stream_handler("app/stuck/1", never_reads)
        _reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/stuck/1"), WAIT)
        chunk = bytes(256 * 1024)
        written = 0
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                while written < 64 * STREAM_WINDOW:
                    writer.write(chunk)
                    written += len(chunk)
                    await writer.drain()
        # Stopped once what is unacknowledged passed the high-water mark:
        # one window in the peer's buffer, the rest queued here.
        assert written <= STREAM_WINDOW + DRAIN_HIGH_WATER + 2 * len(chunk), written
        unread = n.stats()[UNREAD]
        assert INITIAL_STREAM_WINDOW <= unread <= STREAM_WINDOW + 1, unread
        # Reading lets it go on.
        stuck.set()
        writer.abort()


@contextlib.asynccontextmanager
async def flooding_client(n: QuicP2p) -> AsyncIterator[RawPeer]:
    """A raw QUIC peer accepted by ``n`` as a Client, where nobody reads the
    streams of "app/stuck/1" (their handlers wait until the end)."""
    stuck = asyncio.Event()

    async def never_reads(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
        await stuck.wait()

    n.set_stream_handler("app/stuck/1", never_reads)
    raw = await RawPeer.connect(
        n.local_addr, first_flight=frame(FrameKind.HANDSHAKE_CLIENT, msg_id=1)
    )
    try:
        await until(lambda: n.stats()["connections"] == 1 and len(n.connected_peers()) == 1)
        yield raw
    finally:
        stuck.set()
        raw.close()


async def test_a_raw_peer_flooding_a_stream_gets_one_window() -> None:
    """A raw QUIC peer writing far more than we read: it gets credit for one
    window past what the application read, so we never hold more."""
    async with endpoints(node_config()) as (n,), flooding_client(n) as raw:
        sid = raw.new_stream_bidi()
        raw.send(sid, encode_stream_header(StreamMode.STREAM, "app/stuck/1"))
        for _ in range(40):
            raw.send(sid, bytes(256 * 1024))  # aioquic sends only what credit allows
        await asyncio.sleep(0.5)
        assert n.stats()[UNREAD] <= STREAM_WINDOW + 1
        assert n.stats()["streams open"] == 1


async def test_many_flooded_streams_hold_at_most_the_limit_times_the_window() -> None:
    """A raw peer opens more streams than the per-peer limit and floods each;
    nobody reads: the streams beyond the limit are refused (BUSY), the others
    hold a window each, and that is all the memory it gets."""
    async with endpoints(node_config(), max_streams_per_peer=4) as (n,), flooding_client(n) as raw:
        header = encode_stream_header(StreamMode.STREAM, "app/stuck/1")
        sids = []
        for _ in range(6):
            sid = raw.new_stream_bidi()
            sids.append(sid)
            raw.send(sid, header)
        await raw.wait(lambda: len(raw.resets()) == 2)
        assert set(raw.resets().values()) == {StreamCode.BUSY}
        for sid in sids:
            if sid not in raw.resets():
                raw.send(sid, bytes(3 * STREAM_WINDOW))
        await until(lambda: n.stats()[UNREAD] >= 4 * STREAM_WINDOW)
        await asyncio.sleep(0.2)  # more would have arrived by now
        assert n.stats()[UNREAD] <= 4 * (STREAM_WINDOW + 1)
        assert n.stats()["streams open"] == 4
        assert n.stats()["streams refused: per-peer limit"] == 2


async def test_garbage_stream_headers_are_refused_not_fatal() -> None:
    async with endpoints(node_config()) as (n,):
        n.set_stream_handler("app/echo/1", echo)
        hello = frame(FrameKind.HANDSHAKE_CLIENT, msg_id=1)
        raw = await RawPeer.connect(n.local_addr, first_flight=hello)
        try:
            await until(lambda: len(n.connected_peers()) == 1)
            bad = [b"\x07\x03abc", b"\x01\x00", b"\x01\x04\xff\xfe\xfd\xfc", b"\x01\x09short"]
            sids = []
            for data in bad:
                sid = raw.new_stream_bidi()
                sids.append(sid)
                raw.send(sid, data, end=True)
            await raw.wait(lambda: len(raw.resets()) == len(bad))
            assert set(raw.resets().values()) == {StreamCode.BAD_HEADER}
            # The connection is fine: a good stream after the bad ones works.
            sid = raw.new_stream_bidi()
            raw.send(sid, encode_stream_header(StreamMode.STREAM, "app/echo/1") + b"hi", end=True)
            await raw.wait(lambda: raw.stream_data(sid) == b"\x00hi")
        finally:
            raw.close()


async def test_a_stream_before_the_role_handshake_waits_for_it() -> None:
    """A peer not yet accepted (no role handshake yet) opens a stream: it is
    held, its data charged to the unproven budget, and reaches the handler
    once the peer is connected; a held stream past the budget is refused."""
    async with endpoints(node_config()) as (n,):
        seen: list[bytes] = []

        async def handler(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            seen.append(await reader.read())
            writer.write(b"ok")

        n.set_stream_handler("app/early/1", handler)
        raw = await RawPeer.connect(n.local_addr)
        try:
            sid = raw.new_stream_bidi()
            raw.send(sid, encode_stream_header(StreamMode.STREAM, "app/early/1") + b"early", True)
            await until(lambda: n.stats().get("streams held: peer not proven yet") == 1)
            assert seen == [] and n.stats()["unproven peers: bytes held"] == 5
            raw.send(2, frame(FrameKind.HANDSHAKE_CLIENT, msg_id=1))
            await raw.wait(lambda: raw.stream_data(sid) == b"\x00ok")
            assert seen == [b"early"]
            assert n.stats()["unproven peers: bytes held"] == 0
        finally:
            raw.close()


async def test_stream_limits_per_peer_and_per_protocol() -> None:
    async with pair(max_streams_per_peer=3) as (n, c, peer):
        hold = asyncio.Event()

        async def holds(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            await hold.wait()

        n.set_stream_handler("app/one/1", holds, max_streams=1)
        n.set_stream_handler("app/hold/1", holds)
        kept = [await asyncio.wait_for(c.open_stream(peer, "app/one/1"), WAIT)]
        with pytest.raises(StreamRefusedError) as info:
            await asyncio.wait_for(c.open_stream(peer, "app/one/1"), WAIT)
        assert info.value.reason.cause is Cause.REFUSED
        kept.append(await asyncio.wait_for(c.open_stream(peer, "app/hold/1"), WAIT))
        kept.append(await asyncio.wait_for(c.open_stream(peer, "app/hold/1"), WAIT))
        with pytest.raises(StreamRefusedError) as info:
            await asyncio.wait_for(c.open_stream(peer, "app/hold/1"), WAIT)
        assert info.value.reason.cause is Cause.REFUSED
        assert n.stats()["streams refused: per-protocol limit"] == 1
        assert n.stats()["streams refused: per-peer limit"] == 1
        hold.set()  # the handlers return: their streams close, room again
        for _, writer in kept:
            writer.close()
        await until(lambda: n.stats()["streams open"] == 0)
        _, writer = await asyncio.wait_for(c.open_stream(peer, "app/one/1"), WAIT)
        writer.close()


async def test_streams_dropped_without_close_give_their_slots_back() -> None:
    async with pair(max_streams_per_peer=3) as (n, c, peer):

        async def reads_to_the_end(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
            await reader.read()

        n.set_stream_handler("app/drop/1", reads_to_the_end)
        with pytest.warns(ResourceWarning, match="dropped without close"):
            for _ in range(3):
                reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/drop/1"), WAIT)
                writer.write(b"abandoned")
                del reader, writer
            gc.collect()
            await until(lambda: n.stats()["streams open"] == 0 and c.stats()["streams open"] == 0)
        for _ in range(3):  # the limit is free again
            _reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/drop/1"), WAIT)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def test_handlers_are_cancelled_when_the_endpoint_closes() -> None:
    n = QuicP2p(node_config())
    await n.start()
    try:
        async with endpoints(node_config(our_type=OurType.CLIENT)) as (c,):
            peer = await asyncio.wait_for(c.connect_to(n.node_info), WAIT)
            started, cancelled = asyncio.Event(), asyncio.Event()

            async def forever(p: Peer, reader: StreamReader, writer: StreamWriter) -> None:
                started.set()
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            n.set_stream_handler("app/forever/1", forever)
            reader, _writer = await asyncio.wait_for(c.open_stream(peer, "app/forever/1"), WAIT)
            await asyncio.wait_for(started.wait(), WAIT)
            await asyncio.wait_for(n.aclose(), WAIT)
            assert cancelled.is_set()
            with pytest.raises(StreamResetError):
                await asyncio.wait_for(reader.read(), WAIT)
    finally:
        await n.aclose()


async def test_a_write_after_eof_is_an_error() -> None:
    async with pair() as (n, c, peer):
        n.set_stream_handler("app/echo/1", echo)
        reader, writer = await asyncio.wait_for(c.open_stream(peer, "app/echo/1"), WAIT)
        writer.write_eof()
        with pytest.raises(StreamError, match="after write_eof"):
            writer.write(b"x")
        assert await asyncio.wait_for(reader.read(), WAIT) == b""


async def test_flow_control_hooks_exist_in_this_aioquic() -> None:
    """The private aioquic names flow.py relies on: if one is renamed, a
    stream stalls or a peer that never reads grows our memory."""
    from aioquic.quic.connection import QuicConnection

    assert "_write_stream_limits" in vars(QuicConnection)
    cfg = raw_configuration()
    quic = PeerConnection(configuration=cfg)
    assert quic._local_max_stream_data_bidi_remote == INITIAL_STREAM_WINDOW
    assert quic._local_max_stream_data_bidi_local == STREAM_WINDOW
    sid = quic.get_next_available_stream_id()
    quic.send_stream_data(sid, b"abc")
    assert quic.send_backlog(sid) == 3


def test_streams_engine_to_engine_on_a_fake_clock() -> None:
    net = Net()
    a, b = net.engine(), net.engine()
    peer = connect(net, a, b)
    b.engine.set_protocol("app/kv/1", StreamMode.REQUEST, max_streams=8, max_request_size=1 << 20)
    stream = a.engine.open_stream(net.now, peer, "app/kv/1", StreamMode.REQUEST, collect=100)
    stream.write(b"question", end=True)
    net.run(lambda: bool(b.engine.stream_arrivals))
    arrivals, _ = b.engine.take_stream_events()
    (incoming,) = arrivals
    assert incoming.take(-1) == b"question" and incoming.peer_id == a.peer_id
    incoming.write(b"answer", end=True)
    net.run(lambda: stream.eof)
    assert stream.take(-1) == b"answer"
    # No handler: refused, the opener's side reports why.
    other = a.engine.open_stream(net.now, peer, "app/none/1", StreamMode.STREAM)
    net.run(lambda: other.refused)
    assert other.error is not None and other.error.cause is Cause.NO_HANDLER
