"""Picks the hot-path implementation once, at import.

``IMPLEMENTATION`` is ``"c"`` when the compiled module loaded and ``"py"`` when
the pure-Python twin is in use: because ``QUIC_P2P_NO_EXTENSIONS=1`` asked for
it, or because the C module did not build (``import_error`` then says why).
Both implementations have the same names, signatures and exceptions;
``IMPLEMENTATIONS`` maps each available one by name (tests run on both).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from . import pyimpl

IMPLEMENTATIONS: dict[str, ModuleType] = {"py": pyimpl}
import_error: ImportError | None = None

try:
    from . import cimpl
except ImportError as exc:  # no compiler at install time, or a broken build
    import_error = exc
    _tree = Path(__file__).resolve().parents[2]
    if (_tree / "csrc" / "build_accel.py").is_file():
        # A source checkout, typically a clone's root as the current directory:
        # `python -m` / `python -c` put it first on sys.path, ahead of the
        # installed package. Say so, not just "No module named ...".
        import_error = ImportError(
            f"{exc}: quic_p2p was imported from the source tree {_tree}, which has no "
            "compiled module (the current directory comes first on sys.path); run from "
            "another directory or with `python -P` to use the installed package, or "
            "build in place with ci/dev-build"
        )
        import_error.__cause__ = exc
else:
    IMPLEMENTATIONS["c"] = cimpl

FORCED_PY = os.environ.get("QUIC_P2P_NO_EXTENSIONS", "") not in ("", "0")
IMPLEMENTATION: str = "py" if FORCED_PY or "c" not in IMPLEMENTATIONS else "c"
_impl = IMPLEMENTATIONS[IMPLEMENTATION]

if TYPE_CHECKING:
    from .pyimpl import (
        FrameDecoder,
        LruIndex,
        RetryTokens,
        classify_datagram,
        encode_frame_header,
        encode_frames,
        hmac_sha256,
        sha256,
    )
else:
    FrameDecoder = _impl.FrameDecoder
    LruIndex = _impl.LruIndex
    RetryTokens = _impl.RetryTokens
    classify_datagram = _impl.classify_datagram
    encode_frame_header = _impl.encode_frame_header
    encode_frames = _impl.encode_frames
    hmac_sha256 = _impl.hmac_sha256
    sha256 = _impl.sha256

__all__ = [
    "IMPLEMENTATION",
    "IMPLEMENTATIONS",
    "FrameDecoder",
    "LruIndex",
    "RetryTokens",
    "classify_datagram",
    "encode_frame_header",
    "encode_frames",
    "hmac_sha256",
    "import_error",
    "sha256",
]
