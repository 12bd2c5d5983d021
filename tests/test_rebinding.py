"""NAT rebinding on loopback: a peer is its key, not its address.

A Client reaches a Node through tests/forwarder.py, which plays the Client's
NAT; ``fwd.rebind()`` moves the Client's outside address to a new port and
frees the old one, as a NAT that lost its mapping does. The Node must keep the
Client as the same peer (same ``peer_id``, same connection: QUIC migrates the
path), report ``PeerAddressChanged(peer_id, old, new)``, keep messages flowing
both ways, and treat a newcomer on the freed address as a new peer.

Only the Client case: a Node behind the forwarder would advertise its real
loopback address, so the Node it connects to would prove the way back by
dialling that address directly, around the forwarder (two connections, one
of them never rebound); a Node behind a real NAT needs the punching the NAT lab
(tests/test_nat.py) covers. Public API only: never an endpoint's internals.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from forwarder import UdpForwarder

from quic_p2p import (
    Config,
    ConnectedTo,
    ConnectionFailure,
    Event,
    NewMessage,
    NodeInfo,
    OurType,
    PathChanged,
    PathKind,
    Peer,
    PeerAddressChanged,
    PeerId,
    PeerKind,
    PeerPath,
    QuicP2p,
    SentUserMessage,
)

from netutil import WAIT, drain, endpoints, until, wait_for_event

pytestmark = pytest.mark.usefixtures("no_loop_errors")

#: How long a wait across a rebinding may take before it counts as a hang (a
#: guard, not a measurement: the recovery times are printed and recorded as
#: properties, never asserted).
RECOVERY_BOUND = 10.0


def peer_id_of(ep: QuicP2p) -> PeerId:
    """The id ``ep`` proves: the key in its certificate (``ep.peer_id`` where
    the endpoint has it, which must agree)."""
    from_cert = PeerId.from_certificate(ep.our_certificate)
    own = getattr(ep, "peer_id", None)
    assert own is None or own == from_cert, (own, from_cert)
    return from_cert


def lo(port: int) -> tuple[str, int]:
    return ("127.0.0.1", port)


# ------------------------------------------------------------------ the forwarder
class Server(asyncio.DatagramProtocol):
    """Plain UDP: records each datagram's source, echoes it back prefixed."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, tuple[str, int]]] = []
        self.got = asyncio.Event()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen.append((data, (addr[0], addr[1])))
        self.got.set()
        self.transport.sendto(b"echo " + data, addr)

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)


@asynccontextmanager
async def udp_server() -> AsyncIterator[Server]:
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(Server, local_addr=lo(0))
    try:
        yield server
    finally:
        server.transport.close()


