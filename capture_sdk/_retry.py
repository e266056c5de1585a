"""The one "retry or give up" policy: which outcomes are retried and how long to wait.

Retried: network errors, 408, 429 and 5xx. Not retried: any other status (the batch is
dropped with a reason). Waits are full-jitter exponential backoff with Retry-After as a floor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRIABLE_STATUSES = frozenset({408, 429})


def is_retriable_status(status: int) -> bool:
    return status in RETRIABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only); None if absent or odd."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 60.0  # a server asking for longer is not waited for longer
    max_retry_time_s: float = 120.0  # per batch, from its first attempt

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Wait before retry number `attempt` (1 for the first retry)."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (attempt - 1)))
        delay = random.uniform(0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.retry_after_cap_s))
        return delay
