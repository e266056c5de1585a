"""`AsyncClient`: the SDK for asyncio applications (aiohttp, FastAPI), with no thread.

Same API, wire format, retry policy and drop reasons as `Client`; the sender is an asyncio
task on the application's loop instead of a thread.

Starting the sender: nothing to remember. The first `track()` made from inside a running loop
starts the sender task on that loop; `flush()`, `shutdown()`, `start()` and `async with` start
it too, so events tracked before any loop ran (at import time, say) are sent as soon as the
client is next used from a loop. The client then belongs to that loop: call it from that loop's
thread only (use the thread-based `Client` from other threads). If that loop is closed and the
client is used from a new one (`asyncio.run()` twice), the sender restarts on the new loop with
whatever was still queued, and with the batch the old sender held if that loop was closed
under it (sent again: maybe a duplicate, never a loss).

Disk spool (`spool_dir=`): the same segment files and guarantee as `Client`. `track()` does
the spool's plain `write()` inline (a few microseconds); the per-batch `fsync` and the final
one at shutdown run in a worker thread (`asyncio.to_thread`), never on the loop.

After `os.fork()`, the child's copy starts empty: no queued events, no sender, no session
and no spool (those stay the parent's); it sends what the child tracks on the child's loop.

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
import gzip
import logging
import os
from collections.abc import Mapping

import msgspec

from capture_sdk._async_transport import AiohttpTransport, AsyncTransport
from capture_sdk._base import ClientBase, OnError
from capture_sdk._delivery import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    GZIP_LEVEL,
    RequestHeaders,
    SizeLimits,
    batch_body,
    check_positive,
    encode_batch,
)
from capture_sdk._errors import ConfigurationError, TransportError
from capture_sdk._events import ClientStats, QueuedEvent
from capture_sdk._forks import reset_after_fork
from capture_sdk._intake import open_spool
from capture_sdk._ledger import Batch, BatchAttempts
from capture_sdk._outcomes import Counters
from capture_sdk._retry import RetryPolicy
from capture_sdk._validation import LocalValidator, ValidationMode
from event_schemas import SchemaRegistry

log = logging.getLogger("capture_sdk")

SHUTDOWN_DETAIL = "client shut down before this event was sent"

# Bodies up to this size are gzipped on the loop (level 1: well under a millisecond).
INLINE_GZIP_MAX_BYTES = 256 * 1024


class AsyncClient(ClientBase):
    """Batches events in an asyncio task and POSTs them to the collector.

    >>> async with AsyncClient("http://127.0.0.1:8080") as client:
    ...     client.track("page_viewed", {"path": "/"}, anonymous_id="a-1")  # no await
    """

    _transport: AsyncTransport
    _starts_sender = True  # track() calls `_queued`

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        write_key: str | None = None,
        signing_secret: str | None = None,
        transport: AsyncTransport | None = None,
        # smaller than Client's 500: each batch is encoded on the loop, between two yields
        batch_size: int = 100,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        flush_interval_s: float = 1.0,
        max_queue_size: int = 10_000,
        gzip: bool = True,
        request_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: OnError | None = None,
        validation: ValidationMode = "off",
        schemas: SchemaRegistry | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 64 * 1024 * 1024,
        sample_rates: Mapping[str, float] | None = None,
        disabled: bool = False,
    ) -> None:
        self._disabled = disabled
        self._counters = Counters()
        if disabled:
            # the global off switch: no task, no session, no spool; track() returns ""
            self._closed = self._shut_down = True
            self._enqueued = 0
            self._items: collections.deque[QueuedEvent] = collections.deque()
            return
        if transport is None:
            if endpoint is None:
                raise ConfigurationError("AsyncClient needs an endpoint URL (or a transport)")
            transport = AiohttpTransport(endpoint, timeout_s=request_timeout_s)
        check_positive(
            batch_size=batch_size,
            max_queue_size=max_queue_size,
            flush_interval_s=flush_interval_s,
            spool_max_bytes=spool_max_bytes,
        )
        self._transport = transport
        self._batch_size = batch_size
        self._max_queue_size = max_queue_size
        self._flush_interval_s = flush_interval_s
        self._gzip = gzip
        self._policy = retry or RetryPolicy()
        self._on_error = on_error
        self._headers = RequestHeaders(write_key, use_gzip=gzip, signing_secret=signing_secret)
        self._encoder = msgspec.json.Encoder()
        self._validator = LocalValidator(validation, schemas)
        self._limits = SizeLimits(max_batch_bytes, max_event_bytes)
        self._sample_rates = sample_rates
        self._spool, replay, corrupt = open_spool(spool_dir, spool_max_bytes)
        self._reset()
        self._requeue_spooled(replay, corrupt)
        reset_after_fork(self)

    def _reset(self) -> None:
        """Fresh queue, counters and sender state: at construction, and in a forked child."""
        self._fresh_accounting()
        self._put = self._enqueue
        self._items = collections.deque()
        self._enqueued = 0
        self._flush_requests = 0
        self._closed = False  # shutdown() was called: track() drops, the sender drains
        self._shut_down = False  # shutdown() has finished
        self._wake = asyncio.Event()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _after_fork_in_child(self) -> None:
        # The queued events, the sender task, the HTTP session and the spool files are the
        # parent's: sending or writing them here too would duplicate them. Start empty.
        if self._shut_down:
            return
        self._let_go_after_fork()
        self._reset()

    # --- the application's side -----------------------------------------------------------

    def _is_closed(self) -> bool:
        return self._closed

    def _requeue(self, events: list[QueuedEvent]) -> None:
        self._items.extend(events)

    def _queued(self) -> None:
        # from inside a running loop, the first track() starts the sender task on it
        self._ensure_sender()

    def _enqueue(self, queued: QueuedEvent) -> bool:
        if self._closed or len(self._items) >= self._max_queue_size:
            return False
        self._items.append(queued)
        self._enqueued += 1
        if len(self._items) in (1, self._batch_size):
            self._wake.set()  # the first event starts the interval; a full batch goes now
        return True

    async def start(self) -> None:
        """Start the sender on the running loop (optional: any use from a loop starts it)."""
        self._ensure_sender()

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far; True if all of it was delivered or dropped in time."""
        self._ensure_sender()
        if self._disabled:
            return True
        self._flush_requests += 1
        self._wake.set()
        try:
            return await self._wait_idle(timeout_s)
        finally:
            self._flush_requests -= 1

    async def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Flush within `timeout_s`, then stop the sender; later `track()` calls are dropped.

        Never takes much longer than `timeout_s`, even if the transport hangs: past 90% of it,
        the request in flight is cancelled and everything undelivered is settled before
        returning, as `shutdown` (or, with the spool, kept on disk: `spooled`).
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
                task.cancel()  # its batch: every chunk not settled yet is given up
            await asyncio.wait({task}, timeout=max(0.05, deadline - loop.time()))
        # Whatever is left is settled here: the queue, and the batches of a sender that did
        # not stop in time (every chunk of them, not only the request in flight).
        leftover = list(self._items)
        self._items.clear()
        self._ledger.give_up(leftover, "shutdown", SHUTDOWN_DETAIL)
        self._ledger.settle_all("shutdown", SHUTDOWN_DETAIL)
        self._check_idle()
        try:
            await asyncio.wait_for(self._transport.close(), max(0.05, deadline - loop.time()))
        except Exception:  # closing is best effort (and bounded); it never fails shutdown
            log.warning("capture_sdk transport did not close cleanly", exc_info=True)
        if self._spool is not None:
            # its last fsync, off the loop; unsettled records stay for the next start
            await asyncio.to_thread(self._spool.close)
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
        if self._shut_down or self._loop is loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            # The sender lives on another loop that is still open (another thread): leave it.
            return
        # First start, or the previous loop was closed under the sender: start on this loop.
        # Events from the old loop are bound to it; make new ones.
        self._loop = loop
        # The batch the old sender held when its loop closed was never settled: queue it
        # again, first (it may have reached the collector already: a duplicate, not a loss).
        self._items.extendleft(reversed(self._ledger.reclaim()))
        self._wake = asyncio.Event()
        if self._items:
            self._wake.set()
        stale, self._idle_waiters = self._idle_waiters, []
        for waiter in stale:
            waiter.cancel()
        self._task = loop.create_task(self._run(), name="capture-sdk-sender")

    def _unfinished(self) -> int:
        """Queued, plus taken by the sender and not yet settled: what flush() waits for."""
        return len(self._items) + self._ledger.held

    async def _wait_idle(self, timeout_s: float) -> bool:
        if self._unfinished() == 0:
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
        return self._unfinished() == 0

    def _check_idle(self) -> None:
        if self._unfinished() == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # --- the sender task --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._take()
            if batch is None:
                return
            try:
                if self._spool is not None and self._spool.needs_sync:
                    # group commit: one fsync, off the loop, covers what track() wrote so far
                    await asyncio.to_thread(self._spool.sync)
                await self._deliver(batch)
            except asyncio.CancelledError:
                if self._closed:  # shutdown() cancelled us: every chunk not settled yet
                    batch.close("shutdown", "client shut down while sending this event")
                else:  # the loop is going away (asyncio.run ended): keep them for the next
                    self._items.extendleft(reversed(self._ledger.release(batch)))
                raise
            except Exception as exc:  # the sender must outlive any bug in one batch
                log.exception("capture_sdk sender failed on a batch")
                # only what is still unsettled: chunks already sent stay counted as sent
                batch.close("internal_error", f"internal error: {exc!r}")
            finally:
                # no-op once closed above; anything left unsettled would be a bug, still counted
                batch.close("internal_error", "left unsettled by the sender")
                self._check_idle()
            await asyncio.sleep(0)  # a transport that never suspends must not starve the loop

    async def _take(self) -> Batch | None:
        """Wait for a batch and claim it in the ledger; None only when closed and empty."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if not self._items:
                if self._closed:
                    return None
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
        # no await between taking and claiming: shutdown never sees them in neither place
        return self._ledger.claim([self._items.popleft() for _ in range(count)])

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch, one request per chunk, until each of its events is settled."""
        chunks = encode_batch(
            batch.events, self._encoder, batch.drop, self._validator, self._limits
        )
        for events, payload in chunks:
            await self._send(batch, events, payload)

    async def _send(self, batch: Batch, events: list[QueuedEvent], payload: bytes) -> None:
        """POST one chunk with retries."""
        attempts = BatchAttempts(events, batch, self._policy, asyncio.get_running_loop().time)
        while True:
            response = None
            try:
                body = await self._body(payload)
                response = await self._transport.send(body, self._headers.for_body(body))
            except TransportError as exc:
                log.debug("batch of %d not sent: %s", len(events), exc)
            delay_s = attempts.after(response)
            if delay_s is None:
                return
            await asyncio.sleep(delay_s)

    async def _body(self, payload: bytes) -> bytes:
        body = batch_body(payload)
        if not self._gzip:
            return body
        if len(body) <= INLINE_GZIP_MAX_BYTES:
            return gzip.compress(body, GZIP_LEVEL, mtime=0)
        return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)
