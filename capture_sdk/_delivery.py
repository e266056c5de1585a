"""What Client and AsyncClient share: the event track() queues, the wire body, and the
accounting of every outcome (sent, rejected, dropped), counted and reported to on_error.

No I/O and no threads here: the clients own sending and waiting.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from capture_sdk._errors import ConfigurationError, InvalidEventError
from capture_sdk._events import (
    DROP_REASONS,
    ClientStats,
    DroppedEvent,
    FieldError,
    QueuedEvent,
    WireEvent,
)
from capture_sdk._ids import uuid7
from capture_sdk._transport import Response
from capture_sdk._validation import LocalValidator
from capture_sdk._version import __version__

log = logging.getLogger("capture_sdk")

LIBRARY = {"name": "capture-sdk-python", "version": __version__}
RUNTIME = {"name": platform.python_implementation().lower(), "version": platform.python_version()}

# gzip level 6 costs several times level 1 for a few percent less on JSON batches.
GZIP_LEVEL = 1

OnDrop = Callable[[Sequence[DroppedEvent]], None]


def check_positive(**values: float) -> None:
    """Client options that must be > 0 (sizes, intervals, timeouts)."""
    for name, value in values.items():
        if value <= 0:
            raise ConfigurationError(f"{name} must be > 0, got {value!r}")


def request_headers(write_key: str | None, *, use_gzip: bool) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"capture-sdk-python/{__version__}",
    }
    if write_key:
        headers["Authorization"] = f"Bearer {write_key}"
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    return headers


def queue_event(
    event: str | msgspec.Struct,
    properties: Mapping[str, Any] | msgspec.Struct | None,
    *,
    version: int | None,
    user_id: str | None,
    anonymous_id: str | None,
    occurred_at: dt.datetime | None,
    context: Mapping[str, Any] | None,
) -> QueuedEvent:
    """Check track()'s arguments (InvalidEventError for programmer errors) and build the event.

    `event` is an event name (with `version`, default 1) or a typed event: a msgspec Struct
    whose class names its event and version in `__event_name__` and `__event_version__` (see
    event_schemas.typed), sent as the properties. Only cheap work: the sender formats times,
    adds the library context and encodes.
    """
    if isinstance(event, msgspec.Struct):
        typed = event
        name = getattr(type(typed), "__event_name__", None)
        typed_version = getattr(type(typed), "__event_version__", None)
        if not isinstance(name, str) or not name:
            raise InvalidEventError(
                f"{type(typed).__name__} is not a typed event: its class has no "
                "`__event_name__` and `__event_version__`"
            )
        if isinstance(typed_version, bool) or not isinstance(typed_version, int):
            raise InvalidEventError(f"{type(typed).__name__}.__event_version__ is not an int")
        if properties is not None:
            raise InvalidEventError(
                f"{name}: a typed event is its own properties; drop properties="
            )
        if version is not None and version != typed_version:
            raise InvalidEventError(
                f"{name}: version={version!r} conflicts with {type(typed).__name__}, "
                f"which is version {typed_version}"
            )
        event, version, properties = name, typed_version, typed
    if not isinstance(event, str) or not event:
        raise InvalidEventError(f"event must be a non-empty string, got {event!r}")
    if version is None:
        version = 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidEventError(f"version must be an int >= 1, got {version!r}")
    if user_id is None and anonymous_id is None:
        raise InvalidEventError(f"{event}: give user_id or anonymous_id (or both)")
    if properties is None:
        properties = {}
    elif not isinstance(properties, Mapping | msgspec.Struct):
        raise InvalidEventError(f"{event}: properties must be a mapping or a msgspec Struct")
    occurred: int | dt.datetime
    if occurred_at is None:
        occurred = time.time_ns()
    elif occurred_at.tzinfo is None:
        raise InvalidEventError(f"{event}: occurred_at must be timezone-aware")
    else:
        occurred = occurred_at
    event_id = uuid7(occurred if isinstance(occurred, int) else time.time_ns())
    return QueuedEvent(
        event, version, event_id, occurred, properties, user_id, anonymous_id, context
    )


def wire_event(queued: QueuedEvent) -> WireEvent:
    """Turn what track() queued into the wire format: ISO time, library context added."""
    occurred = queued.occurred
    if isinstance(occurred, int):
        occurred = dt.datetime.fromtimestamp(occurred / 1e9, dt.UTC)
    context = {"library": LIBRARY, "runtime": RUNTIME}
    if queued.context:
        context.update(queued.context)
    return WireEvent(
        event=queued.event,
        version=queued.version,
        event_id=queued.event_id,
        occurred_at=occurred.isoformat(timespec="milliseconds"),
        properties=queued.properties,
        user_id=queued.user_id,
        anonymous_id=queued.anonymous_id,
        context=context,
    )


def encode_batch(
    batch: list[QueuedEvent],
    encoder: msgspec.json.Encoder,
    outcomes: Outcomes,
    validator: LocalValidator,
) -> tuple[list[QueuedEvent], bytes]:
    """The events to send and their JSON joined by commas; the others are dropped, counted."""
    events: list[QueuedEvent] = []
    encoded: list[bytes] = []
    for event in batch:
        if validator.drops:
            problem = validator.problem(event)
            if problem is not None:
                outcomes.drop([event], "invalid", problem)
                continue
        try:
            encoded.append(encoder.encode(wire_event(event)))
            events.append(event)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            outcomes.drop([event], "unserializable", f"cannot encode as JSON: {exc}")
    return events, b",".join(encoded)


def batch_body(payload: bytes) -> bytes:
    """`{"sent_at": now, "batch": [payload]}`; payload is the events' JSON joined by commas."""
    sent_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    return b'{"sent_at":"' + sent_at.encode() + b'","batch":[' + payload + b"]}"


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
            )


