"""What hostile peers can make a node hold: the bytes of peers not yet proven,
the large messages one connection may have us receive at once, and the
connection slots one IP address may take."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest

from quic_p2p import (
    ConnectedTo,
    ConnectionFailedError,
    NewMessage,
    NodeInfo,
    OurType,
    Peer,
    QuicP2p,
    SentUserMessage,
    UnsentUserMessage,
)
from quic_p2p.accel import FrameDecoder
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto import conns
from quic_p2p.proto.limits import UNPROVEN_MAX_BYTES
from quic_p2p.proto.link import MAX_ACTIVE_LARGE
from quic_p2p.proto.wire import RejectReason, decode_ack, decode_reject, frame

from netutil import WAIT, drain, endpoints, node_config, until, wait_for_event
from rawpeer import CONTROL, RawPeer, header

pytestmark = pytest.mark.usefixtures("no_loop_errors")

MIB = 1024 * 1024


def refusals(peer: RawPeer) -> list[RejectReason]:
    """The REJECT frames the victim sent the raw peer on its control stream."""
    frames = FrameDecoder(1 << 20).feed(peer.received())
    return [decode_reject(f) for f in frames if f.kind == FrameKind.REJECT]


def answers(peer: RawPeer) -> tuple[set[int], dict[int, RejectReason]]:
    """The msg_ids the victim acknowledged, and those it refused (and why)."""
    frames = FrameDecoder(1 << 20).feed(peer.received())
    acked = {i for f in frames if f.kind == FrameKind.ACK for i in decode_ack(f.body)}
    refused = {f.msg_id: decode_reject(f) for f in frames if f.kind == FrameKind.REJECT}
    return acked, refused


def backlog(peer: RawPeer, sid: int) -> int:
    """Bytes the raw peer has queued on ``sid`` and the victim not yet
    acknowledged (aioquic's stream sender): kept small, so the peer's own
    memory does not blur what the victim holds."""
    return len(peer.quic._streams[sid].sender._buffer)


async def as_client(victim: QuicP2p) -> RawPeer:
    """A raw peer connected to ``victim`` as a Client (so proven at once: only
    the connection's receive budget applies to it, not the unproven one)."""
    peer = await RawPeer.connect(victim.local_addr)
    peer.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
    await wait_for_event(victim, ConnectedTo, lambda e: e.peer.peer_addr == peer.addr)
    drain(victim)
    return peer


async def send_paced(peer: RawPeer, sid: int, n: int, chunk: int = 512 * 1024) -> None:
    """Sends ``n`` zero bytes on ``sid`` (no FIN), a chunk whenever the
    victim has acknowledged what came before."""
    while n > 0:
        await until(lambda: backlog(peer, sid) < chunk)
        peer.send(sid, bytes(min(chunk, n)))
        n -= chunk


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
            stats = victim.stats()
            assert 0 < stats["unproven peers: most bytes held"] <= UNPROVEN_MAX_BYTES
            assert not [e for e in drain(victim) if isinstance(e, (ConnectedTo, NewMessage))]
        finally:
            peer.close()
        # Once the peer is gone, what it made us hold is given back.
        await until(lambda: victim.stats()["unproven peers: bytes held"] == 0, limit=3 * WAIT)


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
            assert victim.stats()["unproven peers: most bytes held"] <= UNPROVEN_MAX_BYTES
        finally:
            peer.close()


async def test_a_peer_cannot_make_us_buffer_beyond_the_connection_receive_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Client declares 128 messages of the largest size at once (a first
    part of each body with its header) and sends the admitted ones all but
    their last byte: those beyond the connection's receive budget are refused
    (BUSY) and their bytes dropped, so what we hold stays within the budget
    (the count limit alone, MAX_ACTIVE_LARGE x 4 MiB, would allow twice as
    much). Measured with tracemalloc over the whole process."""
    budget, largest = 8 * MIB, 4 * MIB
    assert MAX_ACTIVE_LARGE * largest >= 2 * budget
    monkeypatch.setattr(conns, "RECEIVE_BUDGET", budget)
    async with endpoints(node_config(max_msg_size_allowed=largest)) as (victim,):
        peer = await as_client(victim)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            first = 16 * 1024
            streams = {}
            for msg_id in range(1, 129):
                streams[msg_id] = sid = peer.new_stream()
                body = bytes(first)
                peer.send(sid, header(FrameKind.USER_MESSAGE, msg_id, largest) + body)
            admitted = budget // largest
            await peer.wait(lambda: len(answers(peer)[1]) >= 128 - admitted)
            acked, refused = answers(peer)
            assert set(refused.values()) == {RejectReason.BUSY} and not acked
            held = [m for m in streams if m not in refused]
            assert len(held) == admitted
            rest = largest - first - 1
            await asyncio.gather(*(send_paced(peer, streams[m], rest) for m in held))
            await until(lambda: all(backlog(peer, streams[m]) == 0 for m in held))
            await asyncio.sleep(0.2)  # whatever else arrives
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
            peer.close()
        print(f"peak growth {peak / MIB:.1f} MiB for a budget of {budget // MIB} MiB")
        assert budget - MIB < peak < budget + 4 * MIB
        stats = victim.stats()
        assert stats["refused: message beyond the connection's receive budget"] == 128 - admitted
        assert not [e for e in drain(victim) if isinstance(e, NewMessage)]


async def test_the_receive_budget_refuses_no_honest_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 concurrent 4 MiB messages to a connection whose receive budget
    takes exactly MAX_ACTIVE_LARGE of them: the sender holds at most that
    many in flight (the rest wait their turn), so every one is sent."""
    size = 4 * MIB
    monkeypatch.setattr(conns, "RECEIVE_BUDGET", MAX_ACTIVE_LARGE * size)
    cfg = node_config(max_msg_size_allowed=size)
    async with endpoints(cfg, node_config(max_msg_size_allowed=size, ip="127.0.0.2")) as (
        victim,
        honest,
    ):
        peer = await asyncio.wait_for(honest.connect_to(victim.node_info), WAIT)
        msgs = [bytes([i]) * size for i in range(20)]
        outs = await asyncio.wait_for(
            asyncio.gather(*(honest.send(peer, m, i) for i, m in enumerate(msgs))), 3 * WAIT
        )
        assert all(isinstance(o, SentUserMessage) for o in outs), outs
        got = [e.msg for e in drain(victim) if isinstance(e, NewMessage)]
        assert sorted(got) == msgs
        assert "refused: message beyond the connection's receive budget" not in victim.stats()


async def test_the_receive_budget_is_given_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two incomplete messages fill the budget and a burst beyond it is
    refused; one then completes and the other is reset (given up by its
    sender): both reservations are back, so two more messages that need the
    whole budget are accepted."""
    largest = MIB
    monkeypatch.setattr(conns, "RECEIVE_BUDGET", 2 * largest)
    async with endpoints(node_config(max_msg_size_allowed=largest)) as (victim,):
        peer = await as_client(victim)
        try:
            sids = {}
            for msg_id in range(1, 3):
                sids[msg_id] = sid = peer.new_stream()
                start = header(FrameKind.USER_MESSAGE, msg_id, largest)
                peer.send(sid, start + bytes(largest - 1))
            for msg_id in range(3, 9):
                start = header(FrameKind.USER_MESSAGE, msg_id, largest)
                peer.send(peer.new_stream(), start + bytes(largest), end=True)
            await peer.wait(lambda: len(answers(peer)[1]) == 6)
            assert set(answers(peer)[1]) == set(range(3, 9))
            peer.send(sids[1], b"\0", end=True)  # completes
            peer.quic.reset_stream(sids[2], 0)  # given up
            peer.flush()
            await peer.wait(lambda: 1 in answers(peer)[0])
            await asyncio.sleep(0.1)  # the reset arrives
            for msg_id in (9, 10):
                start = header(FrameKind.USER_MESSAGE, msg_id, largest)
                peer.send(peer.new_stream(), start + bytes(largest), end=True)
            await peer.wait(lambda: {1, 9, 10} <= answers(peer)[0])
            assert set(answers(peer)[1]) == set(range(3, 9))
            got = [e for e in drain(victim) if isinstance(e, NewMessage)]
            assert len(got) == 3 and all(len(e.msg) == largest for e in got)
        finally:
            peer.close()


async def test_a_send_refused_by_the_receive_budget_is_unsent_as_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concurrent messages that together exceed the receiver's budget (it
    admits one maximal message at a time here): those beyond it end unsent,
    refused by the peer as busy; the first is sent."""
    size = MIB
    monkeypatch.setattr(conns, "RECEIVE_BUDGET", size)
    cfg = node_config(max_msg_size_allowed=size)
    async with endpoints(cfg, node_config(max_msg_size_allowed=size, ip="127.0.0.2")) as (
        victim,
        sender,
    ):
        peer = await asyncio.wait_for(sender.connect_to(victim.node_info), WAIT)
        sends = [sender.send(peer, bytes(size), i) for i in range(MAX_ACTIVE_LARGE)]
        outs = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
        assert isinstance(outs[0], SentUserMessage)
        unsent = [o for o in outs if isinstance(o, UnsentUserMessage)]
        assert unsent and all("refused by the peer: busy" in str(o.reason) for o in unsent)
        assert victim.stats()["refused: message beyond the connection's receive budget"] == len(
            unsent
        )


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
            assert victim.stats().get("refused: per-IP connection limit", 0) >= 1
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
