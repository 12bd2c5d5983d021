"""Certificate helpers: create, load, convert and describe certificates.

Everything returns or takes DER bytes (certificates) and PKCS#8 DER (keys), the
form :class:`~quic_p2p.proto.config.CompleteCert` and :class:`~quic_p2p.peer.NodeInfo`
carry. Keys we create are ECDSA P-256 with SHA-256 signatures: the smallest
certificates, and the one curve every TLS 1.3 stack (aioquic included) signs with.

Bad input never leaks a raw ``cryptography`` exception: it raises
:class:`CertificateError` with a one-line message.

Sans-IO: this module reads no clock and touches no file. The creation
functions take the current time (``now=``) from their caller;
:mod:`quic_p2p.certfiles` has the same three reading the wall clock, and the
key and certificate file writers.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import QuicP2pError
from .config import CompleteCert

__all__ = [
    "SELF_SIGNED_DNS_NAME",
    "CertificateDescription",
    "CertificateError",
    "create_ca",
    "describe_certificate",
    "fingerprint",
    "generate_self_signed",
    "is_self_signed",
    "issue_certificate",
    "key_to_pem",
    "load_certificate",
    "load_certificates",
    "load_complete_cert",
    "load_private_key",
    "load_signing_key",
    "parse_certificate",
    "to_pem",
]

#: SAN of the self-signed certificates we generate. Nobody checks it (UNVERIFIED
#: mode pins the certificate itself and sends no server name), but a SAN is
#: expected by TLS tooling; ``.invalid`` (RFC 6761) can never name a real host.
SELF_SIGNED_DNS_NAME = "quic-p2p.invalid"

#: ``not_before`` is set this far in the past by default, so a peer whose clock
#: runs a little behind ours does not reject a certificate made a second ago
#: (aioquic rejects ``now < not_valid_before`` with certificate_expired).
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)

_PEM_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_CERT_END = b"-----END CERTIFICATE-----"


class CertificateError(QuicP2pError, ValueError):
    """A certificate or key could not be created, loaded or used."""


class CertificateDescription(TypedDict):
    """What ``describe_certificate`` reports (JSON-ready values)."""

    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    dns_names: list[str]
    ip_addresses: list[str]
    sha256: str
    is_ca: bool
    self_signed: bool
    key_type: str


# --------------------------------------------------------------------------- creation


def generate_self_signed(
    common_name: str = "quic-p2p node",
    *,
    now: datetime.datetime,
    valid_days: int = 3650,
    not_before: datetime.datetime | None = None,
    dns_names: Sequence[str] = (SELF_SIGNED_DNS_NAME,),
    key_der: bytes | None = None,
) -> CompleteCert:
    """A self-signed end-entity certificate for a fresh key, or for ``key_der``.

    The certificate is its own trust anchor: a peer that pins it (passes it as
    the only CA) accepts it, and it cannot issue other certificates
    (``CA:FALSE``), so pinning it trusts this one certificate only.

    ``now`` (timezone-aware) is the current time: the certificate is valid from
    :data:`CLOCK_SKEW_ALLOWANCE` before it, for ``valid_days`` after it; an
    explicit ``not_before`` is the start instead (``valid_days`` from there).
    ``quic_p2p.certfiles.generate_self_signed`` passes the wall clock.

    ``key_der`` (PKCS#8 DER, as in ``CompleteCert.key_der``; any form
    :func:`load_private_key` reads is accepted): the key to certify instead of
    a fresh ECDSA P-256 one, which must be a type TLS 1.3 can sign with. A
    renewed certificate for the same key keeps the peer's id
    (:meth:`quic_p2p.peer.PeerId.from_certificate`); the returned ``key_der``
    is the key as PKCS#8 DER.
    """
    key: CertificateIssuerPrivateKeyTypes
    if key_der is None:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = _tls_key(_load_key_object(_as_bytes(key_der, "key_der"), None))
    name = _name(common_name)
    start, end = _validity(now, not_before, valid_days)
    builder = _end_entity(name, name, key, start, end)
    builder = _with_san(builder, dns_names, ())
    cert = _sign(builder, key)
    return _complete(cert, key, ())


def create_ca(
    common_name: str,
    *,
    now: datetime.datetime,
    valid_days: int = 3650,
    not_before: datetime.datetime | None = None,
    issuer: CompleteCert | None = None,
) -> CompleteCert:
    """A certificate authority: a root (self-signed) or, given ``issuer``, an
    intermediate CA signed by it (its ``chain_der`` then leads to the root's child).
    ``now``, ``valid_days``, ``not_before``: as :func:`generate_self_signed`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    start, end = _validity(now, not_before, valid_days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is None:
        cert = _sign(builder.issuer_name(name), key)
        return _complete(cert, key, ())
    issuer_cert, issuer_key = _issuer_parts(issuer)
    builder = builder.issuer_name(issuer_cert.subject).add_extension(
        _aki(issuer_cert), critical=False
    )
    cert = _sign(builder, issuer_key)
    return _complete(cert, key, _chain_below(issuer, issuer_cert))


def issue_certificate(
    ca: CompleteCert,
    common_name: str,
    *,
    now: datetime.datetime,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    valid_days: int = 825,
    not_before: datetime.datetime | None = None,
) -> CompleteCert:
    """A fresh key and an end-entity certificate for it, signed by ``ca``.

    Valid for both TLS server and client use (a Node is both). ``chain_der``
    holds the CA certificates a peer needs besides its trust anchor: empty when
    ``ca`` is a root, the intermediate(s) otherwise. ``now``, ``valid_days``,
    ``not_before``: as :func:`generate_self_signed`.
    """
    ca_cert, ca_key = _issuer_parts(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(now, not_before, valid_days)
    builder = _end_entity(_name(common_name), ca_cert.subject, key, start, end).add_extension(
        _aki(ca_cert), critical=False
    )
    builder = _with_san(builder, dns_names, ip_addresses)
    cert = _sign(builder, ca_key)
    return _complete(cert, key, _chain_below(ca, ca_cert))


# --------------------------------------------------------------------------- loading


def parse_certificate(der: bytes) -> x509.Certificate:
    """DER → ``x509.Certificate``; anything else raises ``CertificateError``."""
    if not isinstance(der, (bytes, bytearray, memoryview)) or not der:
        raise CertificateError("certificate is empty")
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except ValueError:
        raise CertificateError("not a valid DER X.509 certificate") from None


def load_certificates(data: bytes) -> list[bytes]:
    """Every certificate in ``data`` (a PEM bundle, or one DER certificate), as DER.

    Non-certificate PEM blocks (e.g. a private key in the same file) are skipped.
    """
    data = _as_bytes(data, "certificate data")
    if _PEM_CERT_BEGIN in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise CertificateError("PEM data holds a malformed certificate") from None
        return [c.public_bytes(serialization.Encoding.DER) for c in certs]
    if data.lstrip().startswith(b"-----BEGIN"):
        raise CertificateError("PEM data holds no CERTIFICATE block")
    return [parse_certificate(data).public_bytes(serialization.Encoding.DER)]


def load_certificate(data: bytes) -> bytes:
    """One certificate, PEM or DER, as DER (the first one of a PEM bundle)."""
    return load_certificates(data)[0]


def load_private_key(data: bytes, password: bytes | None = None) -> bytes:
    """A private key (PEM or DER; PKCS#8, PKCS#1, SEC1, OpenSSH...), optionally
    encrypted, re-encoded as unencrypted PKCS#8 DER."""
    key = _load_key_object(_as_bytes(data, "key data"), password)
    return _pkcs8(key)


def load_complete_cert(
    cert_data: bytes, key_data: bytes, password: bytes | None = None
) -> CompleteCert:
    """Our certificate and key from files' contents (PEM or DER).

    The first certificate in ``cert_data`` is ours; further PEM certificates
    form ``chain_der``. The key must match the certificate and be a type aioquic
    can sign TLS 1.3 handshakes with (ECDSA P-256/P-384, RSA, Ed25519, Ed448).
    """
    certs = load_certificates(cert_data)
    key = _load_key_object(_as_bytes(key_data, "key data"), password)
    leaf = parse_certificate(certs[0])
    _check_key_matches(leaf, key)
    return CompleteCert(cert_der=certs[0], key_der=_pkcs8(key), chain_der=tuple(certs[1:]))


def load_signing_key(key_der: bytes) -> CertificateIssuerPrivateKeyTypes:
    """PKCS#8 DER (as in ``CompleteCert.key_der``) → a key aioquic can sign with."""
    return _tls_key(_load_key_object(_as_bytes(key_der, "key data"), None))


# --------------------------------------------------------------------------- output


def to_pem(cert_der: bytes) -> bytes:
    """DER certificate → PEM."""
    return parse_certificate(cert_der).public_bytes(serialization.Encoding.PEM)


def key_to_pem(key_der: bytes, password: bytes | None = None) -> bytes:
    """PKCS#8 DER key → PKCS#8 PEM, encrypted with ``password`` if given."""
    key = _load_key_object(_as_bytes(key_der, "key data"), None)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def fingerprint(der: bytes) -> bytes:
    """SHA-256 of the DER encoding (what ``openssl x509 -fingerprint -sha256`` shows)."""
    return hashlib.sha256(der).digest()


def describe_certificate(der: bytes) -> CertificateDescription:
    """Human-facing summary of a DER certificate (for ``quic-p2p certs inspect``)."""
    cert = parse_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    except ValueError as exc:  # extensions are parsed lazily
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "dns_names": dns,
        "ip_addresses": ips,
        "sha256": fingerprint(bytes(der)).hex(),
        "is_ca": _is_ca(cert),
        "self_signed": is_self_signed(cert),
        "key_type": _key_type(cert),
    }


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# --------------------------------------------------------------------------- internals


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CertificateError(f"{what} must be bytes, got {type(data).__name__}")
    if not data:
        raise CertificateError(f"{what} is empty")
    return bytes(data)


def _load_key_object(data: bytes, password: bytes | None) -> PrivateKeyTypes:
    is_pem = data.lstrip().startswith(b"-----BEGIN")
    is_ssh = b"-----BEGIN OPENSSH PRIVATE KEY-----" in data
    try:
        if is_ssh:
            return serialization.load_ssh_private_key(data, password)
        if is_pem:
            return serialization.load_pem_private_key(data, password)
        return serialization.load_der_private_key(data, password)
    except TypeError as exc:
        # cryptography raises TypeError for "password given but key not
        # encrypted" and the reverse.
        msg = str(exc).lower()
        if "not encrypted" in msg:
            raise CertificateError("private key is not encrypted; no password needed") from None
        raise CertificateError("private key is encrypted; a password is needed") from None
    except ValueError as exc:
        if password is not None and "password" in str(exc).lower():
            raise CertificateError("wrong password for the private key") from None
        if password is not None and is_pem and b"ENCRYPTED" in data:
            raise CertificateError("wrong password for the private key") from None
        raise CertificateError("not a valid private key (PEM or DER)") from None
    except UnsupportedAlgorithm:
        raise CertificateError("private key uses an unsupported algorithm") from None


def _pkcs8(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _tls_key(key: PrivateKeyTypes) -> CertificateIssuerPrivateKeyTypes:
    # The key types aioquic's server can sign a CertificateVerify with
    # (tls.Context._signature_algorithms_for_private_key); anything else
    # would fail every handshake with "No supported signature algorithm".
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1)):
            raise CertificateError(
                f"EC curve {key.curve.name} is not usable for TLS 1.3 in aioquic "
                "(use secp256r1 or secp384r1)"
            )
        return key
    if isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return key
    raise CertificateError(f"{type(key).__name__} keys cannot sign TLS 1.3 handshakes")


def _check_key_matches(
    cert: x509.Certificate, key: PrivateKeyTypes
) -> CertificateIssuerPrivateKeyTypes:
    signing_key = _tls_key(key)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        cert_pub = cert.public_key().public_bytes(*spki)
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("certificate has an unsupported public key") from None
    if key.public_key().public_bytes(*spki) != cert_pub:
        raise CertificateError("private key does not match the certificate")
    return signing_key


def _name(common_name: str) -> x509.Name:
    if not isinstance(common_name, str) or not common_name:
        raise CertificateError("common name must be a non-empty string")
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    except ValueError as exc:  # e.g. longer than 64 characters
        raise CertificateError(f"invalid common name: {exc}") from None


def _validity(
    now: datetime.datetime, not_before: datetime.datetime | None, valid_days: int
) -> tuple[datetime.datetime, datetime.datetime]:
    if not isinstance(valid_days, int) or isinstance(valid_days, bool) or valid_days < 1:
        raise CertificateError(f"valid_days must be a positive integer, got {valid_days!r}")
    if not isinstance(now, datetime.datetime) or now.tzinfo is None:
        raise CertificateError("now must be a timezone-aware datetime")
    if not_before is None:
        return now - CLOCK_SKEW_ALLOWANCE, now + datetime.timedelta(days=valid_days)
    if not_before.tzinfo is None:
        raise CertificateError("not_before must be timezone-aware")
    return not_before, not_before + datetime.timedelta(days=valid_days)


def _end_entity_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _end_entity(
    subject: x509.Name,
    issuer: x509.Name,
    key: CertificateIssuerPrivateKeyTypes,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    """A leaf certificate's common part: not a CA, signs TLS handshakes as
    server and client, its key identified."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_end_entity_key_usage(), critical=True)
        .add_extension(_server_client_eku(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )


def _server_client_eku() -> x509.ExtendedKeyUsage:
    return x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def _with_san(
    builder: x509.CertificateBuilder, dns_names: Sequence[str], ip_addresses: Sequence[str]
) -> x509.CertificateBuilder:
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise CertificateError("dns_names and ip_addresses must be sequences of strings")
    entries: list[x509.GeneralName] = []
    for dns in dns_names:
        try:
            entries.append(x509.DNSName(dns))
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"invalid DNS name {dns!r}: {exc}") from None
    for ip in ip_addresses:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise CertificateError(f"invalid IP address {ip!r}") from None
    if not entries:
        return builder
    return builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)


def _aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_cert.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issuer_parts(
    ca: CompleteCert,
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    if not isinstance(ca, CompleteCert):
        raise CertificateError("the issuing CA must be a CompleteCert")
    cert = parse_certificate(ca.cert_der)
    key = _check_key_matches(cert, _load_key_object(ca.key_der, None))
    if not _is_ca(cert):
        raise CertificateError("the issuing certificate is not a CA (basicConstraints CA:FALSE)")
    return cert, key


def _chain_below(ca: CompleteCert, ca_cert: x509.Certificate) -> tuple[bytes, ...]:
    # A root is the peer's trust anchor and need not be sent; an intermediate
    # (and whatever leads from it towards the root) must be.
    if is_self_signed(ca_cert):
        return ()
    return (ca.cert_der, *ca.chain_der)


def _sign(
    builder: x509.CertificateBuilder, key: CertificateIssuerPrivateKeyTypes
) -> x509.Certificate:
    # Ed25519/Ed448 sign without a separate hash; everything else uses SHA-256.
    algorithm = (
        None
        if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        else hashes.SHA256()
    )
    try:
        return builder.sign(key, algorithm)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot sign the certificate: {exc}") from None


def _complete(
    cert: x509.Certificate, key: PrivateKeyTypes, chain: tuple[bytes, ...]
) -> CompleteCert:
    return CompleteCert(
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        key_der=_pkcs8(key),
        chain_der=chain,
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except ValueError as exc:
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None
    return bc.ca


def _key_type(cert: x509.Certificate) -> str:
    try:
        pub = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "unsupported"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return f"EC {pub.curve.name}"
    if isinstance(pub, rsa.RSAPublicKey):
        return f"RSA {pub.key_size}"
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448"
    return type(pub).__name__
