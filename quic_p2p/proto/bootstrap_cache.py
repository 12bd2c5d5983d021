"""The bootstrap cache: nodes we connected to, most recently connected first.

Sans-IO: this module holds the in-memory cache and its byte codec; reading and
writing the file (locking, atomic replace, corruption recovery) is
:class:`quic_p2p.cache_store.CacheStore`.

Rules
-----
- A node is its key: an entry is keyed by the node's :class:`~quic_p2p.peer.PeerId`
  (``peer_id.digest``, 32 bytes), whatever address it was reached at. An entry
  holds the id and up to :data:`MAX_ENTRY_ADDRESSES` addresses (the first is
  tried first), never a certificate: certificates are renewed with the same
  key, and the id is what a cached entry pins.
- Only callers decide what is cached: :meth:`BootstrapCache.add` is called for
  a Node we connected to that proved reachability (so its id is known: a
  ``NodeInfo`` without one is refused with ``ValueError``). The same id at a
  new address refreshes its entry (addresses replaced, moved to most recent,
  failures reset). Hard-coded contacts are never cached: a node is hard-coded
  when a hard-coded contact has its id or, for a hard-coded contact without an
  id, one of its addresses is the node's ``peer_addr``.
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

File format (version 2, little-endian)
--------------------------------------
::

    magic "QP2PBOOT" | u16 version (2) | u16 flags (0) | u32 n_entries | u32 n_removed
    n_entries x: peer_id (32) | u64 last_ms | u8 failures | u8 n_addrs (1..8)
                 | n_addrs x (u8 ip_len (4|16) | ip | u16 port)   (most recent first)
    n_removed x: key (32) | u64 last_ms                           (tombstones)
    SHA-256 of everything before it (32 bytes)

``peer_id`` is ``PeerId.digest`` and is also the entry's key; a tombstone's
key is the removed entry's ``peer_id``.

Version 1 (read, never written) had the same envelope with entries
``u8 ip_len | ip | u16 port | u64 last_ms | u8 failures | u32 cert_len | cert
DER`` keyed by address and certificate, and tombstones ``u8 key_len | key |
u64 last_ms``. A version-1 file is migrated as it is read: each entry's id is
that of its certificate's key; an entry with an empty or unparsable
certificate is dropped, and so is every tombstone (its key cannot be mapped to
an id). The next save writes version 2.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from .. import accel
from ..errors import QuicP2pError
from ..peer import MAX_CONTACT_ADDRESSES, Address, InvalidContactError, NodeInfo, PeerId

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_FAILURES",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_ENTRY_ADDRESSES",
    "BootstrapCache",
    "CacheEntry",
    "CacheFormatError",
    "CacheState",
    "node_key",
]

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 200
DEFAULT_MAX_FAILURES = 3
MAGIC = b"QP2PBOOT"
#: The version written; version 1 is still read (and migrated).
FORMAT_VERSION = 2
#: Addresses kept per entry (as many as a contact may carry).
MAX_ENTRY_ADDRESSES = MAX_CONTACT_ADDRESSES
#: Decode limits: a file beyond them is foreign or corrupt, not a big cache.
MAX_FILE_SIZE = 8 << 20
MAX_FILE_ENTRIES = 4096
MAX_CERT_LEN = 16 << 10  # version 1 only
KEY_LEN = 32  # an entry's or tombstone's key: PeerId.digest
V1_KEY_MAX_LEN = 64

_HEADER = struct.Struct("<8sHHII")
_ENTRY_HEAD = struct.Struct("<32sQBB")  # peer_id, last_ms, failures, n_addrs
_PORT = struct.Struct("<H")
_TOMB = struct.Struct("<32sQ")  # key, last_ms
_V1_ENTRY_TAIL = struct.Struct("<HQBI")  # port, last_ms, failures, cert_len
_STAMP = struct.Struct("<Q")
_DIGEST_LEN = 32
_U64_MAX = (1 << 64) - 1


class CacheFormatError(QuicP2pError, ValueError):
    """Bytes that are not a valid bootstrap cache file (corrupt, truncated,
    foreign or another version)."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached node (``info``: its id and addresses, no certificate): when
    we last connected to it and how many connection attempts have failed
    since."""

    info: NodeInfo
    last_connected_ms: int
    failures: int = 0


@dataclass(slots=True)
class CacheState:
    """What a cache file holds: entries (most recent first) and tombstones
    (entry key -> last-connected ms of the removed entry). ``version`` is the
    format the bytes were in; ``dropped`` counts what a version-1 file held
    that could not be migrated (entries without a usable certificate, and
    tombstones)."""

    entries: list[CacheEntry] = field(default_factory=list)
    removed: dict[bytes, int] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    dropped: int = 0


class LruLike(Protocol):
    """The part of :class:`quic_p2p.accel.LruIndex` the cache uses."""

    def __len__(self) -> int: ...
    def lookup(self, key: bytes) -> int | None: ...
    def insert(self, key: bytes) -> tuple[int, int | None]: ...
    def insert_many(self, keys: Iterable[bytes]) -> list[tuple[int, int | None]]: ...
    def remove(self, key: bytes) -> int | None: ...
    def order(self) -> list[int]: ...


class LruFactory(Protocol):
    """Makes the cache's index, as :class:`quic_p2p.accel.LruIndex` does
    (keys are :data:`KEY_LEN` bytes: its default key length limit fits)."""

    def __call__(self, capacity: int, *, random_bytes: Callable[[int], bytes]) -> LruLike: ...


def node_key(info: NodeInfo) -> bytes:
    """The LRU / tombstone key of a node: its ``peer_id.digest``.
    ``ValueError`` for a ``NodeInfo`` without an id (it cannot be cached)."""
    if info.peer_id is None:
        raise ValueError(f"{info} has no peer_id: only a proven Node is cached")
    return info.peer_id.digest


def _key_of(info: object) -> bytes | None:
    if isinstance(info, NodeInfo) and info.peer_id is not None:
        return info.peer_id.digest
    return None


def _ms(now: float) -> int:
    return min(max(int(now * 1000), 0), _U64_MAX)


def _cacheable(info: NodeInfo) -> NodeInfo:
    """What an entry holds for ``info``: its id and first addresses, no cert."""
    if not info.peer_cert_der and len(info.other_addrs) < MAX_ENTRY_ADDRESSES:
        return info
    addrs = info.addresses[:MAX_ENTRY_ADDRESSES]
    return NodeInfo(addrs[0], b"", info.peer_id, addrs[1:])


class BootstrapCache:
    """Up to ``capacity`` nodes, most recently connected first, one entry per
    ``PeerId`` (see the module docstring for the rules). Not thread-safe: use
    it from one thread.

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
        contacts = tuple(hard_coded)
        self._hard_ids = frozenset(c.peer_id for c in contacts if c.peer_id is not None)
        self._hard_addrs: frozenset[Address] = frozenset(
            a for c in contacts if c.peer_id is None for a in c.addresses
        )
        self._slots: list[CacheEntry | None] = [None] * capacity
        self._removed: dict[bytes, int] = {}
        #: At least the newest entry's stamp (the next add is stamped no earlier).
        self._newest_ms = 0

    # ------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, info: object) -> bool:
        """Whether the node (by ``info.peer_id``) is cached."""
        return self._get(_key_of(info)) is not None

    def is_hard_coded(self, info: NodeInfo) -> bool:
        """Whether ``info`` is a hard-coded contact's node: the same id as one
        that carries an id, or the ``peer_addr`` of one that carries none."""
        if info.peer_id is not None and info.peer_id in self._hard_ids:
            return True
        return info.peer_addr in self._hard_addrs

    def _get(self, key: bytes | None) -> CacheEntry | None:
        if key is None:
            return None
        slot = self._lru.lookup(key)
        return None if slot is None else self._slots[slot]

    def entry(self, info: NodeInfo) -> CacheEntry | None:
        """The entry of the node with ``info.peer_id`` (whatever its address),
        or None when it is not cached (or ``info`` has no id)."""
        return self._get(_key_of(info))

    def find(self, peer_id: PeerId) -> NodeInfo | None:
        """The cached contact (id and addresses) of ``peer_id``, or None."""
        e = self._get(peer_id.digest)
        return None if e is None else e.info

    def entries(self) -> list[CacheEntry]:
        """All entries, most recently connected first."""
        slots = self._slots
        return [e for e in map(slots.__getitem__, self._lru.order()) if e is not None]

    def peers(self) -> list[NodeInfo]:
        """Cached nodes (id and addresses, no certificate), most recently
        connected first."""
        return [e.info for e in self.entries()]

    def bootstrap_order(self) -> list[NodeInfo]:
        """The order to try cached nodes in: healthy ones most recent first,
        then demoted ones (fewer failures first, then most recent)."""
        return [e.info for e in sorted(self.entries(), key=lambda e: e.failures)]

    # ----------------------------------------------------------- mutations
    def add(self, info: NodeInfo, now: float) -> bool:
        """Record a successful connection to the node ``info`` at ``now``
        (seconds since the epoch, from the caller: this module reads no
        clock): insert, or refresh its entry (addresses replaced by
        ``info``'s), move to most recent, reset failures. The certificate is
        not kept.
        False, and nothing cached, for a hard-coded contact; ``ValueError``
        when ``info`` has no ``peer_id``."""
        key = node_key(info)
        if self.is_hard_coded(info):
            return False
        stamp = _ms(now)
        # Keep timestamps non-increasing along the order (see the module doc) and
        # newer than our own tombstone, which would otherwise drop the re-add.
        stamp = max(stamp, self._newest_ms)
        tomb = self._removed.pop(key, None)
        if tomb is not None and tomb >= stamp:
            stamp = min(tomb + 1, _U64_MAX)
        slot, _evicted = self._lru.insert(key)
        # An evicted entry's slot is simply reused: the cap is not a removal.
        self._slots[slot] = CacheEntry(_cacheable(info), stamp, 0)
        self._newest_ms = stamp
        return True

    def record_failure(self, info: NodeInfo) -> bool:
        """Count a failed connection attempt to a cached node (by
        ``info.peer_id``); the node is demoted, and removed at
        ``max_failures`` in a row. False if not cached."""
        key = _key_of(info)
        slot = None if key is None else self._lru.lookup(key)
        entry = None if slot is None else self._slots[slot]
        if key is None or slot is None or entry is None:
            return False
        if entry.failures + 1 >= self.max_failures:
            self._remove(key, slot, entry)
        else:
            # Not touched: the recency order stays "most recently connected".
            self._slots[slot] = CacheEntry(entry.info, entry.last_connected_ms, entry.failures + 1)
        return True

    def remove(self, info: NodeInfo) -> bool:
        """Forget a node (by ``info.peer_id``), leaving a tombstone for merges.
        False if not cached."""
        key = _key_of(info)
        slot = None if key is None else self._lru.lookup(key)
        entry = None if slot is None else self._slots[slot]
        if key is None or slot is None or entry is None:
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
            if len(key) == KEY_LEN and stamp > removed.get(key, -1):
                removed[key] = stamp
        best: dict[bytes, tuple[CacheEntry, int]] = {}
        ours = self.entries()
        for pos, e in enumerate(ours + state.entries):
            id_key = _key_of(e.info)
            if id_key is None or e.failures >= self.max_failures or self.is_hard_coded(e.info):
                continue
            tomb = removed.get(id_key)
            if tomb is not None and e.last_connected_ms <= tomb:
                continue
            cur = best.get(id_key)
            if cur is None:
                best[id_key] = (e, pos)
            elif (e.last_connected_ms, e.failures) > (cur[0].last_connected_ms, cur[0].failures):
                best[id_key] = (e, cur[1])
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0].last_connected_ms, kv[1][1]))
        ranked = ranked[: self.capacity]
        # A tombstone older than a live entry has done its job.
        for key, (e, _pos) in ranked:
            if removed.get(key, _U64_MAX) < e.last_connected_ms:
                del removed[key]
        entries = [_entry_of(e) for _k, (e, _p) in ranked]
        self._rebuild(entries, [k for k, _v in ranked])
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


