"""Relay fallback on loopback: two Nodes reach each other through a third.

There is no NAT on loopback, so ``punch=False`` asks for the relay directly;
tests/test_nat.py shows the fallback happening on its own between symmetric
NATs. The two sides' QUIC connections run end to end inside the relay
session, so everything a direct connection does (role handshake, pinned
certificates, acknowledgements) happens unchanged.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from quic_p2p import (
    ConnectedTo,
    ConnectionFailedError,
    ConnectionFailure,
    NewMessage,
    OurType,
    Peer,
    QuicP2p,
    QuicP2pError,
    Reachability,
    RelayPolicy,
    SentUserMessage,
    UnsentUserMessage,
    UpgradedToDirect,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.aio import nat as nat_module
from quic_p2p.proto.limits import FROM_RELAY
from quic_p2p.proto.state import AnswerResult
from quic_p2p.proto.wire import ErrorCode, RelayClose, encode_relay_close, frame

from netutil import (
    WAIT,
    closed,
    connection_to,
    dial_with_handshake,
    drain,
    endpoints,
    node_config,
    send_control_frame,
    until,
    wait_for_event,
)

#: Relay sessions an endpoint takes part in as one of the two sides.
OUR_PATHS = "relay: sessions we are a side of"


async def _connect(a: QuicP2p, b: QuicP2p) -> None:
    await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
    await wait_for_event(b, ConnectedTo)


async def _relayed(r: QuicP2p, a: QuicP2p, b: QuicP2p) -> Peer:
    """a and b connected to r, then to each other through r."""
    await _connect(a, r)
    await _connect(b, r)
    drain(a)
    drain(b)
    peer = await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info, punch=False), WAIT)
    return peer


async def _exchange(a: QuicP2p, b: QuicP2p, n: int, tag: bytes) -> None:
    """n messages each way, each acknowledged, each received exactly once."""
    sends = [a.send(b.node_info, tag + b"a%d" % i, i) for i in range(n)]
    sends += [b.send(a.node_info, tag + b"b%d" % i, i) for i in range(n)]
    outcomes = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
    assert all(isinstance(o, SentUserMessage) for o in outcomes), outcomes
    for ep, side in ((b, b"a"), (a, b"b")):
        got: list[bytes] = []
        async with asyncio.timeout(WAIT):
            while len(got) < n:
                ev = await ep.next_event()
                if isinstance(ev, NewMessage):
                    got.append(ev.msg)
        assert sorted(got) == sorted(tag + side + b"%d" % i for i in range(n))


async def test_two_nodes_talk_through_a_relay() -> None:
    policy = RelayPolicy()
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = policy
        peer = await _relayed(r, a, b)
        assert peer == Peer.node(b.node_info)
        ev, _ = await wait_for_event(b, ConnectedTo)
        assert ev.peer == Peer.node(a.node_info) and ev.relay == r.local_addr
        assert a.relayed_via(b.node_info) == r.local_addr
        assert b.relayed_via(a.node_info) == r.local_addr
        assert r.relayed_via(a.node_info) is None  # r reaches both directly
        assert r.stats().get("relay sessions opened") == 1

        # The relay forwards QUIC packets: it never sees the plaintext.
        secret = os.urandom(32)
        forwarded: list[bytes] = []
        r.engine.relay_tap = forwarded.append
        await _exchange(a, b, 50, secret)
        big = secret * 4096  # 128 KiB: a message on its own stream
        assert isinstance(await asyncio.wait_for(a.send(b.node_info, big), WAIT), SentUserMessage)
        ev2, _ = await wait_for_event(b, NewMessage)
        assert ev2.msg == big
        assert forwarded and not any(secret in body for body in forwarded)
        assert r.stats()["relay: bytes forwarded"] >= len(big)
        assert not [e for e in drain(r) if isinstance(e, NewMessage)]


async def test_a_node_that_does_not_relay_refuses_and_the_reason_is_clear() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        await _connect(a, r)
        await _connect(b, r)
        with pytest.raises(ConnectionFailedError, match="does not relay"):
            await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info, punch=False), WAIT)
        assert r.stats().get("relay requests refused") == 1
        # A relay request for a peer it does not know: tests/test_endpoint.py.


async def test_relay_session_limits_refuse_clearly() -> None:
    configs = [node_config() for _ in range(4)]
    async with endpoints(*configs) as (r, a, b, c):
        r.relay_policy = RelayPolicy(max_sessions_per_peer=1)
        await _relayed(r, a, b)
        await _connect(c, r)
        with pytest.raises(ConnectionFailedError, match="at its relay limits"):
            await asyncio.wait_for(a.connect_to(c.node_info, via=r.node_info, punch=False), WAIT)
        r.relay_policy = RelayPolicy(max_sessions=1)
        with pytest.raises(ConnectionFailedError, match="at its relay limits"):
            await asyncio.wait_for(c.connect_to(a.node_info, via=r.node_info, punch=False), WAIT)
        assert r.stats()["relay requests refused"] == 2
        assert len(r.relay_sessions()) == 1
        await _exchange(a, b, 3, b"unaffected")


async def test_relay_byte_limit_ends_the_session_and_every_send_has_an_outcome() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy(max_bytes=256 * 1024)
        await _relayed(r, a, b)
        await _exchange(a, b, 5, b"small")
        sends = [a.send(b.node_info, os.urandom(100_000), i) for i in range(5)]
        outcomes = await asyncio.wait_for(asyncio.gather(*sends), 30)
        unsent = [o for o in outcomes if isinstance(o, UnsentUserMessage)]
        assert unsent, "the limit must stop some of 500 KB"
        assert all("byte limit" in o.reason for o in unsent), [o.reason for o in unsent]
        for ep, other in ((a, b), (b, a)):
            ev, _ = await wait_for_event(
                ep, ConnectionFailure, lambda e, o=other: e.peer_addr == o.local_addr
            )
            assert "relay byte limit reached" in ev.error
        assert r.stats().get("relay sessions closed") == 1
        assert not r.relay_sessions()
        assert a.stats()[OUR_PATHS] == b.stats()[OUR_PATHS] == 0
        # Both stay connected to the relay itself.
        assert a.connected_peers() == [Peer.node(r.node_info)]


async def test_relay_time_limit_ends_the_session() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy(max_seconds=1.0)
        await _relayed(r, a, b)
        ev, _ = await wait_for_event(a, ConnectionFailure, timeout=5)
        assert "relay time limit reached (1 s)" in ev.error
        outcome = await asyncio.wait_for(a.send(b.node_info, b"after"), WAIT)
        # b is a Node: a send reconnects directly (loopback has no NAT).
        assert isinstance(outcome, SentUserMessage)
        assert a.relayed_via(b.node_info) is None


async def test_losing_the_relay_loses_the_relayed_peers_not_the_messages_outcomes() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy()
        await _relayed(r, a, b)
        msgs = [os.urandom(60_000) for _ in range(20)]
        pending = [asyncio.ensure_future(a.send(b.node_info, m, k)) for k, m in enumerate(msgs)]
        await asyncio.sleep(0)
        await r.aclose()
        outcomes = await asyncio.wait_for(asyncio.gather(*pending), WAIT)
        # Each send has its own outcome, sent or unsent, naming its message.
        assert all(isinstance(o, (SentUserMessage, UnsentUserMessage)) for o in outcomes)
        assert [(o.msg, o.token) for o in outcomes] == [(m, k) for k, m in enumerate(msgs)]
        unsent = [o for o in outcomes if isinstance(o, UnsentUserMessage)]
        assert all("lost the relay" in o.reason for o in unsent), [o.reason for o in unsent]
        ev, _ = await wait_for_event(a, ConnectionFailure, lambda e: e.peer_addr == b.local_addr)
        assert "relay" in ev.error
        await until(lambda: a.stats()[OUR_PATHS] == b.stats()[OUR_PATHS] == 0)
        received = {e.msg for e in drain(b) if isinstance(e, NewMessage)}
        sent = [o.msg for o in outcomes if isinstance(o, SentUserMessage)]
        assert set(sent) <= received  # never reported sent but not received


async def test_upgrade_to_direct_keeps_the_connection_and_its_messages() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy()
        await _relayed(r, a, b)
        conns_before = {c.id for c in a.engine.connections()}
        # Messages in flight while the path changes.
        during = [asyncio.ensure_future(a.send(b.node_info, b"m%d" % i)) for i in range(200)]
        peer = await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info), WAIT)
        assert peer == Peer.node(b.node_info)
        ev, _ = await wait_for_event(a, UpgradedToDirect)
        assert ev == UpgradedToDirect(b.local_addr, r.local_addr, b.peer_id)
        _, before_b = await wait_for_event(b, UpgradedToDirect)
        assert a.relayed_via(b.node_info) is None and b.relayed_via(a.node_info) is None
        outcomes = await asyncio.wait_for(asyncio.gather(*during), WAIT)
        assert all(isinstance(o, SentUserMessage) for o in outcomes)
        got = [e.msg for e in before_b if isinstance(e, NewMessage)]
        async with asyncio.timeout(WAIT):
            while len(got) < 200:
                e = await b.next_event()
                if isinstance(e, NewMessage):
                    got.append(e.msg)
        assert sorted(got) == sorted(b"m%d" % i for i in range(200))
        # Same connections (probe connections came and went), relay session over.
        await until(lambda: not r.relay_sessions())
        assert r.stats().get("relay sessions closed") == 1
        await until(lambda: a.stats()[OUR_PATHS] == b.stats()[OUR_PATHS] == 0)
        assert conns_before & {c.id for c in a.engine.connections()}
        forwarded = r.stats()["relay: bytes forwarded"]
        await _exchange(a, b, 20, b"after")
        assert r.stats()["relay: bytes forwarded"] == forwarded  # all direct now


async def test_relay_fallback_starts_background_upgrades(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With punching on and relaying on, the endpoint goes on trying punches
    in the background once relayed (here: no punch before the relay)."""
    monkeypatch.setattr(nat_module, "PUNCH_ATTEMPTS", 0)
    monkeypatch.setattr(nat_module, "RELAY_UPGRADE_DELAYS", (0.05,))
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy()
        await _connect(a, r)
        await _connect(b, r)
        drain(a)
        await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info), WAIT)
        ev, _ = await wait_for_event(a, ConnectedTo, lambda e: e.relay is not None)
        assert ev.relay == r.local_addr
        await wait_for_event(a, UpgradedToDirect)
        await _exchange(a, b, 5, b"x")


