"""What ``peer_stats`` and ``stats()`` report matches what was done: N
messages are N in the counters, bytes are the payload plus QUIC's overhead,
packets sent on one side are packets received on the other, losses are
counted, and the event queue warns once per episode before it refuses."""

from __future__ import annotations

import asyncio
import time

import pytest
from forwarder import UdpForwarder

from quic_p2p import (
    EventQueueWarning,
    NewMessage,
    OurType,
    PathKind,
    PeerKind,
    PeerStats,
    QuicP2p,
    RelayPolicy,
    SentUserMessage,
)
from quic_p2p.proto.flow import PeerConnection

from netutil import WAIT, endpoints, node_config, until


def snapshot(a: QuicP2p, b: QuicP2p) -> tuple[PeerStats, PeerStats]:
    x, y = a.peer_stats(b.peer_id), b.peer_stats(a.peer_id)
    assert x is not None and y is not None
    return x, y


async def settled(
    a: QuicP2p, b: QuicP2p, since: tuple[PeerStats, PeerStats]
) -> tuple[PeerStats, PeerStats]:
    """Both sides' stats of each other once every packet sent after
    ``since`` has arrived (loopback loses none): what a sent since then, b
    received, and the other way. (Counted from ``since``: before the
    connection exists, admission's Retry exchange belongs to no connection.)"""
    x0, y0 = since

    def even() -> bool:
        x, y = snapshot(a, b)
        return (
            x.packets_sent - x0.packets_sent == y.packets_received - y0.packets_received
            and y.packets_sent - y0.packets_sent == x.packets_received - x0.packets_received
        )

    await until(even)
    return snapshot(a, b)


@pytest.mark.parametrize("our_type", [OurType.NODE, OurType.CLIENT])
async def test_peer_stats_count_what_was_done(our_type: OurType) -> None:
    n, size = 200, 1000
    async with endpoints(node_config(), node_config(our_type=our_type)) as (a, b):
        before = time.time()
        peer = await asyncio.wait_for(b.connect_to(a.node_info), WAIT)
        await asyncio.sleep(0.2)  # the handshakes' last packets
        since = snapshot(b, a)
        outs = await asyncio.wait_for(
            asyncio.gather(*(b.send(peer, bytes(size)) for _ in range(n))), WAIT
        )
        assert all(isinstance(o, SentUserMessage) for o in outs)
        for _ in range(3):
            b.send_datagram(peer, b"dg")
        await until(lambda: snapshot(a, b)[0].datagrams_received == 3)
        x, y = await settled(b, a, since)  # x: b's view of a; y: a's view of b
        assert (x.messages_sent, x.messages_unsent, x.messages_received) == (n, 0, 0)
        assert (y.messages_sent, y.messages_unsent, y.messages_received) == (0, 0, n)
        assert x.datagrams_sent == 3 and y.datagrams_received == 3
        # The payload, plus QUIC's headers, tags, framing and acks.
        sent = x.bytes_sent - since[0].bytes_sent
        assert n * size < sent < n * size * 1.25 + 10_000, x
        assert sent == y.bytes_received - since[1].bytes_received
        assert x.bytes_sent > sent  # and the handshakes before
        assert x.packets_lost == 0 and y.packets_lost == 0
        assert x.peer_id == a.peer_id and y.peer_id == b.peer_id
        assert x.kind is PeerKind.NODE
        assert y.kind is (PeerKind.NODE if our_type is OurType.NODE else PeerKind.CLIENT)
        assert x.connections == (2 if our_type is OurType.NODE else 1)
        assert x.path.kind is PathKind.DIRECT and x.address == a.local_addr and not x.relayed
        assert x.rtt is not None and x.min_rtt is not None and 0 < x.min_rtt <= x.rtt
        assert x.congestion_window > 0 and x.bytes_in_flight >= 0
        assert before <= x.connected_since <= time.time()
        assert a.peer_stats(b.node_info) == a.peer_stats(b.peer_id)


