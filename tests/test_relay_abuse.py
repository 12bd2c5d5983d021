"""Relaying and punching on our behalf only: what hostile Nodes cannot make
us (or a rendezvous) do with relay and punch frames (docs/nat.md, "What a
rendezvous can make us do").

Hostile Nodes are real endpoints that pass the reachability proof and send
hand-built frames (``send_control_frame``); a lying relay is an honest relay
whose announcements are rewritten on their way out (``lying_announcements``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

from quic_p2p import (
    ConnectedTo,
    ConnectionFailedError,
    Event,
    NewMessage,
    NodeInfo,
    QuicP2p,
    RelayPolicy,
    SentUserMessage,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.aio import nat as nat_module
from quic_p2p.peer import Address
from quic_p2p.proto import relay as relay_module
from quic_p2p.proto.limits import (
    RELAY_MAX_BACKLOG,
    RENDEZVOUS_REQUEST_BURST,
    RENDEZVOUS_REQUEST_RATE,
)
from quic_p2p.proto.wire import encode_address, encode_punch_info, encode_relay_open, frame

from netutil import (
    WAIT,
    drain,
    endpoints,
    node_config,
    send_control_frame,
    third_addresses,
    until,
    wait_for_event,
)
from relay import LossyRelay

pytestmark = pytest.mark.usefixtures("no_loop_errors")


async def _dial(frm: QuicP2p, to: QuicP2p, node: NodeInfo | None = None) -> None:
    """``frm`` connects to ``to`` (``frm`` chose it); both see the other."""
    await asyncio.wait_for(frm.connect_to(node or to.node_info), WAIT)
    await wait_for_event(to, ConnectedTo)


def _connected_events(events: list[Event]) -> list[ConnectedTo]:
    return [e for e in events if isinstance(e, ConnectedTo)]


@contextmanager
def lying_announcements(
    monkeypatch: pytest.MonkeyPatch, asker: Address, claim: NodeInfo
) -> Iterator[None]:
    """While active, the relay of the test (one per test: the rewrite is
    module-wide) announces the Node at ``asker`` to the target of its relay
    sessions as ``claim`` (address and certificate): what a hostile relay can
    do, since it writes those frames itself."""
    honest = encode_relay_open

    def lie(msg_id: int, session: int, addr: Address, cert: bytes) -> bytes:
        if msg_id == 0 and addr == asker:  # the announcement to the target
            addr, cert = claim.peer_addr, claim.peer_cert_der
        return honest(msg_id, session, addr, cert)

    with monkeypatch.context() as patch:
        patch.setattr(relay_module, "encode_relay_open", lie)
        yield


# ------------------------------------------------------------------ a Node we did not choose
async def test_a_node_that_dialled_us_starts_no_punch_and_no_relay_session() -> None:
    """Punch notices and relay announcements are taken only from Nodes we
    connected to ourselves: one that connected to us makes us send nothing
    to the addresses it names, and its relayed "peer" never connects."""
    async with endpoints(node_config(), node_config(), node_config()) as (victim, hostile, x):
        await _dial(hostile, victim)
        async with third_addresses(8) as sinks:
            for sink in sinks:
                send_control_frame(
                    hostile, victim.local_addr, encode_punch_info(0, 0, sink.addr, b"")
                )
            # An announced relay session for x's address, and packets for it.
            send_control_frame(
                hostile,
                victim.local_addr,
                encode_relay_open(0, 7, x.local_addr, hostile.our_certificate),
            )
            # The victim answers every frame of that connection in order: an
            # echo answered means the frames before it were handled.
            await asyncio.wait_for(hostile.our_connection_info(), WAIT)
            stats = victim.stats()
            assert stats.get("punches declined: not a rendezvous we chose") == 8
            assert stats.get("relay sessions declined: not a relay we chose") == 1
            await asyncio.sleep(0.5)  # a punch would have started after 0 ms
            assert sum(s.datagrams for s in sinks) == 0
            assert not _connected_events(drain(victim))


async def test_punch_notices_naming_addresses_the_rendezvous_cannot_see_are_declined() -> None:
    """A rendezvous we reach on loopback sees only loopback peers: a notice
    naming a LAN, link-local, multicast or unspecified address is a lie."""
    async with endpoints(node_config(), node_config()) as (victim, rendezvous):
        await _dial(victim, rendezvous)
        named = [("10.1.2.3", 443), ("192.168.1.1", 53), ("169.254.1.1", 9), ("224.0.0.1", 9)]
        named += [("0.0.0.0", 9), ("8.8.8.8", 53)]
        for addr in named:
            send_control_frame(rendezvous, victim.local_addr, encode_punch_info(0, 0, addr, b""))
        await asyncio.wait_for(rendezvous.our_connection_info(), WAIT)
        key = "punches declined: an address the rendezvous could not have seen"
        assert victim.stats().get(key) == len(named)


# ------------------------------------------------------------------ impostors behind a relay
@asynccontextmanager
async def _a_relay_we_chose_and_an_impostor() -> AsyncIterator[list[QuicP2p]]:
    """victim and impostor connected to relay (which the victim chose), and
    x, a Node nobody is connected to yet."""
    async with endpoints(node_config(), node_config(), node_config(), node_config()) as eps:
        victim, relay, impostor, _ = eps
        relay.relay_policy = RelayPolicy()
        await _dial(victim, relay)
        await _dial(impostor, relay)
        drain(victim)
        yield eps


async def test_a_relay_we_chose_cannot_pass_off_another_certificate_as_a_known_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay announces a Node under the address *and certificate* of another
    (x); the Node behind the session cannot prove x's certificate, so it is
    refused at TLS and never reaches ConnectedTo. x stays reachable."""
    async with _a_relay_we_chose_and_an_impostor() as (victim, relay, impostor, x):
        with (
            lying_announcements(monkeypatch, impostor.local_addr, x.node_info),
            pytest.raises(ConnectionFailedError),
        ):
            await asyncio.wait_for(
                impostor.connect_to(victim.node_info, via=relay.node_info, punch=False), WAIT
            )
        assert victim.stats().get("refused: peer certificate", 0) >= 1
        assert not _connected_events(drain(victim))
        assert victim.relayed_via(x.local_addr) is None
        # x itself connects and is talked to directly.
        await _dial(x, victim)
        assert isinstance(await victim.send(x.node_info, b"to x", 1), SentUserMessage)


