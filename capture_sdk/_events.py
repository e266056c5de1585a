"""What the SDK queues and what it reports: plain msgspec Structs, no behaviour."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

# Why an event accepted by track() was not delivered: a bounded set, used as counter keys.
DropReason = Literal[
    "queue_full",  # the in-memory queue was at max_queue_size
    "client_closed",  # track() after shutdown()
    "unserializable",  # properties could not be encoded as JSON
    "invalid",  # broke its schema in the local check (validation="drop")
    "rejected",  # the collector dead-lettered it (schema validation); never retried
    "collector_refused",  # the collector refused the batch as a whole (4xx other than 408/429)
    "retries_exhausted",  # no success within max_retry_time_s
    "shutdown",  # still undelivered when shutdown's deadline passed
    "spool_full",  # the disk spool was at spool_max_bytes (drop-new policy)
    "spool_corrupt",  # a torn or corrupt spool record found at start (its event is unknown)
    "too_large",  # its JSON is over max_event_bytes (the collector would refuse it)
    "internal_error",  # a bug while sending its batch (ours, or a custom transport's)
]
DROP_REASONS: tuple[str, ...] = DropReason.__args__  # type: ignore[attr-defined]


class QueuedEvent(msgspec.Struct, frozen=True, gc=False):
    """What track() enqueues: its arguments as given. The worker thread turns it into JSON."""

    event: str
    version: int
    event_id: str
    occurred: int | dt.datetime  # time.time_ns() at track(), or the caller's datetime
    properties: Any
    user_id: str | None
    anonymous_id: str | None
    context: Mapping[str, Any] | None
    # With the disk spool on: the event's wire JSON, encoded once by track(), and the spool
    # segment holding it. Events replayed from the spool carry only these (properties None).
    encoded: bytes | None = None
    segment: int = -1


class WireEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event as it goes on the wire (the batch format in docs/architecture.md)."""

    event: str
    version: int
    event_id: str
    occurred_at: str
    properties: Any
    user_id: str | None = None
    anonymous_id: str | None = None
    # a dict, or the default context pre-encoded as msgspec.Raw (the same bytes, encoded once)
    context: Any = None


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str


class DroppedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Given to `on_error` for every event that will not be delivered, with the reason."""

    event_id: str
    event: str
    version: int
    reason: str
    detail: str
    errors: tuple[FieldError, ...] = ()


class ClientStats(msgspec.Struct, frozen=True, kw_only=True):
    """The client's counters, all in events. Every event is in exactly one bucket; once the
    client is shut down (`queue_depth` 0, nothing in flight):

        enqueued + replayed == sent + rejected + spooled + dropped after queueing

    where "dropped after queueing" is `sum(dropped.values())` less `dropped["rejected"]`
    (those are `rejected`), less what track() refused before queueing (`client_closed`,
    `queue_full`, `spool_full`, and with the spool `too_large` / `unserializable`), less
    `spool_corrupt` (records found damaged at start, never replayed).
    """

    enqueued: int
    sent: int
    rejected: int
    retried: int
    dropped: dict[str, int]
    queue_depth: int
    replayed: int = 0  # events read back from the disk spool at start (maybe sent before)
    # left out by `sample_rates` at track(): by design, so not a drop (no on_error, no log)
    sampled_out: int = 0
    # With the disk spool: events this client gave up on (retries exhausted, shutdown) whose
    # record is on disk, kept for the next start to replay. Not a drop: no on_error.
    spooled: int = 0
    # With the disk spool: events whose record could not be written (disk full, directory
    # gone). They stay queued in memory and are counted like any other event; only their
    # crash-safety is lost. Not a drop, and not an event bucket of its own.
    spool_errors: int = 0
