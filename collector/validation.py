"""Stage: validate each event of a batch against the tracking plan. Pure: no I/O, no clock.

Every event gets its own verdict: a valid event keeps its decoded envelope, an invalid one
its bytes as sent, a bounded reason code and the JSON path of its error. The loop over valid
events is the collector's hottest code: one dict lookup and one schema decode per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from collector.decoding import DecodedBatch
from collector.limits import DEFAULT_MAX_EVENT_BYTES
from collector.model import FieldError, WireEvent
from event_schemas import EventSchema, SchemaRegistry
from event_schemas.errors import split_validation_error

# Reasons an event is dead-lettered: a bounded set, used as metric labels.
INVALID_EVENT = "invalid_event"
UNKNOWN_EVENT = "unknown_event"
INVALID_PROPERTIES = "invalid_properties"
MISSING_IDENTITY = "missing_identity"
EVENT_TOO_LARGE = "event_too_large"

_event_decoder = msgspec.json.Decoder(WireEvent)


@dataclass(slots=True)
class InvalidEvent:
    index: int
    reason: str
    errors: list[FieldError]
    event: WireEvent | None = None  # the decoded envelope, when it decoded
    raw: msgspec.Raw | None = None  # the event as sent; filled in before routing
    # more dead-letter headers: set by another ingest API (Segment) whose message `raw` holds
    extra_headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def event_id(self) -> str | None:
        return str(self.event.event_id) if self.event is not None else None


# (position in `valid`, its schema, its decoded properties): kept only for schemas whose
# property values later stages read (partition key, PII)
Annotated = tuple[int, EventSchema, msgspec.Struct]


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    valid: list[WireEvent]
    invalid: list[InvalidEvent]
    annotated: list[Annotated]


def validate_batch(
    batch: DecodedBatch,
    schemas: SchemaRegistry,
    *,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> BatchVerdict:
    valid: list[WireEvent] = []
    invalid: list[InvalidEvent] = []
    annotated: list[Annotated] = []
    decoders = schemas.decoders
    needs_values = schemas.annotated
    if batch.events is not None:
        for index, event in enumerate(batch.events):
            # the envelope's other fields are bounded by their types; these two are raw bytes
            if len(event.properties) + len(event.context) > max_event_bytes:
                invalid.append(_too_large(index, event, max_event_bytes))
                continue
            by_version = decoders.get(event.event)
            decoder = by_version.get(event.version) if by_version is not None else None
            if decoder is None or (event.user_id is None and event.anonymous_id is None):
                invalid.append(_refuse(index, event, schemas))
                continue
            try:
                properties = decoder.decode(event.properties)
            except msgspec.ValidationError as exc:
                error = field_error(exc, "$.properties")
                invalid.append(InvalidEvent(index, INVALID_PROPERTIES, [error], event))
                continue
            if event.event in needs_values:
                schema = needs_values[event.event].get(event.version)
                if schema is not None:
                    annotated.append((len(valid), schema, properties))
            valid.append(event)
    else:
        for index, raw in enumerate(batch.raw_events()):
            verdict = validate_event(index, raw, schemas, max_event_bytes=max_event_bytes)
            if isinstance(verdict, InvalidEvent):
                invalid.append(verdict)
                continue
            event, schema, properties = verdict
            if schema.metadata.needs_properties:
                annotated.append((len(valid), schema, properties))
            valid.append(event)
    if invalid:
        raw_events = batch.raw_events()
        for rejected in invalid:
            rejected.raw = raw_events[rejected.index]
    return BatchVerdict(valid, invalid, annotated)


def validate_event(
    index: int,
    raw: msgspec.Raw,
    schemas: SchemaRegistry,
    *,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> tuple[WireEvent, EventSchema, msgspec.Struct] | InvalidEvent:
    """The per-event path, for batches whose envelopes did not all decode in one pass."""
    try:
        event = _event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return InvalidEvent(index, INVALID_EVENT, [field_error(exc, "$")], raw=raw)
    if len(event.properties) + len(event.context) > max_event_bytes:
        return _too_large(index, event, max_event_bytes)
    schema = schemas.get(event.event, event.version)
    if schema is None or (event.user_id is None and event.anonymous_id is None):
        return _refuse(index, event, schemas)
    try:
        properties = schema.decode_properties(event.properties)
    except msgspec.ValidationError as exc:
        return InvalidEvent(index, INVALID_PROPERTIES, [field_error(exc, "$.properties")], event)
    return event, schema, properties


def _too_large(index: int, event: WireEvent, max_event_bytes: int) -> InvalidEvent:
    size = len(event.properties) + len(event.context)
    message = f"properties and context take {size} bytes, more than the limit of {max_event_bytes}"
    return InvalidEvent(index, EVENT_TOO_LARGE, [FieldError("$", message)], event)


def _refuse(index: int, event: WireEvent, schemas: SchemaRegistry) -> InvalidEvent:
    if event.user_id is None and event.anonymous_id is None:
        error = FieldError("$", "at least one of `user_id` and `anonymous_id` is required")
        return InvalidEvent(index, MISSING_IDENTITY, [error], event)
    versions = schemas.versions(event.event)
    if not versions:
        error = FieldError("$.event", f"unknown event `{event.event}`")
    else:
        known = ", ".join(str(v) for v in versions)
        message = f"`{event.event}` has no version {event.version} (known: {known})"
        error = FieldError("$.version", message)
    return InvalidEvent(index, UNKNOWN_EVENT, [error], event)


def field_error(exc: msgspec.ValidationError, root: str) -> FieldError:
    return FieldError(*split_validation_error(exc, root))