async def test_a_relay_cannot_claim_the_address_of_a_node_we_know_by_another_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """x is a contact of ours (its certificate known): a relay announcing its
    impostor at x's address with the impostor's own certificate is declined."""
    async with (
        endpoints(node_config(), node_config(), node_config()) as (relay, impostor, x),
        endpoints(node_config(hard_coded_contacts=(x.node_info,))) as (victim,),
    ):
        relay.relay_policy = RelayPolicy()
        await _dial(victim, relay)
        await _dial(impostor, relay)
        drain(victim)
        claim = NodeInfo(x.local_addr, impostor.our_certificate)
        with (
            lying_announcements(monkeypatch, impostor.local_addr, claim),
            pytest.raises(ConnectionFailedError),
        ):
            await asyncio.wait_for(
                impostor.connect_to(victim.node_info, via=relay.node_info, punch=False), WAIT
            )
        key = "relay sessions declined: not the key we know for that address"
        assert victim.stats().get(key) == 1
        assert not _connected_events(drain(victim))


async def test_a_relayed_claim_of_an_address_never_stands_for_the_node_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay we chose may introduce a Node under an address we know nothing
    of (addresses of relayed peers are what the relay says). Peers are their
    keys: the claim is that peer's address hint, never the identity of the
    real Node at that address, which connects directly as itself."""
    async with _a_relay_we_chose_and_an_impostor() as (victim, relay, impostor, x):
        claim = NodeInfo(x.local_addr, impostor.our_certificate)
        with lying_announcements(monkeypatch, impostor.local_addr, claim):
            await asyncio.wait_for(
                impostor.connect_to(victim.node_info, via=relay.node_info, punch=False), WAIT
            )
        ev, _ = await wait_for_event(victim, ConnectedTo)
        assert ev.peer.peer_addr == x.local_addr and ev.relay == relay.local_addr  # the claim
        assert ev.peer_id == impostor.peer_id  # ...by the impostor's own key
        await asyncio.wait_for(x.connect_to(victim.node_info), WAIT)
        ev, _ = await wait_for_event(victim, ConnectedTo, lambda e: e.peer_id == x.peer_id)
        assert ev.relay is None and ev.peer.peer_addr == x.local_addr
        assert victim.relayed_via(x.local_addr) is None
        assert isinstance(await victim.send(x.node_info, b"to the real x", 1), SentUserMessage)
        got, _ = await wait_for_event(x, NewMessage)
        assert got.msg == b"to the real x" and got.peer_id == victim.peer_id
        ids = sorted(str(p.peer_id) for p in victim.connected_peers())
        assert ids == sorted(str(p) for p in (relay.peer_id, impostor.peer_id, x.peer_id))


async def test_a_relay_announcement_never_aborts_a_connection_in_progress() -> None:
    """A connect_to still in its handshake is not torn down by a relay
    session announced for the same address: it completes, directly."""
    async with endpoints(node_config(), node_config(), node_config()) as (victim, relay, x):
        relay.relay_policy = RelayPolicy()
        await _dial(victim, relay)
        async with LossyRelay(victim.local_addr, x.local_addr, seed=1) as slow:
            slow.cut(1.0)  # the handshake waits out the cut (retransmitted Initials)
            through = NodeInfo(slow.for_a, x.our_certificate)
            connecting = asyncio.ensure_future(victim.connect_to(through))
            try:
                await asyncio.sleep(0.2)
                send_control_frame(
                    relay,
                    victim.local_addr,
                    encode_relay_open(0, 9, slow.for_a, x.our_certificate),
                )
                await until(
                    lambda: (
                        victim.stats().get(
                            "relay sessions declined: that address is connected or connecting"
                        )
                        == 1
                    )
                )
                peer = await asyncio.wait_for(asyncio.shield(connecting), WAIT)
            finally:
                if not connecting.done():
                    connecting.cancel()
            assert peer.peer_addr == slow.for_a
            assert victim.relayed_via(slow.for_a) is None


# ------------------------------------------------------------------ the rendezvous's quotas
async def test_relay_quotas_are_per_asker_so_nobody_spends_another_pairs_share() -> None:
    """A third Node asking for sessions to b uses up its own quota, not b's:
    a then still gets its relay to b at once."""
    policy = RelayPolicy(max_sessions_per_peer=2)
    async with endpoints(node_config(), node_config(), node_config(), node_config()) as (
        r,
        a,
        b,
        m,
    ):
        r.relay_policy = policy
        for ep in (a, b, m):
            await _dial(ep, r)
        for msg_id in range(1, 5):  # four requests naming b: two sessions, two refused
            send_control_frame(
                m,
                r.local_addr,
                frame(FrameKind.RELAY_REQUEST, encode_address(b.local_addr), msg_id),
            )
        await until(lambda: r.stats().get("relay requests refused") == 2)
        assert sorted(s.asker for s in r.relay_sessions()) == [m.local_addr] * 2
        peer = await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info, punch=False), WAIT)
        assert a.relayed_via(peer) == r.local_addr
        assert isinstance(await a.send(peer, b"through r", 1), SentUserMessage)


async def test_punch_requests_are_rate_limited_per_asker() -> None:
    """300 PUNCH_REQUESTs at once: the rendezvous forwards a burst and its
    rate, and refuses the rest (RATE_LIMITED) — the Node named gets a few
    notices, not 300."""
    async with endpoints(node_config(), node_config(), node_config()) as (r, b, m):
        await _dial(b, r)
        await _dial(m, r)
        loop = asyncio.get_running_loop()
        started = loop.time()
        body = encode_address(b.local_addr)
        for msg_id in range(1, 301):
            send_control_frame(m, r.local_addr, frame(FrameKind.PUNCH_REQUEST, body, msg_id))
        sent_for = loop.time() - started
        await until(
            lambda: (
                r.stats().get("punches relayed", 0)
                + r.stats().get("punch requests refused: rate", 0)
                == 300
            )
        )
        relayed = r.stats().get("punches relayed", 0)
        allowed = RENDEZVOUS_REQUEST_BURST + int(sent_for * RENDEZVOUS_REQUEST_RATE) + 1
        assert 0 < relayed <= allowed, (relayed, allowed)
        notice = len(encode_punch_info(0, 0, m.local_addr, m.our_certificate))
        out = relayed * notice
        print(f"\n300 punch requests in {sent_for:.2f} s: {relayed} notices to b ({out} B)")


def _spend_requests(asker: QuicP2p, rendezvous: QuicP2p, n: int, first_id: int) -> None:
    """``n`` punch requests from ``asker`` naming an address ``rendezvous``
    does not know: each refused, each counted against the asker's rate."""
    body = encode_address(("127.0.0.1", 9))
    for msg_id in range(first_id, first_id + n):
        send_control_frame(
            asker, rendezvous.local_addr, frame(FrameKind.PUNCH_REQUEST, body, msg_id)
        )


