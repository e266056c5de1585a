"""The hot-key overflow lane on the real broker (issue 15, section 3).

A key past `hot_key_rate_per_s` + `hot_key_burst` has its further events in
`<topic>_overflow`; every other key's events stay in the normal topic, in the order sent per
key; `capture_hot_key_overflow_total{topic}` counts the diverted events.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import msgspec
import pytest

from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import start_collector
from tests.factories import batch_body, track_played
from tests.integration.kafka_helpers import consume, kafka_settings

pytestmark = pytest.mark.kafka

JSON = {"Content-Type": "application/json"}
BURST = 4


async def test_a_hot_key_overflows_to_its_own_topic_and_normal_keys_keep_their_order(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry
) -> None:
    prefix = f"hot{uuid.uuid4().hex[:8]}"
    # the collector's clock is fixed: no token comes back, so exactly BURST per key stay
    settings = kafka_settings(kafka_broker, prefix, hot_key_rate_per_s=1.0, hot_key_burst=BURST)
    client = await start_collector(settings, KafkaSink(kafka_broker.bootstrap_servers), schemas)
    hot = [track_played(user_id="hot-user") for _ in range(12)]
    calm = {user: [track_played(user_id=user) for _ in range(BURST)] for user in ("a", "b")}
    try:
        for step in range(4):  # four requests, the keys interleaved within each
            batch = [*hot[step * 3 : step * 3 + 3], calm["a"][step], calm["b"][step]]
            response = await client.post("/v1/batch", data=batch_body(*batch), headers=JSON)
            assert response.status == 200, await response.text()
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()

    servers = kafka_broker.bootstrap_servers
    normal = await consume(servers, [f"{prefix}.track_played"], expected=BURST * 3)
    lane = await consume(servers, [f"{prefix}.track_played_overflow"], expected=12 - BURST)

    def ids(records: list[dict[str, str]]) -> list[str]:
        return [r["event_id"] for r in records]

    by_key: dict[bytes, list[str]] = defaultdict(list)
    for record in sorted(normal, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        by_key[record.key].append(msgspec.json.decode(record.value)["event_id"])
    # per-key order within the partition is the order sent, for every key, hot or not
    assert by_key == {
        b"a": ids(calm["a"]),
        b"b": ids(calm["b"]),
        b"hot-user": ids(hot[:BURST]),
    }
    overflowed = sorted(lane, key=lambda r: (r.partition, r.offset))
    assert {r.key for r in overflowed} == {b"hot-user"}
    assert [msgspec.json.decode(r.value)["event_id"] for r in overflowed] == ids(hot[BURST:])
    for record in overflowed:  # the same record as in the normal topic, headers included
        assert dict(record.headers)["event"] == b"track_played"
    assert f'capture_hot_key_overflow_total{{topic="{prefix}.track_played"}} 8.0' in metrics
