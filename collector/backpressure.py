"""Bytes in flight per process: a request is admitted only while the total stays under a cap.

One event loop, so no locks. It never waits: a request that does not fit is refused at once
(503 + Retry-After), so a slow sink cannot make the collector queue without bound.
"""

from __future__ import annotations


class InFlight:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0

    def try_acquire(self, size: int) -> bool:
        # A lone request may exceed the cap (the body limits bound it); others must fit.
        if self.bytes and self.bytes + size > self.limit_bytes:
            return False
        self.bytes += size
        return True

    def release(self, size: int) -> None:
        self.bytes -= size
