"""Wrappers over the compiled C module: validate in Python, cross the FFI once,
map status codes to exceptions."""

from __future__ import annotations

from ._ffi import ffi as _ffi  # noqa: F401  (fails fast without the C build)
from .classify import classify_datagram
from .framing import FrameDecoder, encode_frame_header, encode_frames
from .lru import LruIndex
from .tokens import RetryTokens, hmac_sha256, sha256

NAME = "c"

__all__ = [
    "NAME",
    "FrameDecoder",
    "LruIndex",
    "RetryTokens",
    "classify_datagram",
    "encode_frame_header",
    "encode_frames",
    "hmac_sha256",
    "sha256",
]
