"""A token bucket: how long to wait before sending so many bytes. Pure; `now` is passed in.

Shared by every upload of a node (the per-node upload limit) and by the test tools' throttling proxy. Bytes are
reserved before they are sent and the bucket may go into debt, so concurrent senders queue up fairly: each
waits for the debt in front of it to be paid off.
"""

from __future__ import annotations


class TokenBucket:
    """At most `rate` bytes per second on average, in bursts of up to `burst` bytes."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def reserve(self, amount: int, now: float) -> float:
        """Take `amount` bytes' worth of tokens; returns the seconds to wait before sending them."""
        if amount < 0:
            raise ValueError("amount must not be negative")
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = max(self._updated, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
