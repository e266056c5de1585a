"""The producer supervisor on the real broker: a producer whose sender died is replaced.

Fault injection on the live aiokafka producer: its sender task is cancelled (after which aiokafka
would hang every send, aio-libs/aiokafka#1039) or made to die of an error (aiokafka then fails
every send for good, aio-libs/aiokafka#1017). Requests get 503 meanwhile, never 200 or a 4xx.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector import keys
from collector.app import RUNNER_OPTIONS, create_app
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import FIXED_NOW, HttpClient
from tests.factories import batch_body, track_played
from tests.integration.kafka_helpers import consume, kafka_settings
from tests.waiting import eventually

pytestmark = pytest.mark.kafka

JSON = {"Content-Type": "application/json"}
RECOVERY_TIMEOUT_S = 60.0


async def post_one(http: HttpClient) -> tuple[int, str]:
    event = track_played()
    response = await http.post("/v1/batch", data=batch_body(event), headers=JSON)
    return response.status, event["event_id"]


def break_sender(producer: Any, fault: str) -> None:
    if fault == "cancel":
        producer._sender.sender_task.cancel()
    else:

        def boom(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("injected sender failure")

        # the sender routine calls this each time it wakes: the next batch kills the task
        producer._message_accumulator.drain_by_nodes = boom


@pytest.mark.parametrize(
    ("fault", "reason"), [("cancel", "sender_cancelled"), ("raise", "sender_died")]
)
async def test_dead_sender_is_replaced_and_requests_recover(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry, fault: str, reason: str
) -> None:
    prefix = f"sup{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(kafka_broker, prefix, sink_timeout_s=5.0)
    # no sink passed in: the app builds it, so the restart counter is wired as in production
    app = create_app(settings, clock=lambda: FIXED_NOW, schemas=schemas)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    http: HttpClient = TestClient(server)
    await http.start_server()
    try:
        sink = app[keys.SINK]
        assert isinstance(sink, KafkaSink)
        acked = set()
        status, event_id = await post_one(http)
        assert status == 200
        acked.add(event_id)
        assert (await http.get("/readyz")).status == 200
        dead = sink._producer
        assert dead is not None

        break_sender(dead, fault)
        if fault == "cancel":
            await eventually(lambda: dead._sender.sender_task.done())
            # readiness sees the dead sender before any request does
            assert (await http.get("/readyz")).status == 503
        else:
            # the request whose batch kills the sender is refused as retriable, not as bad
            status, _ = await post_one(http)
            assert status == 503

        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        ok_in_a_row = 0
        while ok_in_a_row < 5:
            assert time.monotonic() < deadline, "the collector did not recover"
            status, event_id = await post_one(http)
            assert status in (200, 503)
            if status == 200:
                acked.add(event_id)
                ok_in_a_row += 1
            else:
                ok_in_a_row = 0
                await asyncio.sleep(0.1)
        assert sink._producer is not dead
        # nothing of the dead producer is left for asyncio to log as "never retrieved"
        failed = [
            future
            for queue in dead._message_accumulator._batches.values()
            for batch in queue
            for future in (batch.future, batch._drain_waiter)
            if future.done() and not future.cancelled()
        ]
        assert not any(future._log_traceback for future in failed)
        assert (await http.get("/readyz")).status == 200
        metrics = await (await http.get("/metrics")).text()
        assert f'capture_kafka_producer_restarts_total{{reason="{reason}"}} 1.0' in metrics

        records = await consume(
            kafka_broker.bootstrap_servers,
            [f"{prefix}.track_played"],
            expected=len(acked),
            timeout_s=30,
        )
        landed = {msgspec.json.decode(r.value)["event_id"] for r in records}
        assert acked <= landed
    finally:
        await http.close()
