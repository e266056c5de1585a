"""Segment's own Python client (segment-analytics-python) -> /compat/segment -> real Kafka.

Issue #8: a team points its existing Segment SDK at the collector. The client is configured
only with the compatibility host and a write key; what it sends is whatever that library
sends (Basic auth with the key, `sentAt`, `messageId`, its own context), and the records are
read back from a real broker with a fresh consumer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from segment.analytics import Client as SegmentClient
from segment.analytics.request import APIError

from collector.segment import PREFIX
from collector.segment.mapping import event_id_for
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.integration.kafka_helpers import consume, kafka_settings

pytestmark = pytest.mark.kafka

WRITE_KEY = "sk_segment_it_0123456789abcdef"
CONFIG = f"""
[[sources]]
name = "segment-python"
kind = "server"
key = "{WRITE_KEY}"
events = "*"

[segment.events]
"Song Started" = "track_played@1"
"""
PLAY = {"track_id": "t-1", "artist_id": "a-1", "position_ms": 1200}


@pytest.fixture
async def segment_collector(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry, tmp_path: Path
) -> AsyncIterator[tuple[HttpClient, str]]:
    prefix = f"seg{uuid.uuid4().hex[:8]}"
    config = tmp_path / "collector.toml"
    config.write_text(CONFIG, encoding="utf-8")
    settings = kafka_settings(kafka_broker, prefix, config_file=str(config))
    client = await start_collector(settings, KafkaSink(kafka_broker.bootstrap_servers), schemas)
    yield client, prefix
    await client.close()


def segment_client(http: HttpClient, *, write_key: str = WRITE_KEY) -> SegmentClient:
    # sync_mode: each call is one POST /v1/batch that raises on a non-2xx answer, so the test
    # knows what was acknowledged; the library's background consumer is not started
    return SegmentClient(
        write_key, host=str(http.make_url(PREFIX)), sync_mode=True, gzip=True, timeout=10
    )


def by_topic(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record.topic, []).append(msgspec.json.decode(record.value))
    return out


async def test_segment_client_calls_arrive_in_the_right_topics(
    kafka_broker: KafkaBroker, segment_collector: tuple[HttpClient, str]
) -> None:
    http, prefix = segment_collector
    client = segment_client(http)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": "u-1", "event": "Track Played", "properties": PLAY}),
        ("track", {"user_id": "u-1", "event": "Song Started", "properties": PLAY}),
        ("identify", {"user_id": "u-1", "traits": {"email": "a@example.com", "plan": "pro"}}),
        ("page", {"anonymous_id": "a-9", "name": "Home", "properties": {"path": "/"}}),
        # invalid: missing required properties / no schema for the name
        ("track", {"user_id": "u-2", "event": "Track Played", "properties": {"track_id": "t"}}),
        ("track", {"user_id": "u-2", "event": "Nobody Mapped This", "properties": {}}),
    ]
    for i, (method, kwargs) in enumerate(calls):
        await asyncio.to_thread(getattr(client, method), message_id=f"msg-{i}", **kwargs)

    topics = [f"{prefix}.{t}" for t in ("track_played", "identify", "page", "_invalid")]
    records = by_topic(await consume(kafka_broker.bootstrap_servers, topics, expected=6))
    plays = records[f"{prefix}.track_played"]
    assert [(p["event_id"], p["version"]) for p in plays] == [
        (str(event_id_for("msg-0")), 2),  # default rule: snake_case, newest version
        (str(event_id_for("msg-1")), 1),  # [segment.events] pins v1
    ]
    assert all(p["properties"] == PLAY and p["user_id"] == "u-1" for p in plays)
    assert plays[0]["context"]["library"]["name"] == "analytics-python"
    assert plays[0]["sent_at"] is not None  # the library's sentAt reached enrichment
    (identify,) = records[f"{prefix}.identify"]
    assert identify["event_id"] == str(event_id_for("msg-2"))
    assert identify["properties"] == {"traits": {"email": "a@example.com", "plan": "pro"}}
    (page,) = records[f"{prefix}.page"]
    assert (page["anonymous_id"], page["user_id"]) == ("a-9", None)
    assert page["properties"] == {"properties": {"path": "/"}, "name": "Home"}
    # an unmappable message has no envelope, so no key: the two may sit in two partitions
    dead = sorted(records[f"{prefix}._invalid"], key=lambda d: str(d["event"]["messageId"]))
    assert [(d["reason"], d["event"]["messageId"]) for d in dead] == [
        ("invalid_properties", "msg-4"),
        ("unmapped_event", "msg-5"),
    ]
    assert dead[0]["event"]["properties"] == {"track_id": "t"}  # the message as sent


async def test_resent_message_id_gives_the_same_event_id(
    kafka_broker: KafkaBroker, segment_collector: tuple[HttpClient, str]
) -> None:
    http, prefix = segment_collector
    client = segment_client(http)
    for _ in range(2):  # what an SDK retry after a lost response does: same messageId again
        await asyncio.to_thread(
            client.track, "u-1", "Track Played", PLAY, message_id="same-message"
        )
    plays = await consume(kafka_broker.bootstrap_servers, [f"{prefix}.track_played"], expected=2)
    ids = {msgspec.json.decode(r.value)["event_id"] for r in plays}
    assert len(plays) == 2
    assert ids == {str(event_id_for("same-message"))}


async def test_unknown_write_key_is_refused(
    segment_collector: tuple[HttpClient, str],
) -> None:
    http, _ = segment_collector
    client = segment_client(http, write_key="sk_not_configured_0123456789")
    with pytest.raises(APIError) as refused:
        await asyncio.to_thread(client.track, "u-1", "Track Played", PLAY)
    assert refused.value.status == 401
