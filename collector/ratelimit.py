"""Per-key token buckets: how many requests each write key may send per second, per process.

Pure bookkeeping on an injected monotonic clock (seconds); it never sleeps, reads the request or
raises. Buckets exist only for keys from the config file, so memory is bounded by the config.
"""

from __future__ import annotations

from collections.abc import Callable

from collector.sources import Sources

ClockS = Callable[[], float]


class TokenBucket:
    """`burst` tokens at most, refilled at `rate_per_s`; one request takes one token."""

    __slots__ = ("burst", "rate_per_s", "tokens", "updated_s")

    def __init__(self, rate_per_s: float, burst: int, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated_s = now_s

    def take(self, now_s: float) -> float:
        """0.0 when a token was taken; else the seconds until one will be there."""
        # a clock that steps back (wall-clock tests, NTP) refills nothing rather than draining
        elapsed_s = max(0.0, now_s - self.updated_s)
        self.tokens = min(float(self.burst), self.tokens + elapsed_s * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class RateLimiter:
    """One bucket per rate-limited key, addressed by the key's digest (see `Sources`)."""

    def __init__(self, sources: Sources, clock_s: ClockS) -> None:
        self._clock_s = clock_s
        now_s = clock_s()
        self._buckets = {
            digest: TokenBucket(entry.source.rate_limit_per_s, entry.source.burst, now_s)
            for digest, entry in sources.by_digest.items()
            if entry.source.rate_limit_per_s is not None
        }

    def wait_s(self, digest: bytes) -> float:
        """Take a token for this key: 0.0 when the request may go on, else seconds to wait."""
        bucket = self._buckets.get(digest)
        if bucket is None:
            return 0.0
        return bucket.take(self._clock_s())
