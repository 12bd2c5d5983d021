"""LRU index twin: an OrderedDict key -> slot (most recent last) and a heap of free slots."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..types import LRU_MAX_CAPACITY, LRU_MAX_KEY_LEN

#: Bytes of hash key an index draws from ``random_bytes`` when created.
SEED_SIZE = 16


def check_lru_args(capacity: int, max_key_len: int) -> None:
    """Raise TypeError/ValueError for arguments no index accepts (shared with cimpl)."""
    if not isinstance(capacity, int) or not isinstance(max_key_len, int):
        raise TypeError("capacity and max_key_len must be int")
    if not 1 <= capacity <= LRU_MAX_CAPACITY:
        raise ValueError(f"capacity must be 1..{LRU_MAX_CAPACITY}, not {capacity}")
    if not 1 <= max_key_len <= LRU_MAX_KEY_LEN:
        raise ValueError(f"max_key_len must be 1..{LRU_MAX_KEY_LEN}, not {max_key_len}")


def draw_lru_seed(random_bytes: Callable[[int], bytes]) -> bytes:
    """The index's hash key: ``random_bytes(SEED_SIZE)``, checked (shared with cimpl)."""
    if not callable(random_bytes):
        raise TypeError("random_bytes must be callable, e.g. os.urandom")
    seed = random_bytes(SEED_SIZE)
    if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
        raise ValueError(f"random_bytes({SEED_SIZE}) must return {SEED_SIZE} bytes")
    return seed


def check_lru_key(key: bytes, max_key_len: int) -> None:
    """Raise TypeError for a non-bytes key, ValueError for one above max_key_len."""
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    if len(key) > max_key_len:
        raise ValueError(f"key longer than {max_key_len} bytes")


class LruIndex:
    """Maps up to ``capacity`` keys (bytes) to slot numbers ``0..capacity-1``.

    The caller keeps its objects in a list indexed by slot. A new key takes the
    slot of the key it evicts (the least recently used), else the lowest free
    slot. Not thread-safe: use one index from one thread (the event loop).

    ``random_bytes(n)`` (required; the driver passes ``os.urandom``) is called
    once, with ``SEED_SIZE`` (16), for the hash key of the C index's table
    (hash-flooding defence). This twin's dict is keyed by the interpreter's own
    string-hash seed, so it draws the bytes only to keep the same contract.
    """

    __slots__ = ("_capacity", "_free", "_max_key_len", "_slots")

    def __init__(
        self, capacity: int, max_key_len: int = 64, *, random_bytes: Callable[[int], bytes]
    ) -> None:
        check_lru_args(capacity, max_key_len)
        draw_lru_seed(random_bytes)
        self._capacity = capacity
        self._max_key_len = max_key_len
        self._slots: OrderedDict[bytes, int] = OrderedDict()  # least recent first
        self._free = list(range(capacity))  # sorted, hence already a heap

    @property
    def capacity(self) -> int:
        """Most keys held at once (slots are ``0..capacity-1``)."""
        return self._capacity

    @property
    def max_key_len(self) -> int:
        """Longest key accepted, in bytes."""
        return self._max_key_len

    def _check(self, key: bytes) -> None:
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if len(key) > self._max_key_len:
            raise ValueError(f"key longer than {self._max_key_len} bytes")

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        self._check(key)  # type: ignore[arg-type]
        return key in self._slots

    def lookup(self, key: bytes) -> int | None:
        """The key's slot, or None; the order does not change."""
        self._check(key)
        return self._slots.get(key)

    def touch(self, key: bytes) -> int | None:
        """Make the key most recent; its slot, or None when absent."""
        self._check(key)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
        return slot

    def _insert(self, key: bytes) -> tuple[int, int | None]:
        slots = self._slots
        slot = slots.get(key)
        if slot is not None:
            slots.move_to_end(key)
            return slot, None
        if len(slots) >= self._capacity:
            _, slot = slots.popitem(last=False)
            slots[key] = slot
            return slot, slot
        slot = heapq.heappop(self._free)
        slots[key] = slot
        return slot, None

    def insert(self, key: bytes) -> tuple[int, int | None]:
        """Insert (or touch) the key as most recent: ``(slot, evicted slot or None)``."""
        self._check(key)
        return self._insert(key)

    def insert_many(self, keys: Iterable[bytes]) -> list[tuple[int, int | None]]:
        """``insert`` each key in order (the last ends most recent). All keys are
        checked first: on an error nothing is inserted."""
        if not isinstance(keys, list | tuple):
            keys = list(keys)
        for key in keys:
            self._check(key)
        return [self._insert(key) for key in keys]

    def remove(self, key: bytes) -> int | None:
        """Forget the key; its freed slot, or None when absent."""
        self._check(key)
        slot = self._slots.pop(key, None)
        if slot is not None:
            heapq.heappush(self._free, slot)
        return slot

    def order(self) -> list[int]:
        """Slots, most recent first."""
        return list(reversed(self._slots.values()))

    def keys(self) -> list[bytes]:
        """Keys, most recent first."""
        return list(reversed(self._slots))
