"""A pinned certificate is checked against the peer we actually talk to, every
time: also when a connection to that address already exists or is being set
up (a message meant for the holder of certificate Z never reaches whoever
else holds the address)."""

from __future__ import annotations

import asyncio
import re

import pytest

from quic_p2p import (
    BootstrapError,
    ConnectedTo,
    ConnectionFailedError,
    NewMessage,
    NodeInfo,
    OurType,
    Peer,
    SentUserMessage,
    UnsentUserMessage,
)
from quic_p2p.certfiles import generate_self_signed

from netutil import WAIT, drain, endpoints, node_config, wait_for_event

OTHER = generate_self_signed().cert_der  # a certificate nobody here holds
#: How a pin nobody holds is refused: by the record's proven key, or inside
#: TLS (a pinned self-signed certificate is the only trust anchor).
PIN_REFUSED = r"another key than the one pinned|TLS handshake failed \(alert 42"


def _messages(ep):  # type: ignore[no-untyped-def]
    return [e.msg for e in drain(ep) if isinstance(e, NewMessage)]


async def test_connected_address_with_another_pin_is_refused() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        await asyncio.wait_for(a.connect_to(NodeInfo(b.local_addr)), WAIT)  # no pin
        wrong = NodeInfo(b.local_addr, OTHER)
        with pytest.raises(ConnectionFailedError, match=PIN_REFUSED):
            await asyncio.wait_for(a.connect_to(wrong), WAIT)
        out = await asyncio.wait_for(a.send(wrong, b"for Z only", 1), WAIT)
        assert isinstance(out, UnsentUserMessage) and re.search(PIN_REFUSED, out.reason)
        assert out.msg == b"for Z only"
        out = await asyncio.wait_for(a.send(Peer.node(wrong), b"for Z only", 2), WAIT)
        assert isinstance(out, UnsentUserMessage)
        # The right pin (and no pin) still reach the peer.
        right = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        assert isinstance(await asyncio.wait_for(a.send(right, b"ok", 3), WAIT), SentUserMessage)
        await asyncio.sleep(0.1)
        assert _messages(b) == [b"ok"]


async def test_pin_is_checked_for_a_connection_still_being_set_up() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        first = asyncio.ensure_future(a.connect_to(NodeInfo(b.local_addr)))
        await asyncio.sleep(0)  # the unpinned dial is under way
        wrong = NodeInfo(b.local_addr, OTHER)
        joined = asyncio.ensure_future(a.connect_to(wrong))
        sent = asyncio.ensure_future(a.send(wrong, b"for Z only", 1))
        await asyncio.wait_for(first, WAIT)
        with pytest.raises(ConnectionFailedError, match=PIN_REFUSED):
            await asyncio.wait_for(joined, WAIT)
        out = await asyncio.wait_for(sent, WAIT)
        assert isinstance(out, UnsentUserMessage) and re.search(PIN_REFUSED, out.reason)
        await wait_for_event(b, ConnectedTo)
        await asyncio.sleep(0.2)
        assert _messages(b) == []


async def test_pin_is_checked_by_a_client_too() -> None:
    async with endpoints(node_config(), node_config(our_type=OurType.CLIENT)) as (n, c):
        await asyncio.wait_for(c.connect_to(NodeInfo(n.local_addr)), WAIT)
        wrong = NodeInfo(n.local_addr, OTHER)
        with pytest.raises(ConnectionFailedError, match=PIN_REFUSED):
            await asyncio.wait_for(c.connect_to(wrong), WAIT)
        out = await asyncio.wait_for(c.send(wrong, b"for Z only", 1), WAIT)
        assert isinstance(out, UnsentUserMessage)
        right = await asyncio.wait_for(c.send(n.node_info, b"ok", 2), WAIT)
        assert isinstance(right, SentUserMessage)
        await asyncio.sleep(0.1)
        assert _messages(n) == [b"ok"]


async def test_bootstrap_does_not_reuse_a_connection_under_another_pin() -> None:
    async with endpoints(node_config()) as (y,):
        contact = NodeInfo(y.local_addr, OTHER)
        async with endpoints(node_config(hard_coded_contacts=[contact])) as (x,):
            # An unpinned dial to the same address is under way (once it
            # completes, the cache would offer y's real certificate instead).
            dial = asyncio.ensure_future(x.connect_to(NodeInfo(y.local_addr)))
            await asyncio.sleep(0)
            with pytest.raises(BootstrapError, match=PIN_REFUSED):
                await asyncio.wait_for(x.bootstrap(), WAIT)
            await asyncio.wait_for(dial, WAIT)
