"""Each trust mode end to end: the right peer is connected, a wrong CA, a wrong
pinned certificate or an expired certificate is rejected before the
application sees any event from that peer."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket

import pytest
from cryptography import x509

from quic_p2p import (
    Config,
    ConnectedTo,
    ConnectionFailedError,
    ConnectionFailure,
    NewMessage,
    NodeInfo,
    OurType,
    SentUserMessage,
    TrustMode,
    UnsentUserMessage,
)
from quic_p2p.accel.types import FrameKind
from quic_p2p.certfiles import create_ca, generate_self_signed, issue_certificate
from quic_p2p.proto.certs import load_signing_key
from quic_p2p.proto.config import ConfigError
from quic_p2p.proto.wire import ErrorCode, frame

from netutil import WAIT, datagram_barrier, drain, endpoints, node_config, until, wait_for_event
from rawpeer import CONTROL, RawPeer, raw_configuration
from relay import LossyRelay

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
    # Nothing else happens once the victim has processed all the dialer sent.
    await datagram_barrier(victim)
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
        await datagram_barrier(a)
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
    """No pin, no CA: still TLS. Both connections of the pair cross a relay
    that records every datagram, and a marker sent both ways (on the control
    stream and on a stream of its own) never appears on the wire."""
    marker = os.urandom(16)
    async with (
        endpoints(node_config(), node_config()) as (a, b),
        LossyRelay(a.local_addr, b.local_addr, capture=True) as wire,
    ):
        peer = await asyncio.wait_for(a.connect_to(NodeInfo(wire.for_a)), WAIT)
        # The certificate b proved (on the reverse connection) is recorded.
        ev, _ = await wait_for_event(b, ConnectedTo)
        assert ev.peer.peer_cert_der == a.our_certificate
        assert peer.peer_addr == wire.for_a
        # ...and a learns b's certificate only as presented on its connection.
        assert peer.peer_cert_der == b.our_certificate
        for msg in (marker * 4, marker * 2048):  # 64 B and 32 KiB
            assert isinstance(await a.send(peer, msg, 1), SentUserMessage)
            got, _ = await wait_for_event(b, NewMessage)
            assert got.msg == msg
            out = await b.send(ev.peer, msg, 2)
            assert isinstance(out, SentUserMessage)
            assert (await wait_for_event(a, NewMessage))[0].msg == msg
        on_wire = list(wire.captured)
        assert sum(map(len, on_wire)) > 2 * len(marker) * 2048  # it all crossed the relay
        assert not [d for d in on_wire if marker in d], "plaintext on the wire"
        # The capture does see plaintext when there is some.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"clear " + marker, wire.for_a)
        await until(lambda: any(marker in d for d in wire.captured))


# ------------------------------------------------------------ incoming peers' certificates
#: The endpoint stats() counter of incoming connections refused for their certificate.
REFUSED = "refused: peer certificate"
#: Our application close code for it.
CERTIFICATE_REFUSED = ErrorCode.CERTIFICATE_REFUSED
#: QUIC CRYPTO_ERROR for TLS alert 51 (decrypt_error): a CertificateVerify
#: signature that does not verify with the presented certificate's key.
TLS_DECRYPT_ERROR = 0x100 + 51

LONG_AGO = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
SOON = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)


def client_config(cert, ca=CA, mode=TrustMode.PRIVATE_CA):  # type: ignore[no-untyped-def]
    return node_config(
        our_type=OurType.CLIENT,
        trust_mode=mode,
        ca_certs_der=(ca.cert_der,) if mode is not TrustMode.UNVERIFIED else (),
        our_complete_cert=cert,
    )


async def assert_refused_by(server, dialer, target: NodeInfo | None = None) -> str:  # type: ignore[no-untyped-def]
    """``dialer`` connects to ``server`` and says hello; ``server`` must refuse
    the connection for the dialer's certificate before any event, and the
    dialer must learn why. Returns the dialer's failure reason."""
    target = target or NodeInfo(server.local_addr)
    try:
        peer = await asyncio.wait_for(dialer.connect_to(target), WAIT)
    except ConnectionFailedError as exc:
        reason = exc.reason
    else:
        # A Client's TLS handshake completes before the server has seen its
        # certificate (TLS 1.3): the refusal follows within a round trip, and
        # nothing it sent is delivered.
        outcome = await asyncio.wait_for(dialer.send(peer, b"let me in", 1), WAIT)
        assert isinstance(outcome, UnsentUserMessage)
        ev, _ = await wait_for_event(dialer, ConnectionFailure)
        reason = ev.error
    await datagram_barrier(server)
    seen = drain(server)
    assert not [e for e in seen if isinstance(e, (ConnectedTo, NewMessage))], seen
    assert server.stats().get(REFUSED, 0) >= 1, server.stats()
    assert "refused our certificate" in reason, reason
    return reason