async def test_reachability_check_from_a_fresh_socket() -> None:
    async with (
        endpoints(node_config(), node_config()) as (a, b),
        endpoints(node_config(our_type=OurType.CLIENT)) as (c,),
    ):
        await _connect(a, b)
        found = await asyncio.wait_for(a.check_reachability(b.node_info), WAIT)
        assert found == Reachability(True, a.local_addr, b.local_addr)
        assert b.stats()["reachability checks: reached"] == 1
        # The check came from another port than b's socket: a's admission saw
        # a new source (and sent it a Retry, as to any stranger).
        assert a.stats().get("admission: retry", 0) >= 1
        # A Client cannot be reached, so it is not checked; a Client that asks
        # anyway (raw frame) is refused.
        await asyncio.wait_for(c.connect_to(b.node_info), WAIT)
        with pytest.raises(QuicP2pError, match="Client"):
            await c.check_reachability(b.node_info)
        conn = connection_to(c, b.local_addr, outgoing=True)
        now = asyncio.get_running_loop().time()
        asked = c.engine.ask(now, conn.id, FrameKind.REACH_REQUEST, b"", WAIT)
        answer = await asyncio.wait_for(c.result_of(asked), WAIT)
        assert isinstance(answer, AnswerResult) and answer.frame is None
        assert "runs no reachability check" in answer.error
        with pytest.raises(ConnectionFailedError, match="not connected to the rendezvous"):
            await a.check_reachability(("127.0.0.1", 9))


