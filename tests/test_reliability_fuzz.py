"""Fuzzing the parsers peers and files can reach (issue 7, scenario 8), on both
implementations (``impl``: C and its twin), adding what test_framing.py,
test_classify.py, test_tokens.py and test_bootstrap_cache.py do not cover:

- a stateful fuzz of ``FrameDecoder``: frames and garbage fed in random chunks
  (of random buffer types) and checked after every feed against a reference
  decoder written here from csrc/qp2p.h;
- cross-feeding: each implementation's encoders into the other's decoder;
- the datagram classifier on mutated *real* aioquic datagrams (every packet
  type of a handshake), C against twin, plus invariants;
- a stateful fuzz of retry tokens: mint, rotate, damage and verify in both
  implementations side by side, against a model of what must verify;
- the cache loader on structurally valid (checksummed) files with hostile
  contents, merged through each LRU implementation, and loaded from disk.

Marked ``c_extension`` so ci/sanitize runs them under ASan/UBSan. Example
counts scale with ``QUIC_P2P_FUZZ_EXAMPLES`` (ci/fuzz sets it high).
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import struct
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from quic_p2p.accel.types import (
    FRAME_HEADER_SIZE,
    FRAME_MAX_BODY,
    KIND_MAX,
    MAX_CID_LEN,
    DatagramError,
    Frame,
    FrameError,
    FrameErrorCode,
    PacketType,
    TokenError,
    TokenErrorCode,
)

pytestmark = pytest.mark.c_extension

U64_MAX = 2**64 - 1
FUZZ = int(os.environ.get("QUIC_P2P_FUZZ_EXAMPLES", "0") or 0)
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def examples(default: int) -> int:
    """``default`` examples, or ``QUIC_P2P_FUZZ_EXAMPLES`` when set (ci/fuzz)."""
    return FUZZ or default


def fuzz_settings(default: int, **kw: Any) -> settings:
    return settings(
        max_examples=examples(default), deadline=None, suppress_health_check=FIXTURES, **kw
    )


def header(kind: int, msg_id: int, length: int, version: int = 1, flags: int = 0) -> bytes:
    return struct.pack(">BBHIQ", version, kind, flags, length, msg_id)


# ------------------------------------------------------------------ reference decoder
def reference_decode(
    stream: bytes, max_body: int
) -> tuple[list[Frame], FrameErrorCode | None, int, int]:
    """Decodes a whole byte stream: (frames, error, offset of the bad header or
    of the unfinished tail, bytes held back)."""
    frames: list[Frame] = []
    pos = 0
    while len(stream) - pos >= FRAME_HEADER_SIZE:
        version, kind, flags, length, msg_id = struct.unpack_from(">BBHIQ", stream, pos)
        if version != 1:
            return frames, FrameErrorCode.VERSION, pos, 0
        if not 1 <= kind <= KIND_MAX:
            return frames, FrameErrorCode.KIND, pos, 0
        if flags:
            return frames, FrameErrorCode.FLAGS, pos, 0
        if length > max_body:
            return frames, FrameErrorCode.TOO_LARGE, pos, 0
        if len(stream) - pos - FRAME_HEADER_SIZE < length:
            break
        start = pos + FRAME_HEADER_SIZE
        frames.append(Frame(kind, msg_id, stream[start : start + length]))
        pos = start + length
    return frames, None, pos, len(stream) - pos


segment = st.one_of(
    st.tuples(st.integers(1, KIND_MAX), st.integers(0, U64_MAX), st.binary(max_size=200)).map(
        lambda f: header(f[0], f[1], len(f[2])) + f[2]
    ),
    st.tuples(st.integers(1, KIND_MAX), st.integers(0, U64_MAX), st.integers(0, 400)).map(
        lambda f: header(*f)  # a header whose body may never come
    ),
    st.builds(
        header,
        kind=st.integers(0, 255),
        msg_id=st.integers(0, U64_MAX),
        length=st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)),
        version=st.sampled_from([0, 1, 1, 1, 2, 255]),
        flags=st.sampled_from([0, 0, 0, 1, 0x8000]),
    ),
    st.binary(max_size=40),
)


class DecoderMachine(RuleBasedStateMachine):
    """One decoder, fed what the rules queue, in chunks the rules choose."""

    impl: ModuleType  # set by the factory below

    def __init__(self) -> None:
        super().__init__()
        self.max_body = 0
        self.decoder: Any = None
        self.queued = bytearray()
        self.fed = bytearray()
        self.got: list[Frame] = []
        self.dead: FrameErrorCode | None = None

    @initialize(max_body=st.one_of(st.integers(0, 300), st.just(FRAME_MAX_BODY)))
    def start(self, max_body: int) -> None:
        self.max_body = max_body
        self.decoder = self.impl.FrameDecoder(max_body)

    @rule(seg=segment)
    def queue(self, seg: bytes) -> None:
        self.queued += seg

    @rule(n=st.integers(0, 600), kind=st.sampled_from(["bytes", "bytearray", "memoryview"]))
    def feed(self, n: int, kind: str) -> None:
        chunk = bytes(self.queued[:n])
        del self.queued[:n]
        arg: Any = {"bytes": chunk, "bytearray": bytearray(chunk), "memoryview": memoryview(chunk)}[
            kind
        ]
        before = len(self.got)
        frames, error, _, _ = reference_decode(bytes(self.fed + chunk), self.max_body)
        if self.dead is not None:
            with pytest.raises(FrameError) as exc:
                self.decoder.feed(arg)
            assert exc.value.code == self.dead
            return
        self.fed += chunk
        if error is not None:
            with pytest.raises(FrameError) as exc:
                self.decoder.feed(arg)
            assert exc.value.code == error
            assert self.got + list(exc.value.frames) == frames
            self.dead = error
            return
        self.got += self.decoder.feed(arg)
        assert self.got == frames, f"after {len(self.fed)} bytes"
        assert len(self.got) >= before

    @invariant()
    def buffered_matches(self) -> None:
        if self.decoder is None or self.dead is not None:
            return
        _, _, _, held = reference_decode(bytes(self.fed), self.max_body)
        assert self.decoder.buffered == held

    @precondition(lambda self: self.decoder is not None and self.dead is None)
    @rule()
    def zero_length_feed(self) -> None:
        assert self.decoder.feed(b"") == []


@functools.cache
def _decoder_machine(name: str, mod: ModuleType) -> type[DecoderMachine]:
    return type(f"DecoderMachine_{name}", (DecoderMachine,), {"impl": mod})


def test_frame_decoder_stateful_against_reference(impl: ModuleType) -> None:
    machine = _decoder_machine(impl.NAME, impl)
    run_state_machine_as_test(machine, settings=fuzz_settings(150, stateful_step_count=40))


# ------------------------------------------------------------------ cross-feeding
frames_st = st.lists(
    st.tuples(st.integers(1, KIND_MAX), st.integers(0, U64_MAX), st.binary(max_size=3000)),
    max_size=15,
)


@fuzz_settings(150)
@given(frames=frames_st, seed=st.integers(0, 2**32 - 1), batch=st.booleans())
def test_encoders_of_one_feed_the_decoder_of_the_other(
    c_impl: ModuleType,
    py_impl: ModuleType,
    frames: list[tuple[int, int, bytes]],
    seed: int,
    batch: bool,
) -> None:
    rng = random.Random(seed)
    for enc, dec in ((c_impl, py_impl), (py_impl, c_impl), (c_impl, c_impl)):
        if batch:
            data = enc.encode_frames(frames)
        else:
            data = b"".join(enc.encode_frame_header(k, m, len(b)) + b for k, m, b in frames)
        decoder = dec.FrameDecoder(3000)
        got: list[Frame] = []
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 2, 15, 16, 17, 100, 4096, rng.randint(1, 9000)])
            got += decoder.feed(data[pos : pos + step])
            pos += step
        assert got == [Frame(k, m, b) for k, m, b in frames]
        assert decoder.buffered == 0


# ------------------------------------------------------------------ classifier
@functools.cache
def real_datagrams() -> tuple[bytes, ...]:
    """Every datagram of an in-memory aioquic handshake with our TLS settings
    plus some application data (Initial, Handshake, 1-RTT, coalesced ones),
    a Retry and a version negotiation."""
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import encode_quic_retry, encode_quic_version_negotiation

    from quic_p2p import Config
    from quic_p2p.certfiles import generate_self_signed
    from quic_p2p.peer import NodeInfo
    from quic_p2p.proto.tls import client_configuration, server_configuration

    cert = generate_self_signed()
    config = Config(ip="127.0.0.1")
    client = QuicConnection(
        configuration=client_configuration(
            config, NodeInfo(("127.0.0.1", 4433), cert.cert_der), connection_id_length=8
        )
    )
    server: QuicConnection | None = None
    out: list[bytes] = []
    now = 1.0
    client.connect(("127.0.0.1", 4433), now=now)
    for step in range(20):
        now += 0.01
        for data, _ in client.datagrams_to_send(now=now):
            out.append(data)
            if server is None:
                server = QuicConnection(
                    configuration=server_configuration(config, cert, connection_id_length=8),
                    original_destination_connection_id=data[6:14],
                )
            server.receive_datagram(data, ("127.0.0.1", 5000), now=now)
        if server is not None:
            for data, _ in server.datagrams_to_send(now=now):
                out.append(data)
                client.receive_datagram(data, ("127.0.0.1", 4433), now=now)
        if step == 5:
            client.send_stream_data(2, b"x" * 3000)
            client.send_ping(1)
    out.append(
        encode_quic_retry(
            version=1,
            source_cid=b"r" * 8,
            destination_cid=b"d" * 8,
            original_destination_cid=b"o" * 8,
            retry_token=b"t" * 40,
        )
    )
    out.append(
        encode_quic_version_negotiation(
            source_cid=b"s" * 8, destination_cid=b"d" * 8, supported_versions=[1, 0x0A0A0A0A]
        )
    )
    return tuple(out)


def _classify(mod: ModuleType, data: bytes, k: int) -> tuple[Any, ...]:
    try:
        return ("ok", mod.classify_datagram(data, k))
    except DatagramError as exc:
        return ("error", exc.code)


@st.composite
def mutated_datagram(draw: st.DrawFn) -> bytes:
    dgrams = real_datagrams()
    data = bytearray(dgrams[draw(st.integers(0, len(dgrams) - 1))])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "splice"]))
        if op == "flip" and data:
            i = draw(st.integers(0, min(len(data) - 1, 80)))  # mostly header bytes
            data[i] ^= draw(st.integers(1, 255))
        elif op == "set" and data:
            i = draw(st.integers(0, min(len(data) - 1, 80)))
            data[i] = draw(st.sampled_from([0, 0x14, 0x15, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF]))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(max_size=64))
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@fuzz_settings(400)
@given(data=mutated_datagram(), k=st.sampled_from([0, 8, 8, 8, 20]))
def test_classifier_on_mutated_real_datagrams(
    c_impl: ModuleType, py_impl: ModuleType, data: bytes, k: int
) -> None:
    c, py = _classify(c_impl, data, k), _classify(py_impl, data, k)
    assert c == py
    if c[0] == "ok":
        info = c[1]
        # RFC 8999: other versions may use CIDs up to 255 bytes; v1 up to 20.
        limit = MAX_CID_LEN if info.version == 1 else 255
        assert len(info.dcid) <= limit and len(info.scid) <= limit
        assert info.token == b"" or info.token in data
        if info.packet_type == PacketType.INITIAL:
            assert info.version == 1 and info.long_header


def test_classifier_sees_every_real_datagram(impl: ModuleType) -> None:
    types = {impl.classify_datagram(d, 8).packet_type for d in real_datagrams()}
    # (Handshake packets travel coalesced behind Initials: the first packet counts.)
    assert {
        PacketType.INITIAL,
        PacketType.ONE_RTT,
        PacketType.RETRY,
        PacketType.VERSION_NEGOTIATION,
    } <= types


# ------------------------------------------------------------------ retry tokens
addrs = st.one_of(
    st.binary(min_size=6, max_size=6), st.binary(min_size=18, max_size=18), st.binary(max_size=40)
)
cids = st.binary(max_size=MAX_CID_LEN)


class TokenMachine(RuleBasedStateMachine):
    """C and twin side by side, same secrets, against a model of validity."""

    c_mod: ModuleType
    py_mod: ModuleType
    LIFETIME = 1_000
    SKEW = 100

    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.c: Any = None
        self.py: Any = None
        self.generation = 0  # rotations so far
        self.now = 10_000

    @initialize(secret=st.binary(min_size=1, max_size=80), key_id=st.integers(0, 255))
    def start(self, secret: bytes, key_id: int) -> None:
        kw = {"lifetime_ms": self.LIFETIME, "skew_ms": self.SKEW, "key_id": key_id}
        self.c = self.c_mod.RetryTokens(secret, random_bytes=os.urandom, **kw)
        self.py = self.py_mod.RetryTokens(secret, random_bytes=os.urandom, **kw)

    @rule(target=tokens, addr=addrs, odcid=cids, rscid=cids, in_c=st.booleans())
    def mint(self, addr: bytes, odcid: bytes, rscid: bytes, in_c: bool) -> tuple[Any, ...]:
        a = (self.c if in_c else self.py).mint(addr, odcid, rscid, self.now)
        b = (self.py if in_c else self.c).mint(addr, odcid, rscid, self.now)
        assert a == b
        return (a, addr, odcid, rscid, self.now, self.generation)

    @rule(secret=st.binary(min_size=1, max_size=80))
    def rotate(self, secret: bytes) -> None:
        self.c.rotate(secret)
        self.py.rotate(secret)
        self.generation += 1

    @rule(dt=st.integers(-200, 1_500))
    def advance(self, dt: int) -> None:
        self.now = max(0, self.now + dt)

    @rule(
        t=tokens,
        damage=st.one_of(
            st.none(), st.tuples(st.integers(0, 80), st.integers(1, 255)), st.integers(0, 80)
        ),
        other_addr=st.one_of(st.none(), addrs),
        other_rscid=st.one_of(st.none(), cids),
    )
    def verify(
        self, t: tuple[Any, ...], damage: Any, other_addr: bytes | None, other_rscid: bytes | None
    ) -> None:
        token, addr, odcid, rscid, minted, gen = t
        if isinstance(damage, tuple) and damage[0] < len(token):
            token = (
                token[: damage[0]] + bytes([token[damage[0]] ^ damage[1]]) + token[damage[0] + 1 :]
            )
        elif isinstance(damage, int):
            token = token[:damage]
        addr_v = addr if other_addr is None else other_addr
        rscid_v = rscid if other_rscid is None else other_rscid
        outcomes = []
        for mod in (self.c, self.py):
            try:
                outcomes.append(("ok", mod.verify(token, addr_v, rscid_v, self.now)))
            except TokenError as exc:
                outcomes.append(("error", exc.code))
        assert outcomes[0] == outcomes[1]
        # The model: an untouched token, bound to the same address and retry
        # CID, whose key is current or previous, verifies within its window.
        untouched = token == t[0] and addr_v == addr and rscid_v == rscid
        key_alive = self.generation - gen <= 1  # current or previous key
        fresh = minted - self.SKEW <= self.now <= minted + self.LIFETIME
        if untouched and key_alive and fresh:
            assert outcomes[0] == ("ok", odcid)
        elif untouched and key_alive:
            assert outcomes[0][1] in (TokenErrorCode.EXPIRED, TokenErrorCode.FUTURE)
        elif untouched:  # key rotated out (its id may be reused after 256 rotations)
            assert outcomes[0][1] in (TokenErrorCode.UNKNOWN_KEY, TokenErrorCode.BAD_MAC)
        elif not untouched and outcomes[0][0] == "ok":
            # Damage that still verifies must be a no-op on what is bound.
            assert token == t[0] and outcomes[0][1] == odcid


@functools.cache
def _token_machine(c_mod: ModuleType, py_mod: ModuleType) -> type[TokenMachine]:
    return type("TokenMachineCPy", (TokenMachine,), {"c_mod": c_mod, "py_mod": py_mod})


def test_retry_tokens_stateful_c_against_twin(c_impl: ModuleType, py_impl: ModuleType) -> None:
    run_state_machine_as_test(
        _token_machine(c_impl, py_impl), settings=fuzz_settings(100, stateful_step_count=30)
    )


# ------------------------------------------------------------------ cache loader
def _v1_entry_bytes(ip: bytes, port: int, last: int, failures: int, cert: bytes) -> bytes:
    return bytes([len(ip)]) + ip + struct.pack("<HQBI", port, last, failures, len(cert)) + cert


def _v2_entry_bytes(
    peer_id: bytes, last: int, failures: int, addrs: list[tuple[bytes, int]], n_addrs: int
) -> bytes:
    head = struct.pack("<32sQBB", peer_id, last, failures, n_addrs & 0xFF)
    return head + b"".join(bytes([len(ip)]) + ip + struct.pack("<H", port) for ip, port in addrs)


@functools.cache
def _real_certs() -> tuple[bytes, ...]:
    """Three keys' certificates: version-1 entries that migrate to an id."""
    from quic_p2p.certfiles import generate_self_signed

    return tuple(generate_self_signed(f"fuzz {i}").cert_der for i in range(3))


