"""aioquic ``QuicConfiguration`` builders for each trust mode, and the
certificate checks the endpoint runs when a handshake completes.

Which checks happen where. Outgoing connections (we are the TLS client, the
peer presents its server certificate):

============  ==========================  ===================  ===========================
mode          NodeInfo carries a cert     TLS layer (aioquic)  after the handshake
============  ==========================  ===================  ===========================
UNVERIFIED    no                          none (CERT_NONE)     dates
UNVERIFIED    yes, self-signed            pinned: it is the    dates, ``check_pinned_peer``
                                          only trust anchor
UNVERIFIED    yes, CA-issued              none (CERT_NONE)     dates, ``check_pinned_peer``
PRIVATE_CA    either                      chain to the         dates, ``check_pinned_peer``
                                          network CA (+ name)  if a cert is carried
PUBLIC_CA     either                      chain to the given   dates, ``check_pinned_peer``
                                          bundle or certifi    if a cert is carried
============  ==========================  ===================  ===========================

("dates" is :func:`check_server_certificate`; aioquic already checked them
wherever it verified a chain.) We present our own certificate when asked.

Incoming connections (we are the TLS server, a Node; :class:`ServerConnection`
asks every client for its certificate from the first datagram on):

============  ==============================  =====================================
mode          TLS layer (aioquic)             ``check_client_certificate``
============  ==============================  =====================================
UNVERIFIED    CertificateVerify               required (its key is the peer's id);
                                              dates
PRIVATE_CA    CertificateVerify               required; dates; chain to the network
                                              CA with the intermediates it sent
PUBLIC_CA     CertificateVerify               required; dates; chain to the given
                                              bundle or certifi
============  ==============================  =====================================

Every peer, Clients too, presents a certificate in every mode: the key in it
is the peer's identity (``PeerId``), known when the handshake completes
(:func:`peer_identity`), before any event names the peer.

The endpoint runs these on ``HandshakeCompleted``, before it sends or accepts
any application data; a refused incoming peer is closed with
``ErrorCode.CERTIFICATE_REFUSED`` before its role handshake is read. A Node
dialling in is then also dialled back, and that connection pins the
certificate it claimed (the reverse-connectivity proof).

A CA-issued certificate cannot be pinned at the TLS layer: OpenSSL only trusts
a non-self-signed anchor with ``X509_V_FLAG_PARTIAL_CHAIN``, which aioquic does
not set, and we do not know the issuer. Exact DER equality after the handshake
is still a full authentication: aioquic always checks the CertificateVerify
signature against the presented certificate, even with ``CERT_NONE``.

Keep-alive is not a configuration setting in aioquic; the endpoint sends
PINGs (``QuicConnection.send_ping``) every ``Config.keep_alive_interval_msec``.
"""

from __future__ import annotations

import datetime
import functools
import ssl
from collections.abc import Sequence
from typing import Any

import certifi
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import Group
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from OpenSSL import crypto

from ..peer import NodeInfo, PeerId
from .certs import (
    CertificateError,
    fingerprint,
    is_self_signed,
    load_signing_key,
    parse_certificate,
    to_pem,
)
from .config import CompleteCert, Config, TrustMode
from .flow import PeerConnection

__all__ = [
    "ALPN",
    "DEFAULT_MAX_DATA",
    "DEFAULT_MAX_STREAM_DATA",
    "IDLE_TIMEOUT_DISABLED_SEC",
    "ServerConnection",
    "chain_problem",
    "check_client_certificate",
    "check_pinned_peer",
    "check_server_certificate",
    "check_validity",
    "client_configuration",
    "idle_timeout_seconds",
    "peer_identity",
    "server_configuration",
]

#: Our ALPN protocol id. Both sides offer only this one, so a QUIC peer that
#: speaks something else fails the handshake with no_application_protocol
#: (TLS alert 120, QUIC error 0x178) instead of misreading our streams.
ALPN = "quic-p2p/1"

