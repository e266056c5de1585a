"""The consumer thread: take batches from the buffer, send them, retry, report every outcome.

It owns all work after enqueue (JSON encoding, gzip, HTTP, backoff) so that `track()` stays
cheap. It never raises out of its loop and never retries a per-event rejection.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Mapping

import msgspec

from capture_sdk._buffer import EventBuffer
from capture_sdk._delivery import GZIP_LEVEL, Outcomes, batch_body, describe, encode_batch
from capture_sdk._errors import TransportError
from capture_sdk._events import QueuedEvent
from capture_sdk._retry import RetryPolicy, is_retriable_status, parse_retry_after
from capture_sdk._transport import Transport
from capture_sdk._validation import LocalValidator

log = logging.getLogger("capture_sdk")


class Worker:
    def __init__(
        self,
        *,
        buffer: EventBuffer[QueuedEvent],
        transport: Transport,
        policy: RetryPolicy,
        outcomes: Outcomes,
        validator: LocalValidator,
        headers: Mapping[str, str],
        flush_interval_s: float,
        use_gzip: bool,
    ) -> None:
        self._buffer = buffer
        self._transport = transport
        self._policy = policy
        self._outcomes = outcomes
        self._validator = validator
        self._counters = outcomes.counters
        self._headers = dict(headers)
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
                self._outcomes.drop(
                    batch, "shutdown", "client shut down before this event was sent"
                )
                self._buffer.done(len(batch))
                continue
            try:
                self._deliver(batch)
            except Exception as exc:  # the worker must outlive any bug in one batch
                log.exception("capture_sdk worker failed on a batch")
                self._outcomes.drop(batch, "retries_exhausted", f"internal error: {exc!r}")
            finally:
                self._buffer.done(len(batch))

    def _deliver(self, batch: list[QueuedEvent]) -> None:
        events, payload = encode_batch(batch, self._encoder, self._outcomes, self._validator)
        if not events:
            return
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
                    self._outcomes.delivered(events, response)
                    return
                if not is_retriable_status(response.status):
                    self._outcomes.drop(events, "collector_refused", describe(response))
                    return
                retry_after_s = parse_retry_after(response.headers.get("retry-after"))
            delay_s = self._policy.delay_s(attempt, retry_after_s)
            if time.monotonic() - started + delay_s > self._policy.max_retry_time_s:
                self._outcomes.drop(
                    events, "retries_exhausted", f"not delivered after {attempt} attempts"
                )
                return
            self._counters.add("retried")
            if self._abort.wait(delay_s):
                self._outcomes.drop(
                    events, "shutdown", "client shut down while retrying this event"
                )
                return

    def _body(self, payload: bytes) -> bytes:
        body = batch_body(payload)
        return gzip.compress(body, GZIP_LEVEL, mtime=0) if self._use_gzip else body