def _entry_of(e: CacheEntry) -> CacheEntry:
    """``e`` holding what an entry holds (a state built by hand may carry a
    certificate or more addresses)."""
    info = _cacheable(e.info)
    return e if info is e.info else CacheEntry(info, e.last_connected_ms, e.failures)


@lru_cache(maxsize=1024)
def _packed_ip(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


def _host(ip: bytes) -> str:
    return str(ipaddress.IPv4Address(ip) if len(ip) == 4 else ipaddress.IPv6Address(ip))


# Every save decodes the file, which holds mostly the same nodes each time;
# building a NodeInfo (address parses) costs more than the rest of decode.
# Keys: (peer_id, the entry's address bytes) for version 2, (b"v1", peer_id,
# ip, port) for version 1.
_DECODED: dict[tuple[bytes, ...], NodeInfo] = {}
_DECODED_MAX = 1024


def _remember(memo: tuple[bytes, ...], info: NodeInfo) -> NodeInfo:
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    _DECODED[memo] = info
    return info


def _node_info(peer_id: bytes, raw_addrs: bytes, addrs: list[tuple[bytes, int]]) -> NodeInfo:
    memo = (peer_id, raw_addrs)
    info = _DECODED.get(memo)
    if info is None:
        hosts = [(_host(ip), port) for ip, port in addrs]
        try:
            info = NodeInfo(hosts[0], b"", PeerId(peer_id), tuple(hosts[1:]))
        except InvalidContactError as exc:  # pragma: no cover - packed IPs always parse
            raise CacheFormatError(f"bad cache entry: {exc}") from None
        info = _remember(memo, info)
    return info


def _encode_entry(e: CacheEntry) -> bytes:
    info = e.info
    addrs = info.addresses[:MAX_ENTRY_ADDRESSES]
    failures = min(e.failures, 255)
    parts = [_ENTRY_HEAD.pack(node_key(info), e.last_connected_ms, failures, len(addrs))]
    for host, port in addrs:
        ip = _packed_ip(host)
        parts += (bytes((len(ip),)), ip, _PORT.pack(port))
    return b"".join(parts)


def encode_state(state: CacheState) -> bytes:
    """Serialise entries and tombstones (version 2), checksum appended. Every
    entry must have a ``peer_id`` (``ValueError`` otherwise); certificates
    are not written."""
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(state.entries), len(state.removed))]
    parts += map(_encode_entry, state.entries)
    for key, stamp in state.removed.items():
        if len(key) != KEY_LEN:
            raise ValueError(f"a tombstone key is {KEY_LEN} bytes (a peer id's digest)")
        parts.append(_TOMB.pack(key, stamp))
    body = b"".join(parts)
    return body + accel.sha256(body)


