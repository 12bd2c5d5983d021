"""Each trust mode end to end: the right peer is connected, a wrong CA, a wrong
pinned certificate or an expired certificate is rejected before the
application sees any event from that peer."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from quic_p2p import ConnectedTo, ConnectionFailedError, NodeInfo, SentUserMessage, TrustMode
from quic_p2p.certs import create_ca, generate_self_signed, issue_certificate

from netutil import WAIT, drain, endpoints, node_config, wait_for_event

CA = create_ca("test network CA")
OTHER_CA = create_ca("another CA")


def ca_config(cert=None, ca=CA, **kw):  # type: ignore[no-untyped-def]
    return node_config(
        trust_mode=TrustMode.PRIVATE_CA,
        ca_certs_der=(ca.cert_der,),
        our_complete_cert=cert or issue_certificate(CA, "node"),
        **kw,
    )


async def assert_rejected(dialer, target: NodeInfo, victim) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectionFailedError) as info:
        await asyncio.wait_for(dialer.connect_to(target), WAIT)
    await asyncio.sleep(0.1)
    assert not [e for e in drain(victim) if isinstance(e, ConnectedTo)]
    return info.value.reason


async def test_private_ca_accepts_nodes_of_the_network() -> None:
    async with endpoints(ca_config(), ca_config()) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(b.node_info), WAIT)
        await wait_for_event(b, ConnectedTo)
        assert isinstance(await a.send(peer, b"hi", 1), SentUserMessage)
        # Without a pinned certificate the CA alone decides.
        async with endpoints(ca_config()) as (c,):
            await asyncio.wait_for(c.connect_to(NodeInfo(b.local_addr)), WAIT)


async def test_private_ca_rejects_a_node_of_another_ca() -> None:
    async with endpoints(ca_config(), ca_config(cert=issue_certificate(OTHER_CA, "x"))) as (
        a,
        stranger,
    ):
        reason = await assert_rejected(a, NodeInfo(stranger.local_addr), stranger)
        assert "certificate" in reason.lower() or "issuer" in reason.lower()


async def test_private_ca_rejects_a_stranger_dialling_in() -> None:
    # The stranger dials us; our reverse connection must verify it and fail.
    stranger_cfg = ca_config(cert=issue_certificate(OTHER_CA, "x"), ca=OTHER_CA)
    async with endpoints(ca_config(), stranger_cfg) as (a, stranger):
        with pytest.raises(ConnectionFailedError):
            await asyncio.wait_for(stranger.connect_to(NodeInfo(a.local_addr)), WAIT)
        await asyncio.sleep(0.1)
        assert not [e for e in drain(a) if isinstance(e, ConnectedTo)]


async def test_pinned_certificate_mismatch_is_rejected_in_every_mode() -> None:
    async with endpoints(ca_config(), ca_config()) as (a, b):
        sibling = issue_certificate(CA, "sibling").cert_der  # same CA, other cert
        await assert_rejected(a, NodeInfo(b.local_addr, sibling), b)
    async with endpoints(node_config(), node_config()) as (a, b):
        wrong = generate_self_signed().cert_der
        await assert_rejected(a, NodeInfo(b.local_addr, wrong), b)


async def test_expired_certificate_is_rejected() -> None:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = issue_certificate(CA, "old", valid_days=1, not_before=long_ago)
    async with endpoints(ca_config(), ca_config(cert=expired)) as (a, old):
        reason = await assert_rejected(a, NodeInfo(old.local_addr), old)
        assert "valid" in reason.lower()
    expired_self = generate_self_signed(valid_days=1, not_before=long_ago)
    async with endpoints(node_config(), node_config(our_complete_cert=expired_self)) as (a, old):
        await assert_rejected(a, old.node_info, old)


async def test_unverified_mode_still_encrypts_and_connects_without_a_pin() -> None:
    async with endpoints(node_config(), node_config()) as (a, b):
        peer = await asyncio.wait_for(a.connect_to(NodeInfo(b.local_addr)), WAIT)
        # The certificate b proved (on the reverse connection) is recorded.
        ev, _ = await wait_for_event(b, ConnectedTo)
        assert ev.peer.peer_cert_der == a.our_certificate
        assert peer.peer_addr == b.local_addr
        # ...and a learns b's certificate only as presented on its connection.
        assert peer.peer_cert_der == b.our_certificate
