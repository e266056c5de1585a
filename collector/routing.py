"""Stage: turn validated and invalid events into sink records. Pure: no I/O, no clock.

Valid events go to the topic template's topic (default `events.{event}`, a schema's `x-topic`
wins) keyed by the schema's declared key field, else user, else anonymous id, for per-user
ordering, and to every extra topic a fan-out rule adds (same key, value and headers); invalid
ones go to the dead-letter topic with the reason in a header and in the value. Everything that
is the same for every event of one schema is computed once, in RouteTable.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from collector.client_ip import RequestContext
from collector.fanout import RoutingConfig, render_topic
from collector.model import DeadLetter, WireEvent
from collector.sinks.base import Record
from collector.validation import Annotated, InvalidEvent
from event_schemas import SchemaRegistry

CONTENT_TYPE = b"application/json"

ConstantHeaders = tuple[tuple[str, bytes], ...]
# topic, constant headers, offset of the event id in the value, fan-out topics
Route = tuple[str, ConstantHeaders, int, tuple[str, ...]]
UUID_CHARS = 36

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Topics:
    """Where events go: `template` ({event}, {version}) when set, else `prefix` + event."""

    prefix: str = "events."
    dead_letter: str = "events._invalid"
    template: str | None = None

    def for_event(self, event: str, version: int = 1) -> str:
        if self.template is None:
            return self.prefix + event
        return render_topic(self.template, event, version)


class RouteTable:
    """Topic, fan-out topics and constant headers per (event, version), computed on first use."""

    def __init__(
        self,
        topics: Topics,
        schemas: SchemaRegistry | None = None,
        config: RoutingConfig | None = None,
    ) -> None:
        self.topics = topics
        self._schemas = schemas
        self._config = config if config is not None else RoutingConfig()
        # event -> version -> route, filled by `route_for` (the hot loop reads it directly)
        self.routes: dict[str, dict[int, Route]] = {}

    def route_for(self, event: str, version: int) -> Route:
        by_version = self.routes.get(event)
        if by_version is None:
            by_version = self.routes[event] = {}
        route = by_version.get(version)
        if route is None:
            headers = (
                ("event", event.encode()),
                ("version", str(version).encode()),
                ("content-type", CONTENT_TYPE),
            )
            # The encoded value starts {"event":<name>,"version":<v>,"event_id":"<uuid>" (the
            # WireEvent field order), so the id's offset is the same for every such event.
            prefix = b'{"event":' + _encoder.encode(event) + b',"version":%d,"event_id":"' % version
            schema = self._schemas.get(event, version) if self._schemas is not None else None
            topic = schema.metadata.topic if schema is not None else None
            topic = topic or self.topics.for_event(event, version)
            extra = tuple(t for t in self._config.fanout_topics(event, version) if t != topic)
            route = by_version[version] = (topic, headers, len(prefix), extra)
        return route


def route(
    valid: list[WireEvent],
    invalid: list[InvalidEvent],
    *,
    table: RouteTable,
    received_at: dt.datetime,
    annotated: Sequence[Annotated] = (),
    sent_at: str | None = None,
    request: RequestContext | None = None,
) -> list[Record]:
    """`sent_at` and `request` (what enrichment got) are kept only in dead letters, for replay."""
    timestamp_ms = int(received_at.timestamp() * 1000)
    encode = _encoder.encode
    routes = table.routes
    route_for = table.route_for
    records: list[Record] = []
    append = records.append
    fanned: list[tuple[int, tuple[str, ...]]] = []  # (position, extra topics), usually empty
    # Hot loop: locals only, one Struct per event; the constant headers are shared tuples.
    for event in valid:
        by_version = routes.get(event.event)
        found = by_version.get(event.version) if by_version is not None else None
        topic, headers, id_at, extra = (
            found if found is not None else route_for(event.event, event.version)
        )
        identity = event.user_id if event.user_id is not None else event.anonymous_id
        key = identity.encode() if identity is not None else None
        value = encode(event)
        event_id = value[id_at : id_at + UUID_CHARS]
        if extra:
            fanned.append((len(records), extra))
        append(Record(topic, key, value, [*headers, ("event_id", event_id)], timestamp_ms))
    for position, schema, properties in annotated:
        field = schema.metadata.partition_key
        if field is not None:  # the schema's declared key replaces the user/anonymous id
            value = msgspec.to_builtins(properties)[field]
            records[position] = msgspec.structs.replace(records[position], key=str(value).encode())
    # Copies come after the keys are final, so a copy is keyed exactly as its original.
    for position, extra in fanned:
        original = records[position]
        records.extend(msgspec.structs.replace(original, topic=copy) for copy in extra)
    if invalid:
        sender = request if request is not None else RequestContext()
        records.extend(
            _dead_letter(event, table.topics, received_at, timestamp_ms, sent_at, sender)
            for event in invalid
        )
    return records


def _dead_letter(
    event: InvalidEvent,
    topics: Topics,
    received_at: dt.datetime,
    timestamp_ms: int,
    sent_at: str | None,
    sender: RequestContext,
) -> Record:
    headers: list[tuple[str, bytes]] = [("reason", event.reason.encode())]
    envelope = event.event
    key = None
    if envelope is not None:
        identity = envelope.user_id if envelope.user_id is not None else envelope.anonymous_id
        key = identity.encode() if identity is not None else None
        headers += [
            ("event", envelope.event.encode()),
            ("version", str(envelope.version).encode()),
            ("event_id", str(envelope.event_id).encode()),
        ]
    headers.append(("content-type", CONTENT_TYPE))
    # An event from another ingest API (Segment) says so, because its value then holds that
    # API's message, not a native event; replay reads the marker to recover it.
    headers.extend(event.extra_headers)
    assert event.raw is not None  # validate_batch fills it in
    value = DeadLetter(
        reason=event.reason,
        errors=event.errors,
        received_at=received_at,
        index=event.index,
        event=event.raw,
        sent_at=sent_at,
        ip=sender.ip,
        user_agent=sender.user_agent,
    )
    return Record(topics.dead_letter, key, _encoder.encode(value), headers, timestamp_ms)
