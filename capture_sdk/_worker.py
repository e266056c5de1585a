"""The consumer threads: take batches from the buffer, send them, retry, report every outcome.

They own all work after enqueue (JSON encoding, gzip, HTTP, backoff) so that `track()` stays
cheap, as a two-stage pipeline: the encoder thread turns batch N+1 into JSON while the sender
thread gzips and POSTs batch N (zlib and socket waits release the GIL, so the two overlap).
A one-slot hand-off keeps batches in order. Neither raises out of its loop, and neither
retries a per-event rejection.
"""

from __future__ import annotations

import gzip
import logging
import queue
import threading
import time

import msgspec

from capture_sdk._buffer import EventBuffer
from capture_sdk._delivery import (
    GZIP_LEVEL,
    Chunk,
    RequestHeaders,
    SizeLimits,
    batch_body,
    encode_batch,
    settled_events,
)
from capture_sdk._errors import TransportError
from capture_sdk._events import QueuedEvent
from capture_sdk._outcomes import BatchAttempts, Outcomes
from capture_sdk._retry import RetryPolicy
from capture_sdk._spool import Spool
from capture_sdk._transport import Transport
from capture_sdk._validation import LocalValidator

log = logging.getLogger("capture_sdk")

Encoded = tuple[list[QueuedEvent], list[Chunk]]  # a batch, and its chunks ready to send


class Worker:
    def __init__(
        self,
        *,
        buffer: EventBuffer[QueuedEvent],
        transport: Transport,
        policy: RetryPolicy,
        outcomes: Outcomes,
        validator: LocalValidator,
        headers: RequestHeaders,
        flush_interval_s: float,
        use_gzip: bool,
        limits: SizeLimits,
        spool: Spool | None = None,
    ) -> None:
        self._buffer = buffer
        self._transport = transport
        self._policy = policy
        self._outcomes = outcomes
        self._validator = validator
        self._counters = outcomes.counters
        self._headers = headers
        self._flush_interval_s = flush_interval_s
        self._use_gzip = use_gzip
        self._limits = limits
        self._spool = spool
        self._encoder = msgspec.json.Encoder()
        self._abort = threading.Event()
        # one slot: the encoder runs at most one batch ahead of the sender
        self._handoff: queue.Queue[Encoded | None] = queue.Queue(maxsize=1)
        self._threads = (
            threading.Thread(target=self._encode_loop, name="capture-sdk-worker", daemon=True),
            threading.Thread(target=self._send_loop, name="capture-sdk-sender", daemon=True),
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def abort(self) -> None:
        """Stop waiting on retries: what is undelivered now is dropped as `shutdown`."""
        self._abort.set()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _encode_loop(self) -> None:
        try:
            while True:
                batch = self._buffer.take(self._flush_interval_s)
                if not batch:
                    return
                if self._spool is not None:
                    # group commit: one fsync covers every record written since the last batch
                    self._spool.sync()
                if self._abort.is_set():
                    self._give_up(batch)
                    continue
                try:
                    chunks = encode_batch(
                        batch, self._encoder, self._outcomes, self._validator, self._limits
                    )
                except Exception as exc:  # the worker must outlive any bug in one batch
                    log.exception("capture_sdk worker failed to encode a batch")
                    self._internal_error(batch, exc)
                    self._buffer.done(len(batch))
                    continue
                self._handoff.put((batch, chunks))
        finally:
            self._handoff.put(None)  # the sender's stop sign, after the last batch

    def _send_loop(self) -> None:
        while (encoded := self._handoff.get()) is not None:
            batch, chunks = encoded
            if self._abort.is_set():
                self._give_up(batch)
                continue
            try:
                unsettled: list[QueuedEvent] = []
                for events, payload in chunks:
                    if not self._send(events, payload):
                        unsettled.extend(events)
                if self._spool is not None:
                    self._spool.settle(settled_events(batch, unsettled))
            except Exception as exc:  # the worker must outlive any bug in one batch
                log.exception("capture_sdk worker failed on a batch")
                self._internal_error(batch, exc)
            finally:
                self._buffer.done(len(batch))

    def _give_up(self, batch: list[QueuedEvent]) -> None:
        # not settled: spooled events stay on disk for the next start
        self._outcomes.drop(batch, "shutdown", "client shut down before this event was sent")
        self._buffer.done(len(batch))

    def _internal_error(self, batch: list[QueuedEvent], exc: Exception) -> None:
        self._outcomes.drop(batch, "retries_exhausted", f"internal error: {exc!r}")

    def _send(self, events: list[QueuedEvent], payload: bytes) -> bool:
        """POST one chunk with retries; True when every event in it is settled."""
        attempts = BatchAttempts(events, self._outcomes, self._policy, time.monotonic)
        while True:
            response = None
            try:
                body = self._body(payload)
                response = self._transport.send(body, self._headers.for_body(body))
            except TransportError as exc:
                log.debug("batch of %d not sent: %s", len(events), exc)
            delay_s = attempts.after(response)
            if delay_s is None:
                return attempts.settled
            if self._abort.wait(delay_s):
                self._outcomes.drop(
                    events, "shutdown", "client shut down while retrying this event"
                )
                return False

    def _body(self, payload: bytes) -> bytes:
        body = batch_body(payload)
        return gzip.compress(body, GZIP_LEVEL, mtime=0) if self._use_gzip else body
