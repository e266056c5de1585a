"""Replay's per-event transforms: dedup by event_id, upgrade to the newest version, and
re-validation of dead letters under the current plan (recovery).

Recovery reuses the collector's own stages (validate_event, or the Segment mapping then
validate_batch; enrich, route): a recovered event is exactly what the collector would have
written had the fixed schema (or `[segment]` map) been live. No I/O here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from collector.limits import DEFAULT_MAX_EVENT_BYTES
from collector.model import DeadLetter
from collector.replay.segment import SegmentRecovery, is_segment
from collector.sinks.base import Record
from event_schemas import SchemaRegistry
from event_schemas.errors import split_validation_error

if TYPE_CHECKING:
    from collector.routing import RouteTable
    from collector.validation import Annotated

UPGRADED_FROM_HEADER = "upgraded_from"
_encoder = msgspec.json.Encoder()
_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)


class Deduper:
    """Keeps the first record of each event_id; the set grows with the distinct ids seen."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def is_duplicate(self, event_id: object) -> bool:
        if not isinstance(event_id, str):
            return False  # nothing to dedup on
        if event_id in self._seen:
            return True
        self._seen.add(event_id)
        return False


class UpgradeFailed(Exception):
    """The event cannot become the newest version; the message says why."""


class Upgrader:
    """vN -> newest: fill each later version's added optional properties from `default`."""

    def __init__(self, schemas: SchemaRegistry) -> None:
        self._schemas = schemas
        # event -> version -> defaults (property -> value) that version adds over the previous
        self._added: dict[str, dict[int, dict[str, Any]]] = {}
        # event -> its newest version (the registry sorts its keys on each `versions` call)
        self._newest: dict[str, int] = {}
        for schema in schemas:
            self._newest[schema.event] = max(schema.version, self._newest.get(schema.event, 0))
            earlier = schemas.get(schema.event, schema.version - 1)
            before = set(earlier.document.get("properties", {})) if earlier else set()
            properties = schema.document.get("properties", {})
            self._added.setdefault(schema.event, {})[schema.version] = {
                name: node["default"]
                for name, node in properties.items()
                if name not in before and isinstance(node, dict) and "default" in node
            }

    def is_newest(self, event: object, version: object) -> bool:
        """Whether `upgrade` returns None for an event of this name and version (it raises
        or upgrades otherwise): the known newest version, or a later one."""
        if not isinstance(event, str) or not isinstance(version, int):
            return False
        newest = self._newest.get(event)
        return newest is not None and version >= newest

    def upgrade(self, doc: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
        """The upgraded event and its old version, or None when already the newest."""
        event, version = doc.get("event"), doc.get("version")
        if self.is_newest(event, version):
            return None
        if not isinstance(event, str) or not isinstance(version, int):
            raise UpgradeFailed("not an event envelope")
        newest = self._newest.get(event)
        if newest is None:
            raise UpgradeFailed(f"unknown event `{event}`")
        properties = doc.get("properties")
        if not isinstance(properties, dict):
            raise UpgradeFailed("properties is not an object")
        properties = dict(properties)
        for step in range(version + 1, newest + 1):
            for name, default in self._added[event].get(step, {}).items():
                properties.setdefault(name, default)
        schema = self._schemas.get(event, newest)
        assert schema is not None
        try:
            schema.decode_properties(_encoder.encode(properties))
        except msgspec.ValidationError as exc:
            path, message = split_validation_error(exc, "$.properties")
            raise UpgradeFailed(f"v{newest}: {message} at {path}") from exc
        return {**doc, "version": newest, "properties": properties}, version


def upgraded_record(record: Record, doc: dict[str, Any], old_version: int) -> Record:
    headers = [(k, v) for k, v in record.headers if k not in ("version", UPGRADED_FROM_HEADER)]
    headers += [
        ("version", str(doc["version"]).encode()),
        (UPGRADED_FROM_HEADER, str(old_version).encode()),
    ]
    return msgspec.structs.replace(record, value=_encoder.encode(doc), headers=headers)


@dataclass(frozen=True, slots=True)
class StillInvalid:
    event_id: str | None
    reason: str


def decode_dead_letter(value: bytes) -> DeadLetter:
    """Raises msgspec.DecodeError (incl. ValidationError) for a value that is no dead letter."""
    return _dead_letter_decoder.decode(value)


def recover(
    letter: DeadLetter,
    schemas: SchemaRegistry,
    table: RouteTable,
    *,
    pii_hash_key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
    segment: SegmentRecovery | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> list[Record] | StillInvalid:
    """The records the collector would write for this event now, or why it is still invalid.

    A Segment dead letter (marked in its `headers`) is mapped again with `segment` first."""
    # imported here: the collector's stages bring in its HTTP side, which only recovery needs
    from collector.client_ip import RequestContext
    from collector.enrichment import enrich
    from collector.routing import route
    from collector.validation import InvalidEvent, validate_event

    annotated: list[Annotated]
    if is_segment(headers):
        if segment is None:
            return StillInvalid(None, "segment_not_configured")
        mapped = segment.validate(letter, headers)
        if isinstance(mapped, InvalidEvent):
            return StillInvalid(mapped.event_id, mapped.reason)
        event, annotated = mapped
    else:
        verdict = validate_event(
            letter.index, letter.event, schemas, max_event_bytes=max_event_bytes
        )
        if isinstance(verdict, InvalidEvent):
            return StillInvalid(verdict.event_id, verdict.reason)
        event, schema, properties = verdict
        annotated = [(0, schema, properties)] if schema.metadata.needs_properties else []
    # what the collector knew of the request is in the dead letter: the original receive time
    # and (since they are kept) sent_at, client address and agent; older letters have nulls
    received_at: dt.datetime = letter.received_at
    enrich(
        [event],
        received_at=received_at,
        sent_at=letter.sent_at,
        request=RequestContext(letter.ip, letter.user_agent),
        annotated=annotated,
        pii_hash_key=pii_hash_key,
    )
    return route([event], [], table=table, received_at=received_at, annotated=annotated)
