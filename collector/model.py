"""Wire and record types shared by the collector's stages (msgspec Structs, no behaviour).

Server-owned fields (`timestamp`, `sent_at`, `received_at`, `ip`, `user_agent`) are always set
by the collector: whatever a client sends under those names is ignored and overwritten by
enrichment. This module must not hold logic beyond declaring the shapes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec

EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Identity = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


Version = Annotated[int, msgspec.Meta(ge=1, le=9999)]
NULL = msgspec.Raw(b"null")


class WireEvent(msgspec.Struct, kw_only=True, gc=False):
    """One event as decoded from a batch, and, once enriched, as written out.

    `properties` and `context` stay raw bytes: properties are validated by their schema's own
    decoder and forwarded as sent; context is passed through. Unknown envelope fields are
    dropped. Field order is the order of the record value, and routing relies on the value
    starting with `event`, `version`, `event_id` (it slices the id out at a fixed offset).

    Server-owned fields, set by `collector.enrichment.enrich` (never trusted from the client):
    - `timestamp`: the event time corrected for client clock skew,
      `occurred_at + (received_at - sent_at)` when the batch had a valid `sent_at`, else
      `occurred_at`; `occurred_at` itself stays as the client sent it.
    - `sent_at`: the batch's `sent_at` as sent (RFC 3339 string), null when absent or invalid.
    - `received_at`: when the collector received the request.
    - `ip`: the client address (anonymised by default), null when unknown.
    - `user_agent`: the request's User-Agent header, null when absent.
    They are typed loosely (`Any` / `Raw`) so that whatever a client sends under these names
    decodes without failing the event; enrichment replaces it before anything is written.
    """

    event: EventName
    version: Version
    event_id: uuid.UUID
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    timestamp: Any = None  # a datetime once enriched (per event: the skew is added to it)
    sent_at: msgspec.Raw = NULL  # the rest are the same for every event of a request:
    received_at: msgspec.Raw = NULL  # encoded once per batch and shared
    user_id: Identity | None = None
    anonymous_id: Identity | None = None
    properties: msgspec.Raw
    context: msgspec.Raw = NULL
    ip: msgspec.Raw = NULL
    user_agent: msgspec.Raw = NULL


class TypedBatch(msgspec.Struct, gc=False):
    """`POST /v1/batch` with every envelope decoded in one pass (the fast path)."""

    batch: list[WireEvent]
    sent_at: str | None = None


class RawBatch(msgspec.Struct, gc=False):
    """`POST /v1/batch` split into raw events, so that one bad envelope fails alone."""

    batch: list[msgspec.Raw]
    sent_at: str | None = None


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """The record value written to the dead-letter topic: why, when, and the event as sent.

    `sent_at`, `ip` and `user_agent` are what the collector knew of the request (the batch's
    `sent_at` as sent, the client address as enrichment would store it, the User-Agent), so
    that `capture replay --recover` can enrich a recovered event exactly as the collector
    would have. They are optional: dead letters written before they existed still decode.
    """

    reason: str
    errors: list[FieldError]
    received_at: dt.datetime
    index: int
    event: msgspec.Raw
    sent_at: str | None = None
    ip: str | None = None
    user_agent: str | None = None


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    event_id: str | None
    reason: str
    errors: list[FieldError]


class BatchResponse(msgspec.Struct, frozen=True):
    accepted: int
    rejected: list[Rejected]


class ErrorBody(msgspec.Struct, frozen=True):
    error: str
    detail: str
