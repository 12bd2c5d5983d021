"""LRU index benchmarks, shaped like the bootstrap cache's workload: load a
200-entry cache file at start-up, save the whole order, and a few single
inserts/touches per connection event."""

from __future__ import annotations

import os
import random
from itertools import cycle
from types import ModuleType
from typing import Any

CAPACITY = 200
_rnd = random.Random(20240601)
# Peer address + certificate hash: ~50 bytes.
LOAD = [_rnd.randbytes(_rnd.choice((38, 50, 54))) for _ in range(CAPACITY)]
STREAM = [_rnd.randbytes(50) for _ in range(1000)]


def _full(impl: ModuleType) -> Any:
    idx = impl.LruIndex(CAPACITY, random_bytes=os.urandom)
    idx.insert_many(LOAD)
    return idx


def test_load_200(benchmark: Any, impl: ModuleType) -> None:
    """Start-up: a fresh index loaded from the cache file in one call."""
    benchmark.group = "lru-load-200"

    def load() -> list[tuple[int, int | None]]:
        return impl.LruIndex(CAPACITY, random_bytes=os.urandom).insert_many(LOAD)  # type: ignore[no-any-return]

    assert benchmark(load) == [(i, None) for i in range(CAPACITY)]


def test_order_200(benchmark: Any, impl: ModuleType) -> None:
    """Saving the cache: the whole recency order of a full index."""
    benchmark.group = "lru-order-200"
    idx = _full(impl)
    assert benchmark(idx.order) == list(range(CAPACITY - 1, -1, -1))


def test_touch(benchmark: Any, impl: ModuleType) -> None:
    """One touch of a present key (a known node reconnected). Informational:
    a single crossing costs more than OrderedDict.move_to_end itself, and the
    cache never touches without also saving the order (see lru-cache-life)."""
    benchmark.group = "info-lru-touch"
    idx = _full(impl)
    assert benchmark(idx.touch, LOAD[100]) == 100


def test_insert_evict(benchmark: Any, impl: ModuleType) -> None:
    """One insert of a new key into a full index (a new node joined the cache).
    1000 keys cycle through 200 slots, so every insert is new and evicts.
    Informational, as info-lru-touch."""
    benchmark.group = "info-lru-insert-evict"
    idx = _full(impl)
    insert, nxt = idx.insert, cycle(STREAM).__next__
    for _ in range(len(STREAM)):
        insert(nxt())

    def one() -> tuple[int, int | None]:
        return insert(nxt())  # type: ignore[no-any-return]

    slot, evicted = benchmark(one)
    assert slot == evicted


def _mixed_ops() -> list[tuple[int, bytes]]:
    """1000 events: 50% insert of a new node, 30% insert of a known one
    (a touch), 15% touch, 5% remove (a node that failed to connect)."""
    rnd = random.Random(7)
    known = list(LOAD)
    ops: list[tuple[int, bytes]] = []
    fresh = iter(STREAM)
    for _ in range(1000):
        r = rnd.random()
        if r < 0.5:
            key = next(fresh)
            known.append(key)
            ops.append((0, key))
        elif r < 0.8:
            ops.append((0, rnd.choice(known[-CAPACITY:])))
        elif r < 0.95:
            ops.append((1, rnd.choice(known[-CAPACITY:])))
        else:
            ops.append((2, rnd.choice(known[-CAPACITY:])))
    return ops


MIXED = _mixed_ops()


def test_cache_life(benchmark: Any, impl: ModuleType) -> None:
    """A cache's life in miniature: load 200, then 1000 connection events, each
    followed by reading the whole order, as the cache persists every change."""
    benchmark.group = "lru-cache-life"

    def run() -> list[int]:
        idx = impl.LruIndex(CAPACITY, random_bytes=os.urandom)
        idx.insert_many(LOAD)
        ops = (idx.insert, idx.touch, idx.remove)
        order = idx.order
        for op, key in MIXED:
            ops[op](key)
            order()
        return order()  # type: ignore[no-any-return]

    assert len(benchmark(run)) <= CAPACITY
