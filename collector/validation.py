"""Stage: validate each event of a batch against the tracking plan. Pure: no I/O, no clock.

Every event gets its own verdict: a valid event keeps its typed envelope and schema, an invalid
one keeps its raw bytes, a bounded reason code and the JSON path of each error.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from collector.model import EventEnvelope, FieldError
from event_schemas import EventSchema, SchemaRegistry

# Reasons an event is dead-lettered: a bounded set, used as metric labels.
INVALID_EVENT = "invalid_event"
UNKNOWN_EVENT = "unknown_event"
INVALID_PROPERTIES = "invalid_properties"
MISSING_IDENTITY = "missing_identity"
REJECTION_REASONS = (INVALID_EVENT, UNKNOWN_EVENT, INVALID_PROPERTIES, MISSING_IDENTITY)

_envelope_decoder = msgspec.json.Decoder(EventEnvelope)


@dataclass(frozen=True, slots=True)
class ValidEvent:
    index: int
    envelope: EventEnvelope
    schema: EventSchema


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    index: int
    raw: msgspec.Raw
    reason: str
    errors: list[FieldError]
    envelope: EventEnvelope | None = None

    @property
    def event_id(self) -> str | None:
        return str(self.envelope.event_id) if self.envelope is not None else None


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    valid: list[ValidEvent]
    invalid: list[InvalidEvent]


def validate_batch(items: list[msgspec.Raw], schemas: SchemaRegistry) -> BatchVerdict:
    valid: list[ValidEvent] = []
    invalid: list[InvalidEvent] = []
    for index, raw in enumerate(items):
        verdict = validate_event(index, raw, schemas)
        (valid if isinstance(verdict, ValidEvent) else invalid).append(verdict)  # type: ignore[arg-type]
    return BatchVerdict(valid, invalid)


def validate_event(
    index: int, raw: msgspec.Raw, schemas: SchemaRegistry
) -> ValidEvent | InvalidEvent:
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return InvalidEvent(index, raw, INVALID_EVENT, [field_error(exc, "$")])
    if envelope.user_id is None and envelope.anonymous_id is None:
        error = FieldError("$", "at least one of `user_id` and `anonymous_id` is required")
        return InvalidEvent(index, raw, MISSING_IDENTITY, [error], envelope)
    schema = schemas.get(envelope.event, envelope.version)
    if schema is None:
        return InvalidEvent(index, raw, UNKNOWN_EVENT, [_unknown(envelope, schemas)], envelope)
    try:
        schema.decode_properties(envelope.properties)
    except msgspec.ValidationError as exc:
        error = field_error(exc, "$.properties")
        return InvalidEvent(index, raw, INVALID_PROPERTIES, [error], envelope)
    return ValidEvent(index, envelope, schema)


def _unknown(envelope: EventEnvelope, schemas: SchemaRegistry) -> FieldError:
    versions = schemas.versions(envelope.event)
    if not versions:
        return FieldError("$.event", f"unknown event `{envelope.event}`")
    known = ", ".join(str(v) for v in versions)
    message = f"`{envelope.event}` has no version {envelope.version} (known: {known})"
    return FieldError("$.version", message)


def field_error(exc: msgspec.ValidationError, root: str) -> FieldError:
    """Split msgspec's "message - at `$.a.b`" into a path (under `root`) and a message."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return FieldError(root, text)
    return FieldError(root + where.rstrip("`")[1:], message)
