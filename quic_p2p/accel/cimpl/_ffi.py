"""The compiled module, imported once. ImportError here means no C build."""

from __future__ import annotations

from quic_p2p.accel._native import ffi, lib

__all__ = ["ffi", "lib"]
