"""LRU index (hot path 3): unit tests on both implementations, a stateful
model-based test running C and twin side by side against a plain list model,
adversarial keys, error agreement, and the C entry points the wrapper does not use."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from quic_p2p import accel
from quic_p2p.accel.types import LRU_MAX_CAPACITY, LRU_MAX_KEY_LEN

pytestmark = pytest.mark.c_extension


class Model:
    """The contract at its plainest: a list of keys, most recent first."""

    def __init__(self, capacity: int, max_key_len: int) -> None:
        self.capacity = capacity
        self.max_key_len = max_key_len
        self.mru: list[bytes] = []
        self.slot: dict[bytes, int] = {}

    def check(self, key: object) -> None:
        if not isinstance(key, bytes):
            raise TypeError
        if len(key) > self.max_key_len:
            raise ValueError

    def lookup(self, key: bytes) -> int | None:
        self.check(key)
        return self.slot.get(key)

    def touch(self, key: bytes) -> int | None:
        self.check(key)
        if key not in self.slot:
            return None
        self.mru.remove(key)
        self.mru.insert(0, key)
        return self.slot[key]

    def insert(self, key: bytes) -> tuple[int, int | None]:
        self.check(key)
        if key in self.slot:
            return self.touch(key), None  # type: ignore[return-value]
        evicted = None
        if len(self.mru) == self.capacity:
            victim = self.mru.pop()
            evicted = slot = self.slot.pop(victim)
        else:
            slot = min(set(range(self.capacity)) - set(self.slot.values()))
        self.mru.insert(0, key)
        self.slot[key] = slot
        return slot, evicted

    def insert_many(self, keys: Sequence[bytes]) -> list[tuple[int, int | None]]:
        for key in keys:
            self.check(key)
        return [self.insert(key) for key in keys]

    def remove(self, key: bytes) -> int | None:
        self.check(key)
        if key not in self.slot:
            return None
        self.mru.remove(key)
        return self.slot.pop(key)

    def order(self) -> list[int]:
        return [self.slot[k] for k in self.mru]

    def keys(self) -> list[bytes]:
        return list(self.mru)


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """A call's result, or the type of the exception it raised."""
    try:
        return "ok", fn()
    except (TypeError, ValueError) as exc:
        return "error", type(exc)


def state(idx: Any) -> tuple[int, list[int], list[bytes]]:
    return len(idx), idx.order(), idx.keys()


def key(i: int, size: int = 50) -> bytes:
    return i.to_bytes(4, "big").rjust(size, b"k")


# ------------------------------------------------------------------ unit tests


def test_constants_match_header(c_impl: ModuleType) -> None:
    from quic_p2p.accel.cimpl._ffi import lib

    assert lib.QP2P_LRU_MAX_CAPACITY == LRU_MAX_CAPACITY
    assert lib.QP2P_LRU_MAX_KEY_LEN == LRU_MAX_KEY_LEN
    assert lib.QP2P_E_LRU_KEY_LENGTH == -40


def test_hash_key_comes_from_the_injected_random_bytes(impl: ModuleType) -> None:
    calls: list[int] = []

    def source(n: int) -> bytes:
        calls.append(n)
        return bytes(range(n))

    idx = impl.LruIndex(8, random_bytes=source)
    assert calls == [16]  # once, at creation, in both implementations
    assert [idx.insert(key(i)) for i in range(9)][-1] == (0, 0)
    assert calls == [16]


def test_c_and_twin_agree_under_the_same_injected_bytes(
    c_impl: ModuleType, py_impl: ModuleType
) -> None:
    # Any seed, even all zeros: the hash key changes where C stores a key, never an answer.
    for seed in (bytes(16), b"\xff" * 16, bytes(range(16))):
        c, py = (m.LruIndex(16, 8, random_bytes=lambda n, s=seed: s) for m in (c_impl, py_impl))
        keys = [i.to_bytes(2, "big") for i in range(40)]
        assert c.insert_many(keys[:20]) == py.insert_many(keys[:20])
        assert [c.insert(k) for k in keys[20:]] == [py.insert(k) for k in keys[20:]]
        assert [c.remove(k) for k in keys[::3]] == [py.remove(k) for k in keys[::3]]
        assert (c.order(), c.keys()) == (py.order(), py.keys())