def decode_state(data: bytes) -> CacheState:
    """Inverse of :func:`encode_state`; also reads (and migrates) version 1.
    Safe on any bytes: lengths are checked against what remains and capped
    before anything is sliced or allocated; anything wrong raises
    :class:`CacheFormatError`."""
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
    if version not in (1, FORMAT_VERSION):
        raise CacheFormatError(f"unsupported cache file version {version}")
    end = len(data) - _DIGEST_LEN
    if accel.sha256(data[:end]) != data[end:]:
        raise CacheFormatError("cache file checksum mismatch (corrupt or truncated)")
    if flags != 0 or n_entries > MAX_FILE_ENTRIES or n_removed > MAX_FILE_ENTRIES:
        raise CacheFormatError("cache file header out of range")
    if version == 1:
        return _decode_v1(data, end, n_entries, n_removed)
    pos = _HEADER.size
    entries: list[CacheEntry] = []
    for _ in range(n_entries):
        if pos + _ENTRY_HEAD.size > end:
            raise CacheFormatError("cache entry truncated")
        peer_id, last_ms, failures, n_addrs = _ENTRY_HEAD.unpack_from(data, pos)
        pos += _ENTRY_HEAD.size
        if not 1 <= n_addrs <= MAX_ENTRY_ADDRESSES:
            raise CacheFormatError(f"cache entry address count {n_addrs} out of range")
        start = pos
        addrs: list[tuple[bytes, int]] = []
        for _a in range(n_addrs):
            ip, pos = _read_ip(data, pos, end, _PORT.size)
            (port,) = _PORT.unpack_from(data, pos)
            pos += _PORT.size
            addrs.append((ip, port))
        info = _node_info(peer_id, data[start:pos], addrs)
        entries.append(CacheEntry(info, last_ms, failures))
    removed: dict[bytes, int] = {}
    for _ in range(n_removed):
        if pos + _TOMB.size > end:
            raise CacheFormatError("cache tombstone truncated")
        key, stamp = _TOMB.unpack_from(data, pos)
        removed[key] = stamp
        pos += _TOMB.size
    if pos != end:
        raise CacheFormatError("trailing bytes after the cache entries")
    return CacheState(entries, removed, FORMAT_VERSION)


