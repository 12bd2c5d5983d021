"""SHA-256, HMAC-SHA256 and stateless retry tokens over the C accelerator.

Same contract as ``pyimpl.tokens``. Arguments are checked here, before the
FFI, so C only ever reports a token's own faults. cffi releases the GIL during
each call, so output buffers are never shared between calls in flight: each
call takes one from a small free list (list pop/append are atomic under the
GIL) and puts it back, which costs far less than ``ffi.new`` per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from ..pyimpl.tokens import draw_secret
from ..types import (
    MAX_CID_LEN,
    SHA256_SIZE,
    TOKEN_MAX,
    TOKEN_MAX_ADDR,
    TokenError,
    TokenErrorCode,
)
from ._ffi import ffi, lib

__all__ = ["RetryTokens", "hmac_sha256", "sha256"]

_U64_MAX = 2**64 - 1
_ODCID_OFFSET = 11  # version, key_id, issued_at_ms, odcid_len precede it
_CODES = {code.value: code for code in TokenErrorCode}
_sha256 = lib.qp2p_sha256
_key_init = lib.qp2p_hmac_key_init
_hmac = lib.qp2p_hmac_sha256
_mint = lib.qp2p_token_mint
_verify = lib.qp2p_token_verify_keys

# Free lists of output buffers, see the module docstring: each item is a
# tuple (cdata, ffi.buffer over it[, ...]) that goes back to its list as is.
# The bound pop/append and the reused tuples keep the overhead to two calls.
_digests: list[tuple[Any, Any]] = []
_pop_digest, _push_digest = _digests.pop, _digests.append
_hmac_bufs: list[tuple[Any, Any, Any]] = []
_pop_hmac, _push_hmac = _hmac_bufs.pop, _hmac_bufs.append
_tokens: list[tuple[Any, Any]] = []
_pop_token, _push_token = _tokens.pop, _tokens.append


def _new_digest() -> tuple[Any, Any]:
    out = ffi.new("uint8_t[]", SHA256_SIZE)
    return out, ffi.buffer(out)


def _new_hmac() -> tuple[Any, Any, Any]:
    out = ffi.new("uint8_t[]", SHA256_SIZE)
    return ffi.new("qp2p_hmac_key_t *"), out, ffi.buffer(out)


def _new_token() -> tuple[Any, Any]:
    out = ffi.new("uint8_t[]", TOKEN_MAX)
    return out, ffi.buffer(out)


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (32 bytes)."""
    try:
        item = _pop_digest()
    except IndexError:
        item = _new_digest()
    _sha256(data, len(data), item[0])
    digest: bytes = item[1][:]
    _push_digest(item)
    return digest


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 of ``msg`` under ``key`` (32 bytes)."""
    try:
        item = _pop_hmac()
    except IndexError:
        item = _new_hmac()
    ctx, out, buf = item
    _key_init(ctx, key, len(key))
    _hmac(ctx, msg, len(msg), out)
    mac: bytes = buf[:]
    _push_hmac(item)
    return mac


def _check_u64(name: str, value: int) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{name} must be in 0..2**64-1, got {value}")


def _check_len(name: str, value: bytes, limit: int) -> None:
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} bytes, at most {limit} allowed")


def _bad_arguments(fields: tuple[tuple[str, bytes, int], ...], now_ms: int) -> NoReturn:
    """Slow path of the one-line checks in mint/verify: raise the precise error."""
    for name, value, limit in fields:
        _check_len(name, value, limit)
    _check_u64("now_ms", now_ms)
    raise AssertionError("unreachable: the fast check failed but no field is wrong")


class RetryTokens:
    """Mints and verifies stateless retry tokens (RFC 9000 §8.1.2).

    A token binds the client's address, its original DCID, our Retry's SCID
    and the time it was minted, under an HMAC key that can be rotated: tokens of
    the current and the previous key verify. Not thread-safe; one per endpoint.

    ``random_bytes(n)`` (required; the driver passes ``os.urandom``) is where a
    secret comes from when none is given, here and in :meth:`rotate`: it is
    called with ``SECRET_SIZE`` (32) and must return that many bytes. This
    module draws no randomness of its own.
    """

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        random_bytes: Callable[[int], bytes],
        lifetime_ms: int = 10_000,
        skew_ms: int = 1_000,
        key_id: int = 0,
    ) -> None:
        _check_u64("lifetime_ms", lifetime_ms)
        _check_u64("skew_ms", skew_ms)
        if not 0 <= key_id <= 0xFF:
            raise ValueError(f"key_id must be in 0..255, got {key_id}")
        if not callable(random_bytes):
            raise TypeError("random_bytes must be callable, e.g. os.urandom")
        self._random_bytes = random_bytes
        self._lifetime_ms = lifetime_ms
        self._skew_ms = skew_ms
        # (qp2p_token_keys_t, pointer to its current key, current key id): one
        # tuple that rotate replaces whole, so a call sees one consistent
        # keyring, kept alive by its own reference while C runs without the GIL.
        self._state: tuple[Any, Any, int] = self._keyring(secret, key_id, None)

    def _keyring(self, secret: bytes | None, key_id: int, previous: Any) -> tuple[Any, Any, int]:
        if secret is None:
            secret = draw_secret(self._random_bytes)
        elif not secret:
            raise ValueError("secret must not be empty")
        keys = ffi.new("qp2p_token_keys_t *")
        current = ffi.addressof(keys, "current")
        _key_init(current, secret, len(secret))
        keys.current_id = key_id
        keys.lifetime_ms = self._lifetime_ms
        keys.skew_ms = self._skew_ms
        if previous is not None:
            ffi.memmove(ffi.addressof(keys, "previous"), ffi.addressof(previous, "current"),
                        ffi.sizeof("qp2p_hmac_key_t"))  # fmt: skip
            keys.previous_id = previous.current_id
            keys.has_previous = 1
        return keys, current, key_id

    @property
    def lifetime_ms(self) -> int:
        """How long a token stays valid: at most this many ms old (inclusive)."""
        return self._lifetime_ms

    @property
    def skew_ms(self) -> int:
        """How far in the future a token's issue time may be (clock skew between workers)."""
        return self._skew_ms

    @property
    def key_id(self) -> int:
        """Id of the current key (written into every new token)."""
        return self._state[2]

    def rotate(self, secret: bytes | None = None) -> None:
        """Make ``secret`` (when None: drawn from ``random_bytes``) current; the
        current key becomes the previous."""
        keys, _, key_id = self._state
        self._state = self._keyring(secret, (key_id + 1) & 0xFF, keys)

    def mint(self, addr: bytes, odcid: bytes, rscid: bytes, now_ms: int) -> bytes:
        """A token for a client at ``addr`` (see ``address_bytes``) whose Initial had DCID
        ``odcid``, answered by our Retry with SCID ``rscid``, at time ``now_ms``."""
        if len(addr) > TOKEN_MAX_ADDR or len(odcid) > MAX_CID_LEN or len(rscid) > MAX_CID_LEN:
            _bad_arguments(
                (("addr", addr, TOKEN_MAX_ADDR), ("odcid", odcid, MAX_CID_LEN),
                 ("rscid", rscid, MAX_CID_LEN)),
                now_ms,
            )  # fmt: skip
        _, key, key_id = self._state
        try:
            item = _pop_token()
        except IndexError:
            item = _new_token()
        try:
            # fmt: off
            n = _mint(
                key, key_id, addr, len(addr), odcid, len(odcid), rscid, len(rscid),
                now_ms, item[0], TOKEN_MAX,
            )
            # fmt: on
        except OverflowError:  # cffi's own range check of now_ms, before the call
            _push_token(item)
            _bad_arguments((), now_ms)
        token: bytes = item[1][:n]
        _push_token(item)
        if n < 0:  # unreachable after the checks above; never return a bogus token
            raise ValueError(f"qp2p_token_mint failed with status {n}")
        return token

    def verify(self, token: bytes, addr: bytes, rscid: bytes, now_ms: int) -> bytes:
        """The original DCID ``token`` was minted for, if it is authentic, bound to
        ``addr`` and ``rscid``, and fresh at ``now_ms``; else raises ``TokenError``."""
        if len(addr) > TOKEN_MAX_ADDR or len(rscid) > MAX_CID_LEN:
            _bad_arguments((("addr", addr, TOKEN_MAX_ADDR), ("rscid", rscid, MAX_CID_LEN)), now_ms)
        try:
            rc = _verify(
                self._state[0], token, len(token), addr, len(addr), rscid, len(rscid), now_ms
            )
        except OverflowError:  # cffi's own range check of now_ms, before the call
            _bad_arguments((), now_ms)
        if rc:
            raise TokenError(_CODES[rc])
        # C checked the layout: token[10] is the odcid length and it fits.
        return token[_ODCID_OFFSET : _ODCID_OFFSET + token[10]]
