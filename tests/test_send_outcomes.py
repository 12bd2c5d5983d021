"""Every send ends in exactly one outcome the user can see: when the caller
cancels or times out, when the peer stops acknowledging, and when the user
never reads ``events()``."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc

import pytest

from quic_p2p import (
    ConnectedTo,
    ConnectionFailedError,
    ConnectionFailure,
    NewMessage,
    NodeInfo,
    Peer,
    QuicP2p,
    SentUserMessage,
    UnsentUserMessage,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto.limits import DEFAULT_SEND_TIMEOUT
from quic_p2p.proto.wire import frame

from netutil import WAIT, drain, endpoints, node_config, until, wait_for_event
from rawpeer import CONTROL, RawPeer

pytestmark = pytest.mark.usefixtures("no_loop_errors")

MIB = 1024 * 1024


def outcomes(ep: QuicP2p) -> list[SentUserMessage | UnsentUserMessage]:
    return [e for e in drain(ep) if isinstance(e, (SentUserMessage, UnsentUserMessage))]


async def test_a_cancelled_send_reports_its_real_outcome_on_events() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.send(peer, b"cancelled", 5), 0.0001)
        ev, _ = await wait_for_event(a, SentUserMessage, lambda e: e.token == 5)
        assert ev.msg == b"cancelled"
        got, _ = await wait_for_event(b, NewMessage)
        assert got.msg == b"cancelled"
        await asyncio.sleep(0.2)
        assert outcomes(a) == []  # exactly one
        assert not [e for e in drain(b) if isinstance(e, NewMessage)]


async def test_a_send_cancelled_while_connecting_reports_its_outcome() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        task = asyncio.ensure_future(a.send(b.node_info, b"early", 6))  # connects first
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ev, _ = await wait_for_event(a, SentUserMessage, lambda e: e.token == 6)
        assert ev.msg == b"early"
        await wait_for_event(b, NewMessage, lambda e: e.msg == b"early")


async def test_awaited_outcomes_do_not_make_us_deaf_or_hold_their_bytes() -> None:
    """A user who awaits send() and never reads events() still receives, and
    the outcomes it was handed are not kept (nor their messages)."""
    async with endpoints(node_config(), event_capacity=8) as (a,), endpoints(node_config()) as (b,):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        for k in range(20):
            assert isinstance(await a.send(peer, os.urandom(64 * 1024), k), SentUserMessage)
        back = await asyncio.wait_for(b.send(Peer.node(a.node_info), b"still listening", 1), WAIT)
        assert isinstance(back, SentUserMessage)
        assert outcomes(a) == []


async def test_outcome_events_can_be_asked_for() -> None:
    async with endpoints(node_config(), node_config(), outcome_events=True) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        sent = await asyncio.gather(*(a.send(peer, b"m%d" % k, k) for k in range(10)))
        assert outcomes(a) == sent


async def test_sends_to_a_peer_that_withholds_credit_end_unsent() -> None:
    """A connected peer that grants almost no flow-control credit and never
    acknowledges: every send ends unsent once send_timeout passes without
    progress, and the peer is reported failed and dropped."""
    async with endpoints(node_config(), send_timeout=1.5) as (n,):
        staller = await RawPeer.connect(n.local_addr, max_stream_data=1000, max_data=2000)
        try:
            staller.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
            await until(lambda: Peer.client(staller.addr, staller.peer_id) in n.connected_peers())
            peer = Peer.client(staller.addr, staller.peer_id)
            results = await asyncio.wait_for(
                asyncio.gather(*(n.send(peer, bytes(1024), k) for k in range(200))), WAIT
            )
            assert all(isinstance(r, UnsentUserMessage) for r in results)
            assert "acknowledged nothing" in results[0].reason  # the timeout, not idling
            await wait_for_event(n, ConnectionFailure)
            assert peer not in n.connected_peers()
        finally:
            staller.close()


def test_the_default_ends_every_send() -> None:
    assert QuicP2p().send_timeout == DEFAULT_SEND_TIMEOUT
    assert DEFAULT_SEND_TIMEOUT is not None and 0 < DEFAULT_SEND_TIMEOUT <= 120


async def test_unacknowledged_bytes_per_peer_are_bounded() -> None:
    """200 sends of 1 MiB to a stalled peer: what we buffer for it stays near
    max_unacked_bytes (the rest wait in send()), not 200 MiB."""
    limit = 4 * MIB
    async with endpoints(node_config(), send_timeout=2.0, max_unacked_bytes=limit) as (n,):
        staller = await RawPeer.connect(n.local_addr, max_stream_data=1000, max_data=2000)
        try:
            staller.send(CONTROL, frame(FrameKind.HANDSHAKE_CLIENT))
            await until(lambda: Peer.client(staller.addr, staller.peer_id) in n.connected_peers())
            peer = Peer.client(staller.addr, staller.peer_id)
            body = bytes(MIB)  # one object: the caller's own memory is counted once
            gc.collect()
            tracemalloc.start()
            try:
                sends = [asyncio.ensure_future(n.send(peer, body, k)) for k in range(200)]
                await asyncio.sleep(0.5)
                held, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            results = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
            assert all(isinstance(r, UnsentUserMessage) for r in results)
            assert held < limit + 8 * MIB, f"{held / MIB:.1f} MiB held for a stalled peer"
        finally:
            staller.close()


async def test_backpressure_keeps_order_and_delivers_everything() -> None:
    async with endpoints(node_config(), node_config(), max_unacked_bytes=64 * 1024) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(NodeInfo(b.local_addr)), WAIT)
        msgs = [os.urandom(20_000) for _ in range(50)]
        results = await asyncio.wait_for(
            asyncio.gather(*(a.send(peer, m, k) for k, m in enumerate(msgs))), WAIT
        )
        assert all(isinstance(r, SentUserMessage) for r in results)
        got = [e.msg for e in drain(b) if isinstance(e, NewMessage)]
        assert sorted(got) == sorted(msgs)


async def test_a_refused_request_never_frees_a_message_slot() -> None:
    """Requests to a peer (here a punch request it refuses) and messages share
    one msg_id space: the refusal of request N must not read as the refusal
    of large message N, which would start a fifth message stream the peer
    refuses (busy) although it refused nothing of ours."""
    async with endpoints(node_config(), node_config()) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        await wait_for_event(b, ConnectedTo)
        big = [os.urandom(6 * MIB) for _ in range(5)]  # four streams at once, one queued
        sends = [asyncio.ensure_future(a.send(peer, m, i)) for i, m in enumerate(big)]
        await asyncio.sleep(0)
        with pytest.raises(ConnectionFailedError, match="not connected to that peer"):
            await asyncio.wait_for(a.connect_to(NodeInfo(("127.0.0.1", 9)), via=b.node_info), WAIT)
        done = await asyncio.wait_for(asyncio.gather(*sends), 6 * WAIT)
        assert [type(o) for o in done] == [SentUserMessage] * 5, [
            getattr(o, "reason", "") for o in done
        ]
