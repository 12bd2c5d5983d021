"""The endpoint on loopback with real TLS: the seed's tests, ported, and more."""

from __future__ import annotations

import asyncio

import pytest

from quic_p2p import (
    Config,
    ConnectedTo,
    ConnectionFailedError,
    ConnectionFailure,
    EchoError,
    Event,
    Finish,
    InvalidContactError,
    NewMessage,
    NodeInfo,
    OurType,
    Peer,
    PeerKind,
    QuicP2p,
    SentUserMessage,
    UnsentUserMessage,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.proto.wire import frame

from netutil import (
    WAIT,
    PeerProcess,
    connection_to,
    datagram_barrier,
    drain,
    endpoints,
    next_event,
    node_config,
    send_on,
    wait_for_event,
)

# Nothing may escape into the event loop; aioquic's safety net must not fire.
pytestmark = pytest.mark.usefixtures("no_loop_errors")


async def connect(a: QuicP2p, b: QuicP2p) -> Peer:
    peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
    await wait_for_event(b, ConnectedTo)
    return peer


# ------------------------------------------------------------------ seed tests
async def test_echo_service() -> None:
    async with endpoints(node_config()) as (n0,):
        # No contacts: the bound address, as the seed did.
        assert await n0.our_connection_info() == n0.node_info
        async with endpoints(
            node_config(ip="0.0.0.0", hard_coded_contacts=(n0.node_info,)),
            node_config(),
            outcome_events=True,  # the seed's way: outcomes on events() too
        ) as (n1, n2):
            info = await n1.our_connection_info()
            assert info.peer_addr == ("127.0.0.1", n1.local_addr[1])
            assert info.peer_addr[1] != n0.local_addr[1]
            assert info.peer_cert_der == n1.our_certificate
            # qp2p2 sends to qp2p1 (as the network sees it).
            outcome = await asyncio.wait_for(n2.send(info, b"\x0c\x0d\x0e\xfd", 19923), WAIT)
            assert outcome == SentUserMessage(
                info.peer_addr, b"\x0c\x0d\x0e\xfd", 19923, info.peer_id
            )
            ev = await next_event(n1)
            assert ev == ConnectedTo(Peer.node(n2.node_info))
            ev = await next_event(n1)
            assert ev == NewMessage(n2.local_addr, b"\x0c\x0d\x0e\xfd", n2.peer_id)
            ev2 = [await next_event(n2), await next_event(n2)]
            assert ev2 == [ConnectedTo(Peer.node(info)), outcome]


async def test_echo_without_anyone_to_ask_on_unspecified_address() -> None:
    async with endpoints(node_config(ip="0.0.0.0")) as (n,):
        with pytest.raises(EchoError, match="no node to ask"):
            await n.our_connection_info()


async def test_echo_through_a_contact_that_fails_says_why() -> None:
    # The contact presents another certificate than the one we pinned: the
    # echo request never goes out, and the error names the certificate, not
    # a generic "connection closed".
    async with endpoints(node_config(), node_config(), node_config()) as (n0, other, _):
        wrong_pin = NodeInfo(n0.local_addr, other.our_certificate)
        async with endpoints(node_config(hard_coded_contacts=[wrong_pin])) as (n,):
            with pytest.raises(EchoError) as caught:
                await asyncio.wait_for(n.our_connection_info(), WAIT)
    message = str(caught.value)
    assert "certificate" in message
    assert "connection closed" not in message


async def test_multistreaming_and_no_head_of_line_blocking() -> None:
    big = b"\xff" * (50 * 1024 * 1024)
    async with endpoints(node_config(), node_config()) as (n0, n1):
        peer0 = await connect(n1, n0)
        drain(n1)
        big_send = asyncio.ensure_future(n1.send(peer0, big, 3_435_235))
        await asyncio.sleep(0)  # the big message is queued first
        small1 = asyncio.ensure_future(n1.send(peer0, b"1234", 3_435_235))
        await asyncio.sleep(0.1)
        small2 = asyncio.ensure_future(n1.send(peer0, b"5678", 3_435_235))
        received = []
        for _ in range(3):
            ev = await next_event(n0, timeout=60)
            assert isinstance(ev, NewMessage)
            received.append(len(ev.msg))
        assert received == [4, 4, len(big)], "small messages must overtake the large one"
        outcomes = await asyncio.wait_for(asyncio.gather(big_send, small1, small2), 60)
        assert all(isinstance(o, SentUserMessage) for o in outcomes)


async def test_double_handshake_node_is_rejected_without_a_second_peer() -> None:
    async with endpoints(node_config(), node_config()) as (victim, bad):
        await connect(bad, victim)
        drain(bad)
        # The malicious Node repeats a handshake on its connection.
        conn = connection_to(bad, victim.local_addr, outgoing=True)
        send_on(bad, conn.id, frame(FrameKind.HANDSHAKE_CLIENT))
        ev, before = await wait_for_event(victim, ConnectionFailure)
        assert ev.peer_addr == bad.local_addr
        assert "second handshake" in ev.error
        assert not [e for e in before if isinstance(e, ConnectedTo)], "no second peer"


async def test_double_handshake_client_is_rejected() -> None:
    async with endpoints(node_config(), node_config(our_type=OurType.CLIENT)) as (victim, cl):
        await connect(cl, victim)
        conn = connection_to(cl, victim.local_addr, outgoing=True)
        send_on(cl, conn.id, frame(FrameKind.HANDSHAKE_NODE, cl.our_certificate))
        ev, before = await wait_for_event(victim, ConnectionFailure)
        assert "second handshake" in ev.error
        assert not [e for e in before if isinstance(e, ConnectedTo)]


async def test_connect_to_fails_when_nobody_listens() -> None:
    async with endpoints(node_config(idle_timeout_msec=300)) as (n,):
        with pytest.raises(ConnectionFailedError):
            await asyncio.wait_for(n.connect_to(NodeInfo(("127.0.0.1", 1))), WAIT)
        ev = await next_event(n)
        assert isinstance(ev, ConnectionFailure) and ev.peer_addr == ("127.0.0.1", 1)


def test_a_contact_with_an_invalid_certificate_is_refused_where_it_is_made() -> None:
    with pytest.raises(InvalidContactError, match="certificate"):
        NodeInfo(("127.0.0.1", 1), b"\x01\x02\x03")
    with pytest.raises(InvalidContactError, match="certificate"):
        NodeInfo.from_dict({"addresses": ["127.0.0.1:1"], "peer_cert_der": "AQID"})


async def test_incoming_connections_yield_connected_to_with_the_dialers_certificate() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        ev = await next_event(b)
        assert isinstance(ev, ConnectedTo)
        assert ev.peer.kind is PeerKind.NODE
        assert ev.peer.peer_cert_der == a.our_certificate
        assert ev.peer.peer_addr == a.local_addr


async def test_is_hard_coded_contact() -> None:
    async with endpoints(node_config()) as (contact,):
        cfg = node_config(hard_coded_contacts=(contact.node_info,))
        async with endpoints(cfg) as (n,):
            assert n.is_hard_coded_contact(contact.node_info)
            assert not n.is_hard_coded_contact(NodeInfo(("127.0.0.1", 9)))
            # The same Node at another address (by id) is the contact.
            assert n.is_hard_coded_contact(contact.node_info.at(("127.0.0.1", 9)))
            assert not n.is_hard_coded_contact(n.node_info)


# ------------------------------------------------------------------ roles
async def test_client_uses_one_connection_and_is_never_treated_as_a_node() -> None:
    async with endpoints(node_config(), node_config(our_type=OurType.CLIENT)) as (n, c):
        peer = await asyncio.wait_for(c.connect_to(n.node_info), WAIT)
        assert peer == Peer.node(n.node_info)
        ev = await next_event(n)
        assert ev == ConnectedTo(Peer.client(c.local_addr, c.peer_id))
        # Both directions over the client's one connection.
        assert (await c.send(peer, b"up", 1)) == SentUserMessage(n.local_addr, b"up", 1, n.peer_id)
        assert (await next_event(n)) == NewMessage(c.local_addr, b"up", c.peer_id)
        client = Peer.client(c.local_addr, c.peer_id)
        assert isinstance(await n.send(client, b"down", 2), SentUserMessage)
        ev, _ = await wait_for_event(c, NewMessage)
        assert ev.msg == b"down"
        assert n.stats()["connections"] == 1 and c.stats()["connections"] == 1


async def test_simultaneous_connects_converge_to_one_pair() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        pa, pb = await asyncio.wait_for(
            asyncio.gather(a.connect_to(b.node_info), b.connect_to(a.node_info)), WAIT
        )
        assert pa == Peer.node(b.node_info) and pb == Peer.node(a.node_info)
        # Converged once a message each way has arrived after the handshakes
        # (and every datagram sent before it has been processed).
        for ep, other in ((a, b), (b, a)):
            assert isinstance(await ep.send(Peer.node(other.node_info), b"m", 1), SentUserMessage)
        for ep in (a, b):
            _, events = await wait_for_event(ep, NewMessage)
            await datagram_barrier(ep)
            events += drain(ep)
            assert len([e for e in events if isinstance(e, ConnectedTo)]) == 1, events
            assert ep.stats()["connections"] == 2  # one connection each way, no more


@pytest.mark.timeout(120)
async def test_twenty_nodes_all_connecting_at_once_converge() -> None:
    n = 20
    async with endpoints(*[node_config() for _ in range(n)]) as eps:
        await asyncio.wait_for(
            asyncio.gather(*(a.connect_to(b.node_info) for a in eps for b in eps if a is not b)),
            90,
        )
        # Converged once each node has a message from every other, sent after
        # all the connects returned (and has processed what came before it).
        await asyncio.wait_for(
            asyncio.gather(
                *(a.send(Peer.node(b.node_info), b"hi", 1) for a in eps for b in eps if a is not b)
            ),
            60,
        )
        for ep in eps:
            events: list[Event] = []
            for _ in range(n - 1):
                _, before = await wait_for_event(ep, NewMessage)
                events += before
            await datagram_barrier(ep)
            connected = [e for e in events + drain(ep) if isinstance(e, ConnectedTo)]
            assert len(connected) == n - 1
            assert len({e.peer.peer_addr for e in connected}) == n - 1
            assert ep.stats()["connections"] == 2 * (n - 1)


# ------------------------------------------------------------------ messages
@pytest.mark.timeout(120)
async def test_100_messages_each_way_between_10_nodes_exactly_once() -> None:
    n, count = 10, 100
    async with endpoints(*[node_config() for _ in range(n)]) as eps:
        await asyncio.wait_for(
            asyncio.gather(
                *(eps[i].connect_to(eps[j].node_info) for i in range(n) for j in range(i + 1, n))
            ),
            60,
        )
        for ep in eps:
            drain(ep)
        sends = [
            a.send(Peer.node(b.node_info), f"{i}:{k}".encode(), k)
            for i, a in enumerate(eps)
            for b in eps
            if a is not b
            for k in range(count)
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*sends), 90)
        assert all(isinstance(o, SentUserMessage) for o in outcomes)
        for j, ep in enumerate(eps):
            got: dict[tuple[str, int], list[bytes]] = {}
            for ev in drain(ep):
                if isinstance(ev, NewMessage):
                    got.setdefault(ev.peer_addr, []).append(ev.msg)
            assert len(got) == n - 1
            for i, a in enumerate(eps):
                if i == j:
                    continue
                msgs = got[a.local_addr]
                assert sorted(msgs) == sorted(f"{i}:{k}".encode() for k in range(count))


