"""Segment message -> WireEvent translation (issue #8): every call type, every bad input."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.config_file import load_config_file
from collector.model import WireEvent
from collector.segment.config import SegmentConfig, build_segment_config
from collector.segment.mapping import (
    MAX_MESSAGE_ID_CHARS,
    MESSAGE_ID_NAMESPACE,
    MESSAGE_ID_TOO_LONG,
    MISSING_EVENT,
    UNKNOWN_TYPE,
    UNMAPPED_EVENT,
    Mapper,
    event_id_for,
    snake_case,
)
from collector.settings import SettingsError
from collector.validation import INVALID_EVENT, InvalidEvent
from event_schemas import SchemaRegistry

NOW = dt.datetime(2026, 11, 26, 12, 0, 5, tzinfo=dt.UTC)


def message(**fields: Any) -> msgspec.Raw:
    base: dict[str, Any] = {
        "type": "track",
        "event": "Track Played",
        "messageId": "msg-1",
        "timestamp": "2026-11-26T12:00:00.123+00:00",
        "userId": "u-42",
        "properties": {"track_id": "t-1", "artist_id": "a-1", "position_ms": 5},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        "integrations": {"All": True},
    }
    base.update(fields)
    return msgspec.Raw(msgspec.json.encode({k: v for k, v in base.items() if v is not ...}))


def map_one(
    schemas: SchemaRegistry, raw: msgspec.Raw, config: SegmentConfig | None = None, **kw: Any
) -> WireEvent | InvalidEvent:
    return Mapper(config or SegmentConfig(), schemas).map_message(0, raw, received_at=NOW, **kw)


def mapped(schemas: SchemaRegistry, raw: msgspec.Raw, **kw: Any) -> WireEvent:
    result = map_one(schemas, raw, **kw)
    assert isinstance(result, WireEvent), result
    return result


def invalid(schemas: SchemaRegistry, raw: msgspec.Raw, **kw: Any) -> InvalidEvent:
    result = map_one(schemas, raw, **kw)
    assert isinstance(result, InvalidEvent), result
    assert result.raw == raw  # dead letters keep the message exactly as sent
    return result


def props(event: WireEvent) -> Any:
    return msgspec.json.decode(event.properties)


def test_track_maps_by_the_default_rule_to_the_newest_version(schemas: SchemaRegistry) -> None:
    event = mapped(schemas, message())
    assert (event.event, event.version) == ("track_played", schemas.versions("track_played")[-1])
    assert event.user_id == "u-42"
    assert event.anonymous_id is None
    assert event.occurred_at == dt.datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=dt.UTC)
    assert props(event) == {"track_id": "t-1", "artist_id": "a-1", "position_ms": 5}
    assert msgspec.json.decode(event.context)["library"]["name"] == "analytics-python"


def test_explicit_map_wins_and_pins_a_version(schemas: SchemaRegistry) -> None:
    config = SegmentConfig(events={"Song Started": ("track_played", 1), "Viewed": ("page", None)})
    event = mapped(schemas, message(event="Song Started"), config=config)
    assert (event.event, event.version) == ("track_played", 1)
    assert mapped(schemas, message(event="Viewed"), config=config).event == "page"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Track Played", "track_played"),
        ("trackPlayed", "track_played"),
        ("track-played", "track_played"),
        ("  Track   Played! ", "track_played"),
        ("track_played", "track_played"),
    ],
)
def test_default_rule_is_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_message_id_gives_a_deterministic_event_id(schemas: SchemaRegistry) -> None:
    first = mapped(schemas, message(messageId="abc-123"))
    again = mapped(schemas, message(messageId="abc-123", timestamp="2026-11-26T13:00:00Z"))
    other = mapped(schemas, message(messageId="abc-124"))
    assert first.event_id == again.event_id == uuid.uuid5(MESSAGE_ID_NAMESPACE, "abc-123")
    assert first.event_id == event_id_for("abc-123")
    assert other.event_id != first.event_id


def test_without_message_id_the_id_follows_the_bytes_as_sent(schemas: SchemaRegistry) -> None:
    raw = message(messageId=...)
    assert mapped(schemas, raw).event_id == mapped(schemas, raw).event_id
    changed = message(messageId=..., timestamp="2026-11-26T12:00:01Z")
    assert mapped(schemas, changed).event_id != mapped(schemas, raw).event_id


def test_timestamp_falls_back_to_original_timestamp_then_receipt(schemas: SchemaRegistry) -> None:
    original = message(timestamp=..., originalTimestamp="2026-11-26T11:00:00Z")
    assert mapped(schemas, original).occurred_at == dt.datetime(2026, 11, 26, 11, tzinfo=dt.UTC)
    assert mapped(schemas, message(timestamp=...)).occurred_at == NOW


def test_identities_numbers_and_empty_strings(schemas: SchemaRegistry) -> None:
    event = mapped(schemas, message(userId=42, anonymousId=""))
    assert (event.user_id, event.anonymous_id) == ("42", None)


def test_identify_maps_traits_to_the_built_in_schema(schemas: SchemaRegistry) -> None:
    raw = message(type="identify", event=..., properties=..., traits={"email": "a@b.c"})
    event = mapped(schemas, raw)
    assert (event.event, event.version) == ("identify", 1)
    assert props(event) == {"traits": {"email": "a@b.c"}}
    assert props(mapped(schemas, message(type="identify", traits=...))) == {"traits": {}}


@pytest.mark.parametrize("kind", ["page", "screen"])
def test_page_and_screen_carry_name_category_and_properties(
    schemas: SchemaRegistry, kind: str
) -> None:
    raw = message(type=kind, event=..., name="Home", category="Docs", properties={"path": "/"})
    event = mapped(schemas, raw)
    assert event.event == kind
    assert props(event) == {"properties": {"path": "/"}, "name": "Home", "category": "Docs"}
    bare = mapped(schemas, message(type=kind, event=..., properties=...))
    assert props(bare) == {"properties": {}}


def test_group_and_alias(schemas: SchemaRegistry) -> None:
    group = mapped(schemas, message(type="group", groupId=7, traits={"plan": "pro"}))
    assert (group.event, props(group)) == ("group", {"traits": {"plan": "pro"}, "group_id": "7"})
    alias = mapped(schemas, message(type="alias", previousId="anon-9"))
    assert (alias.event, props(alias)) == ("alias", {"previous_id": "anon-9"})


def test_single_call_route_type_wins_over_the_body(schemas: SchemaRegistry) -> None:
    raw = message(type=..., event=..., traits={"name": "x"})
    assert mapped(schemas, raw, forced_type="identify").event == "identify"


@pytest.mark.parametrize(
    ("fields", "reason", "path"),
    [
        ({"type": "screenshot"}, UNKNOWN_TYPE, "$.type"),
        ({"type": ...}, UNKNOWN_TYPE, "$.type"),
        ({"event": ...}, MISSING_EVENT, "$.event"),
        ({"event": ""}, MISSING_EVENT, "$.event"),
        ({"event": "Nobody Mapped This"}, UNMAPPED_EVENT, "$.event"),
        ({"messageId": "m" * (MAX_MESSAGE_ID_CHARS + 1)}, MESSAGE_ID_TOO_LONG, "$.messageId"),
        ({"event": 5}, INVALID_EVENT, "$.event"),
        ({"timestamp": "yesterday"}, INVALID_EVENT, "$.timestamp"),
        ({"userId": "u" * 257}, INVALID_EVENT, "$.userId"),
    ],
)
def test_bad_messages_become_dead_letters_with_a_reason(
    schemas: SchemaRegistry, fields: dict[str, Any], reason: str, path: str
) -> None:
    result = invalid(schemas, message(**fields))
    assert result.reason == reason
    assert result.errors[0].path == path
    assert result.event is None


def test_a_message_id_at_the_limit_is_fine(schemas: SchemaRegistry) -> None:
    assert mapped(schemas, message(messageId="m" * MAX_MESSAGE_ID_CHARS)).event == "track_played"


def test_a_non_object_message_is_a_dead_letter(schemas: SchemaRegistry) -> None:
    assert invalid(schemas, msgspec.Raw(b"[1, 2]")).reason == INVALID_EVENT


def test_map_batch_keeps_positions_of_what_mapped(schemas: SchemaRegistry) -> None:
    raws = [message(), message(type="nope"), message(type="identify", traits={})]
    result = Mapper(SegmentConfig(), schemas).map_batch(raws, received_at=NOW)
    assert result.positions == [0, 2]
    assert result.raws == [raws[0], raws[2]]
    assert [i.index for i in result.invalid] == [1]


def test_config_section_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[segment.events]\n"Track Played" = "track_played@2"\n"Home" = "page"\n')
    config = build_segment_config(load_config_file(str(path)), path=str(path))
    assert config.events == {"Track Played": ("track_played", 2), "Home": ("page", None)}
    path.write_text('[segment.events]\n"Track Played" = "Track Played"\n')
    with pytest.raises(SettingsError, match="track_played@2"):
        build_segment_config(load_config_file(str(path)), path=str(path))
    path.write_text("[segment]\nevent = {}\n")
    with pytest.raises(SettingsError, match="unknown key"):
        build_segment_config(load_config_file(str(path)), path=str(path))
