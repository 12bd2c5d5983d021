"""Retry tokens: layout, binding, age limits, rotation, every kind of damage,
caller mistakes, and the C wrapper agreeing with the twin byte for byte and
error for error."""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quic_p2p.accel import types
from quic_p2p.accel.types import TokenError, TokenErrorCode, address_bytes

pytestmark = pytest.mark.c_extension

SECRET = bytes(range(32))
ADDR = address_bytes("192.0.2.1", 4433)
ODCID = bytes.fromhex("8394c8f03e515708")
RSCID = bytes.fromhex("f067a5502a4262b5")
T0 = 1_700_000_000_000
LIFETIME = 10_000
SKEW = 1_000
U64_MAX = 2**64 - 1
STATELESS_FIXTURES = [HealthCheck.function_scoped_fixture]  # the impl modules hold no state


def _tokens(impl: ModuleType, **kw: Any) -> Any:
    kw.setdefault("lifetime_ms", LIFETIME)
    kw.setdefault("skew_ms", SKEW)
    return impl.RetryTokens(kw.pop("secret", SECRET), random_bytes=os.urandom, **kw)


def _code(call: Callable[[], object]) -> TokenErrorCode:
    with pytest.raises(TokenError) as info:
        call()
    assert info.value.error_code == 0x0B  # INVALID_TOKEN
    return info.value.code


def _forge(secret: bytes, version: int, key_id: int, issued: int, odcid: bytes,
           addr: bytes = ADDR, rscid: bytes = RSCID) -> bytes:  # fmt: skip
    """A token built from the layout in qp2p.h, independently of both impls."""
    head = struct.pack(">BBQB", version, key_id, issued, len(odcid)) + odcid
    mac_input = head + bytes([len(addr)]) + addr + bytes([len(rscid)]) + rscid
    return head + hmac.digest(secret, mac_input, "sha256")


# ------------------------------------------------------------------ happy path


def test_layout_matches_the_header(impl: ModuleType) -> None:
    token = _tokens(impl, key_id=7).mint(ADDR, ODCID, RSCID, T0)
    assert token == _forge(SECRET, types.TOKEN_VERSION, 7, T0, ODCID)
    assert len(token) == types.TOKEN_FIXED + len(ODCID)


