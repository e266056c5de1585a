"""Translate Segment tracking-API messages into the collector's WireEvents, or dead-letter verdicts.

The one place that knows Segment's message shapes: `track` maps by event name (the `[segment]`
map, else the default rule), the other calls map to built-in schemas of the tracking plan.
Pure: no I/O, no clock (`received_at` is passed in), no metrics. It must not validate
properties against a schema: the shared validation stage does that, exactly as for native events.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Annotated

import msgspec

from collector.model import FieldError, WireEvent
from collector.segment.config import SegmentConfig
from collector.validation import INVALID_EVENT, InvalidEvent, field_error
from event_schemas import SchemaRegistry

# Dead-letter reasons added by this module (bounded: they are metric labels).
UNKNOWN_TYPE = "unknown_type"
MISSING_EVENT = "missing_event"
UNMAPPED_EVENT = "unmapped_event"
MESSAGE_ID_TOO_LONG = "message_id_too_long"
REASONS = (UNKNOWN_TYPE, MISSING_EVENT, UNMAPPED_EVENT, MESSAGE_ID_TOO_LONG, INVALID_EVENT)

# Segment limits messageId to 100 characters (Segment support, segmentio/segment-docs#5924).
MAX_MESSAGE_ID_CHARS = 100
# WireEvent's Identity bound; direct Struct construction does not check Meta constraints.
MAX_IDENTITY_CHARS = 256
# event_id = uuid5(namespace, messageId): fixed forever, so that the same messageId gives the
# same id on every collector and every retry, and anyone can recompute it from Segment data.
MESSAGE_ID_NAMESPACE = uuid.UUID("0672b815-da9f-4101-b4e0-90bdb3b22601")
# A message without messageId: uuid5 over its bytes as sent (a retry resends the same bytes).
MESSAGE_BYTES_NAMESPACE = uuid.UUID("ad206dbc-223b-4dbc-a53c-fc80fad93dd9")

# Segment call type -> the built-in schema of the tracking plan that carries it.
BUILT_IN = {
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
}
TYPES = ("track", *BUILT_IN)

# Headers on a Segment dead letter: its value's `event` is a Segment message, not a native
# event, so `capture replay --recover` must map it again (and, for a single-call route such as
# `/v1/track`, with the type the route implied: such a body need not carry `type`).
API_HEADER = "api"
SEGMENT_API = b"segment"
TYPE_HEADER = "segment_type"

_EMPTY_OBJECT = msgspec.Raw(b"{}")
_NULL = b"null"
_encoder = msgspec.json.Encoder()
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")

Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Id = str | int  # Segment's libraries accept numeric ids and send them as strings, mostly


class Message(msgspec.Struct, rename="camel", gc=False):
    """The fields of a Segment message the collector reads; `integrations` and the rest are
    ignored (they steer Segment destinations, which do not exist here)."""

    type: str | None = None
    event: str | None = None
    message_id: str | None = None
    timestamp: Timestamp | None = None
    original_timestamp: Timestamp | None = None
    user_id: Id | None = None
    anonymous_id: Id | None = None
    properties: msgspec.Raw = msgspec.Raw(_NULL)
    traits: msgspec.Raw = msgspec.Raw(_NULL)
    context: msgspec.Raw = msgspec.Raw(_NULL)
    name: str | None = None
    category: str | None = None
    group_id: Id | None = None
    previous_id: Id | None = None


class SegmentBatch(msgspec.Struct, rename="camel", gc=False):
    """`POST /v1/batch`: the messages stay raw so that one bad message fails alone."""

    batch: list[msgspec.Raw]
    sent_at: object = None  # used when it is a string; a bad one must not fail the batch


_message_decoder = msgspec.json.Decoder(Message)


def snake_case(name: str) -> str:
    """The default rule: `Track Played` / `trackPlayed` / `track-played` -> `track_played`."""
    return _NOT_WORD.sub("_", _CAMEL_BOUNDARY.sub("_", name).lower()).strip("_")


def event_id_for(message_id: str) -> uuid.UUID:
    return uuid.uuid5(MESSAGE_ID_NAMESPACE, message_id)


def api_headers(forced_type: str | None) -> tuple[tuple[str, bytes], ...]:
    """The dead-letter headers that tell replay how to map the message again."""
    marker = ((API_HEADER, SEGMENT_API),)
    return marker if forced_type is None else (*marker, (TYPE_HEADER, forced_type.encode()))


def marked(
    rejected: InvalidEvent, index: int, headers: tuple[tuple[str, bytes], ...]
) -> InvalidEvent:
    """`rejected` at its position in the Segment batch, carrying the Segment headers."""
    return InvalidEvent(
        index, rejected.reason, rejected.errors, rejected.event, rejected.raw, headers
    )


@dataclass(slots=True)
class Mapped:
    """A batch of messages translated: `events[i]` came from message `positions[i]`, whose
    bytes as sent are `raws[i]`; `invalid` holds the messages that could not be translated."""

    events: list[WireEvent]
    raws: list[msgspec.Raw]
    positions: list[int]
    invalid: list[InvalidEvent]


class Mapper:
    """Maps the messages of one request against one snapshot of the tracking plan.

    Name resolution is cached per instance (one per request): a batch usually repeats a few
    event names, and the plan may be reloaded between requests.
    """

    def __init__(self, config: SegmentConfig, schemas: SchemaRegistry) -> None:
        self._config = config
        self._schemas = schemas
        self._resolved: dict[str, tuple[str, int] | None] = {}
        self._newest: dict[str, int | None] = {}

    def map_batch(
        self,
        raws: list[msgspec.Raw],
        *,
        received_at: dt.datetime,
        forced_type: str | None = None,
    ) -> Mapped:
        mapped = Mapped([], [], [], [])
        for index, raw in enumerate(raws):
            result = self.map_message(index, raw, received_at=received_at, forced_type=forced_type)
            if isinstance(result, InvalidEvent):
                mapped.invalid.append(result)
            else:
                mapped.events.append(result)
                mapped.raws.append(raw)
                mapped.positions.append(index)
        return mapped

    def map_message(
        self,
        index: int,
        raw: msgspec.Raw,
        *,
        received_at: dt.datetime,
        forced_type: str | None = None,
    ) -> WireEvent | InvalidEvent:
        """`forced_type`: the call type a single-call route (`/v1/track`...) implies."""
        try:
            message = _message_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return InvalidEvent(index, INVALID_EVENT, [field_error(exc, "$")], raw=raw)
        kind = forced_type or message.type
        if kind not in TYPES:
            shown = "missing" if kind is None else f"`{kind[:64]}`"
            error = FieldError("$.type", f"message type {shown} is not one of {', '.join(TYPES)}")
            return InvalidEvent(index, UNKNOWN_TYPE, [error], raw=raw)
        message_id = message.message_id
        if message_id is not None and len(message_id) > MAX_MESSAGE_ID_CHARS:
            error = FieldError(
                "$.messageId",
                f"messageId has {len(message_id)} characters, more than {MAX_MESSAGE_ID_CHARS}",
            )
            return InvalidEvent(index, MESSAGE_ID_TOO_LONG, [error], raw=raw)
        user_id = _identity(message.user_id)
        anonymous_id = _identity(message.anonymous_id)
        for path, value in (("$.userId", user_id), ("$.anonymousId", anonymous_id)):
            if value is not None and len(value) > MAX_IDENTITY_CHARS:
                error = FieldError(path, f"longer than {MAX_IDENTITY_CHARS} characters")
                return InvalidEvent(index, INVALID_EVENT, [error], raw=raw)
        if kind == "track":
            target = self._track_target(index, message, raw)
            if isinstance(target, InvalidEvent):
                return target
            name, version = target
            properties = _object_or_empty(message.properties)
        else:
            name = BUILT_IN[kind]
            newest = self._newest_version(name)
            if newest is None:
                error = FieldError("$.type", f"the tracking plan has no built-in schema `{name}`")
                return InvalidEvent(index, UNMAPPED_EVENT, [error], raw=raw)
            version = newest
            properties = _built_in_properties(kind, message)
        if message_id:
            event_id = event_id_for(message_id)
        else:  # Segment makes one up server-side; bytes as sent stay the same across retries
            event_id = uuid.uuid5(MESSAGE_BYTES_NAMESPACE, bytes(raw).decode())
        return WireEvent(
            event=name,
            version=version,
            event_id=event_id,
            occurred_at=message.timestamp or message.original_timestamp or received_at,
            user_id=user_id,
            anonymous_id=anonymous_id,
            properties=properties,
            context=message.context,
        )

    def resolve(self, segment_name: str) -> tuple[str, int] | None:
        """The schema and version a `track` event name maps to: the `[segment.events]` entry,
        else the snake_case of the name; without a version, the plan's newest."""
        if segment_name in self._resolved:
            return self._resolved[segment_name]
        explicit = self._config.events.get(segment_name)
        name, version = explicit if explicit is not None else (snake_case(segment_name), None)
        if version is None:
            version = self._newest_version(name)
        target = (name, version) if version is not None else None
        self._resolved[segment_name] = target
        return target

    def _track_target(
        self, index: int, message: Message, raw: msgspec.Raw
    ) -> tuple[str, int] | InvalidEvent:
        if not message.event:
            error = FieldError("$.event", "a track call needs a non-empty `event` name")
            return InvalidEvent(index, MISSING_EVENT, [error], raw=raw)
        target = self.resolve(message.event)
        if target is None:
            shown = message.event[:64]
            error = FieldError(
                "$.event",
                f"no schema for Segment event `{shown}`: add it to [segment.events] or to the"
                f" tracking plan as `{snake_case(shown)}`",
            )
            return InvalidEvent(index, UNMAPPED_EVENT, [error], raw=raw)
        return target

    def _newest_version(self, name: str) -> int | None:
        if name not in self._newest:
            versions = self._schemas.versions(name)
            self._newest[name] = versions[-1] if versions else None
        return self._newest[name]


