"""The consumer thread: take batches from the buffer, send them, retry, report every outcome.

It owns all work after enqueue (JSON encoding, gzip, HTTP, backoff) so that `track()` stays
cheap. It never raises out of its loop and never retries a per-event rejection.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec

from capture_sdk._buffer import EventBuffer
from capture_sdk._errors import TransportError
from capture_sdk._events import (
    DROP_REASONS,
    ClientStats,
    DroppedEvent,
    FieldError,
    QueuedEvent,
    WireEvent,
)
from capture_sdk._retry import RetryPolicy, is_retriable_status, parse_retry_after
from capture_sdk._transport import Response, Transport
from capture_sdk._version import __version__

log = logging.getLogger("capture_sdk")

LIBRARY = {"name": "capture-sdk-python", "version": __version__}
RUNTIME = {"name": platform.python_implementation().lower(), "version": platform.python_version()}

# gzip level 6 costs several times level 1 for a few percent less on JSON batches.
GZIP_LEVEL = 1


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


class Counters:
    """Thread-safe delivery counters behind `Client.stats()`."""

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


OnDrop = Callable[[Sequence[DroppedEvent]], None]


class Worker:
    def __init__(
        self,
        *,
        buffer: EventBuffer[QueuedEvent],
        transport: Transport,
        policy: RetryPolicy,
        counters: Counters,
        report: OnDrop,
        headers: Mapping[str, str],
        flush_interval_s: float,
        use_gzip: bool,
    ) -> None:
        self._buffer = buffer
        self._transport = transport
        self._policy = policy
        self._counters = counters
        self._report = report
        self._headers = dict(headers)
        if use_gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._flush_interval_s = flush_interval_s
        self._use_gzip = use_gzip
        self._encoder = msgspec.json.Encoder()
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-sdk-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        """Stop waiting on retries: what is undelivered now is dropped as `shutdown`."""
        self._abort.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            batch = self._buffer.take(self._flush_interval_s)
            if not batch:
                return
            if self._abort.is_set():
                self._drop(batch, "shutdown", "client shut down before this event was sent")
                self._buffer.done(len(batch))
                continue
            try:
                self._deliver(batch)
            except Exception as exc:  # the worker must outlive any bug in one batch
                log.exception("capture_sdk worker failed on a batch")
                self._drop(batch, "retries_exhausted", f"internal error: {exc!r}")
            finally:
                self._buffer.done(len(batch))

    def _deliver(self, batch: list[QueuedEvent]) -> None:
        events: list[QueuedEvent] = []
        encoded: list[bytes] = []
        for event in batch:
            try:
                encoded.append(self._encoder.encode(wire_event(event)))
                events.append(event)
            except (TypeError, ValueError, msgspec.EncodeError) as exc:
                self._drop([event], "unserializable", f"cannot encode as JSON: {exc}")
        if not events:
            return
        payload = b",".join(encoded)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            retry_after_s: float | None = None
            try:
                response = self._transport.send(self._body(payload), self._headers)
            except TransportError as exc:
                log.debug("batch of %d not sent: %s", len(events), exc)
            else:
                if response.status == 200:
                    self._delivered(events, response)
                    return
                if not is_retriable_status(response.status):
                    self._drop(events, "collector_refused", _describe(response))
                    return
                retry_after_s = parse_retry_after(response.headers.get("retry-after"))
            delay_s = self._policy.delay_s(attempt, retry_after_s)
            if time.monotonic() - started + delay_s > self._policy.max_retry_time_s:
                self._drop(events, "retries_exhausted", f"not delivered after {attempt} attempts")
                return
            self._counters.add("retried")
            if self._abort.wait(delay_s):
                self._drop(events, "shutdown", "client shut down while retrying this event")
                return

    def _body(self, payload: bytes) -> bytes:
        sent_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        body = b'{"sent_at":"' + sent_at.encode() + b'","batch":[' + payload + b"]}"
        return gzip.compress(body, GZIP_LEVEL, mtime=0) if self._use_gzip else body

    def _delivered(self, events: list[QueuedEvent], response: Response) -> None:
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
        self._counters.add("sent", len(events) - len(dropped))
        if dropped:
            self._counters.add("rejected", len(dropped))
            self._emit(dropped, "rejected")

    def _drop(self, events: Sequence[QueuedEvent], reason: str, detail: str) -> None:
        dropped = [
            DroppedEvent(
                event_id=e.event_id, event=e.event, version=e.version, reason=reason, detail=detail
            )
            for e in events
        ]
        self._emit(dropped, reason)

    def _emit(self, dropped: list[DroppedEvent], reason: str) -> None:
        self._counters.drop(reason, len(dropped))
        log.warning(
            "capture_sdk dropped %d event(s): %s (%s)", len(dropped), reason, dropped[0].detail
        )
        self._report(dropped)


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


def _describe(response: Response) -> str:
    try:
        error = _error_decoder.decode(response.body)
    except msgspec.DecodeError:
        return f"HTTP {response.status}"
    return f"HTTP {response.status} {error.error}: {error.detail}"
