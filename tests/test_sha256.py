"""SHA-256 and HMAC-SHA256: published vectors, and both implementations (and
both C block functions) against hashlib/hmac on every length near the padding
boundaries."""

from __future__ import annotations

import hashlib
import hmac
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.c_extension

# FIPS 180-2 appendix B / NIST CAVP SHA-256 short and long messages.
NIST = [
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",  # 448 bits
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
]

# RFC 4231 §4.2-4.8 (case 5's MAC is truncated to 128 bits).
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data."
     b" The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]  # fmt: skip

#: Every length up to here is checked exhaustively: it spans the 55/56-byte
#: padding split and the block boundaries at 64, 128, 192, 256.
EXHAUSTIVE_LEN = 300
#: The fixtures hand out modules / the C library, which no example mutates
#: (the backend test restores AUTO itself).
STATELESS_FIXTURES = [HealthCheck.function_scoped_fixture]


def _message(n: int) -> bytes:
    return bytes((i * 31 + 7) & 0xFF for i in range(n))


@pytest.mark.parametrize(("data", "digest"), NIST, ids=["abc", "empty", "448bit", "million-a"])
def test_nist_vectors(impl: ModuleType, data: bytes, digest: str) -> None:
    assert impl.sha256(data).hex() == digest


@pytest.mark.parametrize(("key", "msg", "mac"), RFC4231, ids=[f"case{i}" for i in range(1, 8)])
def test_rfc4231_vectors(impl: ModuleType, key: bytes, msg: bytes, mac: str) -> None:
    assert impl.hmac_sha256(key, msg).hex()[: len(mac)] == mac


def test_every_length_around_the_padding_boundaries(impl: ModuleType) -> None:
    for n in range(EXHAUSTIVE_LEN + 1):
        data = _message(n)
        assert impl.sha256(data) == hashlib.sha256(data).digest(), n


def test_hmac_key_lengths_around_the_block_size(impl: ModuleType) -> None:
    # 64 is used as is, 65 is hashed first: both sides of RFC 2104's rule.
    msg = _message(100)
    for n in (*range(0, 4), *range(30, 34), *range(62, 67), 127, 128, 129, 200):
        key = _message(n)[::-1]
        assert impl.hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256"), n


@settings(max_examples=150, deadline=None, suppress_health_check=STATELESS_FIXTURES)
@given(data=st.binary(max_size=EXHAUSTIVE_LEN))
def test_sha256_matches_hashlib(impl: ModuleType, data: bytes) -> None:
    assert impl.sha256(data) == hashlib.sha256(data).digest()


@settings(max_examples=150, deadline=None, suppress_health_check=STATELESS_FIXTURES)
@given(key=st.binary(max_size=150), msg=st.binary(max_size=EXHAUSTIVE_LEN))
def test_hmac_matches_hmac_module(impl: ModuleType, key: bytes, msg: bytes) -> None:
    assert impl.hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256")


def test_results_are_independent_bytes(impl: ModuleType) -> None:
    # The C wrapper reuses its output buffers: earlier results must not change.
    first = impl.sha256(b"one")
    second = impl.sha256(b"two")
    mac = impl.hmac_sha256(b"k", b"one")
    impl.hmac_sha256(b"k", b"two")
    assert type(first) is bytes and type(mac) is bytes
    assert first == hashlib.sha256(b"one").digest()
    assert second == hashlib.sha256(b"two").digest()
    assert mac == hmac.digest(b"k", b"one", "sha256")


def test_concurrent_threads_get_their_own_results(impl: ModuleType) -> None:
    # cffi releases the GIL during each C call: output buffers must never be
    # shared between calls in flight. Messages of some KB keep each call long
    # enough for another thread to start its own (a shared buffer fails here).
    failures: list[tuple[int, int]] = []

    def work(seed: int) -> None:
        for i in range(200):
            data = bytes([seed]) * ((i % 7) * 5000)
            if impl.sha256(data) != hashlib.sha256(data).digest():
                failures.append((seed, i))
            if impl.hmac_sha256(data[:70], data) != hmac.digest(data[:70], data, "sha256"):
                failures.append((seed, -i))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


# ------------------------------------------------------------ the C block functions


def _cpu_has_sha_ni() -> bool:
    try:
        return " sha_ni" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture
def lib(c_impl: ModuleType) -> Iterator[Any]:
    from quic_p2p.accel._native import lib  # type: ignore[import-not-found]

    yield lib
    lib.qp2p_sha256_backend(lib.QP2P_SHA256_AUTO)


def _backends(lib: Any) -> list[int]:
    found = {lib.qp2p_sha256_backend(lib.QP2P_SHA256_PORTABLE)}
    found.add(lib.qp2p_sha256_backend(lib.QP2P_SHA256_SHANI))
    return sorted(found)


def test_backend_selection(lib: Any) -> None:
    assert lib.qp2p_sha256_backend(lib.QP2P_SHA256_PORTABLE) == lib.QP2P_SHA256_PORTABLE
    assert lib.qp2p_sha256_backend(99) == lib.QP2P_E_ARG
    best = lib.qp2p_sha256_backend(lib.QP2P_SHA256_AUTO)
    if sys.platform == "linux" and _cpu_has_sha_ni():
        assert best == lib.QP2P_SHA256_SHANI
    assert lib.qp2p_sha256_backend(lib.QP2P_SHA256_SHANI) == best


def test_each_backend_matches_hashlib(lib: Any, c_impl: ModuleType) -> None:
    for backend in _backends(lib):
        assert lib.qp2p_sha256_backend(backend) == backend
        for n in range(EXHAUSTIVE_LEN + 1):
            data = _message(n)
            assert c_impl.sha256(data) == hashlib.sha256(data).digest(), (backend, n)
        for data, digest in NIST:
            assert c_impl.sha256(data).hex() == digest, backend
        for key, msg, mac in RFC4231:
            assert c_impl.hmac_sha256(key, msg).hex()[: len(mac)] == mac, backend


@settings(max_examples=60, deadline=None, suppress_health_check=STATELESS_FIXTURES)
@given(data=st.binary(max_size=1000))
def test_portable_and_shani_agree(lib: Any, c_impl: ModuleType, data: bytes) -> None:
    digests = set()
    for backend in _backends(lib):
        lib.qp2p_sha256_backend(backend)
        digests.add(c_impl.sha256(data))
    lib.qp2p_sha256_backend(lib.QP2P_SHA256_AUTO)
    assert digests == {hashlib.sha256(data).digest()}


def test_constant_time_compare(lib: Any) -> None:
    from quic_p2p.accel._native import ffi  # type: ignore[import-not-found]

    a = bytes(range(32))
    assert lib.qp2p_ct_equal(a, a, 32) == 1
    assert lib.qp2p_ct_equal(ffi.NULL, ffi.NULL, 0) == 1
    for i in range(32):
        for bit in (0x01, 0x80, 0xFF):
            b = bytearray(a)
            b[i] ^= bit
            assert lib.qp2p_ct_equal(a, bytes(b), 32) == 0, (i, bit)
            assert lib.qp2p_ct_equal(a, bytes(b), i) == 1, i  # the prefix still matches