def test_round_trip(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    assert tokens.verify(tokens.mint(ADDR, ODCID, RSCID, T0), ADDR, RSCID, T0) == ODCID


def test_round_trip_every_field_length(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    for n in range(types.MAX_CID_LEN + 1):
        odcid, rscid = bytes(range(n)), bytes(range(100, 100 + n))
        for addr in (b"", ADDR, address_bytes("2001:db8::1", 443), b"\xff" * types.TOKEN_MAX_ADDR):
            token = tokens.mint(addr, odcid, rscid, T0)
            assert len(token) == types.TOKEN_FIXED + n
            assert tokens.verify(token, addr, rscid, T0) == odcid
            assert type(tokens.verify(token, addr, rscid, T0)) is bytes


def test_random_secret_by_default(impl: ModuleType) -> None:
    a, b = impl.RetryTokens(random_bytes=os.urandom), impl.RetryTokens(random_bytes=os.urandom)
    token = a.mint(ADDR, ODCID, RSCID, T0)
    assert a.verify(token, ADDR, RSCID, T0) == ODCID
    assert _code(lambda: b.verify(token, ADDR, RSCID, T0)) is TokenErrorCode.BAD_MAC


class Source:
    """A repeatable ``random_bytes``: counts its calls, never repeats a byte string."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.calls: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        return hmac.digest(bytes([self.seed, len(self.calls)]), b"", "sha256")[:n].ljust(n, b"!")


def test_secrets_come_from_the_injected_random_bytes(impl: ModuleType) -> None:
    source = Source()
    tokens = impl.RetryTokens(random_bytes=source, key_id=3)
    assert source.calls == [32]
    first = Source()(32)
    assert tokens.mint(ADDR, ODCID, RSCID, T0) == _forge(first, types.TOKEN_VERSION, 3, T0, ODCID)
    tokens.rotate()
    assert source.calls == [32, 32]
    second = Source()
    second(32)
    assert tokens.mint(ADDR, ODCID, RSCID, T0) == _forge(
        second(32), types.TOKEN_VERSION, 4, T0, ODCID
    )
    # A given secret draws nothing.
    tokens.rotate(b"explicit")
    assert impl.RetryTokens(SECRET, random_bytes=source) is not None
    assert source.calls == [32, 32]


def test_c_and_twin_agree_under_the_same_injected_bytes(
    c_impl: ModuleType, py_impl: ModuleType
) -> None:
    c, py = c_impl.RetryTokens(random_bytes=Source(7)), py_impl.RetryTokens(random_bytes=Source(7))
    for step in range(3):
        assert c.mint(ADDR, ODCID, RSCID, T0 + step) == py.mint(ADDR, ODCID, RSCID, T0 + step)
        c.rotate()
        py.rotate()
    assert c.key_id == py.key_id == 3
    other = py_impl.RetryTokens(random_bytes=Source(8))
    assert other.mint(ADDR, ODCID, RSCID, T0) != py.mint(ADDR, ODCID, RSCID, T0)


def test_random_bytes_is_required_and_checked(impl: ModuleType) -> None:
    with pytest.raises(TypeError, match="random_bytes"):
        impl.RetryTokens(SECRET)
    with pytest.raises(TypeError, match="callable"):
        impl.RetryTokens(SECRET, random_bytes=b"not a function")
    for bad in (lambda n: b"short", lambda n: bytearray(n), lambda n: "x" * n):
        with pytest.raises(ValueError, match=r"random_bytes\(32\) must return 32 bytes"):
            impl.RetryTokens(random_bytes=bad)
        tokens = impl.RetryTokens(SECRET, random_bytes=bad)
        with pytest.raises(ValueError, match=r"random_bytes\(32\)"):
            tokens.rotate()
        assert tokens.key_id == 0  # the failed rotation changed nothing
        assert tokens.verify(tokens.mint(ADDR, ODCID, RSCID, T0), ADDR, RSCID, T0) == ODCID


def test_properties(impl: ModuleType) -> None:
    tokens = impl.RetryTokens(SECRET, lifetime_ms=5, skew_ms=6, key_id=9, random_bytes=os.urandom)
    assert (tokens.lifetime_ms, tokens.skew_ms, tokens.key_id) == (5, 6, 9)
    assert impl.RetryTokens(SECRET, random_bytes=os.urandom).lifetime_ms == 10_000
    assert impl.RetryTokens(SECRET, random_bytes=os.urandom).skew_ms == 1_000


def test_earlier_tokens_are_not_overwritten(impl: ModuleType) -> None:
    # The C wrapper reuses its output buffer between calls.
    tokens = _tokens(impl)
    first = tokens.mint(ADDR, ODCID, RSCID, T0)
    snapshot = bytes(first)
    tokens.mint(ADDR, b"\x00" * 20, RSCID, T0 + 1)
    assert first == snapshot


# ------------------------------------------------------------------ age


def test_lifetime_boundary_is_inclusive(impl: ModuleType) -> None:
    """A token is valid while now - issued <= lifetime_ms; one ms later it expired."""
    tokens = _tokens(impl)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    assert tokens.verify(token, ADDR, RSCID, T0 + LIFETIME) == ODCID
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, T0 + LIFETIME + 1)) is (
        TokenErrorCode.EXPIRED
    )
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, U64_MAX)) is TokenErrorCode.EXPIRED


def test_skew_boundary_is_inclusive(impl: ModuleType) -> None:
    """A token may come from up to skew_ms in the future (another worker's clock)."""
    tokens = _tokens(impl)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    assert tokens.verify(token, ADDR, RSCID, T0 - SKEW) == ODCID
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, T0 - SKEW - 1)) is (
        TokenErrorCode.FUTURE
    )
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, 0)) is TokenErrorCode.FUTURE


