"""The bootstrap cache: nodes we connected to, most recently connected first.

Sans-IO: this module holds the in-memory cache and its byte codec; reading and
writing the file (locking, atomic replace, corruption recovery) is
:class:`quic_p2p.cache_store.CacheStore`.

Rules
-----
- Only callers decide what is cached: :meth:`BootstrapCache.add` is called for
  a Node we connected to that proved reachability. Hard-coded contacts are
  never cached.
- At most ``capacity`` (200) entries; the least recently connected is evicted.
  The order is kept by :class:`quic_p2p.accel.LruIndex`.
- Demotion: :meth:`~BootstrapCache.record_failure` counts consecutive failed
  connection attempts. An entry with failures is tried after every healthy one
  (:meth:`~BootstrapCache.bootstrap_order`: fewer failures first, then most
  recent). A success (:meth:`~BootstrapCache.add`) resets the count. The entry
  is removed at ``max_failures`` (3) consecutive failures.
- Every entry carries its last-connected time (ms since the epoch). Timestamps
  never decrease along the recency order (an add is stamped at least as late as
  the current newest entry), so the order can be rebuilt from timestamps alone.
- Merge (several processes share one file): the union by key; for a key in
  both, the later last-connected wins, and on a tie the higher failure count.
  Then newest first (ties: our order, then the file's), capped at ``capacity``.
  A removal leaves a tombstone ``key -> last-connected of the removed entry``
  that drops any copy of that entry not connected since, so another process
  cannot resurrect it; tombstones are kept for the ``capacity`` newest removals.

File format (version 1, little-endian)
--------------------------------------
::

    magic "QP2PBOOT" | u16 version | u16 flags (0) | u32 n_entries | u32 n_removed
    n_entries x: u8 ip_len (4|16) | ip | u16 port | u64 last_ms | u8 failures
                 | u32 cert_len | cert DER            (most recent first)
    n_removed x: u8 key_len | key | u64 last_ms        (tombstones)
    SHA-256 of everything before it (32 bytes)

An entry's key is ``packed IP | u16 port (big-endian) | SHA-256(cert)``
(38 or 50 bytes): the same node at a new address is a different entry.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from .. import accel
from ..errors import QuicP2pError
from ..peer import InvalidContactError, NodeInfo

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_FAILURES",
    "FORMAT_VERSION",
    "MAGIC",
    "BootstrapCache",
    "CacheEntry",
    "CacheFormatError",
    "CacheState",
    "node_key",
]

DEFAULT_CAPACITY = 200
DEFAULT_MAX_FAILURES = 3
MAGIC = b"QP2PBOOT"
FORMAT_VERSION = 1
#: Decode limits: a file beyond them is foreign or corrupt, not a big cache.
MAX_FILE_SIZE = 8 << 20
MAX_FILE_ENTRIES = 4096
MAX_CERT_LEN = 16 << 10
KEY_MAX_LEN = 64

_HEADER = struct.Struct("<8sHHII")
_ENTRY_TAIL = struct.Struct("<HQBI")  # port, last_ms, failures, cert_len
_STAMP = struct.Struct("<Q")
_DIGEST_LEN = 32
_U64_MAX = (1 << 64) - 1


class CacheFormatError(QuicP2pError, ValueError):
    """Bytes that are not a valid bootstrap cache file (corrupt, truncated,
    foreign or another version)."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached node: when we last connected to it and how many connection
    attempts have failed since."""

    info: NodeInfo
    last_connected_ms: int
    failures: int = 0


@dataclass(slots=True)
class CacheState:
    """What a cache file holds: entries (most recent first) and tombstones
    (entry key -> last-connected ms of the removed entry)."""

    entries: list[CacheEntry] = field(default_factory=list)
    removed: dict[bytes, int] = field(default_factory=dict)


class LruLike(Protocol):
    """The part of :class:`quic_p2p.accel.LruIndex` the cache uses."""

    def __len__(self) -> int: ...
    def lookup(self, key: bytes) -> int | None: ...
    def insert(self, key: bytes) -> tuple[int, int | None]: ...
    def insert_many(self, keys: Iterable[bytes]) -> list[tuple[int, int | None]]: ...
    def remove(self, key: bytes) -> int | None: ...
    def order(self) -> list[int]: ...


class LruFactory(Protocol):
    """Makes the cache's index, as :class:`quic_p2p.accel.LruIndex` does."""

    def __call__(self, capacity: int, *, random_bytes: Callable[[int], bytes]) -> LruLike: ...