#: What "idle timeout disabled" (``idle_timeout_msec=0``) becomes. aioquic has
#: no "disabled": it takes ``min(ours, peer's)`` and then ``max(that, 3 * PTO)``
#: (quic/connection.py ``_idle_timeout``), so 0 would close an idle
#: connection after about a second, and it also treats a peer's advertised 0
#: as 0 rather than "disabled" (RFC 9000 §10.1). Ten years is "never" in
#: practice, fits the transport parameter (milliseconds, a 62-bit varint) and
#: keeps event-loop timer arithmetic finite. Larger configured values are
#: capped to it. The peer's own (smaller) timeout still applies.
IDLE_TIMEOUT_DISABLED_SEC = 10 * 365 * 24 * 3600.0

#: Flow-control windows. aioquic's defaults are 1 MiB, which caps one
#: connection to 1 MiB per round trip (10 MiB/s at 100 ms). The windows bound
#: what a peer may have in flight to us, not memory we pre-allocate: aioquic
#: hands received data to the application at once and slides the window as
#: it goes.
DEFAULT_MAX_DATA = 16 * 1024 * 1024
DEFAULT_MAX_STREAM_DATA = 4 * 1024 * 1024
#: The largest DATAGRAM frame (RFC 9221) we accept; advertising it is what
#: lets a peer send datagrams at all. A datagram must also fit one packet.
MAX_DATAGRAM_FRAME_SIZE = 65535


def idle_timeout_seconds(idle_timeout_msec: int) -> float:
    """``Config.idle_timeout_msec`` as aioquic's ``idle_timeout`` (seconds);
    0 (disabled) becomes :data:`IDLE_TIMEOUT_DISABLED_SEC`."""
    if idle_timeout_msec <= 0:
        return IDLE_TIMEOUT_DISABLED_SEC
    return min(idle_timeout_msec / 1000.0, IDLE_TIMEOUT_DISABLED_SEC)


def server_configuration(
    config: Config,
    our_cert: CompleteCert,
    *,
    max_data: int = DEFAULT_MAX_DATA,
    max_stream_data: int = DEFAULT_MAX_STREAM_DATA,
    **options: Any,
) -> QuicConfiguration:
    """The configuration of an inbound (server-side) connection.

    ``our_cert`` (certificate, chain, key) is what we present. ``options`` go
    to ``QuicConfiguration`` as they are (e.g. ``connection_id_length``,
    ``max_datagram_size``, ``quic_logger``). Raises ``CertificateError`` if
    ``our_cert`` is unusable (bad DER, key not matching, unsupported key type).
    """
    configuration = _base(config, False, max_data, max_stream_data, options)
    _present(configuration, our_cert)
    return configuration


def client_configuration(
    config: Config,
    peer: NodeInfo | None,
    *,
    our_cert: CompleteCert | None = None,
    max_data: int = DEFAULT_MAX_DATA,
    max_stream_data: int = DEFAULT_MAX_STREAM_DATA,
    **options: Any,
) -> QuicConfiguration:
    """The configuration of an outbound (client-side) connection to ``peer``.

    Sets what aioquic verifies during the handshake for ``config.trust_mode``
    (see the module docstring); ``peer=None`` or an empty ``peer_cert_der``
    means no pin. ``our_cert`` is what we present when the server asks for a
    client certificate (ours always do, see :class:`ServerConnection`); aioquic
    sends nothing it was not asked for. Raises ``CertificateError`` before
    anything is sent if the pinned certificate or a CA certificate is not a
    valid DER certificate, or ``our_cert`` is unusable.
    """
    configuration = _base(config, True, max_data, max_stream_data, options)
    if our_cert is not None:
        _present(configuration, our_cert)
    pinned = peer.peer_cert_der if peer is not None else b""
    pinned_cert = parse_certificate(pinned) if pinned else None

    mode = config.trust_mode
    if mode is TrustMode.UNVERIFIED:
        # No hostname: in this mode certificates carry no agreed name.
        configuration.server_name = None
        if pinned_cert is not None and is_self_signed(pinned_cert):
            configuration.verify_mode = ssl.CERT_REQUIRED
            configuration.cadata = to_pem(pinned)
        else:
            configuration.verify_mode = ssl.CERT_NONE
    elif mode in (TrustMode.PRIVATE_CA, TrustMode.PUBLIC_CA):
        configuration.verify_mode = ssl.CERT_REQUIRED
        configuration.server_name = config.tls_server_name
        if config.ca_certs_der:
            configuration.cadata = b"".join(to_pem(der) for der in config.ca_certs_der)
        # else (PUBLIC_CA only; Config requires a CA for PRIVATE_CA): with no
        # cadata/cafile/capath, aioquic's verify_certificate loads certifi's
        # public roots itself.
    else:  # pragma: no cover - TrustMode is closed; Config checks the type
        raise CertificateError(f"unknown trust mode {mode!r}")
    return configuration


