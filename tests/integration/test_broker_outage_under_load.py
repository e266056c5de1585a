"""Stopping the broker under load: only 200s and 503s, every 200 in Kafka, recovery unaided.

This test owns its broker, because it stops and restarts it. Requests run the whole time, so
the outage starts while batches are in flight; the collector is never restarted.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest

from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import start_collector
from tests.integration.kafka_helpers import consume, kafka_settings
from tests.integration.load_driver import LoadResult, drive
from tests.waiting import eventually

pytestmark = pytest.mark.kafka

SINK_TIMEOUT_S = 2.0
# Load kept up while the broker is down, so that many requests meet the outage.
OUTAGE_LOAD_S = 3.0
RECOVERY_TIMEOUT_S = 90.0


async def test_broker_stop_under_load_gives_only_503_and_recovers(
    own_broker: KafkaBroker, schemas: SchemaRegistry
) -> None:
    prefix = f"load{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(own_broker, prefix, sink_timeout_s=SINK_TIMEOUT_S, retry_after_s=1)
    sink = KafkaSink(own_broker.bootstrap_servers)
    http = await start_collector(settings, sink, schemas)
    stop = asyncio.Event()
    result = LoadResult()
    load = asyncio.create_task(drive(str(http.make_url("/v1/batch")), stop, result))
    try:
        await eventually(lambda: len(result.acked) >= 50, timeout_s=60)

        await asyncio.to_thread(own_broker.stop)
        await eventually(lambda: sink.unavailable, timeout_s=30)
        assert (await http.get("/readyz")).status == 503
        ok_before_outage = result.statuses[200]
        refused_before_outage = result.statuses[503]
        await asyncio.sleep(OUTAGE_LOAD_S)
        # the load ran into the outage and was refused, not acknowledged
        assert result.statuses[503] > refused_before_outage
        assert result.statuses[200] == ok_before_outage
        assert (await http.get("/readyz")).status == 503

        await asyncio.to_thread(own_broker.start)
        restarted_at = time.monotonic()
        # 200s come back on the same collector (no restart): readiness and the load both see it
        deadline = restarted_at + RECOVERY_TIMEOUT_S
        while (await http.get("/readyz")).status != 200:
            assert time.monotonic() < deadline, "readiness did not come back"
            await asyncio.sleep(0.2)
        await eventually(lambda: result.last_ok_at > restarted_at, timeout_s=RECOVERY_TIMEOUT_S)
        await eventually(lambda: result.statuses[200] >= ok_before_outage + 20, timeout_s=60)
    finally:
        stop.set()
        await load
        await http.close()

    assert result.bad == []  # every answer was a 200, or a 503 with Retry-After and a reason
    records = await consume(
        own_broker.bootstrap_servers,
        [f"{prefix}.track_played"],
        expected=len(result.acked),
        timeout_s=60,
    )
    landed = {msgspec.json.decode(r.value)["event_id"] for r in records}
    missing = result.acked - landed
    assert not missing, f"{len(missing)} of {len(result.acked)} acknowledged events not in Kafka"
