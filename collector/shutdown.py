"""The SIGTERM budget: drain requests in flight, then flush the sink, within one deadline.

aiohttp closes the listener and waits `drain_timeout_s` for handlers; the sink's stop gets
what is left until `shutdown_timeout_s` after the signal. This module only keeps time; it
must not stop anything itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# The part of the budget kept for flushing the sink after the drain, at most this much.
MAX_FLUSH_RESERVE_S = 5.0
# The sink always gets at least this long, even when the drain used its whole share.
MIN_FLUSH_S = 0.1


def drain_timeout_s(shutdown_timeout_s: float) -> float:
    """How long handlers in flight may run after SIGTERM: the budget minus the flush's share."""
    return shutdown_timeout_s - flush_reserve_s(shutdown_timeout_s)


def flush_reserve_s(shutdown_timeout_s: float) -> float:
    return min(MAX_FLUSH_RESERVE_S, shutdown_timeout_s / 3)


@dataclass(slots=True)
class ShutdownClock:
    """Started when shutdown begins (the app's on_shutdown); read when the sink is stopped."""

    shutdown_timeout_s: float
    clock: Callable[[], float] = time.monotonic
    deadline: float | None = None

    def start(self) -> None:
        if self.deadline is None:
            self.deadline = self.clock() + self.shutdown_timeout_s

    def flush_budget_s(self) -> float:
        """Time left for the sink's flush (its whole reserve when shutdown never started)."""
        if self.deadline is None:
            return flush_reserve_s(self.shutdown_timeout_s)
        return max(MIN_FLUSH_S, self.deadline - self.clock())
