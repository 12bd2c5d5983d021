"""Message framing in plain Python: a 16-byte big-endian header, then the body.

Layout (csrc/qp2p.h, section 1): version u8, kind u8, flags u16 (zero),
length u32, msg_id u64.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..types import (
    FRAME_HEADER_SIZE,
    FRAME_MAX_BODY,
    FRAME_VERSION,
    KIND_MAX,
    Frame,
    FrameError,
    FrameErrorCode,
)

_HEADER = struct.Struct(">BBHIQ")
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


def _check_max_body(max_body: int) -> None:
    if not 0 <= max_body <= FRAME_MAX_BODY:
        raise ValueError(f"max_body must be in 0..{FRAME_MAX_BODY}, got {max_body}")


def encode_frame_header(
    kind: int, msg_id: int, length: int, max_body: int = FRAME_MAX_BODY
) -> bytes:
    """The 16-byte header of a frame whose body is ``length`` bytes long.

    Raises ValueError for a kind outside 1..KIND_MAX, a msg_id outside u64, or
    a length below 0 or above ``max_body``.
    """
    if not 1 <= kind <= KIND_MAX:
        raise ValueError(f"frame kind must be in 1..{KIND_MAX}, got {kind}")
    if not 0 <= msg_id <= _U64_MAX:
        raise ValueError(f"msg_id must fit in 64 bits, got {msg_id}")
    if not 0 <= length <= max_body:
        raise ValueError(f"frame length must be in 0..{max_body}, got {length}")
    return _HEADER.pack(FRAME_VERSION, kind, 0, length, msg_id)


def encode_frames(
    frames: Sequence[tuple[int, int, bytes]], max_body: int = FRAME_MAX_BODY
) -> bytes:
    """Header and body of each ``(kind, msg_id, body)``, concatenated: one stream write.

    Raises ValueError as ``encode_frame_header`` does, for the first bad frame.
    """
    _check_max_body(max_body)
    pack = _HEADER.pack
    parts: list[bytes] = []
    for kind, msg_id, body in frames:
        length = len(body)
        if not 1 <= kind <= KIND_MAX:
            raise ValueError(f"frame kind must be in 1..{KIND_MAX}, got {kind}")
        if not 0 <= msg_id <= _U64_MAX:
            raise ValueError(f"msg_id must fit in 64 bits, got {msg_id}")
        if length > max_body:
            raise ValueError(f"frame length must be in 0..{max_body}, got {length}")
        parts.append(pack(FRAME_VERSION, kind, 0, length, msg_id))
        parts.append(body)
    return b"".join(parts)


def _header_error(
    version: int, kind: int, flags: int, length: int, max_body: int
) -> FrameErrorCode:
    """The first bad field of a header known to be bad (wire order, as in C)."""
    if version != FRAME_VERSION:
        return FrameErrorCode.VERSION
    if not 1 <= kind <= KIND_MAX:
        return FrameErrorCode.KIND
    if flags:
        return FrameErrorCode.FLAGS
    assert length > max_body
    return FrameErrorCode.TOO_LARGE


class FrameDecoder:
    """Incremental decoder for one byte stream.

    Feed it chunks of any size; it returns the frames they complete. A bad
    header is rejected as soon as its 16 bytes are present, before any of its
    body is buffered; the decoder is then dead and every later ``feed`` raises
    the same ``FrameError``.
    """

    def __init__(self, max_body: int = FRAME_MAX_BODY) -> None:
        _check_max_body(max_body)
        self._max_body = max_body
        # Bytes held back: either a partial header, or (when `_pending` is set)
        # the body parts of a frame whose header was already validated. Body
        # parts are joined once, when the last one arrives, so a large body in
        # small chunks is copied once, not once per chunk.
        self._chunks: list[bytes] = []
        self._held = 0
        self._pending: tuple[int, int, int] | None = None  # kind, msg_id, length
        self._error: FrameErrorCode | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return self._held + (FRAME_HEADER_SIZE if self._pending is not None else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decodes what ``data`` completes; raises FrameError on a bad header."""
        if self._error is not None:
            raise FrameError(self._error)
        chunk = data if type(data) is bytes else bytes(data)
        frames: list[Frame] = []
        pos = 0
        pending = self._pending
        if pending is not None:
            kind, msg_id, length = pending
            held = self._held + len(chunk)
            if held < length:
                self._chunks.append(chunk)
                self._held = held
                return frames
            pos = len(chunk) - (held - length)  # where the body ends in this chunk
            self._chunks.append(chunk[:pos] if pos < len(chunk) else chunk)
            frames.append(Frame(kind, msg_id, b"".join(self._chunks)))
            self._chunks.clear()
            self._held = 0
            self._pending = None
        elif self._chunks:  # a partial header
            self._chunks.append(chunk)
            self._held += len(chunk)
            if self._held < FRAME_HEADER_SIZE:
                return frames
            chunk = b"".join(self._chunks)
            self._chunks.clear()
            self._held = 0

        pos = self._scan(chunk, pos, frames)
        rest = len(chunk) - pos
        if rest >= FRAME_HEADER_SIZE:  # stopped inside the body of a valid header
            _, kind, _, length, msg_id = _HEADER.unpack_from(chunk, pos)
            self._pending = (kind, msg_id, length)
            body = chunk[pos + FRAME_HEADER_SIZE :]
            if body:
                self._chunks.append(body)
            self._held = len(body)
        elif rest:
            self._chunks.append(chunk[pos:] if pos else chunk)
            self._held = rest
        return frames

    def _scan(self, chunk: bytes, pos: int, frames: list[Frame]) -> int:
        """Appends the complete frames of chunk[pos:] to frames; returns where it
        stopped (a partial header, or a valid header whose body is incomplete)."""
        end = len(chunk)
        max_body = self._max_body
        unpack_from = _HEADER.unpack_from
        while end - pos >= FRAME_HEADER_SIZE:
            version, kind, flags, length, msg_id = unpack_from(chunk, pos)
            if version != FRAME_VERSION or not 1 <= kind <= KIND_MAX or flags or length > max_body:
                code = _header_error(version, kind, flags, length, max_body)
                self._fail(code)
                raise FrameError(code, frames)
            start = pos + FRAME_HEADER_SIZE
            if length > end - start:
                break
            frames.append(Frame(kind, msg_id, chunk[start : start + length]))
            pos = start + length
        return pos

    def _fail(self, code: FrameErrorCode) -> None:
        self._error = code
        self._chunks.clear()
        self._held = 0
        self._pending = None
