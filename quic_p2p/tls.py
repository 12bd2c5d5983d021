"""aioquic ``QuicConfiguration`` builders for each trust mode, and the pin check.

Which checks happen where (client side; aioquic's server never verifies a
client certificate, so a Node proves who it is by being connected back to):

============  ==========================  ===================  =====================
mode          NodeInfo carries a cert     TLS layer (aioquic)  after the handshake
============  ==========================  ===================  =====================
UNVERIFIED    no                          none (CERT_NONE)     -
UNVERIFIED    yes, self-signed            pinned: it is the    ``check_pinned_peer``
                                          only trust anchor
UNVERIFIED    yes, CA-issued              none (CERT_NONE)     ``check_pinned_peer``
PRIVATE_CA    either                      chain to the         ``check_pinned_peer``
                                          network CA (+ name)  if a cert is carried
PUBLIC_CA     either                      chain to the given   ``check_pinned_peer``
                                          bundle or certifi    if a cert is carried
============  ==========================  ===================  =====================

The endpoint calls :func:`check_pinned_peer` on ``HandshakeCompleted`` whenever
the ``NodeInfo`` it dialled carries a certificate, in every mode, before it
sends or accepts any application data. In UNVERIFIED mode with a self-signed
certificate that check is redundant with the TLS-layer pin, and cheap.

A CA-issued certificate cannot be pinned at the TLS layer: OpenSSL only trusts
a non-self-signed anchor with ``X509_V_FLAG_PARTIAL_CHAIN``, which aioquic does
not set, and we do not know the issuer. Exact DER equality after the handshake
is still a full authentication: aioquic always checks the CertificateVerify
signature against the presented certificate, even with ``CERT_NONE``.

Keep-alive is not a configuration setting in aioquic; the endpoint sends
PINGs (``QuicConnection.send_ping``) every ``Config.keep_alive_interval_msec``.
"""

from __future__ import annotations

import ssl
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .certs import (
    CertificateError,
    fingerprint,
    is_self_signed,
    load_signing_key,
    parse_certificate,
    to_pem,
)
from .config import CompleteCert, Config, TrustMode
from .peer import NodeInfo

__all__ = [
    "ALPN",
    "DEFAULT_MAX_DATA",
    "DEFAULT_MAX_STREAM_DATA",
    "IDLE_TIMEOUT_DISABLED_SEC",
    "check_pinned_peer",
    "client_configuration",
    "idle_timeout_seconds",
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
    leaf = parse_certificate(our_cert.cert_der)
    key = load_signing_key(our_cert.key_der)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise CertificateError("our private key does not match our certificate")
    configuration = _base(config, False, max_data, max_stream_data, options)
    configuration.certificate = leaf
    configuration.certificate_chain = [parse_certificate(der) for der in our_cert.chain_der]
    configuration.private_key = key
    return configuration


def client_configuration(
    config: Config,
    peer: NodeInfo | None,
    *,
    max_data: int = DEFAULT_MAX_DATA,
    max_stream_data: int = DEFAULT_MAX_STREAM_DATA,
    **options: Any,
) -> QuicConfiguration:
    """The configuration of an outbound (client-side) connection to ``peer``.

    Sets what aioquic verifies during the handshake for ``config.trust_mode``
    (see the module docstring); ``peer=None`` or an empty ``peer_cert_der``
    means no pin. Raises ``CertificateError`` before anything is sent if the
    pinned certificate or a CA certificate is not a valid DER certificate.
    """
    configuration = _base(config, True, max_data, max_stream_data, options)
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


def check_pinned_peer(connection: QuicConnection, expected_der: bytes) -> str | None:
    """After ``HandshakeCompleted`` on a client connection: ``None`` if the
    server presented exactly ``expected_der``, else why not (for the close
    reason / ``ConnectionFailure``).

    aioquic has no public accessor for the peer certificate, so this reads the
    private ``connection.tls._peer_certificate``; this function is the only
    place that does. If aioquic renames it, the check fails closed (returns a
    reason) and ``tests/test_tls.py`` fails loudly.
    """
    tls = getattr(connection, "tls", None)
    if tls is None or not hasattr(tls, "_peer_certificate"):
        return "cannot read the peer certificate (aioquic internals changed?)"
    presented = tls._peer_certificate
    if presented is None:
        return "the peer presented no certificate"
    if not isinstance(presented, x509.Certificate):
        return "cannot read the peer certificate (aioquic internals changed?)"
    presented_der = presented.public_bytes(serialization.Encoding.DER)
    if presented_der == expected_der:
        return None
    return (
        "peer certificate does not match the pinned one "
        f"(presented sha256 {fingerprint(presented_der).hex()[:16]}..., "
        f"expected {fingerprint(expected_der).hex()[:16]}...)"
    )


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
        **options,
    )


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der
