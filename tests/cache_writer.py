"""Writes a bootstrap cache from a subprocess, for the multi-process tests.

    python cache_writer.py DIR TAG COUNT     add COUNT nodes of TAG, saving after each
    python cache_writer.py DIR TAG forever   add nodes until killed (saving after each)

Prints ``ready`` once the first save is done. ``node_for(tag, i)`` is shared with
the tests so both sides name the same nodes; the kill loop forks ``write_forever``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from itertools import count

from quic_p2p.cache_store import CacheStore
from quic_p2p.peer import NodeInfo, PeerId
from quic_p2p.proto.bootstrap_cache import BootstrapCache


def node_for(tag: int, i: int) -> NodeInfo:
    """A distinct node (its own id) per (tag, i)."""
    peer_id = PeerId(hashlib.sha256(f"node-{tag}-{i}".encode()).digest())
    addr = (f"10.{tag % 256}.{(i >> 8) % 256}.{i % 256}", 1000 + i % 60000)
    return NodeInfo(addr, peer_id=peer_id)


def write(directory: str, tag: int, numbers: Iterable[int], ready: Callable[[], object]) -> int:
    """Add ``node_for(tag, i)`` for each number, saving after each; ``ready()``
    after the first save. 1 if a save failed."""
    store = CacheStore(directory)
    cache = BootstrapCache(random_bytes=os.urandom)
    cache.merge(store.load())
    for i in numbers:
        cache.add(node_for(tag, i), time.time())
        if not store.save(cache):
            return 1
        if i == 0:
            ready()
    return 0


def write_forever(directory: str, tag: int, ready: Callable[[], object]) -> None:
    """Entry point for forked writers (the kill loop forks instead of spawning an
    interpreter: 50 kills then take seconds, not half a minute)."""
    write(directory, tag, count(), ready)


def main(argv: list[str]) -> int:
    numbers = count() if argv[3] == "forever" else range(int(argv[3]))
    return write(argv[1], int(argv[2]), numbers, lambda: print("ready", flush=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
