"""Self-check of the hot paths: which implementation is active, and do C and
twin agree on a fixed workload. Used by ``quic-p2p selfcheck``."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from . import accel
from .accel.types import FrameKind


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def _framing(mod: ModuleType) -> object:
    frames = [(FrameKind.USER_MESSAGE, i, bytes([i]) * i) for i in range(40)]
    wire = b"".join(mod.encode_frame_header(k, i, len(b)) + b for k, i, b in frames)
    dec = mod.FrameDecoder(max_body=1 << 20)
    out = []
    for start in range(0, len(wire), 7):  # odd chunk size: frames split across feeds
        out.extend(dec.feed(wire[start : start + 7]))
    return [tuple(f) for f in out]


def _tokens(mod: ModuleType) -> object:
    toks = mod.RetryTokens(b"k" * 32, random_bytes=os.urandom)
    token = toks.mint(b"\x7f\x00\x00\x01\x12\x34", b"odcid123", b"rscid456", 1_000)
    return token, toks.verify(token, b"\x7f\x00\x00\x01\x12\x34", b"rscid456", 2_000)


def _lru(mod: ModuleType) -> object:
    idx = mod.LruIndex(capacity=4, random_bytes=os.urandom)
    results = [idx.insert(bytes([k])) for k in (1, 2, 3, 4, 5, 2, 6)]
    return results, idx.order()


def _digests(mod: ModuleType) -> object:
    data = bytes(range(200))
    ok = mod.sha256(data) == hashlib.sha256(data).digest() and mod.hmac_sha256(
        b"key", data
    ) == hmac.digest(b"key", data, "sha256")
    return ok


WORKLOADS: dict[str, Callable[[ModuleType], object]] = {
    "framing round trip": _framing,
    "retry token mint/verify": _tokens,
    "LRU index order": _lru,
    "SHA-256 / HMAC vs hashlib": _digests,
}


def _implementation_note() -> str:
    """Which implementation is active and why; the twin is supported, so this
    is information, never a failure."""
    if accel.IMPLEMENTATION == "c":
        return "active implementation: c (compiled module)"
    if accel.FORCED_PY:
        why = "QUIC_P2P_NO_EXTENSIONS is set"
        if "c" not in accel.IMPLEMENTATIONS:
            why += f"; the C module is not built either ({accel.import_error})"
        return f"active implementation: py (pure-Python twin: {why})"
    why = f"the C module is not built: {accel.import_error}"
    return f"active implementation: py (pure-Python twin: {why})"


def run() -> list[Check]:
    """Runs every workload on each available implementation and compares.

    Fails only on a real problem: an implementation raising, a wrong digest, or
    C and twin disagreeing. With only the twin available there is nothing to
    compare, so each workload just has to run."""
    checks = [Check("hot-path implementation", True, _implementation_note())]
    for name, workload in WORKLOADS.items():
        results = {}
        for impl_name, mod in accel.IMPLEMENTATIONS.items():
            try:
                results[impl_name] = workload(mod)
            except Exception as exc:  # a self-check reports, it does not crash
                results[impl_name] = f"error: {exc!r}"
        values = list(results.values())
        agree = all(v == values[0] for v in values)
        errors = [v for v in values if isinstance(v, str) and v.startswith("error")]
        ok = agree and not errors and values[0] is not False
        if not agree:
            detail = f"disagree: {results!r}"
        elif len(results) == 1:
            detail = f"ran on {'/'.join(results)} only (no C module to compare with)"
        else:
            detail = f"implementations agree ({'/'.join(results)})"
        checks.append(Check(name, ok, ", ".join(errors) or detail))
    return checks