def test_random_bytes_is_required_and_checked(impl: ModuleType) -> None:
    with pytest.raises(TypeError, match="random_bytes"):
        impl.LruIndex(4)
    with pytest.raises(TypeError, match="callable"):
        impl.LruIndex(4, random_bytes=None)
    for bad in (lambda n: b"short", lambda n: bytearray(n), lambda n: bytes(n + 1)):
        with pytest.raises(ValueError, match=r"random_bytes\(16\) must return 16 bytes"):
            impl.LruIndex(4, random_bytes=bad)
    # Bad arguments are reported before anything is drawn.
    with pytest.raises(ValueError, match="capacity"):
        impl.LruIndex(0, random_bytes=lambda n: b"short")


def test_attributes(impl: ModuleType) -> None:
    idx = impl.LruIndex(5, random_bytes=os.urandom)
    assert (idx.capacity, idx.max_key_len, len(idx)) == (5, 64, 0)
    assert impl.LruIndex(3, 7, random_bytes=os.urandom).max_key_len == 7
    assert idx.order() == [] and idx.keys() == []


def test_eviction_order_and_slot_reuse(impl: ModuleType) -> None:
    idx = impl.LruIndex(3, random_bytes=os.urandom)
    assert [idx.insert(k) for k in (b"a", b"b", b"c")] == [(0, None), (1, None), (2, None)]
    assert idx.order() == [2, 1, 0]
    assert idx.keys() == [b"c", b"b", b"a"]
    # The least recent key (a, slot 0) goes; the new key takes its slot.
    assert idx.insert(b"d") == (0, 0)
    assert b"a" not in idx and idx.lookup(b"a") is None
    assert idx.keys() == [b"d", b"c", b"b"]
    assert idx.insert(b"e") == (1, 1)
    assert idx.order() == [1, 0, 2]


def test_touch_moves_to_most_recent(impl: ModuleType) -> None:
    idx = impl.LruIndex(3, random_bytes=os.urandom)
    idx.insert_many([b"a", b"b", b"c"])
    assert idx.touch(b"a") == 0
    assert idx.keys() == [b"a", b"c", b"b"]
    assert idx.touch(b"zz") is None
    assert idx.keys() == [b"a", b"c", b"b"]
    # b is now least recent, so it is the one evicted.
    assert idx.insert(b"d") == (1, 1)
    assert idx.keys() == [b"d", b"a", b"c"]


def test_insert_of_present_key_is_touch(impl: ModuleType) -> None:
    idx = impl.LruIndex(2, random_bytes=os.urandom)
    idx.insert_many([b"a", b"b"])
    assert idx.insert(b"a") == (0, None)
    assert len(idx) == 2 and idx.keys() == [b"a", b"b"]


def test_lookup_and_contains_keep_order(impl: ModuleType) -> None:
    idx = impl.LruIndex(3, random_bytes=os.urandom)
    idx.insert_many([b"a", b"b", b"c"])
    assert idx.lookup(b"a") == 0 and b"a" in idx and b"x" not in idx
    assert idx.keys() == [b"c", b"b", b"a"]


def test_remove_frees_lowest_slot_first(impl: ModuleType) -> None:
    idx = impl.LruIndex(4, random_bytes=os.urandom)
    idx.insert_many([b"a", b"b", b"c", b"d"])
    assert idx.remove(b"c") == 2
    assert idx.remove(b"a") == 0
    assert idx.remove(b"a") is None
    assert len(idx) == 2 and idx.keys() == [b"d", b"b"]
    # Not full, so nothing is evicted: free slots are taken lowest first.
    assert idx.insert(b"e") == (0, None)
    assert idx.insert(b"f") == (2, None)
    assert idx.insert(b"g") == (1, 1)  # full again: evicts b (slot 1)
    assert idx.keys() == [b"g", b"f", b"e", b"d"]


def test_remove_then_reinsert(impl: ModuleType) -> None:
    idx = impl.LruIndex(3, random_bytes=os.urandom)
    idx.insert_many([b"a", b"b"])
    assert idx.remove(b"a") == 0
    assert idx.insert(b"a") == (0, None)
    assert idx.keys() == [b"a", b"b"]


