"""Routing is pure: records, keys, headers and fan-out copies from validated events."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector import keys
from collector.app import create_app
from collector.decoding import decode_batch
from collector.enrichment import enrich
from collector.fanout import RoutingConfig, load_routing_config
from collector.model import WireEvent
from collector.reload import reload_plan
from collector.routing import RouteTable, Topics, route
from collector.settings import Settings, SettingsError
from collector.sinks import MemorySink
from collector.sinks.base import Record
from collector.validation import validate_batch
from event_schemas import SchemaRegistry, load_registry
from tests.conftest import start_collector
from tests.factories import batch_body, track_played

NOW = dt.datetime(2026, 11, 26, 12, 0, 5, tzinfo=dt.UTC)


def event(
    name: str, version: int, user_id: str | None = None, anonymous_id: str | None = None
) -> WireEvent:
    return WireEvent(
        event=name,
        version=version,
        event_id=uuid.uuid4(),
        occurred_at=NOW,
        properties=msgspec.Raw(b'{"a":1}'),
        user_id=user_id,
        anonymous_id=anonymous_id,
    )


@pytest.mark.parametrize(("name", "version"), [("a", 1), ("track_played", 12), ("x" * 64, 9999)])
def test_event_id_header_matches_the_value(name: str, version: int) -> None:
    events = [event(name, version, user_id="u"), event(name, version, anonymous_id="a")]
    enrich(events, received_at=NOW)
    records = route(events, [], table=RouteTable(Topics(prefix="p.")), received_at=NOW)
    for source, record in zip(events, records, strict=True):
        headers = dict(record.headers)
        value = msgspec.json.decode(record.value)
        assert headers["event_id"] == str(source.event_id).encode() == value["event_id"].encode()
        assert headers["version"] == str(version).encode()
        assert record.topic == f"p.{name}"
        assert value["received_at"] == "2026-11-26T12:00:05Z"
        assert record.timestamp_ms == int(NOW.timestamp() * 1000)
    assert [r.key for r in records] == [b"u", b"a"]


# --- topic template and fan-out ---------------------------------------------------------------


def fanout(*rules: dict[str, Any]) -> RoutingConfig:
    return msgspec.convert({"fanout": list(rules)}, RoutingConfig)


def routed(table: RouteTable, *events: WireEvent) -> list[Record]:
    enrich(list(events), received_at=NOW)
    return route(list(events), [], table=table, received_at=NOW)


def test_topic_template_uses_event_and_version() -> None:
    table = RouteTable(Topics(template="t.{event}.v{version}"))
    records = routed(table, event("track_played", 2, user_id="u"))
    assert [r.topic for r in records] == ["t.track_played.v2"]


def test_schema_topic_wins_over_the_template(schemas: SchemaRegistry, tmp_path: Path) -> None:
    plan = tmp_path / "plan" / "special" / "v1.json"
    plan.parent.mkdir(parents=True)
    plan.write_text(
        '{"type": "object", "x-topic": "special.events", "properties": {},'
        ' "additionalProperties": false}'
    )
    table = RouteTable(Topics(template="t.{event}"), load_registry(tmp_path / "plan"))
    records = routed(table, event("special", 1, user_id="u"), event("other", 1, user_id="u"))
    assert [r.topic for r in records] == ["special.events", "t.other"]


def test_fanout_copies_matching_events_with_the_same_key_value_and_headers() -> None:
    config = fanout(
        {"events": ["track_played"], "topic": "analytics.plays"},
        {"events": ["*"], "topic": "archive.{event}", "versions": [2]},
    )
    table = RouteTable(Topics(), config=config)
    played_v1 = event("track_played", 1, user_id="u1")
    played_v2 = event("track_played", 2, user_id="u2")
    viewed = event("page_viewed", 1, anonymous_id="a")
    records = routed(table, played_v1, played_v2, viewed)
    assert [r.topic for r in records] == [
        "events.track_played",
        "events.track_played",
        "events.page_viewed",
        "analytics.plays",
        "analytics.plays",
        "archive.track_played",
    ]
    by_topic: dict[str, list[Record]] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(record)
    originals = by_topic["events.track_played"]
    for original, copy in zip(originals, by_topic["analytics.plays"], strict=True):
        assert (copy.key, copy.value, copy.headers) == (
            original.key,
            original.value,
            original.headers,
        )
    [archived] = by_topic["archive.track_played"]  # only version 2 matched that rule
    assert (archived.key, archived.value, archived.headers) == (
        originals[1].key,
        originals[1].value,
        originals[1].headers,
    )


def test_fanout_to_the_main_topic_or_twice_to_one_topic_writes_one_copy() -> None:
    config = fanout(
        {"events": ["a"], "topic": "events.a"},
        {"events": ["a"], "topic": "x"},
        {"events": ["*"], "topic": "x"},
    )
    records = routed(RouteTable(Topics(), config=config), event("a", 1, user_id="u"))
    assert [r.topic for r in records] == ["events.a", "x"]


def test_fanout_copy_keeps_the_schema_declared_key(schemas: SchemaRegistry) -> None:
    config = fanout({"events": ["artist_profile_viewed"], "topic": "insights"})
    verdict = validate_batch(
        decode_batch(
            batch_body(
                track_played(
                    event="artist_profile_viewed",
                    properties={"artist_id": "artist-9", "section": "music"},
                )
            )
        ),
        schemas,
    )
    enrich(verdict.valid, received_at=NOW, annotated=verdict.annotated)
    records = route(
        verdict.valid,
        [],
        table=RouteTable(Topics(), schemas, config),
        received_at=NOW,
        annotated=verdict.annotated,
    )
    assert [(r.topic, r.key) for r in records] == [
        ("events.artist_profile_viewed", b"artist-9"),
        ("insights", b"artist-9"),
    ]


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return str(path)


def test_routing_table_is_read_from_the_config_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[[routing.fanout]]\nevents = ["track_played"]\ntopic = "analytics.plays"\n'
        "versions = [2]\n",
    )
    config = load_routing_config(path)
    assert config.fanout_topics("track_played", 2) == ("analytics.plays",)
    assert config.fanout_topics("track_played", 1) == ()
    assert load_routing_config(None).fanout == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[routing.fanout]]\nevents = []\ntopic = "x"\n', r"\[routing\]\.fanout\[0\]\.events"),
        ('[[routing.fanout]]\nevents = ["a"]\n', "missing required field `topic`"),
        ('[[routing.fanout]]\nevents = ["a"]\ntopic = "x"\nspeed = 1\n', "unknown field `speed`"),
        ('[[routing.fanout]]\nevents = ["a"]\ntopic = "x.{user_id}"\n', r"\{user_id\}"),
        ("[routing]\nfanout = 3\n", r"\[routing\]\.fanout"),
    ],
    ids=["no-events", "no-topic", "unknown-key", "bad-placeholder", "not-a-list"],
)
def test_bad_routing_table_names_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(SettingsError, match=message) as raised:
        load_routing_config(path)
    assert path in str(raised.value)


@pytest.mark.parametrize("template", ["events.{user}", "events.{event!r}", "events.{event"])
def test_bad_topic_template_setting_fails_the_app(schemas: SchemaRegistry, template: str) -> None:
    with pytest.raises(SettingsError, match="CAPTURE_TOPIC_TEMPLATE"):
        create_app(Settings(sink="memory", topic_template=template), schemas=schemas)


async def test_the_200_waits_for_the_fanout_copies(
    memory_sink: MemorySink, schemas: SchemaRegistry, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path, '[[routing.fanout]]\nevents = ["track_played"]\ntopic = "analytics.plays"\n'
    )
    settings = Settings(sink="memory", config_file=path, topic_template="in.{event}")
    client = await start_collector(settings, memory_sink, schemas)
    try:
        body = batch_body(track_played())
        headers = {"Content-Type": "application/json"}
        response = await client.post("/v1/batch", data=body, headers=headers)
        assert response.status == 200
        assert [r.topic for r in memory_sink.records] == ["in.track_played", "analytics.plays"]
        memory_sink.fatal_topics.add("analytics.plays")  # only the copy fails
        response = await client.post("/v1/batch", data=body, headers=headers)
        assert response.status >= 500
    finally:
        await client.close()


async def test_reload_reads_the_routing_table_again_and_refuses_a_bad_one(
    schemas: SchemaRegistry, tmp_path: Path
) -> None:
    path = write_config(tmp_path, "")
    app = create_app(Settings(sink="memory", config_file=path), schemas=schemas)
    assert app[keys.PLAN].current.routes.route_for("track_played", 1)[3] == ()
    write_config(tmp_path, '[[routing.fanout]]\nevents = ["*"]\ntopic = "all"\n')
    assert await reload_plan(app) is True
    assert app[keys.PLAN].current.routes.route_for("track_played", 1)[3] == ("all",)
    write_config(tmp_path, '[[routing.fanout]]\nevents = ["*"]\n')  # no topic
    assert await reload_plan(app) is False
    assert app[keys.PLAN].current.routes.route_for("track_played", 1)[3] == ("all",)