@lru_cache(maxsize=1024)  # a save re-keys every entry (ours and the file's)
def node_key(info: NodeInfo) -> bytes:
    """The LRU / tombstone key of a node: packed address + SHA-256 of its cert."""
    host, port = info.peer_addr
    return _packed_ip(host) + port.to_bytes(2, "big") + accel.sha256(info.peer_cert_der)


def _ms(now: float) -> int:
    return min(max(int(now * 1000), 0), _U64_MAX)


class BootstrapCache:
    """Up to ``capacity`` nodes, most recently connected first (see the module
    docstring for the rules). Not thread-safe: use it from one thread.

    ``random_bytes`` (required; the driver passes ``os.urandom``) seeds the
    hash keys of each LRU index the cache makes (``lru_factory(capacity,
    random_bytes=...)``: one now, one per :meth:`merge`)."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        hard_coded: Iterable[NodeInfo] = (),
        *,
        random_bytes: Callable[[int], bytes],
        max_failures: int = DEFAULT_MAX_FAILURES,
        lru_factory: LruFactory | None = None,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self._random_bytes = random_bytes
        self._factory: LruFactory = lru_factory or accel.LruIndex
        self._lru = self._factory(capacity, random_bytes=random_bytes)
        self.capacity = capacity
        self.max_failures = max_failures
        self._hard_coded = frozenset(hard_coded)
        self._slots: list[CacheEntry | None] = [None] * capacity
        self._removed: dict[bytes, int] = {}
        #: At least the newest entry's stamp (the next add is stamped no earlier).
        self._newest_ms = 0

    # ------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, info: object) -> bool:
        return isinstance(info, NodeInfo) and self._get(info) is not None

    def is_hard_coded(self, info: NodeInfo) -> bool:
        return info in self._hard_coded

    def _get(self, info: NodeInfo) -> CacheEntry | None:
        slot = self._lru.lookup(node_key(info))
        return None if slot is None else self._slots[slot]

    def entry(self, info: NodeInfo) -> CacheEntry | None:
        """The node's entry, or None when it is not cached."""
        return self._get(info)

    def entries(self) -> list[CacheEntry]:
        """All entries, most recently connected first."""
        slots = self._slots
        return [e for e in map(slots.__getitem__, self._lru.order()) if e is not None]

    def peers(self) -> list[NodeInfo]:
        """Cached nodes, most recently connected first."""
        return [e.info for e in self.entries()]

    def bootstrap_order(self) -> list[NodeInfo]:
        """The order to try cached nodes in: healthy ones most recent first,
        then demoted ones (fewer failures first, then most recent)."""
        return [e.info for e in sorted(self.entries(), key=lambda e: e.failures)]

    # ----------------------------------------------------------- mutations
    def add(self, info: NodeInfo, now: float) -> bool:
        """Record a successful connection at ``now`` (seconds since the epoch,
        from the caller: this module reads no clock): insert or move to most
        recent, reset failures.
        False, and nothing cached, for a hard-coded contact."""
        if info in self._hard_coded:
            return False
        key = node_key(info)
        stamp = _ms(now)
        # Keep timestamps non-increasing along the order (see the module doc) and
        # newer than our own tombstone, which would otherwise drop the re-add.
        stamp = max(stamp, self._newest_ms)
        tomb = self._removed.pop(key, None)
        if tomb is not None and tomb >= stamp:
            stamp = min(tomb + 1, _U64_MAX)
        slot, _evicted = self._lru.insert(key)
        # An evicted entry's slot is simply reused: the cap is not a removal.
        self._slots[slot] = CacheEntry(info, stamp, 0)
        self._newest_ms = stamp
        return True

    def record_failure(self, info: NodeInfo) -> bool:
        """Count a failed connection attempt to a cached node; the node is
        demoted, and removed at ``max_failures`` in a row. False if not cached."""
        key = node_key(info)
        slot = self._lru.lookup(key)
        entry = None if slot is None else self._slots[slot]
        if slot is None or entry is None:
            return False
        if entry.failures + 1 >= self.max_failures:
            self._remove(key, slot, entry)
        else:
            # Not touched: the recency order stays "most recently connected".
            self._slots[slot] = CacheEntry(info, entry.last_connected_ms, entry.failures + 1)
        return True

    def remove(self, info: NodeInfo) -> bool:
        """Forget a node (leaving a tombstone for merges). False if not cached."""
        key = node_key(info)
        slot = self._lru.lookup(key)
        entry = None if slot is None else self._slots[slot]
        if slot is None or entry is None:
            return False
        self._remove(key, slot, entry)
        return True

    def _remove(self, key: bytes, slot: int, entry: CacheEntry) -> None:
        self._lru.remove(key)
        self._slots[slot] = None
        self._removed[key] = max(self._removed.get(key, 0), entry.last_connected_ms)
        self._trim_removed()

    def clear(self) -> None:
        """Remove every entry (tombstoned, so a merge does not bring them back)."""
        for e in self.entries():
            self.remove(e.info)

    def _trim_removed(self) -> None:
        if len(self._removed) > self.capacity:
            keep = sorted(self._removed.items(), key=lambda kv: kv[1], reverse=True)
            self._removed = dict(keep[: self.capacity])

    def merge(self, state: CacheState) -> None:
        """Merge another copy of the cache (the file) into this one: see the
        module docstring. The result replaces our order and entries."""
        removed = dict(self._removed)
        for key, stamp in state.removed.items():
            if len(key) <= KEY_MAX_LEN and stamp > removed.get(key, -1):
                removed[key] = stamp
        best: dict[bytes, tuple[CacheEntry, int]] = {}
        ours = self.entries()
        for pos, e in enumerate(ours + state.entries):
            if e.info in self._hard_coded or e.failures >= self.max_failures:
                continue
            key = node_key(e.info)
            tomb = removed.get(key)
            if tomb is not None and e.last_connected_ms <= tomb:
                continue
            cur = best.get(key)
            if cur is None:
                best[key] = (e, pos)
            elif (e.last_connected_ms, e.failures) > (cur[0].last_connected_ms, cur[0].failures):
                best[key] = (e, cur[1])
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0].last_connected_ms, kv[1][1]))
        ranked = ranked[: self.capacity]
        # A tombstone older than a live entry has done its job.
        for key, (e, _pos) in ranked:
            if removed.get(key, _U64_MAX) < e.last_connected_ms:
                del removed[key]
        self._rebuild([e for _k, (e, _p) in ranked], [k for k, _v in ranked])
        self._removed = removed
        self._trim_removed()

    def _rebuild(self, entries: list[CacheEntry], keys: list[bytes]) -> None:
        lru = self._factory(self.capacity, random_bytes=self._random_bytes)
        slots: list[CacheEntry | None] = [None] * self.capacity
        # Oldest first, so the newest ends most recent; one crossing for all.
        for (slot, _ev), e in zip(lru.insert_many(keys[::-1]), entries[::-1], strict=True):
            slots[slot] = e
        self._lru, self._slots = lru, slots
        if entries:
            self._newest_ms = max(self._newest_ms, entries[0].last_connected_ms)

    # --------------------------------------------------------------- codec
    def state(self) -> CacheState:
        """A snapshot of entries and tombstones (what :meth:`encode` writes)."""
        return CacheState(self.entries(), dict(self._removed))

    def encode(self) -> bytes:
        """The cache as file bytes (format in the module docstring)."""
        return encode_state(self.state())

    @staticmethod
    def decode(data: bytes) -> CacheState:
        """Parse file bytes; raises :class:`CacheFormatError` on anything else."""
        return decode_state(data)