def test_capacity_one(impl: ModuleType) -> None:
    idx = impl.LruIndex(1, 1, random_bytes=os.urandom)
    assert idx.insert(b"a") == (0, None)
    assert idx.insert(b"a") == (0, None)
    assert idx.insert(b"b") == (0, 0)
    assert idx.keys() == [b"b"] and idx.order() == [0]
    assert idx.remove(b"b") == 0 and len(idx) == 0 and idx.order() == []
    assert idx.insert(b"") == (0, None)
    assert idx.insert_many([b"x", b"y", b"y"]) == [(0, 0), (0, 0), (0, None)]
    assert idx.keys() == [b"y"]


def test_250_inserts_keep_newest_200(impl: ModuleType) -> None:
    idx = impl.LruIndex(200, random_bytes=os.urandom)
    keys = [key(i) for i in range(250)]
    results = [idx.insert(k) for k in keys]
    assert results[:200] == [(i, None) for i in range(200)]
    assert results[200:] == [(i, i) for i in range(50)]
    assert idx.keys() == keys[::-1][:200]
    assert idx.order() == [(249 - i) % 200 for i in range(200)]


def test_insert_many_equals_sequential_inserts(impl: ModuleType) -> None:
    keys = [key(i % 37, 1 + i % 11) for i in range(90)]  # duplicates and evictions
    a, b = (
        impl.LruIndex(20, 16, random_bytes=os.urandom),
        impl.LruIndex(20, 16, random_bytes=os.urandom),
    )
    assert a.insert_many(keys) == [b.insert(k) for k in keys]
    assert state(a) == state(b)
    assert a.insert_many([]) == [] and a.insert_many(()) == []
    assert a.insert_many(iter([b"q"])) == [b.insert(b"q")]
    assert state(a) == state(b)


def test_load_200_into_fresh_index(impl: ModuleType) -> None:
    idx = impl.LruIndex(200, random_bytes=os.urandom)
    keys = [os.urandom(50) for _ in range(200)]
    assert idx.insert_many(keys) == [(i, None) for i in range(200)]
    assert idx.keys() == keys[::-1]  # the last key is the most recent
    assert [idx.lookup(k) for k in keys] == list(range(200))


def test_full_churn_matches_model(impl: ModuleType) -> None:
    idx, model = impl.LruIndex(64, 8, random_bytes=os.urandom), Model(64, 8)
    rnd = __import__("random").Random(1)
    for step in range(3000):
        k = rnd.randrange(200).to_bytes(2, "big")
        op = step % 7
        if op < 4:
            assert idx.insert(k) == model.insert(k)
        elif op == 4:
            assert idx.touch(k) == model.touch(k)
        else:
            assert idx.remove(k) == model.remove(k)
    assert state(idx) == (len(model.mru), model.order(), model.keys())


def test_shared_prefixes_and_max_length_keys(impl: ModuleType) -> None:
    """Keys that differ only in their last byte, or only in length, at max_key_len."""
    n = LRU_MAX_KEY_LEN
    prefix = b"\xaa" * (n - 1)
    keys = [prefix + bytes([i]) for i in range(256)]
    keys += [b"\xaa" * i for i in range(0, n, 97)] + [b"\xaa" * (n - 1)]
    idx, model = impl.LruIndex(300, n, random_bytes=os.urandom), Model(300, n)
    assert idx.insert_many(keys) == model.insert_many(keys)
    assert idx.insert_many(keys[::3]) == model.insert_many(keys[::3])
    for k in keys[::5]:
        assert idx.remove(k) == model.remove(k)
    assert [idx.lookup(k) for k in keys] == [model.lookup(k) for k in keys]
    assert state(idx) == (len(model.mru), model.order(), model.keys())
    with pytest.raises(ValueError):
        idx.insert(prefix + b"\x00\x00")


def test_large_capacity_bounds(impl: ModuleType) -> None:
    big = impl.LruIndex(LRU_MAX_CAPACITY, 1, random_bytes=os.urandom)
    assert big.insert(b"z") == (0, None)
    wide = impl.LruIndex(1, LRU_MAX_KEY_LEN, random_bytes=os.urandom)
    assert wide.insert(b"w" * LRU_MAX_KEY_LEN) == (0, None)


