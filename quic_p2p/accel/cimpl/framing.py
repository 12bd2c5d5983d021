"""Message framing over C: ``qp2p_frame_scan`` finds the frames, Python slices the bodies.

Same contract as ``pyimpl.framing``. Per-item Python work, not C work, is what
costs here, so both directions move whole columns across the FFI:

- decoding: the scanner fills one preallocated descriptor array; its columns
  are read through strided memoryviews (``.tolist()``), and bodies and frames
  are built with ``map`` over those columns, so no bytecode runs per frame;
- encoding: kinds, msg_ids and lengths are handed over as ``bytes``/``array``
  buffers (an order of magnitude cheaper per item than cffi's list conversion)
  and the bodies as one joined buffer, for one call that lays out every frame.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from itertools import repeat
from operator import add

from ..pyimpl.framing import FrameDecoder as _PyFrameDecoder
from ..types import (
    FRAME_HEADER_SIZE,
    FRAME_MAX_BODY,
    FRAME_VERSION,
    KIND_MAX,
    Frame,
    FrameError,
    FrameErrorCode,
)
from ._ffi import ffi, lib

_HEADER = struct.Struct(">BBHIQ")
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

#: qp2p_frame_t as read through memoryview casts: u64 msg_id at word 0, u64
#: offset at word 1, u32 length at u32 index 4, u8 kind at byte 20, 24 bytes.
_DESC_SIZE = 24
if (
    ffi.sizeof("qp2p_frame_t") != _DESC_SIZE
    or ffi.offsetof("qp2p_frame_t", "msg_id") != 0
    or ffi.offsetof("qp2p_frame_t", "offset") != 8
    or ffi.offsetof("qp2p_frame_t", "length") != 16
    or ffi.offsetof("qp2p_frame_t", "kind") != 20
    or array("I").itemsize != 4
    or array("Q").itemsize != 8
):  # pragma: no cover - a compiler we have not met
    raise ImportError("qp2p_frame_t or array item sizes differ from cimpl/framing.py's view")
_new_tuple = tuple.__new__  # what Frame._make does, minus a Python-level call per frame

#: Descriptors per crossing: enough for a full stream read of small frames in
#: one call, small enough (6 KiB) to keep per decoder.
_SCAN_BATCH = 256


def _check_max_body(max_body: int) -> None:
    if not 0 <= max_body <= FRAME_MAX_BODY:
        raise ValueError(f"max_body must be in 0..{FRAME_MAX_BODY}, got {max_body}")


def encode_frame_header(
    kind: int, msg_id: int, length: int, max_body: int = FRAME_MAX_BODY
) -> bytes:
    """The 16-byte header of a frame whose body is ``length`` bytes long.

    Raises ValueError for a kind outside 1..KIND_MAX, a msg_id outside u64, or
    a length below 0 or above ``max_body``.

    One 16-byte header is cheaper to pack with ``struct`` than to fetch across
    the FFI (a crossing plus a buffer copy costs more than the packing), so this
    single-item call stays in Python; ``encode_frames`` is the C path.
    """
    if not 1 <= kind <= KIND_MAX:
        raise ValueError(f"frame kind must be in 1..{KIND_MAX}, got {kind}")
    if not 0 <= msg_id <= _U64_MAX:
        raise ValueError(f"msg_id must fit in 64 bits, got {msg_id}")
    if not 0 <= length <= max_body:
        raise ValueError(f"frame length must be in 0..{max_body}, got {length}")
    return _HEADER.pack(FRAME_VERSION, kind, 0, length, msg_id)


_nofill_new = ffi.new_allocator(should_clear_after_alloc=False)


def encode_frames(
    frames: Sequence[tuple[int, int, bytes]], max_body: int = FRAME_MAX_BODY
) -> bytes:
    """Header and body of each ``(kind, msg_id, body)``, concatenated: one stream write.

    Raises ValueError as ``encode_frame_header`` does, for a bad frame.
    """
    _check_max_body(max_body)
    if not frames:
        return b""
    # Transposing, converting and joining run in C inside CPython: no bytecode per frame.
    kinds, msg_ids, bodies = zip(*frames, strict=True)
    try:
        c_kinds = bytes(kinds)  # ValueError outside 0..255; C checks 1..KIND_MAX
        c_ids = array("Q", msg_ids)
        c_lengths = array("I", map(len, bodies))
    except OverflowError:
        # The array's range check: a msg_id or length that does not fit its C
        # type is out of the contract's range too.
        raise ValueError("frame msg_id or length out of range") from None
    joined = b"".join(bodies)
    n = len(c_kinds)
    total = FRAME_HEADER_SIZE * n + len(joined)
    out = _nofill_new("uint8_t[]", total)
    status = lib.qp2p_frame_encode_batch(
        out, total, joined, len(joined), c_kinds,
        ffi.from_buffer("uint64_t[]", c_ids), ffi.from_buffer("uint32_t[]", c_lengths),
        n, max_body, ffi.NULL,
    )  # fmt: skip
    if status != lib.QP2P_OK:
        raise ValueError("frame kind, msg_id or length out of range")
    encoded: bytes = ffi.buffer(out, total)[:]
    return encoded


class FrameDecoder(_PyFrameDecoder):
    """Incremental decoder for one byte stream.

    Feed it chunks of any size; it returns the frames they complete. A bad
    header is rejected as soon as its 16 bytes are present, before any of its
    body is buffered; the decoder is then dead and every later ``feed`` raises
    the same ``FrameError``.

    The stream bookkeeping (holding partial headers and body parts) is the
    twin's: it is a few list operations per chunk that C could not do for less
    than a crossing costs. Only finding and checking frames runs in C.
    """

    # Named here so the class states its whole public surface (and the picker's
    # same-signatures test sees it), not only what it overrides.
    feed = _PyFrameDecoder.feed
    buffered = _PyFrameDecoder.buffered

    def __init__(self, max_body: int = FRAME_MAX_BODY) -> None:
        super().__init__(max_body)
        self._out = ffi.new("qp2p_frame_t[]", _SCAN_BATCH)
        raw = memoryview(ffi.buffer(self._out))
        self._out_u8, self._out_u32, self._out_u64 = raw, raw.cast("I"), raw.cast("Q")
        self._results = ffi.new("size_t[2]")  # consumed, need
        self._status = ffi.new("int *")

    def _scan(self, chunk: bytes, pos: int, frames: list[Frame]) -> int:
        end = len(chunk)
        if end - pos < FRAME_HEADER_SIZE:
            return pos
        base = ffi.from_buffer("uint8_t[]", chunk)
        out, results, status = self._out, self._results, self._status
        while True:
            n = lib.qp2p_frame_scan(
                base + pos, end - pos, self._max_body, out, _SCAN_BATCH,
                results, status, results + 1,
            )  # fmt: skip
            if n:
                msg_ids = self._out_u64[0 : 3 * n : 3].tolist()
                starts = self._out_u64[1 : 3 * n : 3].tolist()
                if pos:
                    starts = list(map(add, starts, repeat(pos, n)))
                ends = map(add, starts, self._out_u32[4 : 6 * n : 6].tolist())
                kinds = self._out_u8[20 : _DESC_SIZE * n : _DESC_SIZE].tolist()
                bodies = map(chunk.__getitem__, map(slice, starts, ends))
                frames += map(
                    _new_tuple, repeat(Frame, n), zip(kinds, msg_ids, bodies, strict=True)
                )
            pos += results[0]
            if status[0]:
                code = FrameErrorCode(status[0])
                self._fail(code)
                raise FrameError(code, frames)
            if n < _SCAN_BATCH:
                return pos
