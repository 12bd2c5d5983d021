"""The token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from quic_p2p.proto.ratelimit import TokenBucket


def test_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(10.4)  # 0.8 of a token
    assert bucket.take(10.5)  # one whole token after 0.5 s
    assert not bucket.take(10.5)
    # Idle time refills up to the burst, not beyond.
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_a_clock_going_backwards_grants_nothing_extra() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)
    assert not bucket.take(4.5)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)