@st.composite
def cache_file(draw: st.DrawFn) -> bytes:
    """Mostly well-formed files (valid checksum) with hostile contents, in
    format version 2 or (one in four) version 1: duplicate ids (one node at
    several addresses), more entries than the capacity, extreme stamps and
    failure counts, odd tombstones; sometimes a deliberately broken field."""
    from quic_p2p.proto.bootstrap_cache import MAGIC

    version = draw(st.sampled_from([1, 2, 2, 2]))
    n_pool = draw(st.integers(1, 12))
    ip_st = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
    addr_st = st.tuples(ip_st, st.integers(0, 65535))
    if version == 2:
        ids = [hashlib.sha256(bytes([i])).digest() for i in range(n_pool)]
        addrs_st = st.lists(
            st.one_of(
                st.sampled_from([(bytes([127, 0, 0, i]), 5000 + i) for i in range(4)]), addr_st
            ),
            min_size=1,
            max_size=8,
        )
        good = st.tuples(
            st.one_of(st.sampled_from(ids), st.binary(min_size=32, max_size=32)),
            st.integers(0, U64_MAX),
            st.integers(0, 255),
            addrs_st,
        ).map(lambda t: _v2_entry_bytes(*t, len(t[3])))
        wrong_count = st.tuples(
            st.sampled_from(ids),
            st.integers(0, U64_MAX),
            st.integers(0, 5),
            addrs_st,
            st.sampled_from([0, 9, 255]),
        ).map(lambda t: _v2_entry_bytes(*t))
        entry_st = st.one_of(good, good, good, wrong_count)
        tomb_st = st.tuples(
            st.one_of(st.sampled_from(ids), st.binary(min_size=32, max_size=32)),
            st.integers(0, U64_MAX),
        ).map(lambda t: t[0] + struct.pack("<Q", t[1]))
    else:
        certs = [*_real_certs(), b"", b"junk" * 9]
        pool = [(bytes([127, 0, 0, i]), 5000 + i, certs[i % len(certs)]) for i in range(n_pool)]
        entry_st = st.one_of(
            st.tuples(st.sampled_from(pool), st.integers(0, U64_MAX), st.integers(0, 255)).map(
                lambda t: _v1_entry_bytes(t[0][0], t[0][1], t[1], t[2], t[0][2])
            ),
            st.tuples(
                ip_st,
                st.integers(0, 65535),
                st.integers(0, U64_MAX),
                st.integers(0, 5),
                st.one_of(st.binary(max_size=64), st.sampled_from(certs)),
            ).map(lambda t: _v1_entry_bytes(*t)),
        )
        tomb_st = st.tuples(st.binary(max_size=70), st.integers(0, U64_MAX)).map(
            lambda t: bytes([len(t[0]) & 0xFF]) + t[0] + struct.pack("<Q", t[1])
        )
    entries = draw(st.lists(entry_st, max_size=draw(st.sampled_from([5, 30, 260]))))
    tombs = draw(st.lists(tomb_st, max_size=8))
    n_entries, n_removed = len(entries), len(tombs)
    if draw(st.integers(0, 9)) == 0:
        n_entries += draw(st.integers(-2, 2))
    if draw(st.integers(0, 9)) == 0:
        n_removed += draw(st.integers(-2, 2))
    body = struct.pack("<8sHHII", MAGIC, version, 0, max(0, n_entries), max(0, n_removed))
    body += b"".join(entries) + b"".join(tombs)
    if draw(st.integers(0, 9)) == 0:
        body += draw(st.binary(min_size=1, max_size=8))
    return body + hashlib.sha256(body).digest()


