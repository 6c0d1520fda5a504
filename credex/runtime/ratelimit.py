"""Token buckets per caller: a steady rate with room for bursts, and how long to wait if empty."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from credex.protocol.clock import Clock


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate_per_s` tokens a second per key, at most `burst` saved up; one call costs one."""

    MAX_KEYS = 100_000

    def __init__(self, rate_per_s: float, burst: float, clock: Clock) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 if the call may proceed (and counts it), else seconds until it could."""
        bucket = self._refill(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate_per_s

    def wait(self, key: str) -> float:
        """Like `take`, without counting anything: 0.0 while `key` has a token left."""
        if key not in self._buckets:
            return 0.0
        bucket = self._refill(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate_per_s

    def charge(self, key: str) -> None:
        """Count one, even past empty (a debt paid back at the steady rate)."""
        bucket = self._refill(key)
        bucket.tokens = max(bucket.tokens - 1, -self.burst)

    def _refill(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._forget(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
        elapsed = max(0.0, now - bucket.updated)  # a clock stepped back earns nothing
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated = max(bucket.updated, now)
        return bucket

    def _forget(self, now: float) -> None:
        """Make room: drop every bucket that has refilled (it is as good as a new one), and if
        that is not a tenth of them, the least recently used (a flood of keys can then not
        wipe the debts of callers that were turned away)."""
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + max(0.0, now - bucket.updated) * self.rate_per_s >= self.burst:
                del self._buckets[key]
        while len(self._buckets) > self.MAX_KEYS * 9 // 10:
            self._buckets.popitem(last=False)