async def test_unsent_messages_and_unknown_peers() -> None:
    async with endpoints(node_config(), node_config(max_msg_size_allowed=16 * 1024)) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        out = await asyncio.wait_for(a.send(peer, bytes(20_000)), WAIT)
        assert not isinstance(out, SentUserMessage)
        stats = a.peer_stats(peer)
        assert stats is not None and (stats.messages_sent, stats.messages_unsent) == (0, 1)
        assert a.peer_stats(("127.0.0.1", 9)) is None
        await a.disconnect_from(peer)
        assert a.peer_stats(peer) is None


async def test_totals_outlive_the_peers_they_count() -> None:
    """Lifetime totals keep what a peer did after it left, only ever grow,
    and count the bytes on the wire: the payload plus QUIC's overhead."""
    n, size = 100, 1000
    async with endpoints(node_config(), node_config()) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        outs = await asyncio.wait_for(
            asyncio.gather(*(a.send(peer, bytes(size)) for _ in range(n))), WAIT
        )
        assert all(isinstance(o, SentUserMessage) for o in outs)
        a.send_datagram(peer, b"dg")
        await until(lambda: b.stats().totals.datagrams_received == 1)
        during = a.stats().totals
        await a.disconnect_from(peer)
        await until(lambda: a.peer_stats(peer) is None and b.peer_stats(a.peer_id) is None)
        # (The engine forgets a closed connection once aioquic's draining ends.)
        await until(lambda: a.stats().connections == 0 and b.stats().connections == 0)
        # Everything a sent has arrived at b (loopback loses none; only the
        # two of them are on it), the closes included.
        await until(lambda: a.stats().totals.packets_sent == b.stats().totals.packets_received)
        await until(lambda: b.stats().totals.packets_sent == a.stats().totals.packets_received)
        ta, tb = a.stats().totals, b.stats().totals
        assert ta.connections_closed == ta.connections_opened == 2
        assert (ta.messages_sent, ta.messages_unsent, ta.messages_received) == (n, 0, 0)
        assert (tb.messages_sent, tb.messages_unsent, tb.messages_received) == (0, 0, n)
        assert ta.datagrams_sent == 1 and tb.datagrams_received == 1
        assert n * size < ta.bytes_sent < n * size * 1.25 + 30_000, ta
        assert ta.bytes_sent == tb.bytes_received and tb.bytes_sent == ta.bytes_received
        assert ta.packets_lost == 0 and tb.packets_lost == 0
        # Monotonic: nothing fell when the peer left.
        assert all(getattr(ta, f) >= getattr(during, f) for f in vars(during)), (during, ta)


async def test_totals_count_relayed_traffic_once() -> None:
    """A relayed connection's packets ride inside the connection to the
    relay: the totals count the bytes on the wire once, not also the inner
    connection's."""
    n, size = 100, 1000
    async with endpoints(node_config(), node_config(), node_config(), relay=RelayPolicy()) as (
        r,
        a,
        b,
    ):
        await asyncio.wait_for(a.connect_to(r.node_info), WAIT)
        await asyncio.wait_for(b.connect_to(r.node_info), WAIT)
        peer = await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info, punch=False), WAIT)
        assert a.relayed_via(peer) == r.local_addr
        before = a.stats().totals
        inner_before = a.peer_stats(peer)
        assert inner_before is not None
        outs = await asyncio.wait_for(
            asyncio.gather(*(a.send(peer, bytes(size)) for _ in range(n))), WAIT
        )
        assert all(isinstance(o, SentUserMessage) for o in outs)
        after = a.stats().totals
        inner = a.peer_stats(peer)
        assert inner is not None
        inner_sent = inner.bytes_sent - inner_before.bytes_sent
        wire_sent = after.bytes_sent - before.bytes_sent
        assert n * size < inner_sent < wire_sent  # the inner packets, framed, plus the outer
        # Counted twice it would be the inner bytes again on top.
        assert wire_sent < inner_sent * 1.3 + 10_000, (inner_sent, wire_sent)
        assert after.messages_sent - before.messages_sent == n


