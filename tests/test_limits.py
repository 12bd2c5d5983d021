"""What hostile peers can make a node hold: the bytes of peers not yet proven,
and the connection slots one IP address may take."""

from __future__ import annotations

import asyncio

import pytest

from quic_p2p import (
    ConnectedTo,
    ConnectionFailedError,
    NewMessage,
    NodeInfo,
    OurType,
    Peer,
    SentUserMessage,
)
from quic_p2p.accel import FrameDecoder
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto.limits import UNPROVEN_MAX_BYTES
from quic_p2p.proto.wire import RejectReason, decode_reject, frame

from netutil import WAIT, drain, endpoints, node_config, until, wait_for_event
from rawpeer import CONTROL, RawPeer

pytestmark = pytest.mark.usefixtures("no_loop_errors")

MIB = 1024 * 1024


def refusals(peer: RawPeer) -> list[RejectReason]:
    """The REJECT frames the victim sent the raw peer on its control stream."""
    frames = FrameDecoder(1 << 20).feed(peer.received())
    return [decode_reject(f) for f in frames if f.kind == FrameKind.REJECT]


async def test_an_unproven_node_cannot_make_us_hold_more_than_the_budget() -> None:
    """A peer claims to be a Node (it never answers our reverse connection)
    and sends 48 messages of 1 MiB: at most UNPROVEN_MAX_BYTES are held, the
    rest are refused at once (BUSY), and nothing is acknowledged or delivered."""
    async with endpoints(node_config()) as (victim,):
        peer = await RawPeer.connect(victim.local_addr)
        try:
            peer.send(CONTROL, frame(FrameKind.HANDSHAKE_NODE, peer.cert_der))
            body = bytes(MIB)
            for msg_id in range(1, 49):
                sid = peer.new_stream()
                peer.send(sid, frame(FrameKind.USER_MESSAGE, body, msg_id), end=True)
            await peer.wait(lambda: len(refusals(peer)) >= 48 - UNPROVEN_MAX_BYTES // MIB)
            await asyncio.sleep(0.5)  # whatever else arrives
            got = refusals(peer)
            assert got and all(r is RejectReason.BUSY for r in got)
            assert len(got) >= 48 - UNPROVEN_MAX_BYTES // MIB
            stats = victim.stats
            assert 0 < stats["unproven peers: most bytes held"] <= UNPROVEN_MAX_BYTES
            assert not [e for e in drain(victim) if isinstance(e, (ConnectedTo, NewMessage))]
        finally:
            peer.close()
        # Once the peer is gone, what it made us hold is given back.
        await until(lambda: victim.stats["unproven peers: bytes held"] == 0, limit=3 * WAIT)


async def test_small_messages_of_an_unproven_node_are_bounded_by_bytes_too() -> None:
    async with endpoints(node_config()) as (victim,):
        peer = await RawPeer.connect(victim.local_addr)
        try:
            peer.send(CONTROL, frame(FrameKind.HANDSHAKE_NODE, peer.cert_der))
            body = bytes(16 * 1024)  # the largest message the control stream carries
            count = UNPROVEN_MAX_BYTES // len(body) + 20
            for msg_id in range(1, count + 1):
                peer.send(CONTROL, frame(FrameKind.USER_MESSAGE, body, msg_id))
            await peer.wait(lambda: len(refusals(peer)) >= 20)
            assert victim.stats["unproven peers: most bytes held"] <= UNPROVEN_MAX_BYTES
        finally:
            peer.close()


async def test_one_ip_cannot_take_every_connection_slot() -> None:
    """Peers from 127.0.0.1 that complete TLS and then say nothing (or only a
    Client handshake) fill their per-IP share; a Node from another address is
    still accepted, and the refusals are counted."""
    limit = 8
    async with endpoints(node_config(), max_connections=40, max_connections_per_ip=limit) as (
        victim,
    ):
        squatters = [await RawPeer.connect(victim.local_addr) for _ in range(limit)]
        try:
            for p in squatters[: limit // 2]:
                p.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
            # The next one from the same address is refused at once.
            extra = RawPeer(victim.local_addr)
            loop = asyncio.get_running_loop()
            await loop.create_datagram_endpoint(lambda: extra, local_addr=("127.0.0.1", 0))
            extra.quic.connect(victim.local_addr, now=loop.time())
            extra.flush()
            code = await extra.closed_with()
            extra.close()
            assert code == 0x2  # QUIC CONNECTION_REFUSED
            assert victim.stats.get("refused: per-IP connection limit", 0) >= 1
            # An honest Node elsewhere (127.0.0.2) connects.
            async with endpoints(node_config(ip="127.0.0.2")) as (honest,):
                peer = await asyncio.wait_for(honest.connect_to(victim.node_info), WAIT)
                out = await asyncio.wait_for(honest.send(peer, b"hi", 1), WAIT)
                assert isinstance(out, SentUserMessage)
        finally:
            for p in squatters:
                p.close()


async def test_a_client_refused_by_the_per_ip_limit_is_told_so() -> None:
    async with (
        endpoints(node_config(), max_connections_per_ip=1) as (n,),
        endpoints(node_config(our_type=OurType.CLIENT), node_config(our_type=OurType.CLIENT)) as (
            c1,
            c2,
        ),
    ):
        await asyncio.wait_for(c1.connect_to(NodeInfo(n.local_addr)), WAIT)
        with pytest.raises(ConnectionFailedError, match="refused"):
            await asyncio.wait_for(c2.connect_to(NodeInfo(n.local_addr)), WAIT)
        await wait_for_event(
            n, ConnectedTo, lambda e: e.peer == Peer.client(c1.local_addr, c1.peer_id)
        )
