"""Unreliable datagrams (RFC 9221) on the peers' own connections: both ways,
by id, size limits, a reader that never reads, peers that take none, peers
not yet proven; engine to engine on a fake clock too."""

from __future__ import annotations

import asyncio

import pytest
from test_engine_pair import connect

from quic_p2p import ConnectedTo, Datagram, DatagramError, OurType, PeerId, QuicP2p
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto.tls import MAX_DATAGRAM_FRAME_SIZE
from quic_p2p.proto.wire import frame

from enginepair import Net
from netutil import WAIT, endpoints, node_config, until, wait_for_event
from rawpeer import CONTROL, RawPeer, raw_configuration

NOT_CONNECTED = "datagrams dropped: peer not connected"


async def first_datagram(ep: QuicP2p) -> Datagram:
    async with asyncio.timeout(WAIT):
        async for datagram in ep.datagrams():
            return datagram
    raise AssertionError("the datagram iterator ended")


@pytest.mark.parametrize("our_type", [OurType.NODE, OurType.CLIENT])
async def test_datagrams_go_both_ways_and_name_the_sender(our_type: OurType) -> None:
    async with endpoints(node_config(), node_config(our_type=our_type)) as (n, c):
        peer = await asyncio.wait_for(c.connect_to(n.node_info), WAIT)
        c.send_datagram(peer, b"ping")
        got = await first_datagram(n)
        assert (got.data, got.peer_id, got.peer_addr) == (b"ping", c.peer_id, c.local_addr)
        n.send_datagram(c.peer_id, b"pong")  # by id
        back = await first_datagram(c)
        assert (back.data, back.peer_id) == (b"pong", n.peer_id)
        assert c.stats()["datagrams sent"] == 1 and n.stats()["datagrams sent"] == 1


async def test_the_size_limit_is_exact_and_enforced() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        limit = a.max_datagram_size(peer)
        # One packet's worth: 1,200-byte QUIC packets minus header, tag and framing.
        assert 1100 <= limit < 1200, limit
        assert a.max_datagram_size(b.peer_id) == limit
        a.send_datagram(peer, bytes(limit))  # the largest fits one packet
        assert len((await first_datagram(b)).data) == limit
        with pytest.raises(DatagramError, match=f"at most {limit}"):
            a.send_datagram(peer, bytes(limit + 1))
        # Nothing too large was queued: later datagrams are not held behind it.
        a.send_datagram(peer, b"after")
        assert (await first_datagram(b)).data == b"after"


async def test_no_datagram_to_a_peer_we_are_not_connected_to() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        assert a.max_datagram_size(b.peer_id) == 0
        with pytest.raises(DatagramError, match="not connected"):
            a.send_datagram(b.peer_id, b"x")
        with pytest.raises(DatagramError, match="not connected"):
            a.send_datagram(b.node_info, b"x")
        with pytest.raises(DatagramError, match="not connected"):
            a.send_datagram(PeerId(bytes(32)), b"x")


async def test_a_reader_that_never_reads_keeps_memory_bounded() -> None:
    """The receiver holds at most ``datagram_capacity`` unread datagrams; the
    rest are dropped and counted, and what was kept is still there to read."""
    async with endpoints(node_config(our_type=OurType.CLIENT)) as (c,):
        n = QuicP2p(node_config(), datagram_capacity=50)
        await n.start()
        try:
            peer = await asyncio.wait_for(c.connect_to(n.node_info), WAIT)
            for i in range(2000):
                c.send_datagram(peer, i.to_bytes(4, "big") * 250)
                if i % 100 == 99:
                    await asyncio.sleep(0.01)  # let them leave, a burst at a time
            await until(lambda: n.stats()["datagrams dropped: queue full"] > 0)
            await asyncio.sleep(0.2)
            assert len(n.engine.datagrams) == 50
            dropped = n.stats()["datagrams dropped: queue full"]
            assert 0 < dropped <= 2000 - 50
            got = [await first_datagram(n) for _ in range(50)]
            assert all(len(g.data) == 1000 for g in got)
        finally:
            await n.aclose()


async def test_the_iterator_ends_when_the_endpoint_closes() -> None:
    async with endpoints(node_config()) as (n,):
        reader = asyncio.ensure_future(first_datagram(n))
        await asyncio.sleep(0.01)
        await n.aclose()
        with pytest.raises(AssertionError, match="ended"):
            await asyncio.wait_for(reader, WAIT)


async def test_a_peer_that_takes_no_datagrams() -> None:
    """A QUIC peer that does not advertise max_datagram_frame_size (RFC 9221
    §3) is never sent one: the size is 0 and sending raises."""
    async with endpoints(node_config()) as (n,):
        raw = await RawPeer.connect(n.local_addr)
        try:
            pid = raw.peer_id
            assert pid is not None
            raw.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
            await until(lambda: bool(n.connected_peers()))
            assert n.max_datagram_size(pid) == 0
            with pytest.raises(DatagramError, match="does not take datagrams"):
                n.send_datagram(pid, b"x")
        finally:
            raw.close()


async def test_datagrams_of_a_peer_not_yet_accepted_are_dropped() -> None:
    """Before its role handshake is accepted a peer is nobody: what it sends
    as datagrams is counted and dropped, never handed to the user."""
    cfg = raw_configuration()
    cfg.max_datagram_frame_size = MAX_DATAGRAM_FRAME_SIZE
    async with endpoints(node_config()) as (n,):
        raw = await RawPeer.connect(n.local_addr, configuration=cfg)
        try:
            raw.quic.send_datagram_frame(b"anonymous")
            raw.flush()
            await until(lambda: n.stats().get(NOT_CONNECTED, 0) == 1)
            raw.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
            await until(lambda: bool(n.connected_peers()))
            raw.quic.send_datagram_frame(b"now known")
            raw.flush()
            got = await first_datagram(n)
            assert (got.data, got.peer_id) == (b"now known", raw.peer_id)
        finally:
            raw.close()


def test_engine_to_engine_datagram_on_a_fake_clock() -> None:
    net = Net()
    a, b = net.engine(), net.engine()
    peer = connect(net, a, b)
    a.engine.send_datagram(net.now, peer, b"tick")
    net.run(lambda: len(b.engine.datagrams) > 0)
    got = b.engine.datagrams.get_nowait()
    assert got is not None and (got.data, got.peer_id) == (b"tick", a.peer_id)


async def test_the_accepting_side_can_send_once_it_reports_the_peer() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        await wait_for_event(b, ConnectedTo)
        assert b.max_datagram_size(a.peer_id) > 0
        b.send_datagram(a.peer_id, b"hello back")
        assert (await first_datagram(a)).data == b"hello back"