def plain_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(lo(0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT):
        data, addr = await loop.sock_recvfrom(sock, 65536)
    return data, (addr[0], addr[1])


async def nothing_arrives(sock: socket.socket, seconds: float = 0.2) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await asyncio.get_running_loop().sock_recvfrom(sock, 65536)


async def test_forwarder_plays_a_nat_that_rebinds() -> None:
    async with udp_server() as server, UdpForwarder(server.addr) as fwd:
        with plain_socket() as client, plain_socket() as stranger:
            first = fwd.outside_addr
            assert fwd.old_port is None and fwd.listen_addr != first
            client.sendto(b"one", fwd.listen_addr)
            # The server sees the outside socket, and its reply comes back
            # from the address the client sent to.
            assert await recv(client) == (b"echo one", fwd.listen_addr)
            assert server.seen == [(b"one", first)]
            assert fwd.client_addr == client.getsockname()

            new = await fwd.rebind()
            assert new == fwd.outside_addr and new[1] != first[1]
            assert fwd.old_port == first[1]
            # The old port is closed and free: anyone may bind it now.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taker:
                taker.bind(lo(fwd.old_port))
            client.sendto(b"two", fwd.listen_addr)
            assert await recv(client) == (b"echo two", fwd.listen_addr)
            assert server.seen[-1] == (b"two", new)

            # Only the server may answer on the outside socket; only the
            # first sender is the client.
            stranger.sendto(b"let me in", fwd.outside_addr)
            stranger.sendto(b"me too", fwd.listen_addr)
            await until(lambda: fwd.counts["not the server"] + fwd.counts["not the client"] == 2)
            assert len(server.seen) == 2

            # A black hole both ways while ``drop`` is set, then as before.
            fwd.drop = True
            client.sendto(b"lost", fwd.listen_addr)
            await nothing_arrives(client)
            assert fwd.counts["blackholed"] == 1 and len(server.seen) == 2
            fwd.drop = False
            client.sendto(b"three", fwd.listen_addr)
            assert await recv(client) == (b"echo three", fwd.listen_addr)
            assert fwd.counts["to server"] == 3 and fwd.counts["to client"] == 3
            assert fwd.counts["rebinds"] == 1
    # Closed: both ports are free again.
    for addr in (fwd.listen_addr, new):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(addr)


async def test_forwarder_holds_at_most_its_queue_and_drops_the_rest() -> None:
    async with udp_server() as server, UdpForwarder(server.addr, queue_datagrams=4) as fwd:
        with plain_socket() as client:
            client.sendto(b"hello", fwd.listen_addr)
            await recv(client)
            fwd.pause()
            for i in range(20):
                client.sendto(b"burst %d" % i, fwd.listen_addr)
            # One datagram may wait in the pump's hand besides the full queue.
            await until(lambda: fwd.counts["queue full"] >= 20 - 4 - 1)
            assert fwd.queued() <= 4
            held = 20 - fwd.counts["queue full"]
            fwd.resume()
            await until(lambda: len(server.seen) == 1 + held)
            assert [d for d, _ in server.seen[1:]] == [b"burst %d" % i for i in range(held)]


# ------------------------------------------------------------------ endpoints
@dataclass
class Pair:
    node: QuicP2p
    client: QuicP2p
    fwd: UdpForwarder
    #: The Node as the Client reaches it: the forwarder's address, the Node's id.
    to_node: Peer
    #: The Client as the Node first saw it (at the forwarder's first outside address).
    to_client: Peer
    node_id: PeerId
    client_id: PeerId


@asynccontextmanager
async def client_behind_forwarder(tmp_path: Path, **client_config: Any) -> AsyncIterator[Pair]:
    """A Node, and a Client connected to it through a forwarder (its NAT). The
    Client pins the Node's id: it dials the forwarder's address."""
    node_cfg = Config(ip="127.0.0.1", bootstrap_cache_dir=tmp_path / "node")
    client_cfg = Config(
        ip="127.0.0.1",
        our_type=OurType.CLIENT,
        bootstrap_cache_dir=tmp_path / "client",
        **client_config,
    )
    async with (
        endpoints(node_cfg) as (node,),
        UdpForwarder(node.local_addr) as fwd,
        endpoints(client_cfg) as (client,),
    ):
        node_id, client_id = peer_id_of(node), peer_id_of(client)
        contact = NodeInfo(fwd.listen_addr, peer_id=node_id)
        async with asyncio.timeout(WAIT):
            to_node = await client.connect_to(contact)
        assert to_node.peer_id == node_id and to_node.peer_addr == fwd.listen_addr
        ev, _ = await wait_for_event(node, ConnectedTo)
        assert ev.peer.kind is PeerKind.CLIENT
        assert ev.peer.peer_addr == fwd.outside_addr, "the Node sees the NAT's address"
        assert ev.peer_id == client_id
        yield Pair(node, client, fwd, to_node, ev.peer, node_id, client_id)


async def send_ok(ep: QuicP2p, to: Peer, msg: bytes) -> SentUserMessage:
    async with asyncio.timeout(WAIT):
        out = await ep.send(to, msg)
    assert isinstance(out, SentUserMessage), out
    return out


async def received(ep: QuicP2p, msg: bytes) -> tuple[NewMessage, list[Event]]:
    """The NewMessage carrying ``msg`` on ``ep``, and the events before it."""
    return await wait_for_event(ep, NewMessage, lambda e: e.msg == msg)


async def both_ways(p: Pair, tag: str, to_client: Peer) -> tuple[list[Event], list[Event]]:
    """One message each way, acknowledged and received; the other events seen
    on the Node and on the Client before them."""
    await send_ok(p.client, p.to_node, f"up {tag}".encode())
    up, node_seen = await received(p.node, f"up {tag}".encode())
    assert up.peer_id == p.client_id
    await send_ok(p.node, to_client, f"down {tag}".encode())
    down, client_seen = await received(p.client, f"down {tag}".encode())
    assert down.peer_id == p.node_id and down.peer_addr == p.fwd.listen_addr
    return node_seen, client_seen


async def events_until(ep: QuicP2p, *wanted: Callable[[Event], bool]) -> list[Event]:
    """Events on ``ep`` until each of ``wanted`` has matched one, in any order."""
    events: list[Event] = []
    async with asyncio.timeout(WAIT):
        while not all(any(w(e) for e in events) for w in wanted):
            events.append(await ep.next_event())
    return events


def failures(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, ConnectionFailure)]


