"""Wire and record types shared by the collector's stages (msgspec Structs, no behaviour).

Server-owned fields such as `received_at` are not part of the client envelope: whatever a
client sends under those names is ignored and overwritten by enrichment.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Identity = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class BatchEnvelope(msgspec.Struct, frozen=True):
    """`POST /v1/batch` body. Events stay raw here so that one bad event fails alone."""

    batch: list[msgspec.Raw]
    sent_at: str | None = None


class EventEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the client sent it; `properties` is validated later against its schema."""

    event: EventName
    version: Annotated[int, msgspec.Meta(ge=1)]
    event_id: uuid.UUID
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    properties: msgspec.Raw
    user_id: Identity | None = None
    anonymous_id: Identity | None = None
    context: dict[str, object] | None = None


class EnrichedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The record value written to `events.<event>`: the client event plus server fields."""

    event: str
    version: int
    event_id: uuid.UUID
    occurred_at: dt.datetime
    received_at: dt.datetime
    user_id: str | None
    anonymous_id: str | None
    properties: msgspec.Raw
    context: dict[str, object] | None = None


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