async def raw_hello(server, configuration) -> RawPeer:  # type: ignore[no-untyped-def]
    """A raw aioquic client that completes TLS, sends a Client handshake and a
    user message at once, and waits for the connection to end."""
    client = await RawPeer.open(server.local_addr, configuration=configuration)
    try:
        await client.wait(lambda: client.completed or client.terminated is not None)
        if client.completed:
            client.send(
                CONTROL,
                frame(FrameKind.HANDSHAKE_CLIENT)
                + frame(FrameKind.USER_MESSAGE, b"anonymous", msg_id=1),
            )
        await asyncio.wait_for(client.until_terminated(), WAIT)
    finally:
        client.close()
    return client


async def test_ca_mode_refuses_a_client_without_a_certificate() -> None:
    async with endpoints(ca_config()) as (node,):
        client = await raw_hello(node, raw_configuration(present=False))
        term = client.terminated
        assert term is not None and term.error_code == CERTIFICATE_REFUSED, term
        assert "no certificate" in term.reason_phrase
        await datagram_barrier(node)
        assert not [e for e in drain(node) if isinstance(e, (ConnectedTo, NewMessage))]
        assert node.stats().get(REFUSED) == 1


async def test_a_refused_client_s_coalesced_handshake_and_message_are_never_read() -> None:
    # The role handshake and a message leave in the very datagram that carries
    # the client's (empty) certificate and Finished: aioquic hands the server
    # all of it at once, and none of it may get past the refusal.
    hello = frame(FrameKind.HANDSHAKE_CLIENT) + frame(FrameKind.USER_MESSAGE, b"sneaky", msg_id=1)
    async with endpoints(ca_config()) as (node,):
        client = await RawPeer.open(
            node.local_addr, first_flight=hello, configuration=raw_configuration(present=False)
        )
        try:
            term = await asyncio.wait_for(client.until_terminated(), WAIT)
        finally:
            client.close()
        assert term.error_code == CERTIFICATE_REFUSED, term
        await datagram_barrier(node)
        assert not [e for e in drain(node) if isinstance(e, (ConnectedTo, NewMessage))]
        assert node.stats().get(REFUSED) == 1


async def test_ca_mode_refuses_a_client_whose_key_does_not_match_its_certificate() -> None:
    # The certificate is a good one from the network's CA, but the client does
    # not hold its key: aioquic's CertificateVerify check must catch it once
    # the server asks for a certificate.
    good = issue_certificate(CA, "someone else's")
    configuration = raw_configuration()
    configuration.certificate = x509.load_der_x509_certificate(good.cert_der)
    configuration.private_key = load_signing_key(generate_self_signed().key_der)
    async with endpoints(ca_config()) as (node,):
        client = await raw_hello(node, configuration)
        term = client.terminated
        assert term is not None and term.error_code == TLS_DECRYPT_ERROR, term
        await datagram_barrier(node)
        assert not [e for e in drain(node) if isinstance(e, (ConnectedTo, NewMessage))]


async def test_ca_mode_refuses_a_client_of_another_ca() -> None:
    # The Client trusts our CA (so it accepts us) but holds a foreign certificate.
    stranger = client_config(issue_certificate(OTHER_CA, "stranger"))
    async with endpoints(ca_config(), stranger) as (node, client):
        reason = await assert_refused_by(node, client)
        assert "issuer" in reason


async def test_ca_mode_refuses_an_expired_client_certificate() -> None:
    expired = client_config(issue_certificate(CA, "old", valid_days=1, not_before=LONG_AGO))
    async with endpoints(ca_config(), expired) as (node, client):
        reason = await assert_refused_by(node, client)
        assert "expired" in reason or "no longer valid" in reason


async def test_ca_mode_refuses_a_node_of_another_ca_at_its_own_connection() -> None:
    # Refused on the connection it opened, not only by our reverse connection.
    stranger = ca_config(cert=issue_certificate(OTHER_CA, "x"), ca=CA)
    async with endpoints(ca_config(), stranger) as (node, dialer):
        await assert_refused_by(node, dialer)


async def test_ca_mode_serves_a_client_with_a_certificate_of_the_network() -> None:
    async with endpoints(ca_config(), client_config(issue_certificate(CA, "client"))) as (
        node,
        client,
    ):
        peer = await asyncio.wait_for(client.connect_to(NodeInfo(node.local_addr)), WAIT)
        assert isinstance(await client.send(peer, b"hello", 1), SentUserMessage)
        ev, _ = await wait_for_event(node, NewMessage)
        assert ev.msg == b"hello"
        assert not node.stats().get(REFUSED)