async def test_link_rtt_is_read_from_aioquic() -> None:
    """Guards the one read of aioquic's private RTT estimate (start delays)."""
    async with endpoints(node_config(), node_config()) as (a, b):
        started = time.monotonic()
        await _connect(a, b)
        rtt = connection_to(a, b.local_addr, outgoing=True).rtt
        # A sample of this connection, not a threshold: no round trip on it
        # can have taken longer than the whole connect.
        assert rtt is not None and 0 < rtt <= time.monotonic() - started


# ------------------------------------------------------------------ bad input
async def test_relay_frames_from_strangers_and_garbage_are_dropped_or_closed() -> None:
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy()
        await _relayed(r, a, b)
        # A packet for a session that does not exist, both directions: dropped.
        for msg_id in (999, 999 | FROM_RELAY):
            send_control_frame(a, r.local_addr, frame(FrameKind.RELAY_PACKET, b"\x40" * 30, msg_id))
        send_control_frame(a, r.local_addr, encode_relay_close(999, RelayClose.CLOSED, "nothing"))
        await until(lambda: r.stats().get("relay: dropped a packet of an unknown session") == 2)
        # Garbage in a real session reaches b's demultiplexer, which drops it.
        (session,) = r.relay_sessions()
        send_control_frame(
            a, r.local_addr, frame(FrameKind.RELAY_PACKET, b"\x00junk", session.session_id)
        )
        await until(lambda: any(k.startswith("dropped") for k in b.stats()))
        await _exchange(a, b, 3, b"still fine")

        # A relay frame before the role handshake closes that connection.
        conn = await dial_with_handshake(a, r.node_info, frame(FrameKind.RELAY_PACKET, b"x", 1))
        assert (await closed(a, conn)).close_code == ErrorCode.PROTOCOL_VIOLATION
        # A malformed RELAY_OPEN from a connected peer: BAD_FRAME.
        send_control_frame(a, r.local_addr, frame(FrameKind.RELAY_OPEN, b"\x00", 0))
        ev, _ = await wait_for_event(a, ConnectionFailure, lambda e: e.peer_addr == r.local_addr)
        assert "RELAY_OPEN body too short" in ev.error
