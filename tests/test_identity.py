"""Endpoint identity: Identity/Config rules, certificates for a given key, and
the key files (real files in tmp_path, real locks, real subprocesses)."""

from __future__ import annotations

import datetime
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from quic_p2p import certfiles
from quic_p2p.errors import QuicP2pError
from quic_p2p.identity import (
    DIR_NAME,
    MAX_SLOTS,
    IdentityError,
    IdentityLease,
    acquire_identity,
    slot_file_name,
)
from quic_p2p.peer import PeerId
from quic_p2p.proto import certs
from quic_p2p.proto.certs import CertificateError
from quic_p2p.proto.config import Config, ConfigError, Identity, OurType, TrustMode

from netutil import python_argv, python_env

NOW = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
NODE = Config()
CLIENT = Config(our_type=OurType.CLIENT)
LOG = "quic_p2p.identity"


@pytest.fixture
def leases() -> Iterator[list[IdentityLease]]:
    """Leases to release at the end, whatever the test's outcome."""
    held: list[IdentityLease] = []
    yield held
    for lease in held:
        lease.release()


def store(cache: Path) -> Path:
    return cache / DIR_NAME


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)


def p256_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------- certificates


def test_a_renewed_certificate_for_the_same_key_has_the_same_id() -> None:
    first = certs.generate_self_signed(now=NOW)
    later = NOW + datetime.timedelta(days=400)
    renewed = certs.generate_self_signed("renewed", now=later, key_der=first.key_der)
    assert renewed.cert_der != first.cert_der
    assert renewed.key_der == first.key_der
    assert PeerId.from_certificate(renewed.cert_der) == PeerId.from_certificate(first.cert_der)
    other = certs.generate_self_signed(now=NOW)
    assert PeerId.from_certificate(other.cert_der) != PeerId.from_certificate(first.cert_der)
    # certfiles (the wall clock) too, and the signing key matches the certificate
    again = certfiles.generate_self_signed(key_der=first.key_der)
    assert PeerId.from_certificate(again.cert_der) == PeerId.from_certificate(first.cert_der)
    certs.load_complete_cert(again.cert_der, again.key_der)


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "sec1-pem"])
def test_a_certificate_for_other_key_types_and_forms(kind: str) -> None:
    key: PrivateKeyTypes
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        data = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    made = certs.generate_self_signed(now=NOW, key_der=data)
    assert PeerId.from_certificate(made.cert_der) == PeerId.from_public_key(key.public_key())
    assert made.key_der == certs.load_private_key(data)  # PKCS#8 DER


def test_a_certificate_for_an_unusable_key_is_refused() -> None:
    with pytest.raises(CertificateError, match="not a valid private key"):
        certs.generate_self_signed(now=NOW, key_der=b"not a key")
    secp256k1 = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(CertificateError, match="secp256k1"):
        certs.generate_self_signed(now=NOW, key_der=secp256k1)


# --------------------------------------------------------------------------- config


def test_identity_key_accepts_pem_der_pkcs8_and_traditional() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    want = PeerId.from_public_key(key.public_key())
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        for fmt in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        ):
            data = key.private_bytes(encoding, fmt, serialization.NoEncryption())
            identity = Identity.key(data)
            assert identity.kind == "key" and identity.key_der is not None
            with acquire_identity(Config(identity=identity)) as lease:
                assert lease.peer_id == want
                assert lease.path is None and lease.slot is None and not lease.locked


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_identity_key_with_garbage_is_a_config_error(garbage: bytes) -> None:
    with pytest.raises(ConfigError, match=r"^Identity\.key: "):
        Identity.key(garbage)