async def test_streams_open_are_counted() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        hold = asyncio.Event()

        async def holds(peer: object, reader: object, writer: object) -> None:
            await hold.wait()

        b.set_stream_handler("app/hold/1", holds)  # type: ignore[arg-type]
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        kept = [await asyncio.wait_for(a.open_stream(peer, "app/hold/1"), WAIT) for _ in range(3)]
        stats = a.peer_stats(peer)
        assert stats is not None and stats.streams_open == 3
        assert a.stats().streams_open == 3 and b.stats().streams_open == 3
        hold.set()
        for _, writer in kept:
            writer.close()
        await until(lambda: a.stats().streams_open == 0 and b.stats().streams_open == 0)
        assert a.stats().totals.streams_opened == 3 and b.stats().totals.streams_opened == 3


async def test_losses_are_counted() -> None:
    """Packets dropped on the path show up as packets lost (the sender's
    loss recovery declares them) and the messages still arrive."""
    async with endpoints(node_config(), node_config(our_type=OurType.CLIENT)) as (n, c):
        fwd = UdpForwarder(n.local_addr)
        await fwd.start()
        try:
            peer = await asyncio.wait_for(c.connect_to(n.node_info.at(fwd.listen_addr)), WAIT)
            await asyncio.wait_for(c.send(peer, b"warm"), WAIT)
            fwd.drop = True
            sends = [asyncio.ensure_future(c.send(peer, bytes(1000))) for _ in range(20)]
            await asyncio.sleep(0.3)
            fwd.drop = False
            outs = await asyncio.wait_for(asyncio.gather(*sends), 3 * WAIT)
            assert all(isinstance(o, SentUserMessage) for o in outs)
            stats = c.peer_stats(peer)
            assert stats is not None and stats.packets_lost > 0, stats
        finally:
            await fwd.aclose()


def test_the_loss_hook_exists_in_this_aioquic() -> None:
    from rawpeer import raw_configuration

    quic = PeerConnection(configuration=raw_configuration())
    assert quic._loss._on_packets_lost.__name__ == "counted"


async def test_endpoint_stats_by_role_and_admission() -> None:
    async with endpoints(node_config(), node_config(), node_config(our_type=OurType.CLIENT)) as (
        a,
        b,
        c,
    ):
        await asyncio.wait_for(b.connect_to(a.node_info), WAIT)
        await asyncio.wait_for(c.connect_to(a.node_info), WAIT)
        stats = a.stats()
        assert stats.connections == 3
        assert dict(stats.connections_by_role) == {
            "node out": 1,
            "node in": 1,
            "client in": 1,
            "other": 0,
        }
        assert dict(stats.peers) == {"node": 1, "client": 1}
        assert stats.admissions["accepted"] == 2 and stats.admissions["retried"] >= 2
        assert stats.relay_sessions == 0 and stats.relay_paths == 0
        # Still a mapping of the named counters.
        assert stats["connections"] == 3 and "admission: accept" in stats
        assert dict(c.stats().connections_by_role)["node out"] == 1


async def test_the_event_queue_warns_once_per_episode_before_refusing() -> None:
    async with endpoints(node_config(our_type=OurType.CLIENT)) as (c,):
        n = QuicP2p(node_config(), event_capacity=10)
        await n.start()
        try:
            peer = await asyncio.wait_for(c.connect_to(n.node_info), WAIT)
            for i in range(10):
                out = await asyncio.wait_for(c.send(peer, b"m%d" % i), WAIT)
                assert isinstance(out, SentUserMessage)
            stats = n.stats()
            assert (stats.event_queue_depth, stats.event_queue_high_water) == (10, 10)
            assert stats.event_capacity == 10
            events = []
            while (ev := n.poll_event()) is not None:
                events.append(ev)
            warnings = [e for e in events if isinstance(e, EventQueueWarning)]
            assert warnings == [EventQueueWarning(8, 10)], events
            # The warning came before the messages that filled it up.
            at = events.index(warnings[0])
            assert sum(isinstance(e, NewMessage) for e in events[:at]) == 8
            # Drained: a new episode warns again.
            for _ in range(8):
                await asyncio.wait_for(c.send(peer, b"again"), WAIT)
            again = [e for e in iter(n.poll_event, None) if isinstance(e, EventQueueWarning)]
            assert again == [EventQueueWarning(8, 10)]
        finally:
            await n.aclose()
