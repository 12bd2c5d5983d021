"""Hole punching must not be a weapon: what a connected Node can make us send
to addresses it names with unrequested PUNCH_INFO notices."""

from __future__ import annotations

import asyncio

import pytest

from quic_p2p import Cause, ConnectedTo, ConnectionFailedError, SentUserMessage
from quic_p2p.accel.types import FRAME_HEADER_SIZE
from quic_p2p.peer import Address
from quic_p2p.proto import rendezvous as rendezvous_module
from quic_p2p.proto.limits import PUNCH_NOTICE_BURST, PUNCH_NOTICE_RATE
from quic_p2p.proto.wire import (
    WireError,
    decode_punch_info,
    decode_relay_open,
    encode_punch_info,
    encode_relay_open,
)

from netutil import (
    WAIT,
    endpoints,
    node_config,
    send_control_frame,
    third_addresses,
    wait_for_event,
)

pytestmark = pytest.mark.usefixtures("no_loop_errors")


async def test_punch_notices_dial_third_addresses_only_within_the_budget() -> None:
    async with endpoints(node_config(), node_config(), max_connections=40) as (victim, hostile):
        # The victim chose the hostile Node (dialled it): only such a Node's
        # notices start punches at all (tests/test_relay_abuse.py).
        await asyncio.wait_for(victim.connect_to(hostile.node_info), WAIT)
        await wait_for_event(hostile, ConnectedTo)
        loop = asyncio.get_running_loop()
        async with third_addresses(48) as sinks:
            started = loop.time()
            for sink in sinks:  # 48 notices, each naming another third address
                send_control_frame(
                    hostile, victim.local_addr, encode_punch_info(0, 0, sink.addr, b"")
                )
            sent_for = loop.time() - started
            # Meanwhile an honest Node still finds a slot (punches take none).
            async with endpoints(node_config(ip="127.0.0.2")) as (honest,):
                peer = await asyncio.wait_for(honest.connect_to(victim.node_info), WAIT)
                assert isinstance(await honest.send(peer, b"hi", 1), SentUserMessage)
            await asyncio.sleep(4)  # a punch gives up after 3 s
            dialled = [s for s in sinks if s.datagrams]
            allowed = PUNCH_NOTICE_BURST + int(sent_for * PUNCH_NOTICE_RATE) + 1
            assert 0 < len(dialled) <= allowed, (len(dialled), allowed)
            assert victim.stats().get("punches declined: rate", 0) >= 48 - allowed
            total = sum(s.bytes for s in sinks)
            print(
                f"\n48 notices: {len(dialled)} third addresses dialled, "
                f"{sum(s.datagrams for s in sinks)} datagrams, {total} bytes"
            )


async def test_a_sustained_notice_stream_is_held_to_the_rendezvous_rate() -> None:
    """20 notices a second for 4 s from one rendezvous we chose: after the
    burst, dials follow the per-rendezvous rate (2/s), not the attacker's."""
    async with endpoints(node_config(), node_config()) as (victim, hostile):
        await asyncio.wait_for(victim.connect_to(hostile.node_info), WAIT)
        await wait_for_event(hostile, ConnectedTo)
        loop = asyncio.get_running_loop()
        async with third_addresses(80) as sinks:
            started = loop.time()
            for sink in sinks:
                send_control_frame(
                    hostile, victim.local_addr, encode_punch_info(0, 0, sink.addr, b"")
                )
                await asyncio.sleep(0.05)
            sent_for = loop.time() - started
            await asyncio.sleep(4)  # the last punches give up after 3 s
            dialled = sum(1 for s in sinks if s.datagrams)
            allowed = PUNCH_NOTICE_BURST + int(sent_for * PUNCH_NOTICE_RATE) + 1
            assert PUNCH_NOTICE_BURST < dialled <= allowed, (dialled, allowed)
            datagrams = sum(s.datagrams for s in sinks)
            total = sum(s.bytes for s in sinks)
            print(
                f"\n80 notices over {sent_for:.1f} s: {dialled} third addresses dialled, "
                f"{datagrams} datagrams ({datagrams / sent_for:.1f}/s), "
                f"{total} bytes ({total / sent_for / 1000:.1f} kB/s)"
            )


def test_a_contact_frame_with_an_unparsable_certificate_is_a_wire_error() -> None:
    """PUNCH_INFO and RELAY_OPEN name the other side by its certificate: one
    that does not parse is a bad frame where it is decoded, like any other
    bad field, for every caller (an empty one names no key)."""
    addr = ("127.0.0.1", 9)
    for encode, decode in (
        (encode_punch_info, decode_punch_info),
        (encode_relay_open, decode_relay_open),
    ):
        body = encode(0, 5, addr, b"\x30\x03junk")[FRAME_HEADER_SIZE:]
        with pytest.raises(WireError, match="not a usable certificate"):
            decode(body)
        _, node = decode(encode(0, 5, addr, b"")[FRAME_HEADER_SIZE:])
        assert node.peer_addr == addr and node.peer_id is None


async def test_a_rendezvous_answering_with_a_garbage_certificate_is_a_bad_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The asker's connect_to fails with a ConnectionFailedError giving each
    punch's bad answer, whatever certificate bytes the rendezvous writes
    (never another exception out of the punch loop)."""
    honest = encode_punch_info

    def garbage(msg_id: int, delay: int, addr: Address, cert: bytes) -> bytes:
        return honest(msg_id, delay, addr, b"\x30\x03junk" if msg_id else cert)

    async with endpoints(node_config(), node_config(), node_config()) as (a, rdv, b):
        await asyncio.wait_for(a.connect_to(rdv.node_info), WAIT)
        await asyncio.wait_for(b.connect_to(rdv.node_info), WAIT)
        with monkeypatch.context() as patch:
            patch.setattr(rendezvous_module, "encode_punch_info", garbage)
            with pytest.raises(ConnectionFailedError) as info:
                await asyncio.wait_for(
                    a.connect_to(b.node_info, via=rdv.node_info, relay=False), WAIT
                )
        assert info.value.reason.cause is Cause.PUNCH_FAILED, info.value.reason
        assert "bad answer: PUNCH_INFO: not a usable certificate" in info.value.reason
