"""Bytes in flight per process: a request holds the bytes it has received, under one cap.

One event loop, so no locks. It never waits: a request whose bytes do not fit is refused at
once (503 + Retry-After), so a slow sink cannot make the collector queue without bound. A
request holds what has arrived, never what it declared: a client that announces a large body
and trickles it holds only the bytes it really sent (gzip is inflated, and held, only once the
body is complete).
"""

from __future__ import annotations


class InFlight:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0

    @property
    def full(self) -> bool:
        """No room left: a new request is refused before a byte of its body is read."""
        return self.bytes >= self.limit_bytes

    def reserve(self) -> Reservation:
        """A new request's share, empty until its bytes arrive; release it exactly once."""
        return Reservation(self)


class Reservation:
    """What one request holds of its process's budget; grows as its body arrives."""

    __slots__ = ("_inflight", "held")

    def __init__(self, inflight: InFlight) -> None:
        self._inflight = inflight
        self.held = 0

    def hold(self, size: int) -> bool:
        """Hold `size` bytes in all (never less than already held). False if the growth does
        not fit; what was held stays held until `release`."""
        extra = size - self.held
        if extra <= 0:
            return True
        inflight = self._inflight
        # A lone request may exceed the cap (the body limits bound it); beside others, it
        # must fit.
        others = inflight.bytes - self.held
        if others and inflight.bytes + extra > inflight.limit_bytes:
            return False
        inflight.bytes += extra
        self.held = size
        return True

    def release(self) -> None:
        """Give back everything held; safe to call again (then it gives back nothing)."""
        self._inflight.bytes -= self.held
        self.held = 0
