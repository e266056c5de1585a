"""The ledger: every event taken from a client's queue is owned by exactly one open `Batch`
until it is settled as sent, rejected, dropped (with a reason) or kept in the disk spool.

Settling an event twice is a no-op, and shutdown settles whatever is still open, so an event
can be neither lost uncounted nor counted twice. No I/O beyond the spool's settle (unlink).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from capture_sdk._events import QueuedEvent
from capture_sdk._outcomes import Outcomes, describe
from capture_sdk._retry import RetryPolicy, is_retriable_status, parse_retry_after
from capture_sdk._spool import Spool
from capture_sdk._transport import Response

log = logging.getLogger("capture_sdk")

SpoolRef = Callable[[], Spool | None]


class Ledger:
    """One per client. Thread-safe: its lock is a leaf (held only to move events between
    sets; counting, `on_error` and the spool run after it is released)."""

    def __init__(self, outcomes: Outcomes, spool: SpoolRef) -> None:
        self.outcomes = outcomes
        self._spool = spool
        self._lock = threading.Lock()
        self._open: dict[int, Batch] = {}  # by id(batch), in the order they were claimed
        self.held = 0  # events in open batches (settled or not): what flush() still waits on

    def claim(self, events: list[QueuedEvent]) -> Batch:
        """Open a batch for events just taken from the queue (call it while taking them)."""
        batch = Batch(self, events)
        with self._lock:
            self._open[id(batch)] = batch
            self.held += len(events)
        return batch

    def give_up(self, events: Sequence[QueuedEvent], reason: str, detail: str) -> None:
        """Events that will not be sent by this process: kept if their spool record is on
        disk (counted `spooled`, replayed at the next start), else dropped with `reason`."""
        if not events:
            return
        spool = self._spool()
        on_disk: dict[int, bool] = {}
        if spool is not None:
            for seq in {e.segment for e in events}:
                on_disk[seq] = spool.keeps(seq)
        kept = [e for e in events if on_disk.get(e.segment, False)]
        lost = [e for e in events if not on_disk.get(e.segment, False)]
        if kept:
            self.outcomes.counters.add("spooled", len(kept))
            log.warning(
                "capture_sdk kept %d undelivered event(s) in the spool for the next start (%s)",
                len(kept),
                reason,
            )
        if lost:
            self.outcomes.drop(lost, reason, detail)

    def settle_all(self, reason: str, detail: str) -> int:
        """Shutdown: give up every event of every open batch; returns how many there were."""
        with self._lock:
            batches, self._open = list(self._open.values()), {}
            pending = [e for batch in batches for e in batch.take_pending()]
            self.held = 0
        self.give_up(pending, reason, detail)
        return len(pending)

    def reclaim(self) -> list[QueuedEvent]:
        """Take back the unsettled events of every open batch, in order, to queue them again
        (AsyncClient: the loop their sender ran on was closed under it)."""
        with self._lock:
            batches, self._open = list(self._open.values()), {}
            self.held = 0
            return [e for batch in batches for e in batch.take_pending()]

    def release(self, batch: Batch) -> list[QueuedEvent]:
        """Close `batch` and hand its unsettled events back (to be queued again)."""
        return self._close(batch)

    def _pending_of(self, batch: Batch, events: Sequence[QueuedEvent]) -> list[QueuedEvent]:
        with self._lock:
            return batch.take(events)

    def _close(self, batch: Batch) -> list[QueuedEvent]:
        with self._lock:
            if self._open.pop(id(batch), None) is not None:
                self.held -= len(batch.events)
            return batch.take_pending()


class Batch:
    """The events one sender took from the queue, until each is settled exactly once."""

    __slots__ = ("_ledger", "_pending", "events")

    def __init__(self, ledger: Ledger, events: list[QueuedEvent]) -> None:
        self._ledger = ledger
        self.events = events
        # guarded by the ledger's lock. None: every event is pending. The map by id is made
        # only when part of the batch is settled first (the usual batch is settled whole).
        self._pending: dict[int, QueuedEvent] | None = None

    # called with the ledger's lock held
    def take(self, events: Sequence[QueuedEvent]) -> list[QueuedEvent]:
        pending = self._pending
        if pending is None:
            # list == compares item by item, identity first: C speed for the whole batch
            if events == self.events:
                self._pending = {}
                return list(events)
            pending = self._pending = {id(e): e for e in self.events}
        return [e for e in events if pending.pop(id(e), None) is not None]

    def take_pending(self) -> list[QueuedEvent]:
        pending = self._pending
        self._pending = {}
        return list(self.events) if pending is None else list(pending.values())

    # the senders' side
    @property
    def outcomes(self) -> Outcomes:
        return self._ledger.outcomes

    def delivered(self, events: list[QueuedEvent], response: Response) -> None:
        """A 200 for `events` (one request): sent, except what the collector rejected."""
        sent, rejected = self.outcomes.read_result(events, response)
        taken = self._ledger._pending_of(self, events)
        if len(taken) == len(events):  # the usual case: none of them settled yet
            self.outcomes.count_result(sent, [d for _, d in rejected])
            self._settle_on_disk(taken)
            return
        still = {id(e) for e in taken}
        self.outcomes.count_result(
            [e for e in sent if id(e) in still],
            [d for e, d in rejected if id(e) in still],
        )
        self._settle_on_disk(taken)

    def drop(self, events: Sequence[QueuedEvent], reason: str, detail: str) -> None:
        """Dropped for good (refused, invalid, too large): counted, and its record settled."""
        pending = self._ledger._pending_of(self, events)
        self.outcomes.drop(pending, reason, detail)
        self._settle_on_disk(pending)

    def give_up(self, events: Sequence[QueuedEvent], reason: str, detail: str) -> None:
        """Not sent by this process (retries exhausted, shutdown): kept on disk or dropped."""
        self._ledger.give_up(self._ledger._pending_of(self, events), reason, detail)

    def close(self, reason: str, detail: str) -> None:
        """The sender is done with the batch; whatever it left unsettled is given up."""
        self._ledger.give_up(self._ledger._close(self), reason, detail)

    def _settle_on_disk(self, events: Sequence[QueuedEvent]) -> None:
        spool = self._ledger._spool()
        if spool is not None and events:
            spool.settle(events)


class BatchAttempts:
    """One request's attempts under the retry policy: what each answer (or network error)
    means for its events, settled through their `Batch`.

    Both clients' send loops call `after` once per attempt; only how they wait differs (a
    thread's abortable wait, an asyncio sleep).
    """

    __slots__ = ("_batch", "_clock", "_events", "_policy", "_started", "attempt")

    def __init__(
        self,
        events: list[QueuedEvent],
        batch: Batch,
        policy: RetryPolicy,
        clock: Callable[[], float],
    ) -> None:
        self._events = events
        self._batch = batch
        self._policy = policy
        self._clock = clock
        self._started = clock()
        self.attempt = 0

    def after(self, response: Response | None) -> float | None:
        """Seconds to wait before the next attempt, or None when its events are settled
        (delivered, refused or given up). `response` None: a network error."""
        self.attempt += 1
        retry_after_s: float | None = None
        if response is not None:
            if response.status == 200:
                self._batch.delivered(self._events, response)
                return None
            if not is_retriable_status(response.status):
                self._batch.drop(self._events, "collector_refused", describe(response))
                return None
            retry_after_s = parse_retry_after(response.headers.get("retry-after"))
        delay_s = self._policy.delay_s(self.attempt, retry_after_s)
        if self._clock() - self._started + delay_s > self._policy.max_retry_time_s:
            self._batch.give_up(
                self._events, "retries_exhausted", f"not delivered after {self.attempt} attempts"
            )
            return None
        # counted in events, like every other counter: a retry of a request of 100 is 100
        self._batch.outcomes.counters.add("retried", len(self._events))
        return delay_s
