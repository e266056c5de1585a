"""SDK -> collector -> real Kafka broker: exactly the valid events land in events.<event>.

How we know 200 means durable: the collector answers only after aiokafka's acks=all futures
resolved, and these tests read the events back from the broker with a fresh consumer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from capture_sdk import Client, DroppedEvent
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.integration.kafka_helpers import consume, kafka_settings

pytestmark = pytest.mark.kafka


@pytest.fixture
async def kafka_collector(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry
) -> AsyncIterator[tuple[HttpClient, str]]:
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(kafka_broker, prefix)
    sink = KafkaSink(kafka_broker.bootstrap_servers)
    client = await start_collector(settings, sink, schemas)
    yield client, prefix
    await client.close()


def valid_properties(i: int) -> dict[str, Any]:
    return {"track_id": f"t-{i}", "artist_id": f"a-{i % 3}", "position_ms": i * 10}


async def test_sdk_events_arrive_in_kafka_valid_and_dead_lettered(
    kafka_broker: KafkaBroker, kafka_collector: tuple[HttpClient, str]
) -> None:
    http, prefix = kafka_collector
    dropped: list[DroppedEvent] = []
    sdk = Client(
        str(http.make_url("/")), batch_size=25, flush_interval_s=0.1, on_error=dropped.extend
    )
    expected: dict[str, tuple[str, dict[str, Any]]] = {}
    invalid: dict[str, str] = {}
    for i in range(120):
        if i % 10 == 3:  # wrong type
            event_id = sdk.track(
                "track_played", {**valid_properties(i), "position_ms": "x"}, user_id=f"u{i}"
            )
            invalid[event_id] = "invalid_properties"
        elif i % 10 == 7:  # unknown version
            event_id = sdk.track("page_viewed", {"path": "/x"}, version=3, anonymous_id=f"a{i}")
            invalid[event_id] = "unknown_event"
        elif i % 2:
            props = {"path": f"/artist/{i}", "title": "Artist"}
            event_id = sdk.track("page_viewed", props, anonymous_id=f"anon-{i}")
            expected[event_id] = ("page_viewed", props)
        else:
            props = valid_properties(i)
            event_id = sdk.track("track_played", props, user_id=f"user-{i % 5}")
            expected[event_id] = ("track_played", props)
    # the SDK's thread blocks on HTTP; the collector runs on this loop, so wait off-loop
    assert await asyncio.to_thread(sdk.shutdown, 30.0)
    stats = sdk.stats()
    assert (stats.sent, stats.rejected) == (len(expected), len(invalid))
    assert {d.event_id: d.reason for d in dropped} == dict.fromkeys(invalid, "rejected")

    topics = [f"{prefix}.track_played", f"{prefix}.page_viewed"]
    records = await consume(kafka_broker.bootstrap_servers, topics, expected=len(expected))
    got = {}
    for record in records:
        value = msgspec.json.decode(record.value)
        headers = dict(record.headers)
        assert headers["event_id"].decode() == value["event_id"]
        assert record.topic == f"{prefix}.{value['event']}"
        assert record.key == (value["user_id"] or value["anonymous_id"]).encode()
        got[value["event_id"]] = (value["event"], value["properties"])
    assert len(records) == len(expected)  # exactly: no duplicates, nothing invalid
    assert got == expected

    dead = await consume(
        kafka_broker.bootstrap_servers, [f"{prefix}._invalid"], expected=len(invalid)
    )
    reasons = {}
    for record in dead:
        letter = msgspec.json.decode(record.value)
        assert dict(record.headers)["reason"].decode() == letter["reason"]
        assert letter["errors"][0]["path"].startswith("$.")
        reasons[letter["event"]["event_id"]] = letter["reason"]
    assert reasons == invalid


async def test_kafka_sink_readiness(kafka_collector: tuple[HttpClient, str]) -> None:
    http, _ = kafka_collector
    response = await http.get("/readyz")
    assert response.status == 200
    assert (await response.json())["sink"] == "kafka"
