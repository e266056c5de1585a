"""`Client`: the thread-based SDK entry point. `track()` validates cheaply and enqueues.

`track()` never blocks on the network and raises only for programmer errors; everything after
enqueue runs on the worker thread and is reported through counters, logs and `on_error`.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from capture_sdk._buffer import EventBuffer
from capture_sdk._delivery import (
    Counters,
    Outcomes,
    check_positive,
    queue_event,
    request_headers,
)
from capture_sdk._errors import ConfigurationError, InvalidEventError
from capture_sdk._events import ClientStats, DroppedEvent, QueuedEvent
from capture_sdk._retry import RetryPolicy
from capture_sdk._transport import HttpTransport, Transport
from capture_sdk._validation import LocalValidator, ValidationMode
from capture_sdk._worker import Worker
from event_schemas import SchemaRegistry

log = logging.getLogger("capture_sdk")

# Clients to re-initialise in a forked child (gunicorn, Celery and multiprocessing fork).
_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _reinit_clients_after_fork() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_reinit_clients_after_fork)


class Client:
    """Batches events in the background and POSTs them to the collector.

    >>> client = Client("http://127.0.0.1:8080")
    >>> client.track("track_played", {"track_id": "t1", "artist_id": "a1", "position_ms": 0},
    ...              version=1, user_id="u-42")
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        write_key: str | None = None,
        transport: Transport | None = None,
        batch_size: int = 100,
        flush_interval_s: float = 1.0,
        max_queue_size: int = 10_000,
        gzip: bool = True,
        request_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: Callable[[Sequence[DroppedEvent]], None] | None = None,
        exit_timeout_s: float = 5.0,
        validation: ValidationMode = "off",
        schemas: SchemaRegistry | None = None,
    ) -> None:
        if transport is None:
            if endpoint is None:
                raise ConfigurationError("Client needs an endpoint URL (or a transport)")
            transport = HttpTransport(endpoint, timeout_s=request_timeout_s)
        check_positive(
            batch_size=batch_size,
            max_queue_size=max_queue_size,
            flush_interval_s=flush_interval_s,
            exit_timeout_s=exit_timeout_s,
        )
        self._validator = LocalValidator(validation, schemas)
        self._on_error = on_error
        self._exit_timeout_s = exit_timeout_s
        self._transport = transport
        self._queue_sizes = (max_queue_size, batch_size)
        self._headers = request_headers(write_key, use_gzip=gzip)
        self._policy = retry or RetryPolicy()
        self._flush_interval_s = flush_interval_s
        self._gzip = gzip
        self._closed = False
        self._start()
        atexit.register(self._at_exit)
        _live_clients.add(self)

    def _start(self) -> None:
        """Fresh queue, counters and worker thread: at construction, and in a forked child."""
        self._counters = Counters()
        self._outcomes = Outcomes(self._counters, self._report)
        self._buffer: EventBuffer[QueuedEvent] = EventBuffer(*self._queue_sizes)
        self._worker = Worker(
            buffer=self._buffer,
            transport=self._transport,
            policy=self._policy,
            outcomes=self._outcomes,
            validator=self._validator,
            headers=self._headers,
            flush_interval_s=self._flush_interval_s,
            use_gzip=self._gzip,
        )
        self._worker.start()

    def _after_fork_in_child(self) -> None:
        # The child has a copy of the parent's queue but not its worker thread. The queued
        # events are the parent's to send (sending them here too would duplicate them), and
        # the parent's connection must not be shared: start over with nothing inherited.
        if self._closed:
            return
        self._transport.after_fork()
        self._start()

    def track(
        self,
        event: str | msgspec.Struct,
        properties: Mapping[str, Any] | msgspec.Struct | None = None,
        *,
        version: int | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        occurred_at: dt.datetime | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one event and return its event_id (kept across retries, for dedup).

        `event` is the event name, with `properties` and `version` (default 1), or a typed
        event such as `event_schemas.typed.TrackPlayedV2(...)`, which carries its name,
        version and properties (passing `properties=` too, or another version, is an
        InvalidEventError).
        """
        queued = queue_event(
            event,
            properties,
            version=version,
            user_id=user_id,
            anonymous_id=anonymous_id,
            occurred_at=occurred_at,
            context=context,
        )
        if self._validator.strict:
            problem = self._validator.problem(queued)
            if problem is not None:
                raise InvalidEventError(problem)
        if not self._buffer.put(queued):
            self._outcomes.refused(queued, closed=self._buffer.closed)
        return queued.event_id

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far; True if all of it was delivered or dropped in time."""
        return self._buffer.wait_done(timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Flush within `timeout_s`, then stop the worker; later `track()` calls are dropped."""
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._at_exit)
        self._buffer.close()
        flushed = self._buffer.wait_done(timeout_s * 0.9)
        if not flushed:
            self._worker.abort()
        self._worker.join(timeout_s * 0.1 if flushed else max(timeout_s * 0.1, 0.5))
        self._transport.close()
        return flushed

    def stats(self) -> ClientStats:
        return self._counters.snapshot(self._buffer.enqueued, self._buffer.depth)

    def _at_exit(self) -> None:
        self.shutdown(self._exit_timeout_s)

    def _report(self, dropped: Sequence[DroppedEvent]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(dropped)
        except Exception:  # a broken callback must not break delivery
            log.exception("capture_sdk on_error callback raised")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