class Outcomes:
    """Counts and reports what happened to events; every drop has a reason (retries are not)."""

    def __init__(self, counters: Counters, report: OnDrop) -> None:
        self.counters = counters
        self._report = report

    def delivered(self, events: list[QueuedEvent], response: Response) -> None:
        """A 200: everything sent, except the events the collector rejected (not retried)."""
        try:
            result = _result_decoder.decode(response.body)
        except msgspec.DecodeError:
            # 200 means the collector acknowledged the batch; an odd body cannot undo that.
            log.warning("collector answered 200 with an unreadable body; counting all as sent")
            result = _BatchResult(accepted=len(events))
        dropped = []
        for rejection in result.rejected:
            if 0 <= rejection.index < len(events):
                event = events[rejection.index]
                dropped.append(
                    DroppedEvent(
                        event_id=event.event_id,
                        event=event.event,
                        version=event.version,
                        reason="rejected",
                        detail=f"rejected by the collector: {rejection.reason}",
                        errors=tuple(rejection.errors),
                    )
                )
        self.counters.add("sent", len(events) - len(dropped))
        if dropped:
            self.counters.add("rejected", len(dropped))
            self._emit(dropped, "rejected")

    def drop(self, events: Sequence[QueuedEvent], reason: str, detail: str) -> None:
        dropped = [
            DroppedEvent(
                event_id=e.event_id, event=e.event, version=e.version, reason=reason, detail=detail
            )
            for e in events
        ]
        if dropped:
            self._emit(dropped, reason)

    def refused(self, event: QueuedEvent, *, closed: bool) -> None:
        """track() could not queue the event: the client is closed or its queue is full.

        Counted and reported, not logged: a full queue would log once per event.
        """
        reason = "client_closed" if closed else "queue_full"
        detail = "client is shut down" if closed else "queue is full"
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

    def _emit(self, dropped: list[DroppedEvent], reason: str) -> None:
        self.counters.drop(reason, len(dropped))
        log.warning(
            "capture_sdk dropped %d event(s): %s (%s)", len(dropped), reason, dropped[0].detail
        )
        self._report(dropped)
