"""Hot path 2: SHA-256, HMAC-SHA256 and retry tokens, C against its twin.

Run: ci/bench (or pytest bench/test_bench_tokens.py --benchmark-only). Each
group runs once per implementation; bench/conftest.py prints and gates the
speedup (py median / c median). Token sizes are the real ones: an IPv4
address, 8-byte CIDs, as aioquic clients send them.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import pytest

from quic_p2p.accel.types import TokenError, address_bytes

SECRET = bytes(range(32))
ADDR = address_bytes("192.0.2.1", 4433)
ODCID = bytes.fromhex("8394c8f03e515708")
RSCID = bytes.fromhex("f067a5502a4262b5")
T0 = 1_700_000_000_000
#: A flood of forged tokens: right size and version, current key id, random
#: MAC, so each one costs a full MAC computation (the worst case for us).
FORGED_COUNT = 64


def test_sha256_64b(benchmark: Any, impl: ModuleType) -> None:
    """Informational: hashlib uses the same SHA-NI instructions through OpenSSL,
    so a bare 64-byte digest is a tie; the workloads we serve (HMAC, tokens)
    are gated below."""
    benchmark.group = "info-sha256-64B"
    data = bytes(64)
    assert benchmark(impl.sha256, data) == impl.sha256(data)


def test_hmac_64b(benchmark: Any, impl: ModuleType) -> None:
    benchmark.group = "hmac-64B"
    benchmark(impl.hmac_sha256, SECRET, bytes(64))


def test_token_mint(benchmark: Any, impl: ModuleType) -> None:
    benchmark.group = "token-mint"
    tokens = impl.RetryTokens(SECRET, random_bytes=os.urandom)
    token = benchmark(tokens.mint, ADDR, ODCID, RSCID, T0)
    assert tokens.verify(token, ADDR, RSCID, T0) == ODCID


def test_token_verify(benchmark: Any, impl: ModuleType) -> None:
    benchmark.group = "token-verify"
    tokens = impl.RetryTokens(SECRET, random_bytes=os.urandom)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    assert benchmark(tokens.verify, token, ADDR, RSCID, T0 + 1) == ODCID


def test_token_verify_garbage(benchmark: Any, impl: ModuleType) -> None:
    """Per round: FORGED_COUNT forged tokens, each rejected with BAD_MAC."""
    benchmark.group = "token-verify-garbage"
    tokens = impl.RetryTokens(SECRET, random_bytes=os.urandom)
    head = tokens.mint(ADDR, ODCID, RSCID, T0)[:-32]
    forged = [head + os.urandom(32) for _ in range(FORGED_COUNT)]
    verify = tokens.verify

    def flood() -> int:
        rejected = 0
        for token in forged:
            try:
                verify(token, ADDR, RSCID, T0)
            except TokenError:
                rejected += 1
        return rejected

    assert benchmark(flood) == FORGED_COUNT


@pytest.fixture(autouse=True)
def _best_sha256_backend(impl: ModuleType) -> None:
    """Benchmarks measure what users get: the block function chosen at load."""
    if impl.NAME == "c":
        from quic_p2p.accel._native import lib

        lib.qp2p_sha256_backend(lib.QP2P_SHA256_AUTO)