@fuzz_settings(200)
@given(data=cache_file(), ours=st.integers(0, 5))
def test_cache_loader_hostile_files_merge_identically(
    c_impl: ModuleType, py_impl: ModuleType, data: bytes, ours: int
) -> None:
    from quic_p2p.peer import NodeInfo, PeerId
    from quic_p2p.proto.bootstrap_cache import BootstrapCache, CacheFormatError, decode_state

    try:
        state = decode_state(data)
    except CacheFormatError:
        return
    results = []
    for mod in (c_impl, py_impl):
        cache = BootstrapCache(lru_factory=mod.LruIndex, random_bytes=os.urandom)
        for i in range(ours):
            # Ids the file may hold too (hashlib.sha256(bytes([i])) in cache_file).
            ours_id = PeerId(hashlib.sha256(bytes([i])).digest())
            cache.add(NodeInfo(("127.0.0.1", 5000 + i), peer_id=ours_id), 1000.0 + i)
        cache.merge(state)
        assert len(cache) <= cache.capacity
        stamps = [e.last_connected_ms for e in cache.entries()]
        assert stamps == sorted(stamps, reverse=True)
        assert all(e.failures < cache.max_failures for e in cache.entries())
        ids = [e.info.peer_id for e in cache.entries()]
        assert len(set(ids)) == len(ids) and None not in ids  # one entry per node
        assert all(e.info.peer_cert_der == b"" for e in cache.entries())
        again = decode_state(cache.encode())  # what we write, we can read (as v2)
        assert again.entries == cache.entries() and again.version == 2
        results.append((cache.entries(), cache.encode(), cache.bootstrap_order()))
    assert results[0] == results[1]


@fuzz_settings(60)
@given(data=st.one_of(cache_file(), st.binary(max_size=300)))
def test_cache_store_load_never_raises_on_hostile_files(data: bytes) -> None:
    from quic_p2p.cache_store import FILE_NAME, CacheStore

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / FILE_NAME).write_bytes(data)
        state = CacheStore(d).load()
        names = sorted(p.name for p in Path(d).iterdir())
        if state.entries or state.removed:
            assert FILE_NAME in names
        assert all(
            n == FILE_NAME or ".corrupt-" in n or n.startswith(".") or "lock" in n for n in names
        ), names
