"""`capture replay` (issue #7) against the real broker: the file-log scenarios, on Kafka.

Records are written through the real KafkaSink with chosen timestamps (the record timestamp
is what offsets-for-times looks up); each test uses its own topic prefix on the shared broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.sinks.base import Outcome, Record
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from tests.integration.kafka_helpers import consume
from tests.unit.test_replay_file import SCENARIOS
from tests.unit.test_replay_segment import check_segment_recovery

pytestmark = pytest.mark.kafka


class KafkaBackend:
    def __init__(self, broker: KafkaBroker, sink: KafkaSink) -> None:
        self.servers = broker.bootstrap_servers
        self.sink = sink
        self.prefix = f"r{uuid.uuid4().hex[:8]}."

    def source_args(self) -> list[str]:
        return ["--bootstrap-servers", self.servers]

    async def write(self, records: Sequence[Record]) -> None:
        assert await self.sink.publish(records, timeout_s=30) == [Outcome.OK] * len(records)

    async def read(self, topic: str, expected: int) -> list[Record]:
        found = await consume(self.servers, [topic], expected=expected, timeout_s=10)
        return [
            Record(r.topic, r.key, r.value, list(r.headers), r.timestamp)
            for r in sorted(found, key=lambda r: r.offset)
        ]


@pytest.fixture
async def kafka_backend(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaBackend]:
    sink = KafkaSink(kafka_broker.bootstrap_servers)
    await sink.start()
    try:
        yield KafkaBackend(kafka_broker, sink)
    finally:
        await sink.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_kafka(scenario: Any, kafka_backend: KafkaBackend, tmp_path: Path) -> None:
    await scenario(kafka_backend, tmp_path)


async def test_kafka_segment_recovery(kafka_backend: KafkaBackend, tmp_path: Path) -> None:
    await check_segment_recovery(kafka_backend, tmp_path)
