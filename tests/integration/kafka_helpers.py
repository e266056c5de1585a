"""The real broker in tests: collector settings with topics of the test's own, and reading
back from topics from the start, without a group."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from collector.settings import Settings
from devtools.kafka import KafkaBroker

# How long to keep polling after the expected count arrived, to catch unexpected extras.
SETTLE_S = 1.0


def kafka_settings(broker: KafkaBroker, prefix: str, **overrides: Any) -> Settings:
    """A Kafka-sink collector writing to `<prefix>.<event>` and `<prefix>._invalid`, so tests
    sharing one broker never read each other's records."""
    return Settings(
        sink="kafka",
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"{prefix}.",
        dead_letter_topic=f"{prefix}._invalid",
        **overrides,
    )


async def consume(
    bootstrap_servers: str, topics: list[str], *, expected: int, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` from offset 0; waits for `expected` records, then settles."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=1_000,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
            if len(records) >= expected and settle_until is None:
                settle_until = time.monotonic() + SETTLE_S
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return records