class ClientConnection(PeerConnection):
    """The client side of an outgoing connection: a ``QuicConnection`` whose
    ClientHello offers one key share, X25519.

    aioquic's client makes a key share for every group it supports (P-256,
    P-384, X25519, X448: about 0.5 ms of key generation per ClientHello, our
    Retry included), and the server then computes the first it supports,
    P-256. One share suffices between our peers: aioquic's server supports
    X25519, so the handshake takes no extra round trip. The groups are the
    TLS context's private ``_supported_groups``, made in ``_initialize``
    (run again after a Retry); if aioquic renames it or X25519 is missing,
    the client offers aioquic's default groups, slower but correct, and
    ``tests/test_tls.py`` fails.
    """

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        context = getattr(self, "tls", None)
        groups = getattr(context, "_supported_groups", None)
        if isinstance(groups, list) and Group.X25519 in groups:
            context._supported_groups = [Group.X25519]  # type: ignore[union-attr]

    @property
    def offered_groups(self) -> list[int]:
        """The groups the ClientHello offers key shares for (empty before
        ``connect``)."""
        return list(getattr(getattr(self, "tls", None), "_supported_groups", None) or [])


class ServerConnection(PeerConnection):
    """The server side of an incoming connection: a ``QuicConnection`` that
    asks the client for its certificate.

    aioquic's server never sends a CertificateRequest unless its TLS context's
    private ``_request_client_certificate`` is set, and that context only
    exists once the first Initial arrives (``QuicConnection._initialize``,
    called from ``receive_datagram`` right before the ClientHello is read).
    Setting the flag later, after that datagram, is how py-libp2p's two
    authentication bypasses (#1340, #1345) happened; hooking ``_initialize``
    sets it before any TLS message is processed, on every connection.

    aioquic then checks the client's CertificateVerify signature (a client
    without the key of the certificate it presents fails the handshake) but
    never its chain or dates: :func:`check_client_certificate` does, on
    ``HandshakeCompleted``. If aioquic renames either private name, no
    certificate is requested (``client_auth_requested`` stays False) and that
    check refuses every client, in every mode: fail closed, and
    ``tests/test_tls.py`` fails loudly.
    """

    #: True once the TLS context was told to ask for the client certificate.
    client_auth_requested: bool = False

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        context = getattr(self, "tls", None)
        if context is not None and hasattr(context, "_request_client_certificate"):
            context._request_client_certificate = True
            self.client_auth_requested = True


