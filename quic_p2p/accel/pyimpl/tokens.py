"""SHA-256, HMAC-SHA256 and stateless retry tokens in plain Python (hashlib, hmac, struct).

Token layout and check order: csrc/qp2p.h, section 2.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable

from ..types import (
    MAX_CID_LEN,
    SHA256_SIZE,
    TOKEN_FIXED,
    TOKEN_MAX_ADDR,
    TOKEN_VERSION,
    TokenError,
    TokenErrorCode,
)

__all__ = ["RetryTokens", "draw_secret", "hmac_sha256", "sha256"]

_U64_MAX = 2**64 - 1
#: Random secret size when none is given: the HMAC-SHA256 block holds 64, and
#: 32 bytes already match the hash's strength.
SECRET_SIZE = 32
_HEAD = struct.Struct(">BBQB")  # version, key_id, issued_at_ms, odcid_len
_ISSUED = struct.Struct(">Q")


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 of ``msg`` under ``key`` (32 bytes)."""
    return hmac.digest(key, msg, "sha256")


def _check_u64(name: str, value: int) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{name} must be in 0..2**64-1, got {value}")


def _check_len(name: str, value: bytes, limit: int) -> None:
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} bytes, at most {limit} allowed")


def draw_secret(random_bytes: Callable[[int], bytes]) -> bytes:
    """A fresh secret from the injected source: ``random_bytes(SECRET_SIZE)``,
    checked (shared with cimpl, so both twins draw alike and fail alike)."""
    secret = random_bytes(SECRET_SIZE)
    if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
        raise ValueError(f"random_bytes({SECRET_SIZE}) must return {SECRET_SIZE} bytes")
    return secret


def _keyed(secret: bytes) -> hmac.HMAC:
    if not secret:
        raise ValueError("secret must not be empty")
    return hmac.new(secret, digestmod=hashlib.sha256)


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
        # The keyed HMAC state is built once per key; each token copies it
        # instead of rehashing the padded secret.
        self._current = _keyed(draw_secret(random_bytes) if secret is None else secret)
        self._current_id = key_id
        self._previous: hmac.HMAC | None = None
        self._previous_id = 0

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
        return self._current_id

    def rotate(self, secret: bytes | None = None) -> None:
        """Make ``secret`` (when None: drawn from ``random_bytes``) current; the
        current key becomes the previous."""
        new = _keyed(draw_secret(self._random_bytes) if secret is None else secret)
        self._previous, self._previous_id = self._current, self._current_id
        self._current, self._current_id = new, (self._current_id + 1) & 0xFF

    def mint(self, addr: bytes, odcid: bytes, rscid: bytes, now_ms: int) -> bytes:
        """A token for a client at ``addr`` (see ``address_bytes``) whose Initial had DCID
        ``odcid``, answered by our Retry with SCID ``rscid``, at time ``now_ms``."""
        _check_len("addr", addr, TOKEN_MAX_ADDR)
        _check_len("odcid", odcid, MAX_CID_LEN)
        _check_len("rscid", rscid, MAX_CID_LEN)
        _check_u64("now_ms", now_ms)
        head = _HEAD.pack(TOKEN_VERSION, self._current_id, now_ms, len(odcid)) + odcid
        mac = self._current.copy()
        mac.update(head + bytes((len(addr),)) + addr + bytes((len(rscid),)) + rscid)
        return head + mac.digest()

    def verify(self, token: bytes, addr: bytes, rscid: bytes, now_ms: int) -> bytes:
        """The original DCID ``token`` was minted for, if it is authentic, bound to
        ``addr`` and ``rscid``, and fresh at ``now_ms``; else raises ``TokenError``."""
        _check_len("addr", addr, TOKEN_MAX_ADDR)
        _check_len("rscid", rscid, MAX_CID_LEN)
        _check_u64("now_ms", now_ms)
        if len(token) < TOKEN_FIXED or token[0] != TOKEN_VERSION:
            raise TokenError(TokenErrorCode.MALFORMED)
        cid_len = token[10]
        if cid_len > MAX_CID_LEN or len(token) != TOKEN_FIXED + cid_len:
            raise TokenError(TokenErrorCode.MALFORMED)

        key_id = token[1]
        if key_id == self._current_id:
            key = self._current
        elif self._previous is not None and key_id == self._previous_id:
            key = self._previous
        else:
            raise TokenError(TokenErrorCode.UNKNOWN_KEY)

        head_len = TOKEN_FIXED - SHA256_SIZE + cid_len
        mac = key.copy()
        mac.update(token[:head_len] + bytes((len(addr),)) + addr + bytes((len(rscid),)) + rscid)
        if not hmac.compare_digest(mac.digest(), token[head_len:]):
            raise TokenError(TokenErrorCode.BAD_MAC)

        (issued,) = _ISSUED.unpack_from(token, 2)
        if issued > now_ms + self._skew_ms:
            raise TokenError(TokenErrorCode.FUTURE)
        if now_ms - issued > self._lifetime_ms:
            raise TokenError(TokenErrorCode.EXPIRED)
        return token[11:head_len]
