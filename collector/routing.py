"""Stage: turn enriched and invalid events into sink records. Pure: no I/O, no clock.

Valid events go to `<prefix><event>` keyed by user (else anonymous) id for per-user ordering;
invalid ones go to the dead-letter topic with the reason in a header and in the value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec

from collector.model import DeadLetter, EnrichedEvent
from collector.sinks.base import Record
from collector.validation import InvalidEvent

CONTENT_TYPE = b"application/json"

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "events."
    dead_letter: str = "events._invalid"

    def for_event(self, event: str) -> str:
        return self.prefix + event


def route(
    accepted: list[EnrichedEvent],
    invalid: list[InvalidEvent],
    *,
    topics: Topics,
    received_at: dt.datetime,
) -> list[Record]:
    timestamp_ms = int(received_at.timestamp() * 1000)
    records = [_event_record(event, topics, timestamp_ms) for event in accepted]
    records.extend(
        _dead_letter_record(event, topics, received_at, timestamp_ms) for event in invalid
    )
    return records


def _key(user_id: str | None, anonymous_id: str | None) -> bytes | None:
    identity = user_id if user_id is not None else anonymous_id
    return identity.encode() if identity is not None else None


def _event_record(event: EnrichedEvent, topics: Topics, timestamp_ms: int) -> Record:
    headers = (
        ("event", event.event.encode()),
        ("version", str(event.version).encode()),
        ("event_id", str(event.event_id).encode()),
        ("content-type", CONTENT_TYPE),
    )
    return Record(
        topic=topics.for_event(event.event),
        key=_key(event.user_id, event.anonymous_id),
        value=_encoder.encode(event),
        headers=headers,
        timestamp_ms=timestamp_ms,
    )


def _dead_letter_record(
    event: InvalidEvent, topics: Topics, received_at: dt.datetime, timestamp_ms: int
) -> Record:
    headers: list[tuple[str, bytes]] = [("reason", event.reason.encode())]
    envelope = event.envelope
    key = None
    if envelope is not None:
        key = _key(envelope.user_id, envelope.anonymous_id)
        headers += [
            ("event", envelope.event.encode()),
            ("version", str(envelope.version).encode()),
            ("event_id", str(envelope.event_id).encode()),
        ]
    headers.append(("content-type", CONTENT_TYPE))
    value = DeadLetter(
        reason=event.reason,
        errors=event.errors,
        received_at=received_at,
        index=event.index,
        event=event.raw,
    )
    return Record(
        topic=topics.dead_letter,
        key=key,
        value=_encoder.encode(value),
        headers=tuple(headers),
        timestamp_ms=timestamp_ms,
    )