# ------------------------------------------------------------------ errors

BAD_ARGS = [
    (0, 64),
    (-1, 64),
    (LRU_MAX_CAPACITY + 1, 64),
    (2**40, 64),
    (10, 0),
    (10, -5),
    (10, LRU_MAX_KEY_LEN + 1),
    (2.5, 64),
    ("3", 64),
    (3, None),
]


@pytest.mark.parametrize(("capacity", "max_key_len"), BAD_ARGS)
def test_bad_constructor_args_agree(capacity: Any, max_key_len: Any) -> None:
    results = {
        name: outcome(lambda m=mod: m.LruIndex(capacity, max_key_len, random_bytes=os.urandom))
        for name, mod in accel.IMPLEMENTATIONS.items()
    }
    assert results["py"][0] == "error"
    assert len(set(results.values())) == 1, results


BAD_KEYS: list[Any] = [
    "abc",
    5,
    None,
    bytearray(b"ab"),
    memoryview(b"ab"),
    [1, 2],
    (97,),
    [b"a"],
    b"x" * 9,
]
METHODS = ["lookup", "touch", "insert", "remove", "__contains__"]


def _key_id(key: Any) -> str:
    """A test id that is the same in every process: a memoryview's repr
    carries its address, and pytest-xdist's workers must collect equal ids."""
    return f"memoryview({bytes(key)!r})" if isinstance(key, memoryview) else repr(key)


@pytest.mark.parametrize("bad", BAD_KEYS, ids=_key_id)
@pytest.mark.parametrize("method", METHODS)
def test_bad_keys_agree(impl: ModuleType, method: str, bad: Any) -> None:
    idx = impl.LruIndex(4, 8, random_bytes=os.urandom)
    idx.insert_many([b"a", b"ab"])
    before = state(idx)
    expected = ValueError if isinstance(bad, bytes) else TypeError
    with pytest.raises(expected):
        getattr(idx, method)(bad)
    assert state(idx) == before


def test_insert_many_error_is_atomic_and_first_wins(impl: ModuleType) -> None:
    idx = impl.LruIndex(4, 8, random_bytes=os.urandom)
    idx.insert(b"a")
    before = state(idx)
    for keys, exc in [
        ([b"b", b"x" * 9, "s"], ValueError),
        ([b"b", "s", b"x" * 9], TypeError),
        ([b"b", 7], TypeError),
        ([bytearray(b"b")], TypeError),
        ([b"b", b"c", b"d", b"e", b"f", b"y" * 9], ValueError),
    ]:
        with pytest.raises(exc):
            idx.insert_many(keys)
        assert state(idx) == before


key_or_junk = st.one_of(
    st.binary(max_size=10),
    st.text(max_size=3),
    st.integers(),
    st.none(),
    st.binary(max_size=3).map(bytearray),
)


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 6),
    max_key_len=st.integers(1, 8),
    batches=st.lists(st.lists(key_or_junk, max_size=8), max_size=6),
)
def test_batches_with_junk_agree(capacity: int, max_key_len: int, batches: list[list[Any]]) -> None:
    impls = [
        m.LruIndex(capacity, max_key_len, random_bytes=os.urandom)
        for m in accel.IMPLEMENTATIONS.values()
    ]
    model = Model(capacity, max_key_len)
    for batch in batches:
        want = outcome(lambda b=batch: model.insert_many(b))
        for idx in impls:
            assert outcome(lambda i=idx, b=batch: i.insert_many(b)) == want
            assert state(idx) == (len(model.mru), model.order(), model.keys())


# ------------------------------------------------------------------ stateful model test

KEYS = st.one_of(
    st.sampled_from([b"", b"a", b"b", b"c", b"ab", b"ba", b"abc", b"\x00", b"\x00\x00"]),
    st.binary(max_size=5),
)