@lru_cache(maxsize=1024)
def _packed_ip(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


# Every save decodes the file, which holds mostly the same nodes each time;
# building a NodeInfo (two ipaddress parses) costs more than the rest of decode.
_DECODED: dict[tuple[bytes, int, bytes], NodeInfo] = {}
_DECODED_MAX = 1024


def _node_info(ip: bytes, port: int, cert: bytes) -> NodeInfo:
    memo = (ip, port, cert)
    info = _DECODED.get(memo)
    if info is None:
        host = str(ipaddress.IPv4Address(ip) if len(ip) == 4 else ipaddress.IPv6Address(ip))
        try:
            info = NodeInfo((host, port), cert)
        except InvalidContactError as exc:  # pragma: no cover - packed IPs always parse
            raise CacheFormatError(f"bad cache entry: {exc}") from None
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[memo] = info
    return info


def encode_state(state: CacheState) -> bytes:
    """Serialise entries and tombstones, checksum appended."""
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(state.entries), len(state.removed))]
    pack_tail = _ENTRY_TAIL.pack
    for e in state.entries:
        host, port = e.info.peer_addr
        ip = _packed_ip(host)
        cert = e.info.peer_cert_der
        parts += (
            bytes((len(ip),)),
            ip,
            pack_tail(port, e.last_connected_ms, min(e.failures, 255), len(cert)),
            cert,
        )
    for key, stamp in state.removed.items():
        parts += (bytes((len(key),)), key, _STAMP.pack(stamp))
    body = b"".join(parts)
    return body + accel.sha256(body)


