"""The token bucket behind the upload limit and the throttling proxy, with `now` as plain numbers."""

import pytest

from p2p.ratelimit import TokenBucket


def test_a_burst_passes_at_once_then_senders_wait_for_the_rate() -> None:
    bucket = TokenBucket(rate=100, burst=50, now=0)
    assert bucket.reserve(50, now=0) == 0
    assert bucket.reserve(100, now=0) == pytest.approx(1.0)
    assert bucket.reserve(100, now=0) == pytest.approx(2.0)  # queued behind the first


def test_tokens_refill_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=50, now=0)
    bucket.reserve(50, now=0)
    assert bucket.reserve(25, now=0.25) == 0
    assert bucket.reserve(50, now=100) == 0  # idle time does not bank more than the burst
    assert bucket.reserve(1, now=100) == pytest.approx(0.01)


def test_over_a_long_run_the_average_is_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now=0)
    now = 0.0
    for _ in range(100):
        now += bucket.reserve(100, now)
    assert now == pytest.approx(9.9)


def test_a_clock_going_backwards_does_not_mint_tokens() -> None:
    bucket = TokenBucket(rate=100, burst=10, now=5)
    bucket.reserve(10, now=5)
    assert bucket.reserve(10, now=4) == pytest.approx(0.1)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=1, now=0).reserve(-1, now=0)