async def test_an_asker_over_the_rate_is_paced_not_failed() -> None:
    """Our own requests refused for rate are asked again after a pause, so a
    burst of honest connect_to calls is paced, not failed."""
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        await _dial(a, r)
        await _dial(b, r)
        _spend_requests(a, r, RENDEZVOUS_REQUEST_BURST + 2, 1000)
        refused = "punch requests refused: rate"
        await until(lambda: r.stats().get(refused, 0) >= 2)
        before = r.stats()[refused]
        peer = await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info), WAIT)
        assert peer.peer_addr == b.local_addr and a.relayed_via(peer) is None
        assert r.stats()[refused] > before  # its own request was refused, then paced


async def test_an_asker_whose_retries_run_out_is_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nat_module, "RATE_LIMITED_RETRIES", 0)  # refused once: final
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        await _dial(a, r)
        await _dial(b, r)
        _spend_requests(a, r, RENDEZVOUS_REQUEST_BURST + 2, 1000)
        await until(lambda: r.stats().get("punch requests refused: rate", 0) >= 2)
        with pytest.raises(ConnectionFailedError, match="too many punch or relay requests"):
            # (punch=True would pass: its later attempts wait out a backoff)
            await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info, punch=False), WAIT)


# ------------------------------------------------------------------ a side that stops reading
async def test_a_relay_holds_a_bounded_backlog_for_a_side_that_stops_reading() -> None:
    """b stops taking packets (its link to the relay is cut) while a pumps
    8 MB into the session: the relay queues at most RELAY_MAX_BACKLOG for b
    and drops the rest (counted), instead of buffering up to the byte limit.
    Also guards Link.control_backlog's read of aioquic's stream internals:
    if it breaks, nothing is ever forwarded and the queue peak stays 0."""
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        r.relay_policy = RelayPolicy()
        await _dial(a, r)
        async with LossyRelay(b.local_addr, r.local_addr, seed=2) as link:
            await _dial(b, r, NodeInfo(link.for_a, r.our_certificate))
            b_at_r = NodeInfo(link.for_b, b.our_certificate)  # b as r sees it
            peer = await asyncio.wait_for(a.connect_to(b_at_r, via=r.node_info, punch=False), WAIT)
            assert a.relayed_via(peer) == r.local_addr
            (session,) = r.relay_sessions()
            link.cut(30)
            packet = frame(FrameKind.RELAY_PACKET, b"\x40" * 1200, session.session_id)
            for _ in range(7000):
                send_control_frame(a, r.local_addr, packet)
                if _ % 100 == 0:
                    await asyncio.sleep(0)
            dropped = "relay: packets dropped, the receiving side is not reading"
            await until(lambda: r.stats().get(dropped, 0) > 0)
            await until(
                lambda: (
                    sum(s.bytes for s in r.relay_sessions()) >= 7000 * 1200
                    or not r.relay_sessions()
                )
            )
            peak = r.stats()["relay: most bytes queued for one side"]
            assert 0 < peak <= RELAY_MAX_BACKLOG, peak
            print(
                f"\n8.4 MB pumped at a stalled side: at most {peak} B queued, "
                f"{r.stats()[dropped]} packets dropped"
            )
