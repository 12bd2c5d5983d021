"""LRU index over C (qp2p_lru_*): C keeps keys and order, Python keeps the objects by slot.

Single-key calls pass the bytes object straight to C (cffi hands over its
buffer, no copy) and get one int back (qp2p_lru_put folds "evicted" into the
slot, so no out-parameter is read); batches cross once with preallocated arrays.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, pairwise, repeat
from typing import Any, NoReturn

from ..pyimpl.lru import check_lru_args, check_lru_key, draw_lru_seed
from ._ffi import ffi, lib

_lookup = lib.qp2p_lru_lookup
_touch = lib.qp2p_lru_touch
_put = lib.qp2p_lru_put
_insert_many = lib.qp2p_lru_insert_many
_remove = lib.qp2p_lru_remove
_order = lib.qp2p_lru_order
_len = lib.qp2p_lru_len
_unpack = ffi.unpack
_from_buffer = ffi.from_buffer
_U32 = "I" if array("I").itemsize == 4 else "L"  # array typecode matching uint32_t
_new_raw = ffi.new_allocator(should_clear_after_alloc=False)  # C fills what is read
_EVICTED: int = lib.QP2P_LRU_EVICTED


class LruIndex:
    """Maps up to ``capacity`` keys (bytes) to slot numbers ``0..capacity-1``.

    The caller keeps its objects in a list indexed by slot. A new key takes the
    slot of the key it evicts (the least recently used), else the lowest free
    slot. Not thread-safe: C runs without the GIL, so one index must only be
    used from one thread (the event loop).

    ``random_bytes(n)`` (required; the driver passes ``os.urandom``) is called
    once, with 16, for the hash key of C's table (hash-flooding defence).
    """

    __slots__ = ("_batch", "_capacity", "_max_key_len", "_order", "_p")

    def __init__(
        self, capacity: int, max_key_len: int = 64, *, random_bytes: Callable[[int], bytes]
    ) -> None:
        check_lru_args(capacity, max_key_len)
        seed = draw_lru_seed(random_bytes)
        p = lib.qp2p_lru_new(capacity, max_key_len)
        if p == ffi.NULL:
            raise MemoryError("cannot allocate the LRU index")
        # size: memory-pressure hint for the C-side arrays (used by PyPy's GC).
        self._p: Any = ffi.gc(p, lib.qp2p_lru_free, size=capacity * (max_key_len + 32))
        k0, k1 = struct.unpack("<QQ", seed)
        lib.qp2p_lru_seed(self._p, k0, k1)
        self._capacity = capacity
        self._max_key_len = max_key_len
        self._order: Any = _new_raw("int32_t[]", capacity)
        self._batch: tuple[int, Any, Any] = (0, ffi.NULL, ffi.NULL)

    @property
    def capacity(self) -> int:
        """Most keys held at once (slots are ``0..capacity-1``)."""
        return self._capacity

    @property
    def max_key_len(self) -> int:
        """Longest key accepted, in bytes."""
        return self._max_key_len

    # The isinstance checks are not redundant: cffi would also take a list of
    # ints for a uint8_t * argument. C answers "absent" (-1) for a key too long
    # to be present, so the length is only checked on that path.

    def _bad_key(self, key: object) -> NoReturn:
        check_lru_key(key, self._max_key_len)  # type: ignore[arg-type]
        raise AssertionError("unreachable: the key passed the check")  # pragma: no cover

    def __len__(self) -> int:
        return int(_len(self._p))

    def __contains__(self, key: object) -> bool:
        if isinstance(key, bytes):
            if _lookup(self._p, key, len(key)) >= 0:
                return True
            if len(key) <= self._max_key_len:
                return False
        self._bad_key(key)

    def lookup(self, key: bytes) -> int | None:
        """The key's slot, or None; the order does not change."""
        if isinstance(key, bytes):
            slot: int = _lookup(self._p, key, len(key))
            if slot >= 0:
                return slot
            if len(key) <= self._max_key_len:
                return None
        self._bad_key(key)

    def touch(self, key: bytes) -> int | None:
        """Make the key most recent; its slot, or None when absent."""
        if isinstance(key, bytes):
            slot: int = _touch(self._p, key, len(key))
            if slot >= 0:
                return slot
            if len(key) <= self._max_key_len:
                return None
        self._bad_key(key)

    def insert(self, key: bytes) -> tuple[int, int | None]:
        """Insert (or touch) the key as most recent: ``(slot, evicted slot or None)``."""
        if isinstance(key, bytes):
            slot: int = _put(self._p, key, len(key))
            if slot < _EVICTED:
                if slot >= 0:
                    return slot, None
            else:
                slot -= _EVICTED
                return slot, slot
        self._bad_key(key)

    def insert_many(self, keys: Iterable[bytes]) -> list[tuple[int, int | None]]:
        """``insert`` each key in order (the last ends most recent). All keys are
        checked first: on an error nothing is inserted."""
        if not isinstance(keys, list | tuple):
            keys = list(keys)
        n = len(keys)
        if n == 0:
            return []
        # One pass over the types stands in for n per-key checks, and C checks
        # the lengths before changing anything; on a bad batch, the per-key
        # check finds the same first error as the twin.
        try:
            lens = array(_U32, map(len, keys))
            blob = b"".join(keys)
            ok = all(issubclass(t, bytes) for t in set(map(type, keys)))
        except (TypeError, OverflowError):
            ok = False
        if not ok:
            self._check_all(keys)
        size, slots, ev = self._batch
        if size < n:
            size = max(n, min(self._capacity, 1024))
            slots = _new_raw("int32_t[]", size)
            ev = _new_raw("int32_t[]", size)
            self._batch = (size, slots, ev)
        nev: int = _insert_many(
            self._p, blob, len(blob), _from_buffer("uint32_t[]", lens), n, slots, ev
        )
        if nev < 0:
            self._check_all(keys)
        out: list[int] = _unpack(slots, n)
        if nev == 0:
            return list(zip(out, repeat(None, n), strict=True))
        return [(s, e if e >= 0 else None) for s, e in zip(out, _unpack(ev, n), strict=True)]

    def _check_all(self, keys: Sequence[bytes]) -> NoReturn:
        for key in keys:
            check_lru_key(key, self._max_key_len)
        raise AssertionError("unreachable: the batch check found a bad key")  # pragma: no cover

    def remove(self, key: bytes) -> int | None:
        """Forget the key; its freed slot, or None when absent."""
        if isinstance(key, bytes):
            slot: int = _remove(self._p, key, len(key))
            if slot >= 0:
                return slot
            if len(key) <= self._max_key_len:
                return None
        self._bad_key(key)

    def order(self) -> list[int]:
        """Slots, most recent first."""
        buf = self._order
        result: list[int] = _unpack(buf, _order(self._p, buf, self._capacity))
        return result

    def keys(self) -> list[bytes]:
        """Keys, most recent first."""
        count = int(_len(self._p))
        if count == 0:
            return []
        size = count * self._max_key_len
        out = _new_raw("uint8_t[]", size)
        lens = _new_raw("uint32_t[]", count)
        n = lib.qp2p_lru_keys(self._p, out, size, lens, count)
        ends = list(accumulate(_unpack(lens, n)))
        blob = ffi.buffer(out, ends[-1] if ends else 0)[:]
        return [blob[a:b] for a, b in pairwise([0, *ends])]
