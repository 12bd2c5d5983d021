"""Peers named by their keys, end to end on loopback: a Node keeps its id
across restarts (and new ports), contacts and the bootstrap cache follow the
id, ``connect_to``/``send``/``disconnect_from`` take a ``PeerId``, a key pin
survives a renewed certificate where a certificate pin does not, and every
event names the peer by the id it proved."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from quic_p2p import (
    Config,
    ConnectedTo,
    ConnectionFailedError,
    ConnectionFailure,
    Identity,
    NewMessage,
    NodeInfo,
    OurType,
    PeerId,
    QuicP2p,
    SentUserMessage,
    TrustMode,
    UnsentUserMessage,
)
from quic_p2p.certfiles import create_ca, generate_self_signed, issue_certificate
from quic_p2p.peer import Address
from quic_p2p.reasons import Cause

from netutil import WAIT, datagram_barrier, drain, endpoints, node_config, wait_for_event

pytestmark = pytest.mark.usefixtures("no_loop_errors")


def cfg(cache: Path, **kw: Any) -> Config:
    """A Node on loopback whose cache (and so identity store) is ``cache``."""
    return node_config(bootstrap_cache_dir=cache, **kw)


def cached(ep: QuicP2p) -> list[tuple[PeerId | None, tuple[Address, ...]]]:
    """The bootstrap cache as (id, addresses) pairs, most recent first."""
    return [(n.peer_id, n.addresses) for n in ep.bootstrap_cache()]


def unused_udp_address() -> Address:
    """An address on 127.0.0.1 nobody listens on (bound once, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()[:2]
    return (host, port)


def some_other_id() -> PeerId:
    return PeerId.from_certificate(generate_self_signed().cert_der)


async def connect(a: QuicP2p, target: NodeInfo | PeerId) -> Any:
    return await asyncio.wait_for(a.connect_to(target), WAIT)


# ------------------------------------------------------------ 1. a restart on a new port
async def test_a_node_restarted_on_a_new_port_keeps_its_id_and_one_cache_entry(
    tmp_path: Path,
) -> None:
    n_cache = tmp_path / "n"
    async with endpoints(cfg(tmp_path / "x")) as (x,):
        async with endpoints(cfg(n_cache)) as (n,):
            pid, old_addr = n.peer_id, n.local_addr
            peer = await connect(x, n.node_info)
            assert peer.peer_id == pid
            assert cached(x) == [(pid, (old_addr,))]
        # x hears that n went away, under n's id.
        lost, _ = await wait_for_event(x, ConnectionFailure)
        assert lost.peer_id == pid
        new_port = unused_udp_address()[1]
        assert new_port != old_addr[1]
        async with endpoints(cfg(n_cache, port=new_port)) as (n2,):
            assert n2.peer_id == pid, "same identity store: same key, same id"
            assert n2.local_addr == ("127.0.0.1", new_port)
            # x only knows the old address: resolving the id gives it that one.
            assert x.engine.resolve(pid) == NodeInfo(old_addr, peer_id=pid)
            peer = await connect(x, n2.node_info)
            assert peer.peer_id == pid and peer.peer_addr == n2.local_addr
            # One entry for the id, its address replaced by the new one.
            assert cached(x) == [(pid, (n2.local_addr,))]
            # And connect_to(id) now finds it (already connected: that peer).
            again = await connect(x, pid)
            assert again.peer_id == pid and again.peer_addr == n2.local_addr
    # What x saved says the same.
    async with endpoints(cfg(tmp_path / "x")) as (x_again,):
        assert cached(x_again) == [(pid, (("127.0.0.1", new_port),))]


@asynccontextmanager
async def restarted_and_dialled_first(x: QuicP2p, key: bytes) -> AsyncIterator[QuicP2p]:
    """``x`` connects to a Node holding ``key``; the Node "restarts" (another
    endpoint with that key on a new port, the old one never heard from again,
    as after a crash) and dials ``x`` first, replacing its old connection.
    Yields the new endpoint once ``x`` is connected to it."""
    async with endpoints(node_config(identity=Identity.key(key))) as (old,):
        pid, old_addr = old.peer_id, old.local_addr
        await connect(x, old.node_info)
        assert cached(x) == [(pid, (old_addr,))]
        async with endpoints(node_config(identity=Identity.key(key))) as (new,):
            assert new.peer_id == pid and new.local_addr != old_addr
            await connect(new, x.node_info)
            replaced, _ = await wait_for_event(x, ConnectionFailure)
            assert replaced.peer_id == pid and replaced.peer_addr == old_addr
            assert replaced.error.cause is Cause.REPLACED, replaced.error
            ev, _ = await wait_for_event(x, ConnectedTo)
            assert ev.peer_id == pid and ev.peer.peer_addr == new.local_addr
            yield new


async def test_a_restarted_node_that_dials_first_replaces_its_old_connection(
    tmp_path: Path,
) -> None:
    key = generate_self_signed().key_der
    async with (
        endpoints(cfg(tmp_path / "x")) as (x,),
        restarted_and_dialled_first(x, key) as new,
    ):
        assert [p.peer_addr for p in x.connected_peers()] == [new.local_addr]
        # By id, x's messages go to the new endpoint.
        out = await asyncio.wait_for(x.send(new.peer_id, b"still you?", 1), WAIT)
        assert isinstance(out, SentUserMessage) and out.peer_addr == new.local_addr
        got, _ = await wait_for_event(new, NewMessage)
        assert (got.msg, got.peer_id) == (b"still you?", x.peer_id)
        peer = await connect(x, new.node_info)
        assert peer.peer_addr == new.local_addr


async def test_a_restarted_node_that_dials_first_is_cached_at_its_new_address(
    tmp_path: Path,
) -> None:
    key = generate_self_signed().key_der
    async with (
        endpoints(cfg(tmp_path / "x")) as (x,),
        restarted_and_dialled_first(x, key) as new,
    ):
        await connect(x, new.node_info)
        assert cached(x) == [(new.peer_id, (new.local_addr,))]


# ------------------------------------------------------------ 2. by id, from the cache alone
async def test_connect_by_id_from_the_cache_alone(tmp_path: Path) -> None:
    x_cache = tmp_path / "x"
    async with endpoints(cfg(tmp_path / "n")) as (n,):
        async with endpoints(cfg(x_cache)) as (x,):
            await connect(x, n.node_info)
            await wait_for_event(n, ConnectedTo)
        await wait_for_event(n, ConnectionFailure)
        async with endpoints(cfg(x_cache)) as (x2,):
            assert x2.config.hard_coded_contacts == ()
            assert not x2.connected_peers()
            peer = await connect(x2, n.peer_id)
            assert peer.peer_id == n.peer_id and peer.peer_addr == n.local_addr
            ev, _ = await wait_for_event(n, ConnectedTo)
            assert ev.peer_id == x2.peer_id


async def test_an_unknown_id_cannot_be_connected_to_or_sent_to(tmp_path: Path) -> None:
    stranger = some_other_id()
    async with endpoints(cfg(tmp_path / "x")) as (x,):
        with pytest.raises(ConnectionFailedError) as info:
            await connect(x, stranger)
        # No address to try: it fails without dialling anything.
        assert x.engine.connections() == [] and x.stats()["connections"] == 0
        assert "no address known" in info.value.reason
        assert info.value.reason.cause is Cause.NOT_CONNECTED
        outcome = await asyncio.wait_for(x.send(stranger, b"anyone?", 7), WAIT)
        assert isinstance(outcome, UnsentUserMessage), outcome
        assert outcome.reason.cause is Cause.NOT_CONNECTED, outcome.reason
        assert outcome.msg == b"anyone?" and outcome.token == 7
        assert outcome.peer_id == stranger


# ------------------------------------------------------------ 3. PRIVATE_CA, a self-signed Client
CA = create_ca("identity tests CA")
#: The Node's stats counter of incoming connections refused for their certificate.
REFUSED = "refused: peer certificate"


async def test_private_ca_node_refuses_a_client_with_a_self_signed_certificate() -> None:
    node_cfg = node_config(
        trust_mode=TrustMode.PRIVATE_CA,
        ca_certs_der=(CA.cert_der,),
        our_complete_cert=issue_certificate(CA, "node"),
    )
    client_cfg = node_config(
        our_type=OurType.CLIENT,
        trust_mode=TrustMode.PRIVATE_CA,
        ca_certs_der=(CA.cert_der,),  # the client trusts the Node...
        our_complete_cert=generate_self_signed(),  # ...but is not of the network
    )
    async with endpoints(node_cfg, client_cfg) as (node, client):
        try:
            peer = await connect(client, NodeInfo(node.local_addr))
        except ConnectionFailedError as exc:
            reason = exc.reason
        else:
            # TLS 1.3: a Client's handshake completes before the server has
            # checked its certificate; the refusal follows, nothing is delivered.
            outcome = await asyncio.wait_for(client.send(peer, b"let me in", 1), WAIT)
            assert isinstance(outcome, UnsentUserMessage), outcome
            ev, _ = await wait_for_event(client, ConnectionFailure)
            assert ev.peer_id == node.peer_id
            reason = ev.error
        assert "certificate" in reason.lower(), reason
        assert reason.cause is Cause.CERTIFICATE, (reason.cause, reason)
        await datagram_barrier(node)
        seen = drain(node)
        assert not [e for e in seen if isinstance(e, (ConnectedTo, NewMessage))], seen
        assert node.stats().get(REFUSED, 0) >= 1, node.stats()


# ------------------------------------------------------------ 4. key pin vs certificate pin
async def test_a_key_pin_survives_a_renewed_certificate_a_certificate_pin_does_not(
    tmp_path: Path,
) -> None:
    n_cache = tmp_path / "n"
    async with endpoints(cfg(n_cache)) as (n,):
        cert1, pid, port = n.our_certificate, n.peer_id, n.local_addr[1]
    async with endpoints(cfg(n_cache, port=port)) as (n,):
        assert n.our_certificate != cert1, "a new certificate at each start"
        assert n.peer_id == pid, "for the same key"
        assert PeerId.from_certificate(cert1) == pid
        # A fresh dialer (and key) each time: no connection is reused.
        async with endpoints(cfg(tmp_path / "d1")) as (d,):
            peer = await connect(d, NodeInfo(n.local_addr, peer_id=pid))
            assert peer.peer_id == pid
            assert peer.peer_cert_der == n.our_certificate
        async with endpoints(cfg(tmp_path / "d2")) as (d,):
            with pytest.raises(ConnectionFailedError) as info:
                await connect(d, NodeInfo(n.local_addr, cert1))
            assert info.value.reason.cause is Cause.CERTIFICATE, info.value.reason
            assert not d.connected_peers()
        async with endpoints(cfg(tmp_path / "d3")) as (d,):
            with pytest.raises(ConnectionFailedError) as info:
                await connect(d, NodeInfo(n.local_addr, peer_id=some_other_id()))
            assert "another key" in info.value.reason, info.value.reason
            assert not d.connected_peers()
        await datagram_barrier(n)
        connected = [e.peer_id for e in drain(n) if isinstance(e, ConnectedTo)]
        assert len(connected) == 1, connected  # only the first dialer got in


# ------------------------------------------------------------ 5. slots of one store
async def test_two_endpoints_on_one_cache_dir_get_two_ids_and_slot_0_comes_back(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    async with endpoints(cfg(shared), cfg(shared)) as (a, b):
        first, second = a.peer_id, b.peer_id
        assert first != second
        # Both work side by side, each under its own id.
        peer = await connect(a, b.node_info)
        assert peer.peer_id == second
        ev, _ = await wait_for_event(b, ConnectedTo)
        assert ev.peer_id == first
    keys = sorted(p.name for p in (shared / "identity").iterdir())
    assert keys == ["node-0.key", "node-1.key"]
    async with endpoints(cfg(shared)) as (again,):
        assert again.peer_id == first
    async with endpoints(cfg(shared), cfg(shared)) as (c, d):
        assert (c.peer_id, d.peer_id) == (first, second)


# ------------------------------------------------------------ 6. several addresses
#: A dead address fails after the QUIC handshake timeout (10 s), or sooner
#: with an idle timeout shorter than that.
@pytest.mark.parametrize(
    "idle_msec",
    [1000, pytest.param(Config().idle_timeout_msec, marks=pytest.mark.slow, id="default")],
)
async def test_a_contact_s_addresses_are_tried_in_order(tmp_path: Path, idle_msec: int) -> None:
    dead = unused_udp_address()
    async with endpoints(cfg(tmp_path / "n"), cfg(tmp_path / "x", idle_timeout_msec=idle_msec)) as (
        n,
        x,
    ):
        contact = NodeInfo(dead, peer_id=n.peer_id, other_addrs=(n.local_addr,))
        assert contact.addresses == (dead, n.local_addr)
        peer = await asyncio.wait_for(x.connect_to(contact), 2 * WAIT)
        assert peer.peer_id == n.peer_id and peer.peer_addr == n.local_addr
        # The dead address was tried first, and failed, under the pinned id.
        failed = [e for e in drain(x) if isinstance(e, ConnectionFailure)]
        assert [(e.peer_addr, e.peer_id) for e in failed] == [(dead, n.peer_id)], failed
        assert failed[0].error.cause in (Cause.IDLE_TIMEOUT, Cause.HANDSHAKE_TIMEOUT)
        # Only the address that answered is cached.
        assert cached(x) == [(n.peer_id, (n.local_addr,))]


async def test_a_contact_whose_every_address_fails_says_so_for_each(tmp_path: Path) -> None:
    dead = [unused_udp_address(), unused_udp_address()]
    async with endpoints(cfg(tmp_path / "x", idle_timeout_msec=500)) as (x,):
        contact = NodeInfo(dead[0], peer_id=some_other_id(), other_addrs=(dead[1],))
        with pytest.raises(ConnectionFailedError) as info:
            await asyncio.wait_for(x.connect_to(contact), 2 * WAIT)
        reason = info.value.reason
        assert "every address failed" in reason, reason
        assert all(f"127.0.0.1:{port}" in reason for _, port in dead), reason
        failed = [e.peer_addr for e in drain(x) if isinstance(e, ConnectionFailure)]
        assert failed == dead
        assert cached(x) == []


# ------------------------------------------------------------ 7. send and disconnect by id
async def test_send_and_disconnect_by_id(tmp_path: Path) -> None:
    async with endpoints(cfg(tmp_path / "a"), cfg(tmp_path / "b")) as (a, b):
        await connect(a, b.node_info)
        await wait_for_event(b, ConnectedTo)
        out = await asyncio.wait_for(a.send(b.peer_id, b"by id", 3), WAIT)
        assert isinstance(out, SentUserMessage), out
        assert out.peer_id == b.peer_id and out.peer_addr == b.local_addr
        got, _ = await wait_for_event(b, NewMessage)
        assert (got.msg, got.peer_id, got.peer_addr) == (b"by id", a.peer_id, a.local_addr)
        # And back, by id, to the peer that dialled us.
        back = await asyncio.wait_for(b.send(a.peer_id, b"reply", 4), WAIT)
        assert isinstance(back, SentUserMessage) and back.peer_id == a.peer_id
        got, _ = await wait_for_event(a, NewMessage)
        assert (got.msg, got.peer_id) == (b"reply", b.peer_id)

        await a.disconnect_from(b.peer_id)
        ours, _ = await wait_for_event(a, ConnectionFailure)
        assert ours.peer_id == b.peer_id and ours.peer_addr == b.local_addr
        assert ours.error.cause is Cause.DISCONNECTED, ours.error
        theirs, _ = await wait_for_event(b, ConnectionFailure)
        assert theirs.peer_id == a.peer_id and theirs.peer_addr == a.local_addr
        assert theirs.error.cause is Cause.DISCONNECTED, theirs.error
        assert not a.connected_peers()
        await datagram_barrier(b)
        assert not b.connected_peers()
        # One ConnectionFailure each: the peer is gone, not each connection.
        await datagram_barrier(a)
        assert not [e for e in drain(a) + drain(b) if isinstance(e, ConnectionFailure)]


# ------------------------------------------------------------ 8. events name peers by id
@pytest.mark.parametrize("role", [OurType.NODE, OurType.CLIENT])
async def test_events_name_peers_by_their_ids(tmp_path: Path, role: OurType) -> None:
    async with endpoints(
        cfg(tmp_path / "n"), cfg(tmp_path / "d", our_type=role), outcome_events=True
    ) as (n, d):
        assert n.peer_id != d.peer_id
        await connect(d, n.node_info)
        at_d, _ = await wait_for_event(d, ConnectedTo)
        at_n, _ = await wait_for_event(n, ConnectedTo)
        assert at_d.peer_id == n.peer_id
        assert at_n.peer_id == d.peer_id
        assert at_n.peer.is_node is (role is OurType.NODE)

        out = await asyncio.wait_for(d.send(at_d.peer, b"up", 1), WAIT)
        assert isinstance(out, SentUserMessage) and out.peer_id == n.peer_id
        ev_out, _ = await wait_for_event(d, SentUserMessage)
        assert ev_out == out
        got, _ = await wait_for_event(n, NewMessage)
        assert got.peer_id == d.peer_id

        out = await asyncio.wait_for(n.send(at_n.peer, b"down", 2), WAIT)
        assert isinstance(out, SentUserMessage) and out.peer_id == d.peer_id
        ev_out, _ = await wait_for_event(n, SentUserMessage)
        assert ev_out == out
        got, _ = await wait_for_event(d, NewMessage)
        assert got.peer_id == n.peer_id

        await d.aclose()
        lost, _ = await wait_for_event(n, ConnectionFailure)
        assert lost.peer_id == d.peer_id


async def test_a_client_is_ephemeral_by_default_a_node_is_not(tmp_path: Path) -> None:
    client = node_config(our_type=OurType.CLIENT, bootstrap_cache_dir=tmp_path)
    async with endpoints(client) as (c1,):
        first = c1.peer_id
    async with endpoints(client) as (c2,):
        assert c2.peer_id != first
    assert not (tmp_path / "identity").exists(), "a Client writes no key"
    async with endpoints(cfg(tmp_path)) as (n1,):
        node_id = n1.peer_id
    async with endpoints(cfg(tmp_path)) as (n2,):
        assert n2.peer_id == node_id
    assert [p.name for p in (tmp_path / "identity").iterdir()] == ["node-0.key"]