class LruMachine(RuleBasedStateMachine):
    """Every implementation and the list model get the same calls; every return
    value (or exception type) and, after each step, the whole state must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.impls: list[Any] = []
        self.model = Model(1, 1)

    @initialize(capacity=st.integers(1, 8), max_key_len=st.integers(1, 4))
    def setup(self, capacity: int, max_key_len: int) -> None:
        self.impls = [
            m.LruIndex(capacity, max_key_len, random_bytes=os.urandom)
            for m in accel.IMPLEMENTATIONS.values()
        ]
        self.model = Model(capacity, max_key_len)

    def same(self, method: str, *args: Any) -> None:
        want = outcome(lambda: getattr(self.model, method)(*args))
        for idx in self.impls:
            got = outcome(lambda i=idx: getattr(i, method)(*args))
            assert got == want, (type(idx).__module__, method, args)

    @rule(k=KEYS)
    def insert(self, k: bytes) -> None:
        self.same("insert", k)

    @rule(k=KEYS)
    def touch(self, k: bytes) -> None:
        self.same("touch", k)

    @rule(k=KEYS)
    def lookup(self, k: bytes) -> None:
        self.same("lookup", k)

    @rule(k=KEYS)
    def remove(self, k: bytes) -> None:
        self.same("remove", k)

    @rule(keys=st.lists(KEYS, max_size=12))
    def insert_many(self, keys: list[bytes]) -> None:
        self.same("insert_many", keys)

    @rule(k=KEYS)
    def contains(self, k: bytes) -> None:
        want = outcome(lambda: self.model.check(k) is None and k in self.model.slot)
        for idx in self.impls:
            assert outcome(lambda i=idx: k in i) == want

    @rule(junk=st.one_of(st.text(max_size=2), st.integers(), st.binary().map(bytearray)))
    def junk_key(self, junk: Any) -> None:
        for method in ("insert", "touch", "remove", "lookup"):
            self.same(method, junk)

    @invariant()
    def states_agree(self) -> None:
        want = (len(self.model.mru), self.model.order(), self.model.keys())
        for idx in self.impls:
            assert state(idx) == want


def test_stateful_c_and_twin_match_model(c_impl: ModuleType, py_impl: ModuleType) -> None:
    assert set(accel.IMPLEMENTATIONS) == {"c", "py"}
    run_state_machine_as_test(
        LruMachine,
        settings=settings(
            max_examples=120,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# ------------------------------------------------------------------ C entry points


@pytest.fixture
def clib(c_impl: ModuleType) -> tuple[Any, Any]:
    from quic_p2p.accel.cimpl._ffi import ffi, lib

    return ffi, lib


def test_c_new_rejects_bad_sizes(clib: tuple[Any, Any]) -> None:
    ffi, lib = clib
    for capacity, max_key_len in [(0, 8), (LRU_MAX_CAPACITY + 1, 8), (8, 0), (8, 4097)]:
        assert lib.qp2p_lru_new(capacity, max_key_len) == ffi.NULL
    for capacity, max_key_len in [(LRU_MAX_CAPACITY, 1), (1, LRU_MAX_KEY_LEN)]:
        p = ffi.gc(lib.qp2p_lru_new(capacity, max_key_len), lib.qp2p_lru_free)
        assert p != ffi.NULL and lib.qp2p_lru_len(p) == 0
    lib.qp2p_lru_free(ffi.NULL)  # like free(NULL): a no-op


def test_c_insert_and_put_agree(clib: tuple[Any, Any]) -> None:
    ffi, lib = clib
    a = ffi.gc(lib.qp2p_lru_new(3, 4), lib.qp2p_lru_free)
    b = ffi.gc(lib.qp2p_lru_new(3, 4), lib.qp2p_lru_free)
    ev = ffi.new("int32_t *")
    flag = lib.QP2P_LRU_EVICTED
    for k in [b"a", b"b", b"a", b"c", b"d", b"e", b"", b"xxxxx"]:
        slot = lib.qp2p_lru_insert(a, k, len(k), ev)
        put = lib.qp2p_lru_put(b, k, len(k))
        if slot < 0:
            assert slot == put == lib.QP2P_E_LRU_KEY_LENGTH and ev[0] == -1
        elif ev[0] >= 0:
            assert ev[0] == slot and put == slot + flag
        else:
            assert put == slot
    out = ffi.new("int32_t[3]")
    outb = ffi.new("int32_t[3]")
    assert lib.qp2p_lru_order(a, out, 3) == lib.qp2p_lru_order(b, outb, 3) == 3
    assert list(out) == list(outb)


def test_c_too_long_lengths_are_absent(clib: tuple[Any, Any]) -> None:
    ffi, lib = clib
    p = ffi.gc(lib.qp2p_lru_new(2, 2), lib.qp2p_lru_free)
    buf = b"abc"
    assert lib.qp2p_lru_lookup(p, buf, 3) == -1
    assert lib.qp2p_lru_touch(p, buf, 3) == -1
    assert lib.qp2p_lru_remove(p, buf, 3) == -1
    assert lib.qp2p_lru_len(p) == 0


def test_c_insert_many_checks_before_changing(clib: tuple[Any, Any]) -> None:
    ffi, lib = clib
    p = ffi.gc(lib.qp2p_lru_new(4, 4), lib.qp2p_lru_free)
    slots, ev = ffi.new("int32_t[4]"), ffi.new("int32_t[4]")
    blob = b"aabbcc"
    # Lengths that overrun the blob, or exceed max_key_len, change nothing.
    assert lib.qp2p_lru_insert_many(p, blob, 6, [2, 2, 3], 3, slots, ev) == lib.QP2P_E_ARG
    assert lib.qp2p_lru_insert_many(p, blob, 5, [2, 2, 2], 3, slots, ev) == lib.QP2P_E_ARG
    assert lib.qp2p_lru_insert_many(p, blob, 6, [1, 5], 2, slots, ev) == lib.QP2P_E_LRU_KEY_LENGTH
    assert lib.qp2p_lru_len(p) == 0
    assert lib.qp2p_lru_insert_many(p, blob, 6, [2, 2, 2], 3, slots, ev) == 0
    assert list(slots)[:3] == [0, 1, 2] and list(ev)[:3] == [-1, -1, -1]
    assert lib.qp2p_lru_insert_many(p, b"dde", 3, [2, 1], 2, slots, ev) == 1
    assert list(slots)[:2] == [3, 0] and list(ev)[:2] == [-1, 0]


def test_c_order_and_keys_respect_caps(clib: tuple[Any, Any]) -> None:
    ffi, lib = clib
    p = ffi.gc(lib.qp2p_lru_new(4, 3), lib.qp2p_lru_free)
    for k in [b"a", b"bb", b"ccc"]:
        lib.qp2p_lru_put(p, k, len(k))
    out = ffi.new("int32_t[4]", [-7] * 4)
    assert lib.qp2p_lru_order(p, out, 2) == 2 and list(out) == [2, 1, -7, -7]
    buf, lens = ffi.new("uint8_t[8]"), ffi.new("uint32_t[4]")
    # "ccc" + "bb" = 5 bytes fit in 5; "a" would not, so it stops after 2 keys.
    assert lib.qp2p_lru_keys(p, buf, 5, lens, 4) == 2
    assert bytes(buf)[:5] == b"cccbb" and list(lens)[:2] == [3, 2]
    assert lib.qp2p_lru_keys(p, buf, 8, lens, 1) == 1
    assert lib.qp2p_lru_keys(p, buf, 8, lens, 4) == 3
    assert bytes(buf)[:6] == b"cccbba"


def test_c_reseed_keeps_contents(clib: tuple[Any, Any]) -> None:
    ffi, lib = clib
    p = ffi.gc(lib.qp2p_lru_new(50, 8), lib.qp2p_lru_free)
    keys = [i.to_bytes(2, "big") for i in range(60)]
    for k in keys:
        lib.qp2p_lru_put(p, k, 2)
    out = ffi.new("int32_t[50]")
    lib.qp2p_lru_order(p, out, 50)
    before = list(out)
    for seed in [(0, 0), (1, 2), (2**64 - 1, 12345)]:
        lib.qp2p_lru_seed(p, *seed)
        assert [lib.qp2p_lru_lookup(p, k, 2) for k in keys[10:]] == [
            (10 + i) % 50 for i in range(50)
        ]
        assert lib.qp2p_lru_lookup(p, keys[0], 2) == -1
        lib.qp2p_lru_order(p, out, 50)
        assert list(out) == before
