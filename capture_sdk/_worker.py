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
)
from capture_sdk._errors import TransportError
from capture_sdk._events import QueuedEvent
from capture_sdk._ledger import Batch, BatchAttempts, Ledger
from capture_sdk._retry import RetryPolicy
from capture_sdk._spool import Spool
from capture_sdk._transport import Transport
from capture_sdk._validation import LocalValidator

log = logging.getLogger("capture_sdk")

Encoded = tuple[Batch, list[Chunk]]  # a batch, and its chunks ready to send

SHUTDOWN_DETAIL = "client shut down before this event was sent"


class Worker:
    def __init__(
        self,
        *,
        buffer: EventBuffer[QueuedEvent],
        transport: Transport,
        policy: RetryPolicy,
        ledger: Ledger,
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
        self._ledger = ledger
        self._validator = validator
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
        """Stop waiting on retries: what is undelivered now is given up as `shutdown`."""
        self._abort.set()

    def join(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _encode_loop(self) -> None:
        try:
            while True:
                batch = self._buffer.take(self._flush_interval_s, self._ledger.claim)
                if batch is None:
                    return
                if self._spool is not None:
                    # group commit: one fsync covers every record written since the last batch
                    self._spool.sync()
                if self._abort.is_set():
                    self._finish(batch, "shutdown", SHUTDOWN_DETAIL)
                    continue
                try:
                    chunks = encode_batch(
                        batch.events, self._encoder, batch.drop, self._validator, self._limits
                    )
                except Exception as exc:  # the worker must outlive any bug in one batch
                    log.exception("capture_sdk worker failed to encode a batch")
                    self._finish(batch, "internal_error", f"internal error: {exc!r}")
                    continue
                self._handoff.put((batch, chunks))
        finally:
            self._handoff.put(None)  # the sender's stop sign, after the last batch

    def _send_loop(self) -> None:
        while (encoded := self._handoff.get()) is not None:
            batch, chunks = encoded
            if self._abort.is_set():
                self._finish(batch, "shutdown", SHUTDOWN_DETAIL)
                continue
            try:
                for events, payload in chunks:
                    if self._abort.is_set():
                        break  # the chunks not sent yet are given up below
                    self._send(batch, events, payload)
            except Exception as exc:  # the worker must outlive any bug in one batch
                log.exception("capture_sdk worker failed on a batch")
                # only what is still unsettled: chunks already sent stay counted as sent
                self._finish(batch, "internal_error", f"internal error: {exc!r}")
                continue
            if self._abort.is_set():
                self._finish(batch, "shutdown", SHUTDOWN_DETAIL)
            else:  # every chunk was settled; anything left would be a bug, and still counted
                self._finish(batch, "internal_error", "left unsettled by the sender")

    def _finish(self, batch: Batch, reason: str, detail: str) -> None:
        batch.close(reason, detail)  # gives up what is unsettled (kept on disk if spooled)
        self._buffer.done(len(batch.events))

    def _send(self, batch: Batch, events: list[QueuedEvent], payload: bytes) -> None:
        """POST one chunk with retries, until each of its events is settled."""
        attempts = BatchAttempts(events, batch, self._policy, time.monotonic)
        while True:
            response = None
            try:
                body = self._body(payload)
                response = self._transport.send(body, self._headers.for_body(body))
            except TransportError as exc:
                log.debug("batch of %d not sent: %s", len(events), exc)
                if self._abort.is_set():  # interrupted by shutdown(), not out of retries
                    batch.give_up(events, "shutdown", "client shut down while sending this event")
                    return
            delay_s = attempts.after(response)
            if delay_s is None:
                return
            if self._abort.wait(delay_s):
                batch.give_up(events, "shutdown", "client shut down while retrying this event")
                return

    def _body(self, payload: bytes) -> bytes:
        body = batch_body(payload)
        return gzip.compress(body, GZIP_LEVEL, mtime=0) if self._use_gzip else body