async def test_a_rebound_client_stays_the_same_peer_and_its_old_address_is_a_new_peers(
    tmp_path: Path, record_property: Any
) -> None:
    async with client_behind_forwarder(tmp_path) as p:
        node, client, fwd = p.node, p.client, p.fwd
        await both_ways(p, "before", p.to_client)
        old = fwd.outside_addr

        started = time.monotonic()
        new = await fwd.rebind()
        # The Client keeps sending; the first message after the rebinding
        # is acknowledged once the Node follows it to its new address.
        await send_ok(client, p.to_node, b"up after")
        recovery = time.monotonic() - started
        print(f"\nrebinding recovery (rebind -> first message acknowledged): {recovery:.3f} s")
        record_property("rebind_recovery_s", f"{recovery:.3f}")

        seen = await events_until(
            node,
            lambda e: isinstance(e, PathChanged),  # (right after PeerAddressChanged)
            lambda e: isinstance(e, NewMessage) and e.msg == b"up after",
        )
        assert not failures(seen), seen
        moved = [e for e in seen if isinstance(e, PeerAddressChanged)]
        assert moved == [PeerAddressChanged(peer_id=p.client_id, old=old, new=new)], seen
        paths = [e for e in seen if isinstance(e, PathChanged)]
        assert paths == [
            PathChanged(p.client_id, PeerPath(PathKind.DIRECT, old), PeerPath(PathKind.DIRECT, new))
        ], seen
        (up,) = [e for e in seen if isinstance(e, NewMessage) and e.msg == b"up after"]
        assert up.peer_id == p.client_id and up.peer_addr == new, seen
        # The Node knows the Client once: same id, at its new address.
        clients = [c for c in node.connected_peers() if c.peer_id == p.client_id]
        assert [c.peer_addr for c in clients] == [new], node.connected_peers()
        assert all(c.peer_addr != old for c in node.connected_peers())
        now_client = clients[0]
        assert now_client.kind is PeerKind.CLIENT

        # Messages flow both ways: to the Client's Peer as it is now, and to
        # the one from before the change (it carries the peer_id).
        node_seen, client_seen = await both_ways(p, "at new address", now_client)
        node_seen2, client_seen2 = await both_ways(p, "to the old Peer value", p.to_client)
        for seen in (node_seen, client_seen, node_seen2, client_seen2):
            assert not failures(seen), seen
            assert not [e for e in seen if isinstance(e, PeerAddressChanged)], seen

        # A newcomer on the freed address is a new peer, not the Client.
        assert fwd.old_port == old[1]
        newcomer_cfg = Config(
            ip="127.0.0.1",
            port=fwd.old_port,
            our_type=OurType.CLIENT,
            bootstrap_cache_dir=tmp_path / "newcomer",
        )
        async with endpoints(newcomer_cfg) as (newcomer,):
            assert newcomer.local_addr == old
            newcomer_id = peer_id_of(newcomer)
            assert newcomer_id != p.client_id
            async with asyncio.timeout(WAIT):
                to_node = await newcomer.connect_to(NodeInfo(node.local_addr, peer_id=p.node_id))
            out = await send_ok(newcomer, to_node, b"hello from the old address")
            assert out.peer_id == p.node_id
            arrived, seen = await wait_for_event(node, ConnectedTo)
            assert arrived.peer == Peer.client(old, newcomer_id), arrived
            assert not failures(seen), seen
            msg, seen = await received(node, b"hello from the old address")
            assert msg.peer_id == newcomer_id and msg.peer_addr == old
            assert not failures(seen), seen
            by_id = {c.peer_id: c.peer_addr for c in node.connected_peers()}
            assert by_id == {p.client_id: new, newcomer_id: old}, node.connected_peers()

            # The stale Peer value names the Client's old address, now the
            # newcomer's: its peer_id decides, so it still reaches the Client.
            await both_ways(p, "old Peer, old address taken", p.to_client)
            await send_ok(node, Peer.client(old, newcomer_id), b"to the newcomer")
            got, _ = await received(newcomer, b"to the newcomer")
            assert got.peer_id == p.node_id
            assert not [e for e in drain(newcomer) if isinstance(e, NewMessage)], (
                "the newcomer got messages meant for the Client"
            )
        assert not failures(drain(client))