def check_validity(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    """``None`` if ``now`` (the current time, timezone-aware, from the caller:
    this module reads no clock) lies within the certificate's validity period,
    else why not. aioquic only checks dates when it verifies a chain
    (``CERT_REQUIRED``); UNVERIFIED mode runs ``CERT_NONE``, and its server
    side never checks a client's dates, so the endpoint calls this on every
    connection."""
    when = _utc(now)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if when < start:
        return f"certificate is not valid yet (valid from {start:%Y-%m-%d %H:%M} UTC)"
    if when > end:
        return f"certificate is no longer valid (expired {end:%Y-%m-%d %H:%M} UTC)"
    return None


def check_server_certificate(
    connection: QuicConnection, expected_der: bytes = b"", *, now: datetime.datetime
) -> str | None:
    """After ``HandshakeCompleted`` on one of our outgoing connections, in
    every mode: ``None`` if the server's certificate is within its validity
    period at ``now`` and, when ``expected_der`` is given (the pin), is exactly
    that certificate; else why not (the close reason / ``ConnectionFailure``).
    In the CA modes and for a pinned self-signed certificate aioquic already
    checked the dates; checking again costs a comparison."""
    presented = _presented(connection)
    if isinstance(presented, str):
        return presented
    problem = check_validity(presented, now)
    if problem is not None:
        return f"peer {problem}"
    return _pin_problem(presented, expected_der) if expected_der else None


def check_client_certificate(
    connection: QuicConnection, config: Config, *, now: datetime.datetime
) -> str | None:
    """After ``HandshakeCompleted`` on an incoming :class:`ServerConnection`,
    before any of the peer's data is processed: ``None`` if the client may
    stay, else why it may not (sent to it as the close reason).

    - CA modes: it must have presented a certificate that, with the
      intermediates it sent, chains to ``config.ca_certs_der`` (PUBLIC_CA with
      none given: certifi's roots, as aioquic does for servers) and is valid
      at ``now``. No name is checked: a client has no agreed address.
    - UNVERIFIED: it must have presented one (its key is its id), valid at
      ``now``.

    The chain is verified with pyOpenSSL's ``X509Store``, the very check
    aioquic's ``verify_certificate`` applies to servers, so a certificate is
    accepted in one direction exactly when it is in the other.
    (``cryptography.x509.verification``'s client verifier, the alternative,
    rejects leaves without a subjectAltName, which ``certs.issue_certificate``
    and ``quic-p2p certs issue`` make when given no names.)
    """
    if not getattr(connection, "client_auth_requested", False):
        return "cannot ask for the peer certificate (aioquic internals changed?)"
    try:
        presented, chain = _peer_certificates(connection)
    except _Unreadable as exc:
        return str(exc)
    ca_mode = config.trust_mode is not TrustMode.UNVERIFIED
    if presented is None:
        if ca_mode:
            return "no certificate presented; this network requires one issued by its CA"
        return "no certificate presented; every peer must present one (its key is its id)"
    problem = check_validity(presented, now)
    if problem is not None:
        return problem
    if ca_mode:
        return chain_problem(presented, chain, config.ca_certs_der, _utc(now))
    return None


def check_pinned_peer(connection: QuicConnection, expected_der: bytes) -> str | None:
    """After ``HandshakeCompleted`` on a client connection: ``None`` if the
    server presented exactly ``expected_der``, else why not (for the close
    reason / ``ConnectionFailure``). Dates: see :func:`check_server_certificate`."""
    presented = _presented(connection)
    if isinstance(presented, str):
        return presented
    return _pin_problem(presented, expected_der)


def peer_identity(connection: QuicConnection) -> tuple[PeerId, bytes] | str:
    """After ``HandshakeCompleted``: the id and certificate (DER) the peer
    proved (aioquic checked its CertificateVerify signature with that key),
    or why there is none."""
    presented = _presented(connection)
    if isinstance(presented, str):
        return presented
    der = presented.public_bytes(serialization.Encoding.DER)
    return PeerId.from_public_key(presented.public_key()), der


def _presented(connection: QuicConnection) -> x509.Certificate | str:
    """The server or client certificate the peer presented, or why there is none."""
    try:
        presented, _chain = _peer_certificates(connection)
    except _Unreadable as exc:
        return str(exc)
    return "the peer presented no certificate" if presented is None else presented


class _Unreadable(Exception):
    """aioquic's private peer-certificate attributes are not what we expect."""


_UNREADABLE = "cannot read the peer certificate (aioquic internals changed?)"


def _peer_certificates(
    connection: QuicConnection,
) -> tuple[x509.Certificate | None, list[x509.Certificate]]:
    """The certificate the peer presented (None: none) and the further
    certificates it sent. aioquic has no public accessor, so this reads the
    private ``tls._peer_certificate`` and ``tls._peer_certificate_chain``; it
    is the only place that does. Anything unexpected (no TLS context yet,
    renamed or retyped attributes) raises ``_Unreadable``, and every check
    turns that into a refusal."""
    context = getattr(connection, "tls", None)
    if context is None:
        raise _Unreadable(_UNREADABLE)
    presented = getattr(context, "_peer_certificate", _MISSING)
    chain = getattr(context, "_peer_certificate_chain", _MISSING)
    if presented is _MISSING or chain is _MISSING:
        raise _Unreadable(_UNREADABLE)
    if presented is not None and not isinstance(presented, x509.Certificate):
        raise _Unreadable(_UNREADABLE)
    if not isinstance(chain, list) or not all(isinstance(c, x509.Certificate) for c in chain):
        raise _Unreadable(_UNREADABLE)
    return presented, list(chain)


_MISSING = object()


def _pin_problem(presented: x509.Certificate, expected_der: bytes) -> str | None:
    presented_der = presented.public_bytes(serialization.Encoding.DER)
    if presented_der == expected_der:
        return None
    return (
        "peer certificate does not match the pinned one "
        f"(presented sha256 {fingerprint(presented_der).hex()[:16]}..., "
        f"expected {fingerprint(expected_der).hex()[:16]}...)"
    )


def chain_problem(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    ca_certs_der: Sequence[bytes],
    now: datetime.datetime,
) -> str | None:
    """Why ``leaf`` (with the intermediates ``chain``) does not chain to the
    network's CAs (``ca_certs_der``; empty: certifi's bundle) at ``now``, or
    None: the check a CA network's peers apply to us (``quic-p2p doctor``
    runs it on our own certificate)."""
    # A fresh store per check: set_time mutates it, and certifi's bundle
    # loads in a few milliseconds (what aioquic spends per outgoing connection).
    store = crypto.X509Store()
    if ca_certs_der:
        for der in ca_certs_der:
            store.add_cert(crypto.X509.from_cryptography(parse_certificate(der)))
    else:  # PUBLIC_CA without a bundle (Config requires one for PRIVATE_CA)
        store.load_locations(certifi.where())
    store.set_time(now)
    context = crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(c) for c in chain],
    )
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as exc:
        return f"certificate not issued by this network's CA ({exc})"
    return None


