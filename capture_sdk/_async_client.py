"""`AsyncClient`: the SDK for asyncio applications (aiohttp, FastAPI), with no thread.

Same API, wire format, retry policy and drop reasons as `Client`; the sender is an asyncio
task on the application's loop instead of a thread.

Starting the sender: nothing to remember. The first `track()` made from inside a running loop
starts the sender task on that loop; `flush()`, `shutdown()`, `start()` and `async with` start
it too, so events tracked before any loop ran (at import time, say) are sent as soon as the
client is next used from a loop. The client then belongs to that loop: call it from that loop's
thread only (use the thread-based `Client` from other threads). If that loop is closed and the
client is used from a new one (`asyncio.run()` twice), the sender restarts on the new loop with
whatever was still queued.

Stopping it: there is no atexit hook (at interpreter exit the loop is gone); `await
client.shutdown()` from your app's shutdown (FastAPI lifespan, aiohttp `on_cleanup`) or use
`async with AsyncClient(...) as client:`.

Keeping the loop responsive: `track()` is a plain function that only validates and appends to
an in-memory deque. The sender encodes each event inline (msgspec, microseconds per event;
a batch is at most `batch_size` events) and yields to the loop between batches. Bodies larger
than `INLINE_GZIP_MAX_BYTES` are gzipped in the default executor (zlib releases the GIL), so a
batch of large events does not stall the loop; small ones are compressed inline, where a
thread hop would cost more than the compression.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import gzip
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from capture_sdk._async_transport import AiohttpTransport, AsyncTransport
from capture_sdk._delivery import (
    GZIP_LEVEL,
    Counters,
    Outcomes,
    batch_body,
    check_positive,
    describe,
    encode_batch,
    queue_event,
    request_headers,
)
from capture_sdk._errors import ConfigurationError, InvalidEventError, TransportError
from capture_sdk._events import ClientStats, DroppedEvent, QueuedEvent
from capture_sdk._retry import RetryPolicy, is_retriable_status, parse_retry_after
from capture_sdk._validation import LocalValidator, ValidationMode
from event_schemas import SchemaRegistry

log = logging.getLogger("capture_sdk")

# Bodies up to this size are gzipped on the loop (level 1: well under a millisecond).
INLINE_GZIP_MAX_BYTES = 256 * 1024

OnError = Callable[[Sequence[DroppedEvent]], None]


class AsyncClient:
    """Batches events in an asyncio task and POSTs them to the collector.

    >>> async with AsyncClient("http://127.0.0.1:8080") as client:
    ...     client.track("page_viewed", {"path": "/"}, anonymous_id="a-1")  # no await
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        write_key: str | None = None,
        transport: AsyncTransport | None = None,
        batch_size: int = 100,
        flush_interval_s: float = 1.0,
        max_queue_size: int = 10_000,
        gzip: bool = True,
        request_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: OnError | None = None,
        validation: ValidationMode = "off",
        schemas: SchemaRegistry | None = None,
    ) -> None:
        if transport is None:
            if endpoint is None:
                raise ConfigurationError("AsyncClient needs an endpoint URL (or a transport)")
            transport = AiohttpTransport(endpoint, timeout_s=request_timeout_s)
        check_positive(
            batch_size=batch_size, max_queue_size=max_queue_size, flush_interval_s=flush_interval_s
        )
        self._transport = transport
        self._batch_size = batch_size
        self._max_queue_size = max_queue_size
        self._flush_interval_s = flush_interval_s
        self._gzip = gzip
        self._policy = retry or RetryPolicy()
        self._on_error = on_error
        self._headers = request_headers(write_key, use_gzip=gzip)
        self._encoder = msgspec.json.Encoder()
        self._validator = LocalValidator(validation, schemas)
        self._counters = Counters()
        self._outcomes = Outcomes(self._counters, self._report)
        self._items: collections.deque[QueuedEvent] = collections.deque()
        self._enqueued = 0
        self._unfinished = 0  # queued plus taken by the sender but not yet finished
        self._flush_requests = 0
        self._closed = False  # shutdown() was called: track() drops, the sender drains
        self._shut_down = False  # shutdown() has finished
        self._wake = asyncio.Event()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the application's side -----------------------------------------------------------

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
        """Queue one event and return its event_id. Never awaits, never blocks.

        `event` is the event name, with `properties` and `version` (default 1), or a typed
        event such as `event_schemas.typed.TrackPlayedV2(...)`, which carries its name,
        version and properties (passing `properties=` too, or another version, is an
        InvalidEventError).

        Called from inside a running loop, it starts the sender task on that loop if needed.
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
        if self._closed or len(self._items) >= self._max_queue_size:
            self._outcomes.refused(queued, closed=self._closed)
            return queued.event_id
        self._items.append(queued)
        self._enqueued += 1
        self._unfinished += 1
        if len(self._items) in (1, self._batch_size):
            self._wake.set()  # the first event starts the interval; a full batch goes now
        self._ensure_sender()
        return queued.event_id

    async def start(self) -> None:
        """Start the sender on the running loop (optional: any use from a loop starts it)."""
        self._ensure_sender()

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far; True if all of it was delivered or dropped in time."""
        self._ensure_sender()
        self._flush_requests += 1
        self._wake.set()
        try:
            return await self._wait_idle(timeout_s)
        finally:
            self._flush_requests -= 1

    async def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Flush within `timeout_s`, then stop the sender; later `track()` calls are dropped.

        Never takes much longer than `timeout_s`, even if the transport hangs: past 90% of it,
        the request in flight is cancelled and everything undelivered is dropped as `shutdown`.
        """
        if self._closed:
            return True
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        self._ensure_sender()
        self._wake.set()
        flushed = await self._wait_idle(timeout_s * 0.9)
        task = self._task
        if task is not None and not task.done():
            if not flushed:
                task.cancel()  # drops the batch in flight as `shutdown`
            await asyncio.wait({task}, timeout=max(0.05, deadline - loop.time()))
        leftover = list(self._items)
        self._items.clear()
        if leftover:
            self._outcomes.drop(leftover, "shutdown", "client shut down before this event was sent")
            self._finish(len(leftover))
        try:
            await asyncio.wait_for(self._transport.close(), max(0.05, deadline - loop.time()))
        except Exception:  # closing is best effort (and bounded); it never fails shutdown
            log.warning("capture_sdk transport did not close cleanly", exc_info=True)
        self._shut_down = True
        return flushed

    def stats(self) -> ClientStats:
        return self._counters.snapshot(self._enqueued, len(self._items))

    async def __aenter__(self) -> AsyncClient:
        self._ensure_sender()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # --- bookkeeping ------------------------------------------------------------------------

    def _ensure_sender(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the next call from inside a loop starts the sender
        if self._loop is loop or self._shut_down:
            return
        if self._loop is not None and not self._loop.is_closed():
            # The sender lives on another loop that is still open (another thread): leave it.
            return
        # First start, or the previous loop was closed under the sender: start on this loop.
        # Events from the old loop are bound to it; make new ones.
        self._loop = loop
        # a batch the old sender held when its loop closed is gone with that loop; do not
        # let it keep flush() waiting here
        self._unfinished = len(self._items)
        self._wake = asyncio.Event()
        if self._items:
            self._wake.set()
        stale, self._idle_waiters = self._idle_waiters, []
        for waiter in stale:
            waiter.cancel()
        self._task = loop.create_task(self._run(), name="capture-sdk-sender")

    async def _wait_idle(self, timeout_s: float) -> bool:
        if self._unfinished == 0:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=max(0.0, timeout_s))
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._idle_waiters.remove(waiter)
        return self._unfinished == 0

    def _finish(self, count: int) -> None:
        self._unfinished -= count
        if self._unfinished == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _report(self, dropped: Sequence[DroppedEvent]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(dropped)
        except Exception:  # a broken callback must not break delivery
            log.exception("capture_sdk on_error callback raised")

    # --- the sender task --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._take()
            if not batch:
                return
            try:
                await self._deliver(batch)
            except Exception as exc:  # the sender must outlive any bug in one batch
                log.exception("capture_sdk sender failed on a batch")
                self._outcomes.drop(batch, "retries_exhausted", f"internal error: {exc!r}")
            finally:
                self._finish(len(batch))
            await asyncio.sleep(0)  # a transport that never suspends must not starve the loop

    async def _take(self) -> list[QueuedEvent]:
        """Wait for a batch; returns [] only when closed and empty."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if not self._items:
                if self._closed:
                    return []
                deadline = None
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._items) >= self._batch_size or self._flush_requests or self._closed:
                break
            if deadline is None:
                deadline = loop.time() + self._flush_interval_s
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        count = min(self._batch_size, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    async def _deliver(self, batch: list[QueuedEvent]) -> None:
        events, payload = encode_batch(batch, self._encoder, self._outcomes, self._validator)
        if not events:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        try:
            while True:
                attempt += 1
                retry_after_s: float | None = None
                try:
                    response = await self._transport.send(await self._body(payload), self._headers)
                except TransportError as exc:
                    log.debug("batch of %d not sent: %s", len(events), exc)
                else:
                    if response.status == 200:
                        self._outcomes.delivered(events, response)
                        return
                    if not is_retriable_status(response.status):
                        self._outcomes.drop(events, "collector_refused", describe(response))
                        return
                    retry_after_s = parse_retry_after(response.headers.get("retry-after"))
                delay_s = self._policy.delay_s(attempt, retry_after_s)
                if loop.time() - started + delay_s > self._policy.max_retry_time_s:
                    self._outcomes.drop(
                        events, "retries_exhausted", f"not delivered after {attempt} attempts"
                    )
                    return
                self._counters.add("retried")
                await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            self._outcomes.drop(events, "shutdown", "client shut down while sending this event")
            raise

    async def _body(self, payload: bytes) -> bytes:
        body = batch_body(payload)
        if not self._gzip:
            return body
        if len(body) <= INLINE_GZIP_MAX_BYTES:
            return gzip.compress(body, GZIP_LEVEL, mtime=0)
        return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)
