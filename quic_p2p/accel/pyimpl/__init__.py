"""Pure-Python twin of the C accelerator: plain idiomatic Python (struct, hmac, OrderedDict)."""

from __future__ import annotations

from .classify import classify_datagram
from .framing import FrameDecoder, encode_frame_header, encode_frames
from .lru import LruIndex
from .tokens import RetryTokens, hmac_sha256, sha256

NAME = "py"

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