async def test_oversized_message_is_refused_and_the_connection_survives() -> None:
    limit = 64 * 1024
    async with endpoints(node_config(max_msg_size_allowed=limit), node_config()) as (rx, tx):
        peer = await connect(tx, rx)
        big = b"b" * (1024 * 1024)
        outcome = await asyncio.wait_for(tx.send(peer, big, 5), WAIT)
        assert isinstance(outcome, UnsentUserMessage)
        assert outcome.msg == big and outcome.token == 5
        assert "too_large" in outcome.reason
        # Exactly at the limit is fine, and the connection is still there.
        assert isinstance(await tx.send(peer, b"x" * limit, 6), SentUserMessage)
        assert isinstance(await tx.send(peer, b"small", 7), SentUserMessage)
        msgs = [e.msg for e in drain(rx) if isinstance(e, NewMessage)]
        assert msgs == [b"x" * limit, b"small"]


async def test_every_send_resolves_once_when_the_peer_dies() -> None:
    async with (
        endpoints(node_config(idle_timeout_msec=1000), outcome_events=True) as (tx,),
        PeerProcess.start() as rx,
    ):
        assert rx.info is not None
        peer = await asyncio.wait_for(tx.connect_to(rx.info), WAIT)
        # The receiver vanishes without a word (SIGKILL: no CONNECTION_CLOSE).
        rx.proc.kill()
        await rx.proc.wait()
        sends = [asyncio.ensure_future(tx.send(peer, bytes(1000), k)) for k in range(20)]
        sends.append(asyncio.ensure_future(tx.send(peer, bytes(200_000), 99)))
        outcomes = await asyncio.wait_for(asyncio.gather(*sends), WAIT)
        assert all(isinstance(o, UnsentUserMessage) for o in outcomes)
        events = [e for e in drain(tx) if isinstance(e, (SentUserMessage, UnsentUserMessage))]
        assert sorted(e.token for e in events) == sorted(o.token for o in outcomes)