def _identity(value: Id | None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None  # Segment clients send "" for "not set"


def _object_or_empty(raw: msgspec.Raw) -> msgspec.Raw:
    return _EMPTY_OBJECT if bytes(raw) == _NULL else raw


class _ContextTraits(msgspec.Struct, gc=False):
    traits: msgspec.Raw = msgspec.Raw(_NULL)


_context_traits_decoder = msgspec.json.Decoder(_ContextTraits)
_members_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _identify_traits(message: Message) -> msgspec.Raw:
    """Segment sends identify traits at the top level, RudderStack's SDKs under
    `context.traits`: both count. When both are objects they are merged, a top-level trait
    winning over the same name in the context (it is the one the caller passed to identify);
    every value stays as sent. A top-level `traits` that is not an object is passed on as
    sent, for the schema to reject."""
    top = message.traits
    nested = _object_members(_context_traits(message.context))
    if nested is None:
        return _object_or_empty(top)
    if bytes(top) == _NULL:
        return msgspec.Raw(_encoder.encode(nested))
    members = _object_members(top)
    if members is None:
        return top
    return msgspec.Raw(_encoder.encode({**nested, **members}))


def _context_traits(context: msgspec.Raw) -> msgspec.Raw:
    try:
        return _context_traits_decoder.decode(context).traits
    except msgspec.ValidationError:  # context is not an object: no traits there
        return msgspec.Raw(_NULL)


def _object_members(raw: msgspec.Raw) -> dict[str, msgspec.Raw] | None:
    """The members of a JSON object (values as sent), None for anything else."""
    try:
        return _members_decoder.decode(raw)
    except msgspec.ValidationError:
        return None


def _built_in_properties(kind: str, message: Message) -> msgspec.Raw:
    """The built-in schema's properties: Segment's fields, free-form parts passed as sent."""
    fields: dict[str, object]
    if kind == "identify":
        fields = {"traits": _identify_traits(message)}
    elif kind == "group":
        fields = {"traits": _object_or_empty(message.traits)}
        if message.group_id is not None:  # absent: the schema's `required` reports it
            fields["group_id"] = _identity(message.group_id) or ""
    elif kind == "alias":
        fields = {}
        if message.previous_id is not None:
            fields["previous_id"] = _identity(message.previous_id) or ""
    else:  # page, screen
        fields = {"properties": _object_or_empty(message.properties)}
        if message.name is not None:
            fields["name"] = message.name
        if message.category is not None:
            fields["category"] = message.category
    return msgspec.Raw(_encoder.encode(fields))
