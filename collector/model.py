"""Wire and record types shared by the collector's stages (msgspec Structs, no behaviour).

Server-owned fields such as `received_at` are always set by the collector: whatever a
client sends under those names is ignored and overwritten by enrichment.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Identity = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


Version = Annotated[int, msgspec.Meta(ge=1, le=9999)]
NULL = msgspec.Raw(b"null")


class WireEvent(msgspec.Struct, kw_only=True, gc=False):
    """One event as decoded from a batch, and, once `received_at` is set, as written out.

    `properties` and `context` stay raw bytes: properties are validated by their schema's own
    decoder and forwarded as sent; context is passed through. Unknown envelope fields are
    dropped, and a client value for the server-owned `received_at` is replaced. Field order is
    the order of the record value.
    """

    event: EventName
    version: Version
    event_id: uuid.UUID
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    received_at: msgspec.Raw = NULL
    user_id: Identity | None = None
    anonymous_id: Identity | None = None
    properties: msgspec.Raw
    context: msgspec.Raw = NULL


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
    """The record value written to the dead-letter topic: why, when, and the event as sent."""

    reason: str
    errors: list[FieldError]
    received_at: dt.datetime
    index: int
    event: msgspec.Raw


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