def decode_state(data: bytes) -> CacheState:
    """Inverse of :func:`encode_state`. Safe on any bytes: lengths are checked
    against what remains and capped before anything is sliced or allocated."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CacheFormatError("cache data must be bytes")
    data = bytes(data)
    if len(data) > MAX_FILE_SIZE:
        raise CacheFormatError(f"cache file larger than {MAX_FILE_SIZE} bytes")
    if len(data) < _HEADER.size + _DIGEST_LEN:
        raise CacheFormatError("cache file truncated (no header)")
    magic, version, flags, n_entries, n_removed = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CacheFormatError("not a quic-p2p bootstrap cache file (bad magic)")
    if version != FORMAT_VERSION:
        raise CacheFormatError(f"unsupported cache file version {version}")
    end = len(data) - _DIGEST_LEN
    if accel.sha256(data[:end]) != data[end:]:
        raise CacheFormatError("cache file checksum mismatch (corrupt or truncated)")
    if flags != 0 or n_entries > MAX_FILE_ENTRIES or n_removed > MAX_FILE_ENTRIES:
        raise CacheFormatError("cache file header out of range")
    pos = _HEADER.size
    entries: list[CacheEntry] = []
    for _ in range(n_entries):
        if pos + 1 > end:
            raise CacheFormatError("cache entry truncated")
        ip_len = data[pos]
        if ip_len not in (4, 16):
            raise CacheFormatError(f"bad address length {ip_len}")
        pos += 1
        if pos + ip_len + _ENTRY_TAIL.size > end:
            raise CacheFormatError("cache entry truncated")
        ip = data[pos : pos + ip_len]
        pos += ip_len
        port, last_ms, failures, cert_len = _ENTRY_TAIL.unpack_from(data, pos)
        pos += _ENTRY_TAIL.size
        if cert_len > MAX_CERT_LEN or pos + cert_len > end:
            raise CacheFormatError("cache entry certificate length out of range")
        cert = data[pos : pos + cert_len]
        pos += cert_len
        entries.append(CacheEntry(_node_info(ip, port, cert), last_ms, failures))
    removed: dict[bytes, int] = {}
    for _ in range(n_removed):
        if pos + 1 > end:
            raise CacheFormatError("cache tombstone truncated")
        key_len = data[pos]
        pos += 1
        if key_len > KEY_MAX_LEN or pos + key_len + _STAMP.size > end:
            raise CacheFormatError("cache tombstone out of range")
        key = data[pos : pos + key_len]
        pos += key_len
        (removed[key],) = _STAMP.unpack_from(data, pos)
        pos += _STAMP.size
    if pos != end:
        raise CacheFormatError("trailing bytes after the cache entries")
    return CacheState(entries, removed)
