"""Real TLS 1.3 handshakes between two aioquic connections, in memory.

A client ``QuicConnection`` (built by ``client_configuration``) and a server
``QuicConnection`` (built by ``server_configuration``) exchange datagrams
directly, no sockets; time is simulated and jumps to the next timer when the
pair is quiet. Each test asserts which peer a trust mode accepts and, for
rejections, the TLS alert the client closes with.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from aioquic.tls import AlertDescription, Group, verify_certificate
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from quic_p2p.peer import InvalidContactError, NodeInfo
from quic_p2p.proto import certs
from quic_p2p.proto.certs import CertificateError
from quic_p2p.proto.config import CompleteCert, Config, TrustMode
from quic_p2p.proto.tls import (
    ALPN,
    IDLE_TIMEOUT_DISABLED_SEC,
    ClientConnection,
    ServerConnection,
    check_client_certificate,
    check_pinned_peer,
    check_server_certificate,
    check_validity,
    client_configuration,
    idle_timeout_seconds,
    server_configuration,
)

CLIENT_ADDR = ("127.0.0.1", 40001)
SERVER_ADDR = ("127.0.0.1", 40002)
MAX_ROUNDS = 50

# QUIC carries a TLS alert as CRYPTO_ERROR (0x100) + alert number (RFC 9001 §4.8).
CRYPTO_ERROR = 0x100
BAD_CERTIFICATE = CRYPTO_ERROR + AlertDescription.bad_certificate
CERTIFICATE_EXPIRED = CRYPTO_ERROR + AlertDescription.certificate_expired
NO_APPLICATION_PROTOCOL = CRYPTO_ERROR + AlertDescription.no_application_protocol

UTC = datetime.UTC


def utc_now() -> datetime.datetime:
    """The wall clock (aioquic's own certificate checks read it too)."""
    return datetime.datetime.now(UTC)


@dataclass
class Outcome:
    client: QuicConnection
    server: QuicConnection
    client_events: list[QuicEvent] = field(default_factory=list)
    server_events: list[QuicEvent] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return any(isinstance(e, HandshakeCompleted) for e in self.client_events)

    @property
    def terminated(self) -> ConnectionTerminated | None:
        for e in self.client_events:
            if isinstance(e, ConnectionTerminated):
                return e
        return None


def handshake(
    client_conf: QuicConfiguration,
    server_conf: QuicConfiguration,
    server_class: type[QuicConnection] = QuicConnection,
    client_class: type[QuicConnection] = QuicConnection,
) -> Outcome:
    """Drive both sides until the client completes or terminates (bounded).
    ``server_class``: ``ServerConnection`` to have the server ask for the
    client's certificate, as the endpoint's does; ``client_class``:
    ``ClientConnection`` to offer one key share, as the endpoint's does."""
    client = client_class(configuration=client_conf)
    server = server_class(
        configuration=server_conf,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    out = Outcome(client, server)
    now = 1000.0
    client.connect(SERVER_ADDR, now=now)
    for _ in range(MAX_ROUNDS):
        moved = False
        for data, _addr in client.datagrams_to_send(now=now):
            server.receive_datagram(data, CLIENT_ADDR, now=now)
            moved = True
        for data, _addr in server.datagrams_to_send(now=now):
            client.receive_datagram(data, SERVER_ADDR, now=now)
            moved = True
        for conn, events in ((client, out.client_events), (server, out.server_events)):
            while (event := conn.next_event()) is not None:
                events.append(event)
        if out.terminated is not None or (out.completed and not moved):
            return out
        if not moved:
            # Quiet: jump to the earliest timer (closing/draining periods end
            # this way, which is when aioquic emits ConnectionTerminated).
            timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            assert timers, "deadlock: nothing to send and no timer"
            now = max(now, min(timers))
            for conn in (client, server):
                timer = conn.get_timer()
                if timer is not None and timer <= now:
                    conn.handle_timer(now=now)
    raise AssertionError(f"no outcome after {MAX_ROUNDS} rounds: {out.client_events}")


def assert_rejected(out: Outcome, error_code: int, reason: str | None = None) -> None:
    assert not out.completed, "handshake unexpectedly completed"
    term = out.terminated
    assert term is not None, f"client did not terminate: {out.client_events}"
    assert term.error_code == error_code, (hex(term.error_code), term.reason_phrase)
    if reason is not None:
        assert reason in term.reason_phrase, term.reason_phrase


def node(cert: CompleteCert | None = None) -> NodeInfo:
    return NodeInfo(SERVER_ADDR, cert.cert_der if cert else b"")


def past(days: float) -> datetime.datetime:
    return datetime.datetime.now(UTC) - datetime.timedelta(days=days)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def self_signed() -> CompleteCert:
    return certs.generate_self_signed(now=utc_now())


@pytest.fixture(scope="module")
def other_self_signed() -> CompleteCert:
    return certs.generate_self_signed(now=utc_now())


@pytest.fixture(scope="module")
def ca() -> CompleteCert:
    return certs.create_ca("Test Network CA", now=utc_now())


@pytest.fixture(scope="module")
def other_ca() -> CompleteCert:
    return certs.create_ca("Some Other CA", now=utc_now())


@pytest.fixture(scope="module")
def leaf(ca: CompleteCert) -> CompleteCert:
    return certs.issue_certificate(
        ca, "node-1", dns_names=["net.example"], ip_addresses=["127.0.0.1"], now=utc_now()
    )


def unverified() -> Config:
    return Config(trust_mode=TrustMode.UNVERIFIED)


def private_ca(ca: CompleteCert, name: str | None = None) -> Config:
    return Config(
        trust_mode=TrustMode.PRIVATE_CA, ca_certs_der=(ca.cert_der,), tls_server_name=name
    )


def server_conf(cert: CompleteCert, alpn: list[str] | None = None) -> QuicConfiguration:
    conf = server_configuration(unverified(), cert)
    if alpn is not None:
        conf.alpn_protocols = alpn
    return conf


# ------------------------------------------------------------------ UNVERIFIED


def test_unverified_without_pin_accepts_any_certificate(self_signed: CompleteCert) -> None:
    client_conf = client_configuration(unverified(), None)
    assert client_conf.verify_mode == ssl.CERT_NONE
    out = handshake(client_conf, server_conf(self_signed))
    assert out.completed
    # Encrypted but unauthenticated: the endpoint may still inspect what it got.
    assert check_pinned_peer(out.client, self_signed.cert_der) is None


def test_unverified_pin_accepts_the_pinned_self_signed_cert(self_signed: CompleteCert) -> None:
    client_conf = client_configuration(unverified(), node(self_signed))
    # The pin is enforced by aioquic itself: the cert is the only trust anchor.
    assert client_conf.verify_mode == ssl.CERT_REQUIRED
    assert client_conf.cadata == certs.to_pem(self_signed.cert_der)
    assert client_conf.server_name is None
    out = handshake(client_conf, server_conf(self_signed))
    assert out.completed
    assert check_pinned_peer(out.client, self_signed.cert_der) is None


def test_unverified_pin_rejects_another_cert_during_the_handshake(
    self_signed: CompleteCert, other_self_signed: CompleteCert
) -> None:
    out = handshake(
        client_configuration(unverified(), node(self_signed)), server_conf(other_self_signed)
    )
    assert_rejected(out, BAD_CERTIFICATE, "self-signed certificate")


def test_unverified_pin_of_ca_issued_cert_is_checked_after_the_handshake(
    leaf: CompleteCert, ca: CompleteCert
) -> None:
    # OpenSSL cannot use a non-self-signed cert as its own anchor (aioquic sets
    # no PARTIAL_CHAIN), so the pin moves to check_pinned_peer.
    client_conf = client_configuration(unverified(), node(leaf))
    assert client_conf.verify_mode == ssl.CERT_NONE
    good = handshake(client_conf, server_conf(leaf))
    assert good.completed
    assert check_pinned_peer(good.client, leaf.cert_der) is None

    impostor = certs.issue_certificate(ca, "node-2", now=utc_now())
    bad = handshake(client_configuration(unverified(), node(leaf)), server_conf(impostor))
    assert bad.completed  # TLS alone cannot tell ...
    reason = check_pinned_peer(bad.client, leaf.cert_der)  # ... the pin check does
    assert reason is not None and "does not match the pinned" in reason


def test_self_signed_cert_is_its_own_trust_anchor(self_signed: CompleteCert) -> None:
    # Exactly what aioquic does in _client_handle_certificate_verify: an
    # OpenSSL X509Store holding only the cert, verifying the cert.
    cert = x509.load_der_x509_certificate(self_signed.cert_der)
    verify_certificate(cert, cadata=certs.to_pem(self_signed.cert_der))
    # And it cannot vouch for anything else (CA:FALSE).
    assert certs.describe_certificate(self_signed.cert_der)["is_ca"] is False


def test_expired_pinned_cert_is_rejected() -> None:
    expired = certs.generate_self_signed(not_before=past(10), valid_days=1, now=utc_now())
    out = handshake(client_configuration(unverified(), node(expired)), server_conf(expired))
    assert_rejected(out, CERTIFICATE_EXPIRED, "no longer valid")


def test_not_yet_valid_pinned_cert_is_rejected() -> None:
    future = certs.generate_self_signed(not_before=past(-2), valid_days=30, now=utc_now())
    out = handshake(client_configuration(unverified(), node(future)), server_conf(future))
    assert_rejected(out, CERTIFICATE_EXPIRED, "not valid yet")


def test_validity_is_checked_at_the_given_time_only() -> None:
    """The checks read no clock: the same certificate passes or fails by ``now``."""
    start = datetime.datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    made = certs.generate_self_signed(not_before=start, valid_days=2, now=utc_now())
    cert = x509.load_der_x509_certificate(made.cert_der)
    second = datetime.timedelta(seconds=1)
    assert check_validity(cert, start) is None
    assert check_validity(cert, start + datetime.timedelta(days=2)) is None
    assert "not valid yet" in str(check_validity(cert, start - second))
    assert "no longer valid" in str(
        check_validity(cert, start + datetime.timedelta(days=2) + second)
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        check_validity(cert, datetime.datetime(2001, 2, 4))
    with pytest.raises(TypeError, match="now must be a datetime"):
        check_validity(cert, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_validity(cert)  # type: ignore[call-arg]


def test_garbage_pinned_cert_fails_before_any_packet() -> None:
    # Where the contact is made, before any configuration or packet.
    with pytest.raises(InvalidContactError, match="not a usable certificate"):
        NodeInfo(SERVER_ADDR, b"\x30\x03garbage")


# ------------------------------------------------------------------ PRIVATE_CA


def test_private_ca_accepts_a_cert_from_the_network_ca(
    ca: CompleteCert, leaf: CompleteCert
) -> None:
    client_conf = client_configuration(private_ca(ca), None)
    assert client_conf.verify_mode == ssl.CERT_REQUIRED
    assert client_conf.server_name is None  # chain only
    out = handshake(client_conf, server_conf(leaf))
    assert out.completed


def test_private_ca_rejects_a_cert_from_another_ca(
    ca: CompleteCert, other_ca: CompleteCert
) -> None:
    stranger = certs.issue_certificate(
        other_ca, "stranger", dns_names=["net.example"], now=utc_now()
    )
    out = handshake(client_configuration(private_ca(ca), None), server_conf(stranger))
    assert_rejected(out, BAD_CERTIFICATE, "unable to get local issuer certificate")


def test_private_ca_rejects_a_self_signed_cert(ca: CompleteCert, self_signed: CompleteCert) -> None:
    out = handshake(client_configuration(private_ca(ca), None), server_conf(self_signed))
    assert_rejected(out, BAD_CERTIFICATE, "self-signed certificate")


def test_private_ca_checks_the_agreed_name(ca: CompleteCert, leaf: CompleteCert) -> None:
    ok = handshake(client_configuration(private_ca(ca, "net.example"), None), server_conf(leaf))
    assert ok.completed
    wrong = handshake(
        client_configuration(private_ca(ca, "other.example"), None), server_conf(leaf)
    )
    assert_rejected(wrong, BAD_CERTIFICATE, "doesn't match")


def test_private_ca_checks_an_ip_address_name(ca: CompleteCert, leaf: CompleteCert) -> None:
    ok = handshake(client_configuration(private_ca(ca, "127.0.0.1"), None), server_conf(leaf))
    assert ok.completed
    wrong = handshake(client_configuration(private_ca(ca, "10.0.0.1"), None), server_conf(leaf))
    assert_rejected(wrong, BAD_CERTIFICATE)


def test_private_ca_pin_via_check_pinned_peer(ca: CompleteCert, leaf: CompleteCert) -> None:
    sibling = certs.issue_certificate(ca, "node-2", dns_names=["net.example"], now=utc_now())
    # The sibling chains to the CA, so TLS accepts it ...
    out = handshake(client_configuration(private_ca(ca), node(leaf)), server_conf(sibling))
    assert out.completed
    # ... but it is not the certificate the NodeInfo named.
    reason = check_pinned_peer(out.client, leaf.cert_der)
    assert reason is not None and "does not match the pinned" in reason
    # The right peer passes both.
    out = handshake(client_configuration(private_ca(ca), node(leaf)), server_conf(leaf))
    assert out.completed
    assert check_pinned_peer(out.client, leaf.cert_der) is None


def test_private_ca_rejects_expired_and_not_yet_valid_certs(ca: CompleteCert) -> None:
    expired = certs.issue_certificate(ca, "old", not_before=past(30), valid_days=1, now=utc_now())
    out = handshake(client_configuration(private_ca(ca), None), server_conf(expired))
    assert_rejected(out, CERTIFICATE_EXPIRED, "no longer valid")
    future = certs.issue_certificate(ca, "new", not_before=past(-1), valid_days=30, now=utc_now())
    out = handshake(client_configuration(private_ca(ca), None), server_conf(future))
    assert_rejected(out, CERTIFICATE_EXPIRED, "not valid yet")


def test_intermediate_ca_chain_is_sent_by_the_server(ca: CompleteCert) -> None:
    intermediate = certs.create_ca("Intermediate", issuer=ca, now=utc_now())
    leaf2 = certs.issue_certificate(intermediate, "deep", dns_names=["net.example"], now=utc_now())
    assert leaf2.chain_der == (intermediate.cert_der,)
    out = handshake(client_configuration(private_ca(ca, "net.example"), None), server_conf(leaf2))
    assert out.completed
    # Without the intermediate the client cannot build the chain.
    bare = CompleteCert(leaf2.cert_der, leaf2.key_der)
    out = handshake(client_configuration(private_ca(ca), None), server_conf(bare))
    assert_rejected(out, BAD_CERTIFICATE, "unable to get local issuer certificate")


def test_garbage_ca_cert_fails_before_any_packet() -> None:
    config = Config(trust_mode=TrustMode.PRIVATE_CA, ca_certs_der=(b"not a cert",))
    with pytest.raises(CertificateError):
        client_configuration(config, None)


# ------------------------------------------------------------------ PUBLIC_CA


def test_public_ca_with_a_given_bundle_acts_as_that_bundle(
    ca: CompleteCert, other_ca: CompleteCert, leaf: CompleteCert
) -> None:
    config = Config(
        trust_mode=TrustMode.PUBLIC_CA,
        ca_certs_der=(other_ca.cert_der, ca.cert_der),
        tls_server_name="net.example",
    )
    client_conf = client_configuration(config, None)
    assert client_conf.cadata is not None and client_conf.server_name == "net.example"
    assert handshake(client_conf, server_conf(leaf)).completed

    only_other = Config(trust_mode=TrustMode.PUBLIC_CA, ca_certs_der=(other_ca.cert_der,))
    out = handshake(client_configuration(only_other, None), server_conf(leaf))
    assert_rejected(out, BAD_CERTIFICATE, "unable to get local issuer certificate")


def test_public_ca_defaults_to_certifi_roots(leaf: CompleteCert) -> None:
    # No cadata/cafile/capath: aioquic's verify_certificate loads certifi's
    # bundle. A private CA is not in it, so the handshake fails (offline).
    client_conf = client_configuration(Config(trust_mode=TrustMode.PUBLIC_CA), None)
    assert client_conf.verify_mode == ssl.CERT_REQUIRED
    assert client_conf.cadata is None and client_conf.cafile is None
    out = handshake(client_conf, server_conf(leaf))
    assert_rejected(out, BAD_CERTIFICATE, "unable to get local issuer certificate")


# ------------------------------------------------------------------ ALPN, server, misc


def test_alpn_is_set_on_both_sides(self_signed: CompleteCert) -> None:
    assert client_configuration(unverified(), None).alpn_protocols == [ALPN]
    assert server_configuration(unverified(), self_signed).alpn_protocols == [ALPN]
    out = handshake(client_configuration(unverified(), None), server_conf(self_signed))
    assert out.client.tls.alpn_negotiated == ALPN


def test_alpn_mismatch_is_rejected(self_signed: CompleteCert) -> None:
    # A server that speaks another protocol (here h3) refuses us.
    out = handshake(client_configuration(unverified(), None), server_conf(self_signed, ["h3"]))
    assert_rejected(out, NO_APPLICATION_PROTOCOL, "No common ALPN")
    # A client that speaks another protocol is refused by our server.
    foreign = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE)
    out = handshake(foreign, server_conf(self_signed))
    assert_rejected(out, NO_APPLICATION_PROTOCOL)


def test_server_configuration_loads_cert_chain_and_key(ca: CompleteCert) -> None:
    intermediate = certs.create_ca("Intermediate", issuer=ca, now=utc_now())
    leaf2 = certs.issue_certificate(intermediate, "n", now=utc_now())
    conf = server_configuration(unverified(), leaf2, max_data=123_456, connection_id_length=12)
    assert conf.is_client is False
    assert isinstance(conf.certificate, x509.Certificate)
    assert [c.subject for c in conf.certificate_chain] == [
        x509.load_der_x509_certificate(intermediate.cert_der).subject
    ]
    assert conf.private_key is not None
    assert conf.max_data == 123_456 and conf.connection_id_length == 12


def test_server_configuration_rejects_a_mismatched_key(
    self_signed: CompleteCert, other_self_signed: CompleteCert
) -> None:
    mixed = CompleteCert(self_signed.cert_der, other_self_signed.key_der)
    with pytest.raises(CertificateError, match="does not match"):
        server_configuration(unverified(), mixed)
    with pytest.raises(CertificateError):
        server_configuration(unverified(), CompleteCert(b"junk", self_signed.key_der))


def test_idle_timeout_mapping(self_signed: CompleteCert) -> None:
    assert idle_timeout_seconds(30_000) == 30.0
    assert idle_timeout_seconds(0) == IDLE_TIMEOUT_DISABLED_SEC
    assert idle_timeout_seconds(2**62) == IDLE_TIMEOUT_DISABLED_SEC
    conf = server_configuration(Config(idle_timeout_msec=0), self_signed)
    assert conf.idle_timeout == IDLE_TIMEOUT_DISABLED_SEC
    # It fits the max_idle_timeout transport parameter (ms, 62-bit varint).
    assert int(conf.idle_timeout * 1000) < 2**62


def run_idle(out: Outcome, start: float, seconds: float) -> list[QuicEvent]:
    """Let the pair sit idle (only aioquic's own timers fire) for ``seconds``;
    return the client's events meanwhile."""
    now, end, events = start, start + seconds, []
    for _ in range(MAX_ROUNDS):
        for src, dst, addr in (
            (out.client, out.server, CLIENT_ADDR),
            (out.server, out.client, SERVER_ADDR),
        ):
            for data, _ in src.datagrams_to_send(now=now):
                dst.receive_datagram(data, addr, now=now)
        while (event := out.client.next_event()) is not None:
            events.append(event)
        timers = [t for t in (out.client.get_timer(), out.server.get_timer()) if t is not None]
        if not timers or min(timers) > end:
            return events
        now = max(now, min(timers))
        for conn in (out.client, out.server):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now=now)
    raise AssertionError("timers kept firing")


@pytest.mark.parametrize(("idle_msec", "survives"), [(0, True), (2_000, False)])
def test_idle_timeout_zero_really_disables_it(
    self_signed: CompleteCert, idle_msec: int, survives: bool
) -> None:
    config = Config(idle_timeout_msec=idle_msec)
    out = handshake(
        client_configuration(config, node(self_signed)), server_configuration(config, self_signed)
    )
    assert out.completed
    events = run_idle(out, 1000.0, 24 * 3600)  # a silent day
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    if survives:
        assert not terminated
    else:
        assert terminated and terminated[0].reason_phrase == "Idle timeout"


def test_check_pinned_peer_reads_aioquic_private_attribute(self_signed: CompleteCert) -> None:
    """Fails loudly if aioquic renames ``tls._peer_certificate``."""
    out = handshake(client_configuration(unverified(), None), server_conf(self_signed))
    assert out.completed
    tls_context = out.client.tls
    assert hasattr(tls_context, "_peer_certificate"), "aioquic moved the peer certificate"
    assert isinstance(tls_context._peer_certificate, x509.Certificate)
    # Before the handshake there is nothing to compare: fail closed.
    fresh = QuicConnection(configuration=client_configuration(unverified(), None))
    assert check_pinned_peer(fresh, self_signed.cert_der) is not None


# ------------------------------------------------------------------ client certificates


def future(days: float) -> datetime.datetime:
    return datetime.datetime.now(UTC) + datetime.timedelta(days=days)


def with_client_cert(config: Config, cert: CompleteCert) -> QuicConfiguration:
    return client_configuration(config, None, our_cert=cert)


def test_client_configuration_presents_our_certificate(ca: CompleteCert) -> None:
    intermediate = certs.create_ca("Intermediate", issuer=ca, now=utc_now())
    ours = certs.issue_certificate(intermediate, "me", now=utc_now())
    conf = client_configuration(private_ca(ca), None, our_cert=ours)
    assert conf.certificate is not None and conf.private_key is not None
    assert conf.certificate.public_bytes(Encoding.DER) == ours.cert_der
    assert [c.public_bytes(Encoding.DER) for c in conf.certificate_chain] == [intermediate.cert_der]
    mixed = CompleteCert(ours.cert_der, certs.generate_self_signed(now=utc_now()).key_der)
    with pytest.raises(CertificateError, match="does not match"):
        client_configuration(private_ca(ca), None, our_cert=mixed)


def test_server_connection_asks_for_the_client_certificate(
    ca: CompleteCert, leaf: CompleteCert
) -> None:
    client_cert = certs.issue_certificate(ca, "client", now=utc_now())
    out = handshake(
        with_client_cert(private_ca(ca), client_cert), server_conf(leaf), ServerConnection
    )
    assert out.completed
    # Set when aioquic created the TLS context, before it read the ClientHello.
    assert out.server.tls._request_client_certificate is True
    assert check_client_certificate(out.server, private_ca(ca), now=utc_now()) is None
    # A plain aioquic server never asks: the check refuses what it cannot vouch for.
    plain = handshake(with_client_cert(private_ca(ca), client_cert), server_conf(leaf))
    assert plain.completed
    assert plain.server.tls._peer_certificate is None
    for config in (private_ca(ca), unverified()):
        reason = check_client_certificate(plain.server, config, now=utc_now())
        assert reason is not None and "cannot ask" in reason


def test_ca_mode_client_check_needs_a_certificate_of_the_network(
    ca: CompleteCert, other_ca: CompleteCert, leaf: CompleteCert, self_signed: CompleteCert
) -> None:
    anonymous = handshake(
        client_configuration(private_ca(ca), None), server_conf(leaf), ServerConnection
    )
    assert anonymous.completed  # TLS lets a client send an empty Certificate ...
    reason = check_client_certificate(anonymous.server, private_ca(ca), now=utc_now())
    assert reason is not None and "no certificate" in reason  # ... we do not
    # Nor in UNVERIFIED mode: every peer presents one (its key is its id).
    problem = check_client_certificate(anonymous.server, unverified(), now=utc_now())
    assert problem is not None and "every peer must present one" in problem

    for stranger in (certs.issue_certificate(other_ca, "x", now=utc_now()), self_signed):
        out = handshake(
            with_client_cert(private_ca(ca), stranger), server_conf(leaf), ServerConnection
        )
        assert out.completed
        reason = check_client_certificate(out.server, private_ca(ca), now=utc_now())
        assert reason is not None, stranger
        assert "issuer" in reason or "self-signed" in reason, reason
        # UNVERIFIED mode checks the dates only.
        assert check_client_certificate(out.server, unverified(), now=utc_now()) is None


def test_client_chain_includes_the_intermediates_it_sends(
    ca: CompleteCert, leaf: CompleteCert
) -> None:
    intermediate = certs.create_ca("Intermediate", issuer=ca, now=utc_now())
    deep = certs.issue_certificate(intermediate, "deep", now=utc_now())
    out = handshake(with_client_cert(private_ca(ca), deep), server_conf(leaf), ServerConnection)
    assert check_client_certificate(out.server, private_ca(ca), now=utc_now()) is None
    bare = CompleteCert(deep.cert_der, deep.key_der)
    out = handshake(with_client_cert(private_ca(ca), bare), server_conf(leaf), ServerConnection)
    reason = check_client_certificate(out.server, private_ca(ca), now=utc_now())
    assert reason is not None and "unable to get local issuer certificate" in reason


def test_client_check_uses_the_given_time(ca: CompleteCert, leaf: CompleteCert) -> None:
    client_cert = certs.issue_certificate(ca, "client", valid_days=30, now=utc_now())
    out = handshake(
        with_client_cert(private_ca(ca), client_cert), server_conf(leaf), ServerConnection
    )
    assert check_client_certificate(out.server, private_ca(ca), now=utc_now()) is None
    for config in (private_ca(ca), unverified()):
        late = check_client_certificate(out.server, config, now=future(31))
        assert late is not None and "no longer valid" in late
        early = check_client_certificate(out.server, config, now=past(1))
        assert early is not None and "not valid yet" in early


def test_public_ca_client_check_defaults_to_certifi_roots(
    ca: CompleteCert, leaf: CompleteCert
) -> None:
    client_cert = certs.issue_certificate(ca, "client", now=utc_now())
    out = handshake(
        with_client_cert(private_ca(ca), client_cert), server_conf(leaf), ServerConnection
    )
    public = Config(trust_mode=TrustMode.PUBLIC_CA)
    reason = check_client_certificate(out.server, public, now=utc_now())
    assert reason is not None and "unable to get local issuer certificate" in reason
    bundle = Config(trust_mode=TrustMode.PUBLIC_CA, ca_certs_der=(ca.cert_der,))
    assert check_client_certificate(out.server, bundle, now=utc_now()) is None


def test_server_certificate_dates_are_checked_in_unverified_mode(ca: CompleteCert) -> None:
    # CERT_NONE: aioquic checks no dates, so the endpoint's check must.
    for expired in (
        certs.generate_self_signed(not_before=past(10), valid_days=1, now=utc_now()),
        certs.issue_certificate(ca, "old", not_before=past(10), valid_days=1, now=utc_now()),
    ):
        out = handshake(client_configuration(unverified(), None), server_conf(expired))
        assert out.completed
        reason = check_server_certificate(out.client, now=utc_now())
        assert reason is not None and "no longer valid" in reason
    fresh = certs.issue_certificate(ca, "fresh", valid_days=30, now=utc_now())
    out = handshake(client_configuration(unverified(), node(fresh)), server_conf(fresh))
    assert check_server_certificate(out.client, fresh.cert_der, now=utc_now()) is None
    assert "not valid yet" in str(check_server_certificate(out.client, fresh.cert_der, now=past(2)))
    assert "no longer valid" in str(check_server_certificate(out.client, now=future(31)))
    # ... and the pin still applies.
    other = certs.issue_certificate(ca, "other", now=utc_now()).cert_der
    assert "does not match the pinned" in str(
        check_server_certificate(out.client, other, now=utc_now())
    )


def test_peer_certificate_reads_fail_closed(self_signed: CompleteCert, ca: CompleteCert) -> None:
    """Fails loudly if aioquic renames what the checks read, and shows that
    the checks then refuse rather than accept."""
    client_cert = certs.issue_certificate(ca, "client", now=utc_now())
    out = handshake(
        with_client_cert(unverified(), client_cert), server_conf(self_signed), ServerConnection
    )
    assert out.completed
    for context in (out.client.tls, out.server.tls):
        assert isinstance(context._peer_certificate, x509.Certificate)
        assert isinstance(context._peer_certificate_chain, list)
    assert hasattr(out.server.tls, "_request_client_certificate")
    # Not initialized yet (no datagram): nothing readable, refused in every mode.
    fresh = ServerConnection(
        configuration=server_conf(self_signed), original_destination_connection_id=bytes(8)
    )
    for config in (unverified(), private_ca(ca)):
        assert check_client_certificate(fresh, config, now=utc_now()) is not None
    assert (
        check_server_certificate(
            QuicConnection(configuration=client_configuration(unverified(), None)), now=utc_now()
        )
        is not None
    )
    # As if aioquic renamed the attributes: refused, not waved through.
    del out.server.tls._peer_certificate_chain
    assert "internals" in str(check_client_certificate(out.server, unverified(), now=utc_now()))
    del out.client.tls._peer_certificate
    assert "internals" in str(check_server_certificate(out.client, now=utc_now()))
    assert "internals" in str(check_pinned_peer(out.client, self_signed.cert_der))


def test_client_connection_offers_one_key_share(self_signed: CompleteCert) -> None:
    """Our client's ClientHello carries one key share, X25519 (aioquic's makes
    four); the handshake with our server completes in the same round trips,
    without a HelloRetryRequest. Reads aioquic's TLS context: this fails if
    the private names ClientConnection relies on change."""
    conf = client_configuration(unverified(), None, our_cert=self_signed)
    out = handshake(conf, server_conf(self_signed), ServerConnection, ClientConnection)
    assert out.completed
    assert isinstance(out.client, ClientConnection)
    assert out.client.offered_groups == [Group.X25519]
    assert out.client.tls._ec_private_keys == []  # no P-256/P-384 share was made
    assert out.client.tls._x448_private_key is None
    plain = handshake(conf, server_conf(self_signed), ServerConnection)
    assert plain.completed
    assert len(plain.client.tls._supported_groups) == 4
    # Same flights: one share costs no extra round trip.
    assert len(out.client_events) == len(plain.client_events)