async def test_messages_in_flight_across_a_rebinding_arrive_exactly_once(
    tmp_path: Path,
) -> None:
    n = 50
    async with client_behind_forwarder(tmp_path) as p:
        await both_ways(p, "before", p.to_client)
        old = p.fwd.outside_addr
        ups = [asyncio.ensure_future(p.client.send(p.to_node, b"up %d" % i)) for i in range(n)]
        downs = [asyncio.ensure_future(p.node.send(p.to_client, b"down %d" % i)) for i in range(n)]
        await asyncio.sleep(0)  # the sends are under way
        new = await p.fwd.rebind()
        async with asyncio.timeout(RECOVERY_BOUND + WAIT):
            outcomes = await asyncio.gather(*ups, *downs)
        assert all(isinstance(o, SentUserMessage) for o in outcomes), [
            o for o in outcomes if not isinstance(o, SentUserMessage)
        ][:3]
        node_events = await collect_messages(p.node, n)
        client_events = await collect_messages(p.client, n)
        got_up = sorted(e.msg for e in node_events if isinstance(e, NewMessage))
        got_down = sorted(e.msg for e in client_events if isinstance(e, NewMessage))
        assert got_up == sorted(b"up %d" % i for i in range(n))
        assert got_down == sorted(b"down %d" % i for i in range(n))
        moved = [e for e in node_events if isinstance(e, PeerAddressChanged)]
        assert moved == [PeerAddressChanged(p.client_id, old, new)], node_events
        assert not failures(node_events) and not failures(client_events)


async def collect_messages(ep: QuicP2p, n: int) -> list[Event]:
    """Events on ``ep`` until it has ``n`` NewMessage (then whatever is queued)."""
    events: list[Event] = []
    async with asyncio.timeout(WAIT):
        while sum(isinstance(e, NewMessage) for e in events) < n:
            events.append(await ep.next_event())
    return events + drain(ep)


async def test_a_node_send_after_a_silent_rebinding_arrives_once_the_client_speaks(
    tmp_path: Path, record_property: Any
) -> None:
    """The Node sends first: its packets go to the old, closed, port until
    the Client's next packet (a keep-alive here) shows the new address."""
    async with client_behind_forwarder(tmp_path, keep_alive_interval_msec=1000) as p:
        await both_ways(p, "before", p.to_client)
        old = p.fwd.outside_addr
        started = time.monotonic()
        new = await p.fwd.rebind()
        await send_ok(p.node, p.to_client, b"down after")
        took = time.monotonic() - started
        print(f"\nsilent rebinding, Node sends first: acknowledged after {took:.3f} s")
        record_property("silent_rebind_recovery_s", f"{took:.3f}")
        got, _ = await received(p.client, b"down after")
        assert got.peer_id == p.node_id
        moved, _ = await wait_for_event(p.node, PeerAddressChanged)
        assert moved == PeerAddressChanged(p.client_id, old, new)


async def test_a_rebinding_during_an_outage_recovers_when_the_path_returns(
    tmp_path: Path, record_property: Any
) -> None:
    """The NAT drops everything for a second and comes back on a new port."""
    outage = 1.0
    async with client_behind_forwarder(tmp_path) as p:
        await both_ways(p, "before", p.to_client)
        old = p.fwd.outside_addr
        p.fwd.drop = True
        sending = asyncio.ensure_future(send_ok(p.client, p.to_node, b"up through the outage"))
        await asyncio.sleep(outage)
        new = await p.fwd.rebind()
        back = time.monotonic()
        p.fwd.drop = False
        async with asyncio.timeout(RECOVERY_BOUND):
            await sending
        took = time.monotonic() - back
        print(f"\n{outage:.1f} s outage + rebinding: acknowledged {took:.3f} s after it ended")
        record_property("outage_rebind_recovery_s", f"{took:.3f}")
        assert p.fwd.counts["blackholed"] > 0
        moved, _ = await wait_for_event(p.node, PeerAddressChanged)
        assert moved == PeerAddressChanged(p.client_id, old, new)
        await both_ways(p, "after", p.to_client)
