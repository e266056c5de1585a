"""The accounting of every outcome, shared by Client and AsyncClient: sent, rejected and
dropped events, counted behind `stats()` and reported to `on_error`; and reading the
collector's answers. No I/O and no threads: it only counts, logs and calls back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import msgspec

from capture_sdk._events import DROP_REASONS, ClientStats, DroppedEvent, FieldError, QueuedEvent
from capture_sdk._transport import Response

log = logging.getLogger("capture_sdk")

OnDrop = Callable[[Sequence[DroppedEvent]], None]


class _Rejection(msgspec.Struct):
    index: int
    reason: str = "rejected"
    errors: list[FieldError] = []


class _BatchResult(msgspec.Struct):
    accepted: int = 0
    rejected: list[_Rejection] = []


class _ErrorBody(msgspec.Struct):
    error: str = "unknown"
    detail: str = ""


_result_decoder = msgspec.json.Decoder(_BatchResult)
_error_decoder = msgspec.json.Decoder(_ErrorBody)


def describe(response: Response) -> str:
    """An error answer as `HTTP <status> <error>: <detail>` (or just the status)."""
    try:
        error = _error_decoder.decode(response.body)
    except msgspec.DecodeError:
        return f"HTTP {response.status}"
    return f"HTTP {response.status} {error.error}: {error.detail}"


class Counters:
    """Thread-safe delivery counters behind `stats()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.rejected = 0
        self.retried = 0
        self.replayed = 0
        self.sampled_out = 0
        self.spooled = 0
        self.spool_errors = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += count

    def snapshot(self, enqueued: int, queue_depth: int) -> ClientStats:
        with self._lock:
            return ClientStats(
                enqueued=enqueued,
                sent=self.sent,
                rejected=self.rejected,
                retried=self.retried,
                dropped=dict(self.dropped),
                queue_depth=queue_depth,
                replayed=self.replayed,
                sampled_out=self.sampled_out,
                spooled=self.spooled,
                spool_errors=self.spool_errors,
            )


class Outcomes:
    """Counts and reports what happened to events; every drop has a reason (retries are not)."""

    def __init__(self, counters: Counters, report: OnDrop) -> None:
        self.counters = counters
        self._report = report

    @staticmethod
    def read_result(
        events: list[QueuedEvent], response: Response
    ) -> tuple[list[QueuedEvent], list[tuple[QueuedEvent, DroppedEvent]]]:
        """A 200 for `events`: (sent, rejected with their reports). Counts nothing."""
        try:
            result = _result_decoder.decode(response.body)
        except msgspec.DecodeError:
            # 200 means the collector acknowledged the batch; an odd body cannot undo that.
            log.warning("collector answered 200 with an unreadable body; counting all as sent")
            result = _BatchResult(accepted=len(events))
        if not result.rejected:
            return list(events), []
        rejected: dict[int, tuple[QueuedEvent, DroppedEvent]] = {}
        for rejection in result.rejected:
            if 0 <= rejection.index < len(events):
                event = events[rejection.index]
                rejected[id(event)] = (
                    event,
                    DroppedEvent(
                        event_id=event.event_id,
                        event=event.event,
                        version=event.version,
                        reason="rejected",
                        detail=f"rejected by the collector: {rejection.reason}",
                        errors=tuple(rejection.errors),
                    ),
                )
        sent = [e for e in events if id(e) not in rejected]
        return sent, list(rejected.values())

    def count_result(self, sent: list[QueuedEvent], rejected: list[DroppedEvent]) -> None:
        """Count what `read_result` found (rejected events are never retried)."""
        self.counters.add("sent", len(sent))
        if rejected:
            self.counters.add("rejected", len(rejected))
            self._emit(rejected, "rejected")

    def drop(self, events: Sequence[QueuedEvent], reason: str, detail: str) -> None:
        dropped = [
            DroppedEvent(
                event_id=e.event_id, event=e.event, version=e.version, reason=reason, detail=detail
            )
            for e in events
        ]
        if dropped:
            self._emit(dropped, reason)

    def refused(self, event: QueuedEvent, reason: str, detail: str) -> None:
        """track() did not queue the event (client closed, queue or spool full, too large).

        Counted and reported, not logged: a full queue would log once per event.
        """
        self.counters.drop(reason)
        self._report(
            [
                DroppedEvent(
                    event_id=event.event_id,
                    event=event.event,
                    version=event.version,
                    reason=reason,
                    detail=detail,
                )
            ]
        )

    def not_queued(self, event: QueuedEvent, *, closed: bool) -> None:
        """The memory queue refused the event: the client is shut down, or the queue full."""
        if closed:
            self.refused(event, "client_closed", "client is shut down")
        else:
            self.refused(event, "queue_full", "queue is full")

    def _emit(self, dropped: list[DroppedEvent], reason: str) -> None:
        self.counters.drop(reason, len(dropped))
        log.warning(
            "capture_sdk dropped %d event(s): %s (%s)", len(dropped), reason, dropped[0].detail
        )
        self._report(dropped)