async def test_clean_shutdown_leaves_no_tasks_or_sockets() -> None:
    before = {t for t in asyncio.all_tasks() if not t.done()}
    async with endpoints(node_config(), node_config()) as (a, b):
        peer = await connect(a, b)
        pending = asyncio.ensure_future(a.send(peer, bytes(5_000_000), 1))
        await asyncio.sleep(0)
    outcome = await asyncio.wait_for(pending, WAIT)
    assert isinstance(outcome, (SentUserMessage, UnsentUserMessage))
    for ep in (a, b):
        assert ep.engine.connections() == [] and ep.stats()["connections"] == 0
        assert [e for e in drain(ep)][-1] == Finish()
    await asyncio.sleep(0)
    after = {t for t in asyncio.all_tasks() if not t.done()}
    assert after <= before | {asyncio.current_task()}


def test_config_rejects_bad_values() -> None:
    from quic_p2p import ConfigError

    for kw in (
        {"port": 70000},
        {"ip": "not-an-ip"},
        {"max_msg_size_allowed": 10},
        {"idle_timeout_msec": -1},
    ):
        with pytest.raises(ConfigError):
            Config(**kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ hole punching (loopback)
async def test_connect_via_a_rendezvous() -> None:
    """On loopback there is no NAT, but the exchange is the same: the
    rendezvous tells both sides, both dial, one pair of connections results."""
    async with endpoints(node_config(), node_config(), node_config()) as (r, a, b):
        await connect(a, r)
        await connect(b, r)
        drain(a)
        drain(b)
        peer = await asyncio.wait_for(a.connect_to(b.node_info, via=r.node_info), WAIT)
        assert peer == Peer.node(b.node_info)
        ev, _ = await wait_for_event(b, ConnectedTo)
        assert ev.peer == Peer.node(a.node_info)
        assert r.stats().get("punches relayed") == 1
        assert isinstance(await a.send(peer, b"direct", 1), SentUserMessage)
        assert (await wait_for_event(b, NewMessage))[0].msg == b"direct"


@pytest.mark.parametrize("punch", [True, False], ids=["punch", "relay"])
async def test_connect_via_a_rendezvous_that_does_not_know_the_peer(punch: bool) -> None:
    """Asked to punch, or to relay (tests/test_relay.py), a rendezvous that is
    not connected to the target says so; so do we when not connected to it."""
    async with endpoints(node_config(), node_config()) as (r, a):
        await connect(a, r)
        stranger = NodeInfo(("127.0.0.1", 9))
        with pytest.raises(ConnectionFailedError, match="not connected to that peer"):
            await asyncio.wait_for(a.connect_to(stranger, via=r.local_addr, punch=punch), WAIT)
        with pytest.raises(ConnectionFailedError, match="not connected to the rendezvous"):
            await a.connect_to(stranger, via=("127.0.0.1", 1), punch=punch)


# ------------------------------------------------------------------ promises kept
@pytest.mark.parametrize("role", [OurType.NODE, OurType.CLIENT])
async def test_reconnect_right_after_disconnect_works_every_time(role: OurType) -> None:
    """The other side learns of the close at once (not when QUIC's draining
    ends), so a new connection meets no stale record; and ``connect_to``
    returns only once the peer accepted us, so the first send goes through."""
    async with endpoints(node_config(), node_config(our_type=role)) as (n, a):
        for k in range(10):
            peer = await asyncio.wait_for(a.connect_to(n.node_info), WAIT)
            out = await asyncio.wait_for(a.send(peer, b"round %d" % k, k), WAIT)
            assert isinstance(out, SentUserMessage), (k, out)
            await a.disconnect_from(peer.peer_addr)
        got = [e.msg for e in drain(n) if isinstance(e, NewMessage)]
        assert got == [b"round %d" % k for k in range(10)]


@pytest.mark.usefixtures("ipv6_loopback")
async def test_a_dual_stack_node_talks_to_ipv4_and_ipv6_peers() -> None:
    async with endpoints(
        node_config(ip="::"), node_config(ip="127.0.0.1"), node_config(ip="::1")
    ) as (d, v4, v6):
        port = d.local_addr[1]
        for other, host in ((v4, "127.0.0.1"), (v6, "::1")):
            peer = await asyncio.wait_for(other.connect_to(NodeInfo((host, port))), WAIT)
            assert isinstance(await other.send(peer, b"to d", 1), SentUserMessage)
            ev, _ = await wait_for_event(d, NewMessage)
            assert ev.peer_addr == other.local_addr  # IPv4 peers named a.b.c.d
            assert isinstance(await d.send(Peer.node(other.node_info), b"back", 2), SentUserMessage)
        # Single-stack endpoints say why they cannot reach the other family.
        with pytest.raises(ConnectionFailedError, match="bound to IPv4"):
            await v4.connect_to(NodeInfo(v6.local_addr))
        with pytest.raises(ConnectionFailedError, match="IPv6 only"):
            await v6.connect_to(NodeInfo(v4.local_addr))


async def test_a_node_at_its_connection_limit_says_so() -> None:
    async with (
        endpoints(node_config(), max_connections=3) as (full,),
        endpoints(node_config(), node_config()) as (first, second),
    ):
        await asyncio.wait_for(first.connect_to(full.node_info), WAIT)
        with pytest.raises(ConnectionFailedError) as info:
            await asyncio.wait_for(second.connect_to(full.node_info), WAIT)
        assert "connection limit" in info.value.reason
        assert "connect back" not in info.value.reason


async def test_a_node_never_connects_to_itself() -> None:
    async with endpoints(node_config()) as (a,):
        with pytest.raises(ConnectionFailedError, match="that is us"):
            await asyncio.wait_for(a.connect_to(a.node_info), WAIT)
        with pytest.raises(ConnectionFailedError, match="that is us"):
            await asyncio.wait_for(
                a.connect_to(NodeInfo(("127.0.0.2", 1), a.our_certificate)), WAIT
            )
    # Bound to every address: reached through one it did not bind by name.
    async with endpoints(node_config(ip="0.0.0.0")) as (a,):
        with pytest.raises(ConnectionFailedError, match="that is us"):
            await asyncio.wait_for(a.connect_to(NodeInfo(("127.0.0.1", a.local_addr[1]))), WAIT)
        await asyncio.sleep(0.1)
        assert not [e for e in drain(a) if isinstance(e, ConnectedTo)]
        assert a.connected_peers() == []
        assert a.stats().get("refused: a connection to ourselves", 0) >= 1