def test_zero_lifetime_and_skew(impl: ModuleType) -> None:
    tokens = _tokens(impl, lifetime_ms=0, skew_ms=0)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    assert tokens.verify(token, ADDR, RSCID, T0) == ODCID
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, T0 + 1)) is TokenErrorCode.EXPIRED
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, T0 - 1)) is TokenErrorCode.FUTURE


def test_extreme_times_do_not_wrap(impl: ModuleType) -> None:
    # now + skew and now - issued would wrap around 2**64 in naive C.
    tokens = _tokens(impl, lifetime_ms=U64_MAX, skew_ms=U64_MAX)
    early, late = tokens.mint(ADDR, ODCID, RSCID, 0), tokens.mint(ADDR, ODCID, RSCID, U64_MAX)
    assert tokens.verify(early, ADDR, RSCID, U64_MAX) == ODCID
    assert tokens.verify(late, ADDR, RSCID, 0) == ODCID
    strict = _tokens(impl, lifetime_ms=U64_MAX - 1, skew_ms=U64_MAX - 1)
    assert _code(lambda: strict.verify(early, ADDR, RSCID, U64_MAX)) is TokenErrorCode.EXPIRED
    assert _code(lambda: strict.verify(late, ADDR, RSCID, 0)) is TokenErrorCode.FUTURE


# ------------------------------------------------------------------ binding and damage