def _utc(now: datetime.datetime) -> datetime.datetime:
    if not isinstance(now, datetime.datetime):
        raise TypeError(f"now must be a datetime (the current time), got {type(now).__name__}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _base(
    config: Config,
    is_client: bool,
    max_data: int,
    max_stream_data: int,
    options: dict[str, Any],
) -> QuicConfiguration:
    # Validate here: a bad CA certificate must fail when the configuration is
    # built, not deep inside a handshake as a confusing bad_certificate alert.
    for der in config.ca_certs_der:
        parse_certificate(der)
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout_seconds(config.idle_timeout_msec),
        max_data=max_data,
        max_stream_data=max_stream_data,
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE,
        **options,
    )


def _present(configuration: QuicConfiguration, our_cert: CompleteCert) -> None:
    leaf, chain, key = _credentials(our_cert)
    configuration.certificate = leaf
    configuration.certificate_chain = list(chain)
    configuration.private_key = key


@functools.lru_cache(maxsize=16)
def _credentials(
    our_cert: CompleteCert,
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], CertificateIssuerPrivateKeyTypes]:
    # Cached: every outgoing connection presents our certificate now, and
    # parsing a key per dial is wasted work (the objects are immutable).
    leaf = parse_certificate(our_cert.cert_der)
    key = load_signing_key(our_cert.key_der)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise CertificateError("our private key does not match our certificate")
    return leaf, tuple(parse_certificate(der) for der in our_cert.chain_der), key


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
