"""bootstrap() and the bootstrap cache through the endpoint (seed tests, ported)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quic_p2p import (
    BootstrapError,
    BootstrapFailure,
    BootstrappedTo,
    ConnectedTo,
    NewMessage,
    NodeInfo,
    OurType,
    Peer,
    PeerId,
    QuicP2p,
    SentUserMessage,
)
from quic_p2p.peer import Address
from quic_p2p.reasons import Cause

from netutil import (
    WAIT,
    datagram_barrier,
    drain,
    endpoints,
    next_event,
    node_config,
    wait_for_event,
)


def cfg(cache: Path, **kw: object) -> object:
    return node_config(bootstrap_cache_dir=cache, **kw)


async def test_bootstrap_to_only_one_of_several_nodes(tmp_path: Path) -> None:
    async with endpoints(*[cfg(tmp_path / f"n{i}") for i in range(4)]) as nodes:
        contacts = tuple(n.node_info for n in nodes)
        async with endpoints(cfg(tmp_path / "me", hard_coded_contacts=contacts)) as (me,):
            info = await asyncio.wait_for(me.bootstrap(), WAIT)
            assert info in contacts
            assert (await next_event(me)) == BootstrappedTo(info)
            # The quiet period is over once every other contact has processed
            # what we sent it (the close of its attempt), then we what they
            # sent, and a message from the winner has arrived after all that.
            for n in nodes:
                if n.node_info != info:
                    await datagram_barrier(n)
            await datagram_barrier(me)
            winner = next(n for n in nodes if n.node_info == info)
            assert isinstance(
                await winner.send(Peer.node(me.node_info), b"after", 1), SentUserMessage
            )
            _, before = await wait_for_event(me, NewMessage, lambda e: e.msg == b"after")
            assert [p.peer_addr for p in me.connected_peers()] == [info.peer_addr]
            late = [e for e in before + drain(me) if isinstance(e, (ConnectedTo, BootstrappedTo))]
            assert not late
            # Hard-coded contacts are never cached.
            assert me.bootstrap_cache() == []
            assert me.is_hard_coded_contact(info)


async def test_bootstrap_with_nothing_to_try_fails_at_once(tmp_path: Path) -> None:
    async with endpoints(cfg(tmp_path)) as (me,):
        with pytest.raises(BootstrapError, match="no hard-coded contacts and an empty"):
            await me.bootstrap()
        assert isinstance(await next_event(me), BootstrapFailure)


async def test_bootstrap_failure_lists_why_each_contact_failed(tmp_path: Path) -> None:
    dead = NodeInfo(("127.0.0.1", 9))
    async with endpoints(cfg(tmp_path / "other")) as (other,):
        # A live node, but not the key the contact pins.
        impostor = NodeInfo(other.local_addr, peer_id=PeerId(bytes(32)))
        contacts = (dead, impostor)
        async with endpoints(
            cfg(tmp_path / "me", idle_timeout_msec=300, hard_coded_contacts=contacts)
        ) as (me,):
            with pytest.raises(BootstrapError) as err:
                await asyncio.wait_for(me.bootstrap(), WAIT)
            assert set(err.value.reasons) == {dead.peer_addr, impostor.peer_addr}
            assert "another key" in err.value.reasons[impostor.peer_addr]
            ev, _ = await wait_for_event(me, BootstrapFailure)
            assert set(ev.reasons) == {dead.peer_addr, impostor.peer_addr}


@pytest.mark.parametrize("our_type", [OurType.NODE, OurType.CLIENT])
async def test_bootstrap_through_a_hard_coded_contact(tmp_path: Path, our_type: OurType) -> None:
    async with endpoints(cfg(tmp_path / "p")) as (peer1,):
        me_cfg = cfg(tmp_path / "me", our_type=our_type, hard_coded_contacts=(peer1.node_info,))
        async with endpoints(me_cfg) as (me,):
            assert await asyncio.wait_for(me.bootstrap(), WAIT) == peer1.node_info
            ev, _ = await wait_for_event(peer1, ConnectedTo)
            assert ev.peer.is_node == (our_type is OurType.NODE)
            assert ev.peer.peer_addr == me.local_addr


def cached(ep: QuicP2p) -> list[tuple[PeerId | None, Address]]:
    """The bootstrap cache as (id, address) pairs, most recent first (entries
    pin the id: certificates are renewed at restart)."""
    return [(n.peer_id, n.peer_addr) for n in ep.bootstrap_cache()]


async def test_successful_connection_is_cached_incoming_is_not(tmp_path: Path) -> None:
    async with endpoints(cfg(tmp_path / "a"), cfg(tmp_path / "b")) as (a, b):
        await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        await wait_for_event(b, ConnectedTo)
        assert cached(a) == [(b.peer_id, b.local_addr)]
        assert cached(b) == []


async def test_restarted_node_rejoins_through_its_cache(tmp_path: Path) -> None:
    cache = tmp_path / "me"
    async with endpoints(cfg(tmp_path / "a"), cfg(tmp_path / "b")) as (a, b):
        async with endpoints(cfg(cache)) as (me,):
            await asyncio.wait_for(me.connect_to(a.node_info), WAIT)
            await asyncio.wait_for(me.connect_to(b.node_info), WAIT)
            assert cached(me) == [(b.peer_id, b.local_addr), (a.peer_id, a.local_addr)]
        # A new process, no hard-coded contacts: the cache on disk is enough.
        async with endpoints(cfg(cache)) as (again,):
            assert cached(again) == [(b.peer_id, b.local_addr), (a.peer_id, a.local_addr)]
            joined = await asyncio.wait_for(again.bootstrap(), WAIT)
            assert joined in (a.node_info, b.node_info)
            assert isinstance(await next_event(again), BootstrappedTo)


async def test_cache_is_tried_first_and_failed_entries_are_demoted(tmp_path: Path) -> None:
    cache = tmp_path / "me"
    async with endpoints(cfg(tmp_path / "a"), cfg(tmp_path / "gone")) as (a, gone):
        gone_info = gone.node_info
        async with endpoints(cfg(cache)) as (me,):
            await asyncio.wait_for(me.connect_to(a.node_info), WAIT)
            await asyncio.wait_for(me.connect_to(gone_info), WAIT)
        await gone.aclose()
        async with endpoints(cfg(cache, idle_timeout_msec=500)) as (again,):
            # Most recent first: the node that is gone is tried first...
            assert cached(again) == [
                (gone_info.peer_id, gone_info.peer_addr),
                (a.peer_id, a.local_addr),
            ]
            assert await asyncio.wait_for(again.bootstrap(), WAIT) == a.node_info
            await asyncio.sleep(0.2)  # let the failed attempt finish and be recorded
        # ...and after failing it is demoted, not deleted.
        restarted = QuicP2p(cfg(cache))
        await restarted.start()
        try:
            assert gone_info.peer_id in [n.peer_id for n in restarted.bootstrap_cache()]
            assert restarted.engine.cache.bootstrap_order()[0].peer_id == a.peer_id
        finally:
            await restarted.aclose()


async def test_a_contact_that_refuses_us_is_tried_again(tmp_path: Path) -> None:
    """A full seed refuses a bootstrapping Node (its connection limit); the
    bootstrap tries it again after a short pause instead of failing, and
    gets in once a slot is free (a boot storm's latecomers, in small)."""
    async with endpoints(cfg(tmp_path / "seed"), max_connections=2) as (seed,):
        first_cfg = cfg(tmp_path / "first", hard_coded_contacts=(seed.node_info,))
        late_cfg = cfg(tmp_path / "late", hard_coded_contacts=(seed.node_info,))
        async with endpoints(first_cfg, late_cfg) as (first, late):
            await asyncio.wait_for(first.bootstrap(), WAIT)  # both of the seed's slots
            joining = asyncio.ensure_future(late.bootstrap())
            for _ in range(200):  # until the seed has refused the latecomer once
                if seed.stats().get("refused: connection limit", 0) >= 1:
                    break
                await asyncio.sleep(0.01)
            assert seed.stats().get("refused: connection limit", 0) >= 1
            assert not joining.done()  # refused, and waiting to try again
            await first.disconnect_from(seed.local_addr)
            assert await asyncio.wait_for(joining, WAIT) == seed.node_info


async def test_a_silent_contact_is_not_tried_again(tmp_path: Path) -> None:
    """Only a refusal is retried: a contact that never answers fails the
    bootstrap after its one attempt (here at the idle timeout): one
    connection dialled, not one per retry."""
    dead = NodeInfo(("127.0.0.1", 9))
    me_cfg = cfg(tmp_path / "me", idle_timeout_msec=300, hard_coded_contacts=(dead,))
    async with endpoints(me_cfg) as (me,):
        with pytest.raises(BootstrapError) as err:
            await asyncio.wait_for(me.bootstrap(), WAIT)
        assert err.value.reasons[dead.peer_addr].cause is Cause.IDLE_TIMEOUT
        assert me.stats().totals.connections_opened == 1
