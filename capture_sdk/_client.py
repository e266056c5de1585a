"""`Client`: the thread-based SDK entry point. `track()` validates cheaply and enqueues.

`track()` never blocks on the network and raises only for programmer errors; everything after
enqueue runs on the worker thread and is reported through counters, logs and `on_error`.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping

from capture_sdk._base import ClientBase, OnError
from capture_sdk._buffer import EventBuffer
from capture_sdk._delivery import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    RequestHeaders,
    SizeLimits,
    check_positive,
)
from capture_sdk._errors import ConfigurationError
from capture_sdk._events import ClientStats, QueuedEvent
from capture_sdk._forks import reset_after_fork
from capture_sdk._intake import open_spool
from capture_sdk._outcomes import Counters
from capture_sdk._retry import RetryPolicy
from capture_sdk._transport import HttpTransport, Transport
from capture_sdk._validation import LocalValidator, ValidationMode
from capture_sdk._worker import SHUTDOWN_DETAIL, Worker
from event_schemas import SchemaRegistry

log = logging.getLogger("capture_sdk")


class Client(ClientBase):
    """Batches events in the background and POSTs them to the collector.

    >>> client = Client("http://127.0.0.1:8080")
    >>> client.track("track_played", {"track_id": "t1", "artist_id": "a1", "position_ms": 0},
    ...              version=1, user_id="u-42")
    """

    _transport: Transport

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        write_key: str | None = None,
        signing_secret: str | None = None,
        transport: Transport | None = None,
        batch_size: int = 500,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        flush_interval_s: float = 1.0,
        max_queue_size: int = 10_000,
        gzip: bool = True,
        request_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: OnError | None = None,
        exit_timeout_s: float = 5.0,
        validation: ValidationMode = "off",
        schemas: SchemaRegistry | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 64 * 1024 * 1024,
        sample_rates: Mapping[str, float] | None = None,
        disabled: bool = False,
    ) -> None:
        self._disabled = disabled
        if disabled:
            # the global off switch: no thread, no spool, no connection; track() returns ""
            self._closed = True
            self._counters = Counters()
            return
        check_positive(request_timeout_s=request_timeout_s)  # as AsyncClient's transport does
        if transport is None:
            if endpoint is None:
                raise ConfigurationError("Client needs an endpoint URL (or a transport)")
            transport = HttpTransport(endpoint, timeout_s=request_timeout_s)
        check_positive(
            batch_size=batch_size,
            max_queue_size=max_queue_size,
            flush_interval_s=flush_interval_s,
            exit_timeout_s=exit_timeout_s,
            spool_max_bytes=spool_max_bytes,
        )
        self._validator = LocalValidator(validation, schemas)
        self._limits = SizeLimits(max_batch_bytes, max_event_bytes)
        self._sample_rates = sample_rates
        self._on_error = on_error
        self._exit_timeout_s = exit_timeout_s
        self._transport = transport
        self._queue_sizes = (max_queue_size, batch_size)
        self._headers = RequestHeaders(write_key, use_gzip=gzip, signing_secret=signing_secret)
        self._policy = retry or RetryPolicy()
        self._flush_interval_s = flush_interval_s
        self._gzip = gzip
        self._closed = False
        self._spool, replay, corrupt = open_spool(spool_dir, spool_max_bytes)
        self._start()
        self._requeue_spooled(replay, corrupt)
        atexit.register(self._at_exit)
        reset_after_fork(self)

    def _start(self) -> None:
        """Fresh queue, counters and worker thread: at construction, and in a forked child."""
        self._fresh_accounting()
        self._buffer: EventBuffer[QueuedEvent] = EventBuffer(*self._queue_sizes)
        self._put = self._buffer.put
        self._worker = Worker(
            buffer=self._buffer,
            transport=self._transport,
            policy=self._policy,
            ledger=self._ledger,
            validator=self._validator,
            headers=self._headers,
            flush_interval_s=self._flush_interval_s,
            use_gzip=self._gzip,
            limits=self._limits,
            spool=self._spool,
        )
        self._worker.start()

    def _after_fork_in_child(self) -> None:
        # The child has a copy of the parent's queue but not its worker thread. The queued
        # events are the parent's to send (sending them here too would duplicate them), and
        # the parent's connection must not be shared: start over with nothing inherited.
        if self._closed:
            return
        self._let_go_after_fork()
        self._start()

    def _is_closed(self) -> bool:
        return self._buffer.closed

    def _requeue(self, events: list[QueuedEvent]) -> None:
        self._buffer.extend(events)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far; True if all of it was delivered or dropped in time."""
        return self._disabled or self._buffer.wait_done(timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Flush within `timeout_s`, then stop the worker; later `track()` calls are dropped.

        Never takes much longer than `timeout_s`, even if the collector hangs: past 90% of it,
        the request in flight is interrupted and every event not delivered by then is settled
        before returning, as `shutdown` (or, with the spool, kept on disk: `spooled`).
        """
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._at_exit)
        self._buffer.close()
        flushed = self._buffer.wait_done(timeout_s * 0.9)
        if not flushed:
            self._worker.abort()
            self._transport.close()  # wakes a sender stuck in a hung request
        self._worker.join(timeout_s * 0.1 if flushed else max(timeout_s * 0.1, 0.5))
        # Whatever is left is settled here, not by threads that may never come back: the
        # queue, and the batches the encoder or the sender still hold.
        self._ledger.give_up(self._buffer.drain(), "shutdown", SHUTDOWN_DETAIL)
        self._ledger.settle_all("shutdown", SHUTDOWN_DETAIL)
        self._transport.close()
        if self._spool is not None:
            self._spool.close()
        return flushed

    def stats(self) -> ClientStats:
        if self._disabled:
            return self._counters.snapshot(0, 0)  # all zero: a disabled client counts nothing
        return self._counters.snapshot(self._buffer.enqueued, self._buffer.depth)

    def _at_exit(self) -> None:
        self.shutdown(self._exit_timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
