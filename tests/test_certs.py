"""Certificate helpers: creation, PEM/DER round trips, loading, errors, files."""

from __future__ import annotations

import datetime
import hashlib
import stat
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from quic_p2p import certfiles
from quic_p2p.errors import QuicP2pError
from quic_p2p.proto import certs
from quic_p2p.proto.certs import CertificateError
from quic_p2p.proto.config import CompleteCert

UTC = datetime.UTC
#: The time the creation functions are given: certs reads no clock, so any
#: instant works (none of these tests makes a handshake).
NOW = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def self_signed() -> CompleteCert:
    return certs.generate_self_signed("node A", now=NOW)


@pytest.fixture(scope="module")
def ca() -> CompleteCert:
    return certs.create_ca("Net CA", now=NOW)


@pytest.fixture(scope="module")
def leaf(ca: CompleteCert) -> CompleteCert:
    return certs.issue_certificate(
        ca,
        "node-1",
        dns_names=["net.example", "b.example"],
        ip_addresses=["10.0.0.1", "::1"],
        now=NOW,
    )


E = TypeVar("E", bound=x509.ExtensionType)


def ext(der: bytes, cls: type[E]) -> x509.Extension[E]:
    return x509.load_der_x509_certificate(der).extensions.get_extension_for_class(cls)


# ------------------------------------------------------------------ creation


def test_self_signed_shape(self_signed: CompleteCert) -> None:
    cert = x509.load_der_x509_certificate(self_signed.cert_der)
    assert cert.subject == cert.issuer
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert ext(self_signed.cert_der, x509.BasicConstraints).value.ca is False
    san = ext(self_signed.cert_der, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [certs.SELF_SIGNED_DNS_NAME]
    assert certs.is_self_signed(cert)
    assert self_signed.chain_der == ()
    # The key is PKCS#8 DER and belongs to the certificate: its public half is
    # the certificate's, and what it signs the certificate's key verifies.
    key = serialization.load_der_private_key(self_signed.key_der, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    signature = key.sign(b"proof of possession", ec.ECDSA(hashes.SHA256()))
    cert_key = cert.public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    cert_key.verify(signature, b"proof of possession", ec.ECDSA(hashes.SHA256()))


def test_default_validity_allows_clock_skew() -> None:
    # From the given time, not the clock: valid from an hour before it.
    for make in (
        lambda: certs.generate_self_signed(valid_days=2, now=NOW),
        lambda: certs.create_ca("CA", valid_days=2, now=NOW),
        lambda: certs.issue_certificate(certs.create_ca("CA", now=NOW), "n", valid_days=2, now=NOW),
    ):
        cert = x509.load_der_x509_certificate(make().cert_der)
        assert cert.not_valid_before_utc == NOW - certs.CLOCK_SKEW_ALLOWANCE
        assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=2)


def test_creation_needs_an_aware_now() -> None:
    with pytest.raises(CertificateError, match="now must be a timezone-aware"):
        certs.generate_self_signed(now=datetime.datetime(2031, 1, 1))
    with pytest.raises(CertificateError, match="now must be a timezone-aware"):
        certs.create_ca("CA", now="2031-01-01")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="now"):
        certs.generate_self_signed()  # type: ignore[call-arg]


def test_certfiles_creates_at_the_wall_clock() -> None:
    """The driver-ring conveniences: the same calls without ``now``."""
    before = datetime.datetime.now(UTC).replace(microsecond=0)
    ca = certfiles.create_ca("Net CA", valid_days=3)
    made = [ca, certfiles.issue_certificate(ca, "n", valid_days=3, ip_addresses=["10.0.0.1"])]
    made.append(certfiles.generate_self_signed("s", valid_days=3))
    after = datetime.datetime.now(UTC)
    for cert in made:
        parsed = x509.load_der_x509_certificate(cert.cert_der)
        start = parsed.not_valid_before_utc + certs.CLOCK_SKEW_ALLOWANCE
        assert before <= start <= after
        assert parsed.not_valid_after_utc - parsed.not_valid_before_utc == datetime.timedelta(
            days=3, hours=1
        )
    assert made[1].chain_der == () and certs.is_self_signed(
        x509.load_der_x509_certificate(made[2].cert_der)
    )
    start = datetime.datetime(2020, 1, 2, tzinfo=UTC)
    explicit = certfiles.generate_self_signed(not_before=start, valid_days=1, dns_names=())
    parsed = x509.load_der_x509_certificate(explicit.cert_der)
    assert parsed.not_valid_before_utc == start
    with pytest.raises(x509.ExtensionNotFound):
        parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_explicit_not_before() -> None:
    start = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert = x509.load_der_x509_certificate(
        certs.generate_self_signed(not_before=start, valid_days=10, now=NOW).cert_der
    )
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == start + datetime.timedelta(days=10)
    with pytest.raises(CertificateError, match="timezone"):
        certs.generate_self_signed(not_before=datetime.datetime(2020, 1, 1), now=NOW)
    with pytest.raises(CertificateError, match="valid_days"):
        certs.generate_self_signed(valid_days=0, now=NOW)