def test_bound_to_address_and_retry_cid(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    other_port = address_bytes("192.0.2.1", 4434)
    for addr, rscid in ((other_port, RSCID), (ADDR[:-1], RSCID), (ADDR, RSCID[:-1]),
                        (ADDR, RSCID[::-1]), (b"", b"")):  # fmt: skip
        assert _code(lambda a=addr, r=rscid: tokens.verify(token, a, r, T0)) is (
            TokenErrorCode.BAD_MAC
        ), (addr, rscid)


def _expected_damage(position: int) -> TokenErrorCode:
    if position == 0:
        return TokenErrorCode.MALFORMED  # version
    if position == 1:
        return TokenErrorCode.UNKNOWN_KEY  # no previous key
    if position == 10:
        return TokenErrorCode.MALFORMED  # odcid_len no longer matches the size
    return TokenErrorCode.BAD_MAC  # issued_at, odcid or the MAC itself


def test_any_flipped_byte_is_rejected(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    for position in range(len(token)):
        for bit in (0x01, 0x10, 0x80, 0xFF):
            damaged = bytearray(token)
            damaged[position] ^= bit
            code = _code(lambda d=bytes(damaged): tokens.verify(d, ADDR, RSCID, T0))
            assert code is _expected_damage(position), (position, bit)


def test_truncated_or_extended_tokens_are_malformed(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    for n in range(len(token)):
        assert _code(lambda n=n: tokens.verify(token[:n], ADDR, RSCID, T0)) is (
            TokenErrorCode.MALFORMED
        ), n
    for extra in (b"\x00", token):
        assert _code(lambda e=extra: tokens.verify(token + e, ADDR, RSCID, T0)) is (
            TokenErrorCode.MALFORMED
        )


def test_layout_checks_come_first(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    # Authentic MACs, but a version we do not speak or a CID longer than QUIC allows.
    wrong_version = _forge(SECRET, 2, 0, T0, ODCID)
    too_long_cid = _forge(SECRET, 1, 0, T0, bytes(21))
    for token in (wrong_version, too_long_cid, b"\x01" + bytes(200), bytes(63)):
        assert _code(lambda t=token: tokens.verify(t, ADDR, RSCID, T0)) is (
            TokenErrorCode.MALFORMED
        )


def test_unknown_key_id(impl: ModuleType) -> None:
    tokens = _tokens(impl, key_id=3)
    token = _forge(SECRET, 1, 4, T0, ODCID)  # right secret, but not an id we issued
    assert _code(lambda: tokens.verify(token, ADDR, RSCID, T0)) is TokenErrorCode.UNKNOWN_KEY


def test_mac_is_checked_before_age(impl: ModuleType) -> None:
    # A forger must not learn our clock: a bad MAC hides the age verdict.
    tokens = _tokens(impl)
    forged = _forge(b"not our secret", 1, 0, 0, ODCID)
    assert _code(lambda: tokens.verify(forged, ADDR, RSCID, T0)) is TokenErrorCode.BAD_MAC


# ------------------------------------------------------------------ rotation


def test_rotation_keeps_one_previous_key(impl: ModuleType) -> None:
    tokens = _tokens(impl, key_id=0)
    old = tokens.mint(ADDR, ODCID, RSCID, T0)
    tokens.rotate(b"second secret")
    assert tokens.key_id == 1
    new = tokens.mint(ADDR, ODCID, RSCID, T0)
    assert new[1] == 1 and new != old
    assert tokens.verify(old, ADDR, RSCID, T0) == ODCID
    assert tokens.verify(new, ADDR, RSCID, T0) == ODCID
    tokens.rotate()
    assert _code(lambda: tokens.verify(old, ADDR, RSCID, T0)) is TokenErrorCode.UNKNOWN_KEY
    assert tokens.verify(new, ADDR, RSCID, T0) == ODCID


def test_rotation_wraps_the_key_id(impl: ModuleType) -> None:
    tokens = _tokens(impl, key_id=255)
    old = tokens.mint(ADDR, ODCID, RSCID, T0)
    tokens.rotate(b"next")
    assert tokens.key_id == 0
    assert tokens.verify(old, ADDR, RSCID, T0) == ODCID
    # Same id as the current key, older secret: the MAC, not the id, decides.
    stale = _forge(SECRET, 1, 0, T0, ODCID)
    assert _code(lambda: tokens.verify(stale, ADDR, RSCID, T0)) is TokenErrorCode.BAD_MAC


def test_rotation_with_the_previous_keys_id_forged(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    tokens.rotate(b"next")
    forged = _forge(b"next", 1, 0, T0, ODCID)  # previous id, current secret
    assert _code(lambda: tokens.verify(forged, ADDR, RSCID, T0)) is TokenErrorCode.BAD_MAC


# ------------------------------------------------------------------ caller mistakes


def test_argument_errors(impl: ModuleType) -> None:
    tokens = _tokens(impl)
    token = tokens.mint(ADDR, ODCID, RSCID, T0)
    long_cid, long_addr = bytes(21), bytes(256)
    bad_calls: list[Callable[[], object]] = [
        lambda: tokens.mint(ADDR, long_cid, RSCID, T0),
        lambda: tokens.mint(ADDR, ODCID, long_cid, T0),
        lambda: tokens.mint(long_addr, ODCID, RSCID, T0),
        lambda: tokens.mint(ADDR, ODCID, RSCID, -1),
        lambda: tokens.mint(ADDR, ODCID, RSCID, U64_MAX + 1),
        lambda: tokens.verify(token, long_addr, RSCID, T0),
        lambda: tokens.verify(token, ADDR, long_cid, T0),
        lambda: tokens.verify(token, ADDR, RSCID, -1),
        lambda: tokens.verify(token, ADDR, RSCID, U64_MAX + 1),
        lambda: tokens.verify(b"garbage", ADDR, RSCID, -1),  # arguments before the token
        lambda: impl.RetryTokens(b"", random_bytes=os.urandom),
        lambda: impl.RetryTokens(SECRET, lifetime_ms=-1, random_bytes=os.urandom),
        lambda: impl.RetryTokens(SECRET, skew_ms=U64_MAX + 1, random_bytes=os.urandom),
        lambda: impl.RetryTokens(SECRET, key_id=256, random_bytes=os.urandom),
        lambda: impl.RetryTokens(SECRET, key_id=-1, random_bytes=os.urandom),
        lambda: tokens.rotate(b""),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises(ValueError):
            call()
        assert tokens.key_id == 0, i  # a refused rotate changes nothing
    assert tokens.verify(token, ADDR, RSCID, T0) == ODCID
    for call in (lambda: tokens.mint(ADDR, ODCID, RSCID, 1.5),
                 lambda: tokens.verify(token, ADDR, RSCID, 1.5)):  # fmt: skip
        with pytest.raises(TypeError):
            call()


def test_address_bytes() -> None:
    assert address_bytes("192.0.2.1", 4433) == bytes([192, 0, 2, 1, 0x11, 0x51])
    v6 = address_bytes("2001:db8::1", 65535)
    assert len(v6) == 18 and v6[:2] == b"\x20\x01" and v6[-2:] == b"\xff\xff"
    assert address_bytes("::ffff:192.0.2.1", 0) != address_bytes("192.0.2.1", 0)
    for host, port in (("example.com", 1), ("192.0.2.1", -1), ("192.0.2.1", 65536)):
        with pytest.raises(ValueError):
            address_bytes(host, port)


# ------------------------------------------------------------------ C agrees with the twin


def _outcome(call: Callable[[], bytes]) -> tuple[str, object]:
    try:
        return ("ok", call())
    except TokenError as exc:
        return ("token-error", exc.code)
    except ValueError:
        return ("value-error", None)


cids = st.binary(max_size=types.MAX_CID_LEN)
addrs = st.binary(max_size=types.TOKEN_MAX_ADDR)
times = st.integers(min_value=0, max_value=U64_MAX)
near = st.integers(min_value=-2 * LIFETIME, max_value=2 * LIFETIME)


@settings(max_examples=150, deadline=None, suppress_health_check=STATELESS_FIXTURES)
@given(secret=st.binary(min_size=1, max_size=100), key_id=st.integers(0, 255), addr=addrs,
       odcid=cids, rscid=cids, issued=times, age=near, rotations=st.integers(0, 2))  # fmt: skip
def test_c_and_twin_mint_identical_tokens(
    c_impl: ModuleType, py_impl: ModuleType, secret: bytes, key_id: int, addr: bytes,
    odcid: bytes, rscid: bytes, issued: int, age: int, rotations: int,
) -> None:  # fmt: skip
    c = _tokens(c_impl, secret=secret, key_id=key_id)
    py = _tokens(py_impl, secret=secret, key_id=key_id)
    token = c.mint(addr, odcid, rscid, issued)
    assert token == py.mint(addr, odcid, rscid, issued)
    for i in range(rotations):
        c.rotate(secret + bytes([i]))
        py.rotate(secret + bytes([i]))
    now = min(max(issued + age, 0), U64_MAX)
    for bound in ((addr, rscid), (addr + b"x", rscid), (addr, rscid + b"x")):
        results = [_outcome(lambda t=t, b=bound: t.verify(token, b[0], b[1], now))
                   for t in (c, py)]  # fmt: skip
        assert results[0] == results[1]
    fresh = -SKEW <= now - issued <= LIFETIME
    assert _outcome(lambda: py.verify(token, addr, rscid, now))[0] == (
        "ok" if rotations < 2 and fresh else "token-error"
    )


@st.composite
def damaged_tokens(draw: st.DrawFn) -> bytes:
    """Garbage of any length, or a real token with a few bytes changed or cut."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2 * types.TOKEN_MAX))
    odcid = draw(cids)
    token = bytearray(_forge(SECRET, 1, draw(st.sampled_from([0, 1, 2, 9])), T0, odcid))
    for _ in range(draw(st.integers(0, 3))):
        token[draw(st.integers(0, len(token) - 1))] = draw(st.integers(0, 255))
    return bytes(token[: draw(st.integers(0, len(token)))] if draw(st.booleans()) else token)


@settings(max_examples=300, deadline=None, suppress_health_check=STATELESS_FIXTURES)
@given(token=damaged_tokens(), now=st.sampled_from([T0, T0 + LIFETIME + 1, 0]),
       rscid=st.sampled_from([RSCID, b"", bytes(21)]), rotated=st.booleans())  # fmt: skip
def test_c_and_twin_agree_on_garbage(
    c_impl: ModuleType, py_impl: ModuleType, token: bytes, now: int, rscid: bytes, rotated: bool
) -> None:
    c, py = _tokens(c_impl, key_id=1), _tokens(py_impl, key_id=1)
    if rotated:
        c.rotate(SECRET)
        py.rotate(SECRET)
    assert _outcome(lambda: c.verify(token, ADDR, rscid, now)) == _outcome(
        lambda: py.verify(token, ADDR, rscid, now)
    )


# ------------------------------------------------------------------ C paths the wrapper avoids


def test_c_statuses_the_wrapper_never_sees(c_impl: ModuleType) -> None:
    from quic_p2p.accel._native import ffi, lib  # type: ignore[import-not-found]

    key = ffi.new("qp2p_hmac_key_t *")
    lib.qp2p_hmac_key_init(key, SECRET, len(SECRET))
    out = ffi.new("uint8_t[]", types.TOKEN_MAX)
    n = lib.qp2p_token_mint(key, 0, ADDR, len(ADDR), ODCID, 8, RSCID, 8, T0, out, types.TOKEN_MAX)
    token = ffi.buffer(out, n)[:]
    assert token == _forge(SECRET, 1, 0, T0, ODCID)
    # Exactly big enough is enough; one byte less is not, and nothing is written.
    fresh = ffi.new("uint8_t[]", types.TOKEN_MAX)
    assert lib.qp2p_token_mint(key, 0, ADDR, 6, ODCID, 8, RSCID, 8, T0, fresh, n - 1) == (
        lib.QP2P_E_BUFFER
    )
    assert ffi.buffer(fresh)[:] == bytes(types.TOKEN_MAX)
    assert lib.qp2p_token_mint(key, 0, ADDR, 6, ODCID, 8, RSCID, 8, T0, fresh, n) == n
    for addr_len, odcid_len, rscid_len in ((256, 8, 8), (6, 21, 8), (6, 8, 21)):
        big = bytes(300)
        status = lib.qp2p_token_mint(key, 0, big, addr_len, big, odcid_len, big, rscid_len, T0,
                                     out, types.TOKEN_MAX)  # fmt: skip
        assert status == lib.QP2P_E_ARG
    assert lib.qp2p_token_mint(ffi.NULL, 0, ADDR, 6, ODCID, 8, RSCID, 8, T0, out, 63) == (
        lib.QP2P_E_ARG
    )

    offset, length = ffi.new("size_t *", 99), ffi.new("size_t *", 99)
    status = lib.qp2p_token_verify(key, 0, ffi.NULL, 0, token, len(token), ADDR, 6, RSCID, 8,
                                   T0, LIFETIME, SKEW, offset, length)  # fmt: skip
    assert (status, offset[0], length[0]) == (lib.QP2P_OK, 11, 8)
    status = lib.qp2p_token_verify(ffi.NULL, 0, ffi.NULL, 0, token, len(token), ADDR, 6, RSCID,
                                   8, T0, LIFETIME, SKEW, offset, length)  # fmt: skip
    assert status == lib.QP2P_E_ARG
    assert lib.qp2p_token_verify_keys(ffi.NULL, token, len(token), ADDR, 6, RSCID, 8, T0) == (
        lib.QP2P_E_ARG
    )
    # NULL with a zero length is a valid empty field.
    empty = lib.qp2p_token_mint(key, 0, ffi.NULL, 0, ffi.NULL, 0, ffi.NULL, 0, T0, out, 63)
    assert empty == types.TOKEN_FIXED
    bare = ffi.buffer(out, empty)[:]
    status = lib.qp2p_token_verify(key, 0, ffi.NULL, 0, bare, empty, ffi.NULL, 0, ffi.NULL, 0,
                                   T0, 0, 0, ffi.NULL, ffi.NULL)  # fmt: skip
    assert status == lib.QP2P_OK