async def test_public_ca_checks_clients_against_the_given_bundle() -> None:
    node_cfg = node_config(
        trust_mode=TrustMode.PUBLIC_CA,
        ca_certs_der=(CA.cert_der,),
        our_complete_cert=issue_certificate(CA, "node"),
    )

    async with endpoints(node_cfg) as (node,):
        ok = client_config(issue_certificate(CA, "c"), mode=TrustMode.PUBLIC_CA)
        bad = client_config(issue_certificate(OTHER_CA, "c"), mode=TrustMode.PUBLIC_CA)
        async with endpoints(ok, bad) as (good, stranger):
            peer = await asyncio.wait_for(good.connect_to(NodeInfo(node.local_addr)), WAIT)
            assert isinstance(await good.send(peer, b"hi", 1), SentUserMessage)
            await wait_for_event(node, NewMessage)
            drain(node)
            await assert_refused_by(node, stranger)


def test_a_client_in_a_ca_mode_needs_a_certificate() -> None:
    for mode in (TrustMode.PRIVATE_CA, TrustMode.PUBLIC_CA):
        with pytest.raises(ConfigError, match="our_complete_cert"):
            Config(our_type=OurType.CLIENT, trust_mode=mode, ca_certs_der=(CA.cert_der,))
    # Unverified: a Client may still run with a fresh self-signed certificate.
    Config(our_type=OurType.CLIENT)


# ------------------------------------------------------------ validity periods, UNVERIFIED mode
async def test_unverified_refuses_an_expired_unpinned_certificate() -> None:
    expired = generate_self_signed(valid_days=1, not_before=LONG_AGO)
    async with endpoints(node_config(), node_config(our_complete_cert=expired)) as (a, old):
        reason = await assert_rejected(a, NodeInfo(old.local_addr), old)
        assert "no longer valid" in reason


async def test_unverified_refuses_a_not_yet_valid_unpinned_certificate() -> None:
    future = generate_self_signed(valid_days=30, not_before=SOON)
    async with endpoints(node_config(), node_config(our_complete_cert=future)) as (a, new):
        reason = await assert_rejected(a, NodeInfo(new.local_addr), new)
        assert "not valid yet" in reason


async def test_unverified_refuses_an_expired_pinned_ca_issued_certificate() -> None:
    expired = issue_certificate(CA, "old", valid_days=1, not_before=LONG_AGO)
    async with endpoints(node_config(), node_config(our_complete_cert=expired)) as (a, old):
        reason = await assert_rejected(a, old.node_info, old)
        assert "no longer valid" in reason


async def test_unverified_refuses_a_not_yet_valid_pinned_ca_issued_certificate() -> None:
    future = issue_certificate(CA, "new", valid_days=30, not_before=SOON)
    async with endpoints(node_config(), node_config(our_complete_cert=future)) as (a, new):
        reason = await assert_rejected(a, new.node_info, new)
        assert "not valid yet" in reason


async def test_unverified_refuses_an_expired_node_dialling_in() -> None:
    expired = issue_certificate(CA, "old", valid_days=1, not_before=LONG_AGO)
    async with endpoints(node_config(), node_config(our_complete_cert=expired)) as (a, old):
        reason = await assert_refused_by(a, old)
        assert "no longer valid" in reason


async def test_unverified_refuses_an_expired_client_and_one_without_a_certificate() -> None:
    expired = generate_self_signed(valid_days=1, not_before=LONG_AGO)
    async with endpoints(node_config(), client_config(expired, mode=TrustMode.UNVERIFIED)) as (
        node,
        client,
    ):
        await assert_refused_by(node, client)
        # Every peer presents a certificate, in this mode too: its key is its id.
        anonymous = await raw_hello(node, raw_configuration(present=False))
        term = anonymous.terminated
        assert term is not None and term.error_code == CERTIFICATE_REFUSED, term
        assert "every peer must present one" in term.reason_phrase
        # A self-signed one is served, under the id of its key.
        raw = await RawPeer.open(node.local_addr)
        try:
            await raw.wait(lambda: raw.completed or raw.terminated is not None)
            raw.send(
                CONTROL,
                frame(FrameKind.HANDSHAKE_CLIENT) + frame(FrameKind.USER_MESSAGE, b"hi", msg_id=1),
            )
            ev, _ = await wait_for_event(node, NewMessage)
            assert ev.msg == b"hi" and ev.peer_id == raw.peer_id is not None
        finally:
            raw.close()


async def test_unverified_node_dialling_a_private_ca_node_hears_of_its_certificate() -> None:
    async with endpoints(ca_config(), node_config()) as (ca_node, unverified):
        with pytest.raises(ConnectionFailedError) as info:
            await asyncio.wait_for(unverified.connect_to(NodeInfo(ca_node.local_addr)), WAIT)
        # Not "could not connect back": the CA node refused us, or we refused it.
        assert "connect back" not in info.value.reason
        assert "certificate" in info.value.reason, info.value.reason
