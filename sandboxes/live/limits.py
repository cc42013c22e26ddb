"""Per-connection rate limits of the live consumer: plain counters on a monotonic clock, kept in
the consumer's memory (nothing shared, nothing written)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingWindow:
    """At most `limit` events in any `seconds`-long window: `allow()` is False for the one
    that would make it `limit + 1`.

    Exact, unlike a token bucket of the same size, which lets up to twice its capacity through
    in one window (a full bucket, then what refills). It remembers only the last `limit` times.
    """

    def __init__(self, *, limit: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.times: deque[float] = deque(maxlen=limit)

    def allow(self) -> bool:
        now = self.clock()
        if len(self.times) == self.times.maxlen and now - self.times[0] < self.seconds:
            return False
        self.times.append(now)
        return True


class TokenBucket:
    """A burst of `capacity`, then `per_second` on average: `take()` is False when empty."""

    def __init__(
        self, *, capacity: float, per_second: float, clock: Callable[[], float] = time.monotonic
    ):
        self.capacity = capacity
        self.per_second = per_second
        self.clock = clock
        self.tokens = capacity
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