def test_ca_shape(ca: CompleteCert) -> None:
    bc = ext(ca.cert_der, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(ca.cert_der, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert ext(ca.cert_der, x509.SubjectKeyIdentifier).value.digest
    assert ca.chain_der == ()


def test_issued_cert_shape(ca: CompleteCert, leaf: CompleteCert) -> None:
    cert = x509.load_der_x509_certificate(leaf.cert_der)
    ca_cert = x509.load_der_x509_certificate(ca.cert_der)
    cert.verify_directly_issued_by(ca_cert)
    assert ext(leaf.cert_der, x509.BasicConstraints).value.ca is False
    eku = ext(leaf.cert_der, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = ext(leaf.cert_der, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca.cert_der, x509.SubjectKeyIdentifier).value.digest
    # A root is the peer's anchor: nothing to send along.
    assert leaf.chain_der == ()


def test_intermediate_chain(ca: CompleteCert) -> None:
    inter = certs.create_ca("Intermediate", issuer=ca, now=NOW)
    assert inter.chain_der == ()  # signed by a root
    x509.load_der_x509_certificate(inter.cert_der).verify_directly_issued_by(
        x509.load_der_x509_certificate(ca.cert_der)
    )
    sub = certs.create_ca("Sub", issuer=inter, now=NOW)
    assert sub.chain_der == (inter.cert_der,)
    leaf = certs.issue_certificate(sub, "deep", now=NOW)
    assert leaf.chain_der == (sub.cert_der, inter.cert_der)


def test_issuing_needs_a_ca(self_signed: CompleteCert, leaf: CompleteCert) -> None:
    with pytest.raises(CertificateError, match="not a CA"):
        certs.issue_certificate(self_signed, "x", now=NOW)
    with pytest.raises(CertificateError, match="does not match"):
        certs.issue_certificate(CompleteCert(leaf.cert_der, self_signed.key_der), "x", now=NOW)


def test_bad_names_are_certificate_errors(ca: CompleteCert) -> None:
    with pytest.raises(CertificateError, match="IP address"):
        certs.issue_certificate(ca, "x", ip_addresses=["300.1.1.1"], now=NOW)
    with pytest.raises(CertificateError, match="common name"):
        certs.create_ca("", now=NOW)
    with pytest.raises(CertificateError, match="common name"):
        certs.create_ca("x" * 65, now=NOW)  # X.520 limits CN to 64 characters
    with pytest.raises(CertificateError, match="sequences"):
        certs.issue_certificate(ca, "x", dns_names="net.example", now=NOW)  # a str, not a list


# ------------------------------------------------------------------ PEM / DER


def test_pem_der_round_trip(leaf: CompleteCert) -> None:
    pem = certs.to_pem(leaf.cert_der)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert certs.load_certificate(pem) == leaf.cert_der
    assert certs.load_certificate(leaf.cert_der) == leaf.cert_der
    assert certs.load_certificates(leaf.cert_der) == [leaf.cert_der]


def test_pem_bundle(ca: CompleteCert, leaf: CompleteCert, self_signed: CompleteCert) -> None:
    bundle = certs.to_pem(leaf.cert_der) + b"\n" + certs.to_pem(ca.cert_der)
    assert certs.load_certificates(bundle) == [leaf.cert_der, ca.cert_der]
    assert certs.load_certificate(bundle) == leaf.cert_der
    # A key block in the same file is skipped.
    mixed = certs.key_to_pem(self_signed.key_der) + certs.to_pem(self_signed.cert_der)
    assert certs.load_certificates(mixed) == [self_signed.cert_der]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x30\x82\x01\x00" + b"\x00" * 10,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_garbage_certificate(data: bytes) -> None:
    with pytest.raises(CertificateError) as info:
        certs.load_certificate(data)
    assert isinstance(info.value, QuicP2pError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    assert info.value.__cause__ is None  # no raw cryptography exception attached


def test_garbage_everywhere() -> None:
    for call in (
        lambda: certs.to_pem(b"junk"),
        lambda: certs.describe_certificate(b"junk"),
        lambda: certs.load_private_key(b"junk"),
        lambda: certs.key_to_pem(b"junk"),
        lambda: certs.load_complete_cert(b"junk", b"junk"),
    ):
        with pytest.raises(CertificateError):
            call()


def test_key_pem_round_trip(self_signed: CompleteCert) -> None:
    pem = certs.key_to_pem(self_signed.key_der)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert certs.load_private_key(pem) == self_signed.key_der
    encrypted = certs.key_to_pem(self_signed.key_der, password=b"s3cret")
    assert b"ENCRYPTED" in encrypted
    assert certs.load_private_key(encrypted, b"s3cret") == self_signed.key_der


# ------------------------------------------------------------------ load_complete_cert


def test_load_complete_cert_pem_with_chain(ca: CompleteCert) -> None:
    inter = certs.create_ca("Intermediate", issuer=ca, now=NOW)
    leaf = certs.issue_certificate(inter, "n", now=NOW)
    cert_pem = certs.to_pem(leaf.cert_der) + certs.to_pem(inter.cert_der)
    loaded = certs.load_complete_cert(cert_pem, certs.key_to_pem(leaf.key_der))
    assert loaded == CompleteCert(leaf.cert_der, leaf.key_der, (inter.cert_der,))


def test_load_complete_cert_der(self_signed: CompleteCert) -> None:
    loaded = certs.load_complete_cert(self_signed.cert_der, self_signed.key_der)
    assert loaded == self_signed


def test_load_complete_cert_encrypted_key(self_signed: CompleteCert) -> None:
    key_pem = certs.key_to_pem(self_signed.key_der, password=b"pw")
    assert certs.load_complete_cert(self_signed.cert_der, key_pem, b"pw") == self_signed
    with pytest.raises(CertificateError, match="wrong password"):
        certs.load_complete_cert(self_signed.cert_der, key_pem, b"nope")
    with pytest.raises(CertificateError, match="password is needed"):
        certs.load_complete_cert(self_signed.cert_der, key_pem)
    with pytest.raises(CertificateError, match="not encrypted"):
        certs.load_complete_cert(self_signed.cert_der, certs.key_to_pem(self_signed.key_der), b"pw")


def test_load_complete_cert_mismatched_key(self_signed: CompleteCert, leaf: CompleteCert) -> None:
    with pytest.raises(CertificateError, match="does not match"):
        certs.load_complete_cert(self_signed.cert_der, leaf.key_der)


def test_load_complete_cert_other_key_formats() -> None:
    # Keys in traditional formats (SEC1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE
    # KEY") and other types aioquic can sign with come back as PKCS#8 DER.
    for key in (
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
    ):
        cert = _self_sign(key)
        fmt = (
            serialization.PrivateFormat.PKCS8
            if isinstance(key, ed25519.Ed25519PrivateKey)
            else serialization.PrivateFormat.TraditionalOpenSSL
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        loaded = certs.load_complete_cert(cert.public_bytes(serialization.Encoding.PEM), key_pem)
        assert serialization.load_der_private_key(loaded.key_der, None).public_key() == (
            key.public_key()
        )


def test_load_complete_cert_rejects_keys_aioquic_cannot_sign_with() -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    cert = _self_sign(key)
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(CertificateError, match="secp521r1"):
        certs.load_complete_cert(cert.public_bytes(serialization.Encoding.DER), key_der)


def _self_sign(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "k")])
    now = datetime.datetime.now(UTC)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )


# ------------------------------------------------------------------ describe / fingerprint


def test_describe_certificate(ca: CompleteCert, leaf: CompleteCert) -> None:
    info = certs.describe_certificate(leaf.cert_der)
    cert = x509.load_der_x509_certificate(leaf.cert_der)
    assert info["subject"] == "CN=node-1"
    assert info["issuer"] == "CN=Net CA"
    assert info["serial"] == f"{cert.serial_number:x}"
    assert info["not_before"] == cert.not_valid_before_utc.isoformat()
    assert info["not_after"] == cert.not_valid_after_utc.isoformat()
    assert info["dns_names"] == ["net.example", "b.example"]
    assert info["ip_addresses"] == ["10.0.0.1", "::1"]
    assert info["sha256"] == hashlib.sha256(leaf.cert_der).hexdigest()
    assert info["is_ca"] is False and info["self_signed"] is False
    assert info["key_type"] == "EC secp256r1"
    ca_info = certs.describe_certificate(ca.cert_der)
    assert ca_info["is_ca"] is True and ca_info["self_signed"] is True
    assert ca_info["dns_names"] == [] and ca_info["ip_addresses"] == []


def test_fingerprint(leaf: CompleteCert) -> None:
    assert certs.fingerprint(leaf.cert_der) == hashlib.sha256(leaf.cert_der).digest()
    assert len(certs.fingerprint(leaf.cert_der)) == 32


# ------------------------------------------------------------------ files


def test_private_key_file_is_owner_only(tmp_path: Path, self_signed: CompleteCert) -> None:
    path = tmp_path / "node.key"
    data = certs.key_to_pem(self_signed.key_der)
    certfiles.write_private_key_file(path, data)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(CertificateError, match="already exists"):
        certfiles.write_private_key_file(path, b"other")
    assert path.read_bytes() == data
    # Overwriting a file that was world-readable tightens it.
    path.chmod(0o644)
    certfiles.write_private_key_file(path, b"new", overwrite=True)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp files left


def test_certificate_file(tmp_path: Path, leaf: CompleteCert) -> None:
    path = tmp_path / "node.crt"
    certfiles.write_certificate_file(path, certs.to_pem(leaf.cert_der))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert certs.load_certificate(path.read_bytes()) == leaf.cert_der
