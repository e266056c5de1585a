"""Routing on the real broker: fan-out copies and event_id dedup, read back with a consumer.

A 200 must mean every record is in Kafka, fan-out copies included; a batch sent twice with
dedup on must leave one copy of each event in the topic.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest

from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import start_collector
from tests.factories import batch_body, page_viewed, track_played
from tests.integration.kafka_helpers import consume, kafka_settings

pytestmark = pytest.mark.kafka

JSON = {"Content-Type": "application/json"}


async def test_fanout_copies_are_in_kafka_when_the_collector_answers_200(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry, tmp_path: Path
) -> None:
    prefix = f"fan{uuid.uuid4().hex[:8]}"
    config = tmp_path / "collector.toml"
    config.write_text(
        f'[[routing.fanout]]\nevents = ["track_played"]\ntopic = "{prefix}.plays.{{version}}"\n'
    )
    settings = kafka_settings(
        kafka_broker, prefix, topic_template=prefix + ".{event}", config_file=str(config)
    )
    client = await start_collector(settings, KafkaSink(kafka_broker.bootstrap_servers), schemas)
    played = [track_played(user_id=f"u{i}") for i in range(3)]
    try:
        response = await client.post(
            "/v1/batch", data=batch_body(*played, page_viewed()), headers=JSON
        )
        assert response.status == 200, await response.text()
    finally:
        await client.close()

    main = await consume(kafka_broker.bootstrap_servers, [f"{prefix}.track_played"], expected=3)
    copies = await consume(kafka_broker.bootstrap_servers, [f"{prefix}.plays.1"], expected=3)
    viewed = await consume(kafka_broker.bootstrap_servers, [f"{prefix}.page_viewed"], expected=1)
    assert len(viewed) == 1
    assert sorted((r.key, r.value) for r in copies) == sorted((r.key, r.value) for r in main)
    ids = {msgspec.json.decode(r.value)["event_id"] for r in copies}
    assert ids == {event["event_id"] for event in played}
    for record in copies:
        headers = dict(record.headers)
        assert headers["event"] == b"track_played"
        assert headers["event_id"] == msgspec.json.decode(record.value)["event_id"].encode()


async def test_a_batch_retried_with_dedup_on_leaves_one_copy_in_kafka(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry
) -> None:
    prefix = f"dedup{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(
        kafka_broker, prefix, topic_template=prefix + ".{event}", dedup_window_s=300.0
    )
    client = await start_collector(settings, KafkaSink(kafka_broker.bootstrap_servers), schemas)
    events = [track_played(user_id=f"u{i}") for i in range(5)]
    body = batch_body(*events)
    try:
        for _ in range(2):  # as an SDK does when the first response was lost
            response = await client.post("/v1/batch", data=body, headers=JSON)
            assert response.status == 200
            assert (await response.json())["accepted"] == 5
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    assert "capture_dedup_hits_total 5.0" in metrics
    records = await consume(kafka_broker.bootstrap_servers, [f"{prefix}.track_played"], expected=5)
    ids = [msgspec.json.decode(r.value)["event_id"] for r in records]
    assert sorted(ids) == sorted(event["event_id"] for event in events)