def test_identity_key_refusals_say_why() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigError, match="encrypted"):
        Identity.key(encrypted)
    with pytest.raises(ConfigError, match="as bytes"):
        Identity.key("text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="file path"):
        Identity.file("")
    with pytest.raises(ConfigError, match="file path"):
        Identity.file(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="kind"):
        Identity("disk")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a key"):
        Identity("file", path=Path("k"), key_der=b"x")
    with pytest.raises(ConfigError, match="an Identity"):
        Config(identity="node.key")  # type: ignore[arg-type]


def test_identity_values() -> None:
    assert Identity.file("a/b.key").path == Path("a/b.key")
    assert Identity.file(Path("k")) == Identity.file("k")
    assert Identity.ephemeral() == Identity("ephemeral")
    pem = p256_pem()
    assert "key_der" not in repr(Identity.key(pem))  # a secret stays out of logs
    assert Config().identity is None


def test_identity_and_our_complete_cert_together_are_a_config_error() -> None:
    cert = certfiles.generate_self_signed()
    for identity in (Identity.ephemeral(), Identity.file("x.key"), Identity.key(cert.key_der)):
        with pytest.raises(ConfigError, match="not both"):
            Config(identity=identity, our_complete_cert=cert)


# --------------------------------------------------------------------------- decision table


def test_our_complete_cert_is_used_as_given(tmp_path: Path) -> None:
    cert = certfiles.generate_self_signed()
    with acquire_identity(Config(our_complete_cert=cert), tmp_path) as lease:
        assert lease.cert is cert
        assert lease.peer_id == PeerId.from_certificate(cert.cert_der)
        assert lease.path is None and lease.slot is None and not lease.locked
    assert list(tmp_path.iterdir()) == []


def test_a_client_is_ephemeral_by_default(tmp_path: Path) -> None:
    ids = set()
    for _ in range(2):
        with acquire_identity(CLIENT, tmp_path) as lease:
            assert lease.path is None and lease.slot is None
            ids.add(lease.peer_id)
    assert len(ids) == 2
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_identity_ephemeral_writes_nothing_even_for_a_node(tmp_path: Path) -> None:
    config = Config(identity=Identity.ephemeral())
    with acquire_identity(config, tmp_path) as a, acquire_identity(config, tmp_path) as b:
        assert a.peer_id != b.peer_id and a.path is None
    assert list(tmp_path.iterdir()) == []


def test_the_lease_certificate_is_fresh_and_matches_its_key(tmp_path: Path) -> None:
    with acquire_identity(NODE, tmp_path) as lease:
        certs.load_complete_cert(lease.cert.cert_der, lease.cert.key_der)
        assert lease.peer_id == PeerId.from_certificate(lease.cert.cert_der)
        described = certs.describe_certificate(lease.cert.cert_der)
        assert described["self_signed"] and described["key_type"] == "EC secp256r1"
        start = datetime.datetime.fromisoformat(described["not_before"])
        assert abs(datetime.datetime.now(datetime.UTC) - start) < datetime.timedelta(hours=2)
        assert lease.path is not None
        assert certs.load_private_key(lease.path.read_bytes()) == lease.cert.key_der


# --------------------------------------------------------------------------- the store


def test_the_same_directory_twice_in_sequence_gives_the_same_id(tmp_path: Path) -> None:
    with acquire_identity(NODE, tmp_path) as first:
        assert first.slot == 0 and first.locked
        assert first.path == store(tmp_path) / "node-0.key"
    with acquire_identity(NODE, tmp_path) as second:
        assert second.slot == 0 and second.peer_id == first.peer_id
        assert second.cert.cert_der != first.cert.cert_der  # a renewed certificate
    assert sorted(p.name for p in store(tmp_path).iterdir()) == ["node-0.key"]


def test_file_and_directory_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with acquire_identity(NODE, tmp_path) as lease:
            assert lease.path is not None
            assert mode(store(tmp_path)) == 0o700
            assert mode(lease.path) == 0o600
            assert lease.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    finally:
        os.umask(old)


def test_the_default_directory_is_the_platform_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if sys.platform != "linux":
        pytest.skip("XDG_CACHE_HOME is the Linux cache dir")
    with acquire_identity(NODE, None) as lease:
        assert lease.path == tmp_path / "quic-p2p" / DIR_NAME / "node-0.key"


def test_two_leases_at_once_take_different_slots_then_the_lowest_again(
    tmp_path: Path, leases: list[IdentityLease]
) -> None:
    a = acquire_identity(NODE, tmp_path)
    leases.append(a)
    b = acquire_identity(NODE, tmp_path)
    leases.append(b)
    assert (a.slot, b.slot) == (0, 1)
    assert a.peer_id != b.peer_id
    a.release()
    a.release()  # idempotent
    assert not a.locked
    c = acquire_identity(NODE, tmp_path)
    leases.append(c)
    assert c.slot == 0 and c.peer_id == a.peer_id  # the lowest free slot, its key
    b.release()
    d = acquire_identity(NODE, tmp_path)
    leases.append(d)
    assert d.slot == 1 and d.peer_id == b.peer_id


HOLDER = """
import sys
from pathlib import Path
from quic_p2p.identity import acquire_identity
from quic_p2p.proto.config import Config
lease = acquire_identity(Config(), Path(sys.argv[1]))
print(lease.slot, lease.peer_id, flush=True)
if sys.argv[2] == "hold":
    sys.stdin.read()  # until the test closes our stdin
"""


def _run(cache: Path, hold: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        python_argv("-c", HOLDER, str(cache), "hold" if hold else "once"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )


def _first_line(p: subprocess.Popen[str]) -> tuple[int, str]:
    assert p.stdout is not None
    slot, peer_id = p.stdout.readline().split()
    return int(slot), peer_id


def test_two_processes_at_once_get_different_ids(tmp_path: Path) -> None:
    holder = _run(tmp_path, hold=True)
    try:
        held = _first_line(holder)
        other = _run(tmp_path, hold=False)
        assert other.wait(60) == 0
        second = _first_line(other)
        assert held[0] != second[0] and held[1] != second[1]
        # The second has exited: this process gets its slot (the lowest free
        # one) and key, never the holder's.
        with acquire_identity(NODE, tmp_path) as here:
            assert (here.slot, str(here.peer_id)) == second
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(60) == 0
    # The holder is gone: its slot (the lowest) comes back, with its id.
    again = _run(tmp_path, hold=False)
    assert again.wait(60) == 0
    assert _first_line(again) == held


def test_many_processes_racing_on_an_empty_store_never_share_a_key(tmp_path: Path) -> None:
    procs = [_run(tmp_path, hold=True) for _ in range(6)]
    try:
        got = [_first_line(p) for p in procs]
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            assert p.wait(60) == 0
    assert sorted(slot for slot, _ in got) == list(range(6))
    assert len({peer_id for _, peer_id in got}) == 6
    names = sorted(p.name for p in store(tmp_path).iterdir())
    assert names == sorted(slot_file_name(i) for i in range(6))  # no temp left behind


def test_all_slots_busy_is_an_identity_error(tmp_path: Path, leases: list[IdentityLease]) -> None:
    for slot in range(MAX_SLOTS):
        leases.append(acquire_identity(NODE, tmp_path))
        assert leases[-1].slot == slot
    assert len({lease.peer_id for lease in leases}) == MAX_SLOTS
    with pytest.raises(IdentityError, match=r"all 64 identity slots .* set Config\.identity"):
        acquire_identity(NODE, tmp_path)
    assert issubclass(IdentityError, QuicP2pError)
    leases[7].release()
    with acquire_identity(NODE, tmp_path) as lease:
        assert lease.slot == 7


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAA==\n"])
def test_a_corrupt_store_file_is_set_aside_with_a_new_key(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with acquire_identity(NODE, tmp_path) as first:
        assert first.path is not None
        path = first.path
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger=LOG), acquire_identity(NODE, tmp_path) as lease:
        assert lease.slot == 0 and lease.peer_id != first.peer_id
    aside = [p.name for p in store(tmp_path).iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].startswith("node-0.key.corrupt-")
    assert aside[0].endswith("Z")
    assert (store(tmp_path) / aside[0]).read_bytes() == content
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "id changes" in warning and aside[0] in warning
    with acquire_identity(NODE, tmp_path) as again:  # the new key is kept
        assert again.peer_id == lease.peer_id


def test_only_the_newest_corrupt_files_are_kept(tmp_path: Path) -> None:
    path = store(tmp_path) / "node-0.key"
    for _ in range(8):
        with acquire_identity(NODE, tmp_path):
            pass
        path.write_bytes(b"junk")
    with acquire_identity(NODE, tmp_path):
        pass
    aside = [p for p in store(tmp_path).iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 5


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_store_path_that_is_no_regular_file_is_set_aside(tmp_path: Path, kind: str) -> None:
    directory = store(tmp_path)
    directory.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.key"
    target.write_bytes(p256_pem())
    path = directory / "node-0.key"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with acquire_identity(NODE, tmp_path) as lease:
        assert lease.slot == 0
        assert certs.load_private_key(path.read_bytes()) == lease.cert.key_der
        assert lease.peer_id != PeerId.from_certificate(
            certfiles.generate_self_signed(key_der=target.read_bytes()).cert_der
        )
    assert target.exists()  # a link's target is never touched


def test_a_loose_store_file_mode_is_fixed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with acquire_identity(NODE, tmp_path) as first:
        assert first.path is not None
    first.path.chmod(0o644)
    store(tmp_path).chmod(0o755)
    with caplog.at_level(logging.WARNING, logger=LOG), acquire_identity(NODE, tmp_path) as lease:
        assert lease.peer_id == first.peer_id  # still the same key
    assert mode(first.path) == 0o600 and mode(store(tmp_path)) == 0o700
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0644" in w and "0600" in w for w in warnings)
    assert any("0755" in w for w in warnings)


def test_a_store_file_written_by_another_tool_is_used(tmp_path: Path) -> None:
    directory = store(tmp_path)
    directory.mkdir(mode=0o700)
    key = ec.generate_private_key(ec.SECP384R1())
    data = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = directory / "node-0.key"
    path.write_bytes(data)
    path.chmod(0o600)
    with acquire_identity(NODE, tmp_path) as lease:
        assert lease.peer_id == PeerId.from_public_key(key.public_key())
    assert path.read_bytes() == data  # read, never rewritten


def test_a_file_in_the_way_falls_back_to_ephemeral(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / DIR_NAME).write_bytes(b"not a directory")
    with caplog.at_level(logging.WARNING, logger=LOG):
        with acquire_identity(NODE, tmp_path) as a:
            assert a.path is None and a.slot is None and not a.locked
        with acquire_identity(NODE, tmp_path) as b:
            assert b.peer_id != a.peer_id
    warning = caplog.records[0].getMessage()
    assert "ephemeral" in warning and "changes at every start" in warning


def test_an_unwritable_directory_falls_back_to_ephemeral(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    for locked_up in (tmp_path / "ro-cache", tmp_path / "ro-store" / DIR_NAME):
        locked_up.mkdir(parents=True)
        locked_up.chmod(0o500)
    try:
        for cache in (tmp_path / "ro-cache", tmp_path / "ro-store"):
            caplog.clear()
            with (
                caplog.at_level(logging.WARNING, logger=LOG),
                acquire_identity(NODE, cache) as lease,
            ):
                assert lease.path is None and lease.slot is None
            (record,) = caplog.records
            assert "ephemeral" in record.getMessage()
            assert "changes at every start" in record.getMessage()
    finally:
        (tmp_path / "ro-cache").chmod(0o700)
        (tmp_path / "ro-store" / DIR_NAME).chmod(0o700)


def test_a_read_only_store_still_gives_its_existing_key(tmp_path: Path) -> None:
    with acquire_identity(NODE, tmp_path) as first:
        pass
    store(tmp_path).chmod(0o500)
    try:
        with acquire_identity(NODE, tmp_path) as lease:
            assert lease.peer_id == first.peer_id and lease.locked
    finally:
        store(tmp_path).chmod(0o700)


def test_a_store_file_of_another_user_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    with acquire_identity(NODE, tmp_path) as first:
        assert first.path is not None
    os.chown(first.path, 65534, 65534)
    with caplog.at_level(logging.WARNING, logger=LOG), acquire_identity(NODE, tmp_path) as lease:
        assert lease.slot == 1 and lease.peer_id != first.peer_id
    assert "another user" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------- Identity.file


def test_identity_file_is_created_0600_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    config = Config(identity=Identity.file(path))
    with acquire_identity(config, tmp_path / "cache") as first:
        assert first.path == path and first.slot is None and first.locked
        assert mode(path) == 0o600
    with acquire_identity(config, tmp_path / "cache") as second:
        assert second.peer_id == first.peer_id
    assert not (tmp_path / "cache").exists()  # the store is not used
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.key"]


def test_identity_file_given_by_the_user_is_read(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with acquire_identity(Config(identity=Identity.file(path))) as lease:
        assert lease.peer_id == PeerId.from_public_key(key.public_key())
    # A Client may name a file too (its id then survives restarts).
    with acquire_identity(Config(our_type=OurType.CLIENT, identity=Identity.file(path))) as c:
        assert c.peer_id == lease.peer_id


def test_identity_file_locked_by_another_lease_is_an_identity_error(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    config = Config(identity=Identity.file(path))
    with acquire_identity(config) as first:
        with pytest.raises(IdentityError, match="in use by another endpoint") as err:
            acquire_identity(config)
        assert str(path) in str(err.value)
    with acquire_identity(config) as again:  # released: usable again
        assert again.peer_id == first.peer_id


def test_identity_file_locked_by_another_process_is_an_identity_error(tmp_path: Path) -> None:
    path = tmp_path / "me.key"
    code = (
        "import sys\nfrom quic_p2p.identity import acquire_identity\n"
        "from quic_p2p.proto.config import Config, Identity\n"
        "lease = acquire_identity(Config(identity=Identity.file(sys.argv[1])))\n"
        "print(lease.peer_id, flush=True)\nsys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        python_argv("-c", code, str(path)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    try:
        assert holder.stdout is not None
        theirs = holder.stdout.readline().strip()
        with pytest.raises(IdentityError, match="in use by another endpoint"):
            acquire_identity(Config(identity=Identity.file(path)))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(60) == 0
    with acquire_identity(Config(identity=Identity.file(path))) as lease:
        assert str(lease.peer_id) == theirs


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660, 0o620], ids=oct)
def test_a_group_or_world_accessible_user_file_is_refused(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "me.key"
    path.write_bytes(p256_pem())
    path.chmod(loose)
    with pytest.raises(IdentityError, match=r"unsafe: its mode 0\d+ .*\(chmod 600 ") as err:
        acquire_identity(Config(identity=Identity.file(path)))
    assert str(path) in str(err.value)
    assert mode(path) == loose  # left as it was


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAA==\n"])
def test_a_corrupt_user_file_is_an_identity_error_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "me.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError, match=r"no usable private key.*never overwritten"):
        acquire_identity(Config(identity=Identity.file(path)))
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.key"]


def test_a_user_path_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.key"
    target.write_bytes(p256_pem())
    target.chmod(0o600)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(IdentityError, match="symbolic link"):
        acquire_identity(Config(identity=Identity.file(link)))
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)
    with pytest.raises(IdentityError, match="FIFO"):  # and never blocks
        acquire_identity(Config(identity=Identity.file(fifo)))
    with pytest.raises(IdentityError, match="directory"):
        acquire_identity(Config(identity=Identity.file(tmp_path)))


def test_a_user_file_that_cannot_be_created_is_an_identity_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "me.key"
    with pytest.raises(IdentityError, match="does not exist and cannot be created"):
        acquire_identity(Config(identity=Identity.file(path)))
    assert not path.parent.exists()


def test_a_user_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = tmp_path / "me.key"
    path.write_bytes(p256_pem())
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(IdentityError, match="owned by another user"):
        acquire_identity(Config(identity=Identity.file(path)))


def test_a_ca_mode_client_still_needs_our_complete_cert() -> None:
    ca = certfiles.create_ca("ca")
    with pytest.raises(ConfigError, match="set our_complete_cert"):
        Config(
            our_type=OurType.CLIENT,
            trust_mode=TrustMode.PRIVATE_CA,
            ca_certs_der=[ca.cert_der],
            identity=Identity.ephemeral(),
        )
