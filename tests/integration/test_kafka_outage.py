"""A broker outage: 503 + Retry-After within the deadline, never 200; the SDK's retry delivers.

This test owns its broker, because it stops and restarts it.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest

from capture_sdk import Client, RetryPolicy
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import start_collector
from tests.factories import batch_body, track_played
from tests.integration.kafka_helpers import consume, kafka_settings
from tests.waiting import eventually

pytestmark = pytest.mark.kafka

SINK_TIMEOUT_S = 2.0


async def test_outage_gives_503_then_sdk_retry_delivers(
    own_broker: KafkaBroker, schemas: SchemaRegistry
) -> None:
    prefix = f"out{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(own_broker, prefix, sink_timeout_s=SINK_TIMEOUT_S, retry_after_s=1)
    sink = KafkaSink(own_broker.bootstrap_servers)
    http = await start_collector(settings, sink, schemas)
    try:
        # warm up: the topic exists and the producer is connected. The first write to a new
        # topic can outlast the 2 s deadline on a loaded machine (503); the same event is
        # resent until it is acknowledged, as the SDK would.
        first = track_played()
        deadline = time.monotonic() + 60
        while True:
            response = await http.post(
                "/v1/batch", data=batch_body(first), headers={"Content-Type": "application/json"}
            )
            if response.status != 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert response.status == 200

        await asyncio.to_thread(own_broker.stop)
        started = time.monotonic()
        response = await http.post(
            "/v1/batch",
            data=batch_body(track_played()),
            headers={"Content-Type": "application/json"},
        )
        elapsed = time.monotonic() - started
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"] == "sink_unavailable"
        # bounded by the sink deadline (generous margin for a loaded machine; not a speed check)
        assert elapsed < SINK_TIMEOUT_S + 5
        assert (await http.get("/readyz")).status == 503
        # once the sink's watcher has seen the broker gone, requests are refused at once
        await eventually(lambda: sink.unavailable, timeout_s=15)
        started = time.monotonic()
        response = await http.post(
            "/v1/batch",
            data=batch_body(track_played()),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 503
        assert time.monotonic() - started < SINK_TIMEOUT_S  # did not wait out the deadline

        # The SDK keeps retrying the same batch (same event ids) while the broker is down.
        sdk = Client(
            str(http.make_url("/")),
            flush_interval_s=0.1,
            retry=RetryPolicy(backoff_base_s=0.2, backoff_cap_s=1.0, max_retry_time_s=120),
        )
        ids = [
            sdk.track(
                "track_played",
                {"track_id": f"t{i}", "artist_id": "a", "position_ms": i},
                user_id="u",
            )
            for i in range(5)
        ]
        await asyncio.sleep(3 * SINK_TIMEOUT_S)
        assert sdk.stats().sent == 0
        assert sdk.stats().retried >= 1

        await asyncio.to_thread(own_broker.start)
        assert await asyncio.to_thread(sdk.shutdown, 90.0)
        assert sdk.stats().sent == 5
        assert (await http.get("/readyz")).status == 200
        assert not sink.unavailable

        records = await consume(
            own_broker.bootstrap_servers, [f"{prefix}.track_played"], expected=6, timeout_s=30
        )
        landed = {msgspec.json.decode(r.value)["event_id"] for r in records}
        # at-least-once: every SDK event landed (the 503'd batch may land too, as a duplicate)
        assert set(ids) <= landed
        assert first["event_id"] in landed
    finally:
        await http.close()
