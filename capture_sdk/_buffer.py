"""A bounded queue between `track()` and the worker thread, with flush accounting.

`put` never blocks: a full queue refuses the event (the caller counts the drop). `take`
returns a batch when it is full, when the interval passes, or when a flush or close asks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")


class EventBuffer(Generic[T]):
    def __init__(self, max_size: int, batch_size: int) -> None:
        self._items: deque[T] = deque()
        self._max_size = max_size
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._unfinished = 0  # queued plus taken but not yet marked done
        self._flush_requests = 0
        self._closed = False
        self.enqueued = 0  # every put() that was accepted, ever

    def put(self, item: T) -> bool:
        # the Condition's own lock, taken directly: `with self._cond` adds two Python calls
        # to every track()
        with self._lock:
            items = self._items
            if self._closed or len(items) >= self._max_size:
                return False
            items.append(item)
            self._unfinished += 1
            self.enqueued += 1
            if len(items) == self._batch_size:
                self._cond.notify_all()  # wake the worker early: a batch is full
            return True

    def extend(self, items: list[T]) -> None:
        """Queue items past `max_size`: events replayed from the disk spool at start were
        accepted by an earlier process, and refusing them here would lose them."""
        with self._cond:
            self._items.extend(items)
            self._unfinished += len(items)
            self._cond.notify_all()

    def take(self, interval_s: float, claim: Callable[[list[T]], C]) -> C | None:
        """Wait for a batch and `claim` it while the lock is held (so that `drain` at shutdown
        never runs between the two); None only when closed and empty."""
        deadline = time.monotonic() + interval_s
        with self._cond:
            while True:
                if len(self._items) >= self._batch_size:
                    break
                if self._items and (self._flush_requests or self._closed):
                    break
                if not self._items and self._closed:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if self._items:
                        break
                    deadline = time.monotonic() + interval_s
                    remaining = interval_s
                self._cond.wait(remaining)
            count = min(self._batch_size, len(self._items))
            return claim([self._items.popleft() for _ in range(count)])

    def done(self, count: int) -> None:
        with self._cond:
            self._unfinished -= count
            if self._unfinished == 0:
                self._cond.notify_all()

    def wait_done(self, timeout_s: float) -> bool:
        """Ask the worker to send what is queued now and wait until nothing is unfinished."""
        with self._cond:
            self._flush_requests += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(
                    lambda: self._unfinished == 0, timeout=max(0.0, timeout_s)
                )
            finally:
                self._flush_requests -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self) -> list[T]:
        """Remove and return everything still queued (used when giving up at shutdown)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed
