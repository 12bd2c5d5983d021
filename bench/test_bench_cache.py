"""Bootstrap cache persistence, on a real file in a temp dir: save (a node
reconnected, then lock + read + merge + atomic write with two fsyncs) and load
(read + decode + merge into a fresh cache) of a full 200-entry cache.

Informational groups: file I/O, fsync and the codec dominate, so C vs twin is
a tie (the LRU index is a few microseconds of a millisecond-scale save); see
bench/test_bench_lru.py for the index alone, which is gated.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from quic_p2p.cache_store import CacheStore
from quic_p2p.peer import NodeInfo, PeerId
from quic_p2p.proto.bootstrap_cache import BootstrapCache

CAPACITY = 200


def _nodes() -> list[NodeInfo]:
    # What an entry holds (format v2): an id and addresses, here two each
    # (IPv4 and IPv6), no certificate.
    return [
        NodeInfo(
            (f"10.0.{i >> 8}.{i & 255}", 4000 + i),
            peer_id=PeerId(hashlib.sha256(i.to_bytes(2, "big")).digest()),
            other_addrs=[(f"2001:db8::{i:x}", 4000 + i)],
        )
        for i in range(CAPACITY)
    ]


def _full(impl: ModuleType) -> BootstrapCache:
    cache = BootstrapCache(CAPACITY, lru_factory=impl.LruIndex, random_bytes=os.urandom)
    for t, info in enumerate(_nodes()):
        cache.add(info, 1_700_000_000.0 + t)
    return cache


def test_save_200(benchmark: Any, impl: ModuleType, tmp_path: Path) -> None:
    """One change persisted: a known node reconnects, then the whole save."""
    benchmark.group = "info-cache-save-200"
    store, cache = CacheStore(tmp_path), _full(impl)
    nodes = _nodes()
    store.save(cache)
    state = {"i": 0}

    def save() -> bool:
        state["i"] += 1
        cache.add(nodes[state["i"] % CAPACITY], 1e9 + state["i"])
        return store.save(cache)

    assert benchmark(save)
    assert len(store.load().entries) == CAPACITY


def test_load_200(benchmark: Any, impl: ModuleType, tmp_path: Path) -> None:
    """Start-up: read and verify the file, then fill a fresh cache from it."""
    benchmark.group = "info-cache-load-200"
    store = CacheStore(tmp_path)
    saved = _full(impl)
    store.save(saved)

    def load() -> BootstrapCache:
        cache = BootstrapCache(CAPACITY, lru_factory=impl.LruIndex, random_bytes=os.urandom)
        cache.merge(store.load())
        return cache

    assert benchmark(load).peers() == saved.peers()