def _read_ip(data: bytes, pos: int, end: int, then: int) -> tuple[bytes, int]:
    """``u8 ip_len (4|16) | ip`` at ``pos``, with ``then`` more bytes after it
    before ``end``; the ip and the position after it."""
    if pos + 1 > end:
        raise CacheFormatError("cache entry truncated")
    ip_len = data[pos]
    if ip_len not in (4, 16):
        raise CacheFormatError(f"bad address length {ip_len}")
    pos += 1
    if pos + ip_len + then > end:
        raise CacheFormatError("cache entry truncated")
    return data[pos : pos + ip_len], pos + ip_len


def _v1_node_info(ip: bytes, port: int, cert: bytes) -> NodeInfo | None:
    """A version-1 entry's node with the id of its certificate's key; None
    when the certificate is empty or not a usable certificate."""
    if not cert:
        return None
    try:
        peer_id = PeerId.from_certificate(cert)
    except Exception:  # a foreign parser on file bytes: whatever it raises, drop
        return None
    memo = (b"v1", peer_id.digest, ip, _PORT.pack(port))
    info = _DECODED.get(memo)
    if info is None:
        info = _remember(memo, NodeInfo((_host(ip), port), b"", peer_id))
    return info


def _decode_v1(data: bytes, end: int, n_entries: int, n_removed: int) -> CacheState:
    """Version 1's records (the envelope is checked), migrated to version 2's
    model: see the module docstring."""
    pos = _HEADER.size
    entries: list[CacheEntry] = []
    dropped_entries = 0
    for _ in range(n_entries):
        ip, pos = _read_ip(data, pos, end, _V1_ENTRY_TAIL.size)
        port, last_ms, failures, cert_len = _V1_ENTRY_TAIL.unpack_from(data, pos)
        pos += _V1_ENTRY_TAIL.size
        if cert_len > MAX_CERT_LEN or pos + cert_len > end:
            raise CacheFormatError("cache entry certificate length out of range")
        cert = data[pos : pos + cert_len]
        pos += cert_len
        info = _v1_node_info(ip, port, cert)
        if info is None:
            dropped_entries += 1
        else:
            entries.append(CacheEntry(info, last_ms, failures))
    for _ in range(n_removed):
        if pos + 1 > end:
            raise CacheFormatError("cache tombstone truncated")
        key_len = data[pos]
        pos += 1
        if key_len > V1_KEY_MAX_LEN or pos + key_len + _STAMP.size > end:
            raise CacheFormatError("cache tombstone out of range")
        pos += key_len + _STAMP.size
    if pos != end:
        raise CacheFormatError("trailing bytes after the cache entries")
    log.info(
        "bootstrap cache file is version 1: %d entries migrated to peer ids, %d dropped"
        " (no usable certificate), %d tombstones dropped; the next save writes version 2",
        len(entries),
        dropped_entries,
        n_removed,
    )
    return CacheState(entries, {}, 1, dropped_entries + n_removed)
