"""Cheap correctness checks after a stage: were as many records written as were acknowledged?

File sink: lines in the topic logs; Kafka: the end offsets of the event topics. Also measures
the mean record value the collector wrote (the record size for the broker's ceiling).
Must not write to the data it checks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from collector.sinks.file import topic_logs

READ_CHUNK_BYTES = 16 * 1024 * 1024
VALUE_SAMPLE_LINES = 20_000
# end_offsets can wait forever for a partition that does not exist (aiokafka says so).
KAFKA_TIMEOUT_S = 30.0


class _Line(msgspec.Struct):
    value: msgspec.Raw


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as log:
        while chunk := log.read(READ_CHUNK_BYTES):
            lines += chunk.count(b"\n")
    return lines


def file_sink_lines(data_dir: Path) -> dict[str, int]:
    """Lines per topic, summed over its partitions (one log per collector worker), the
    dead-letter topic included when anything was rejected."""
    return {
        topic: sum(_count_lines(path) for path in partitions.values())
        for topic, partitions in sorted(topic_logs(data_dir).items())
    }


def check_counts(written: int, acknowledged: int) -> dict[str, Any]:
    """Every acknowledged event must be there; a few more are allowed (a reply lost to a
    client timeout after the write: at-least-once)."""
    return {
        "acknowledged_events": acknowledged,
        "written_records": written,
        "ok": written >= acknowledged,
        "extra_records": written - acknowledged,
    }


def mean_value_bytes(data_dir: Path, *, sample_lines: int = VALUE_SAMPLE_LINES) -> float | None:
    """Mean size of the record values (enriched events) in the file sink's logs (every
    partition of every event topic, an equal share of the sample from each)."""
    decoder = msgspec.json.Decoder(_Line)
    sizes: list[int] = []
    logs = [
        path
        for topic, partitions in sorted(topic_logs(data_dir).items())
        if not topic.startswith("events._")
        for _, path in sorted(partitions.items())
    ]
    for path in logs:
        with path.open("rb") as log:
            for n, line in enumerate(log):
                if n >= sample_lines // max(1, len(logs)):
                    break
                sizes.append(len(decoder.decode(line).value))
    return sum(sizes) / len(sizes) if sizes else None


async def kafka_event_records(bootstrap_servers: str, *, prefix: str = "events.") -> dict[str, int]:
    """Records per event topic (sum of partition end offsets; topics start empty here)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    try:
        await consumer.start()
        try:
            topics = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
            counts: dict[str, int] = {}
            for description in await admin.describe_topics(topics):
                topic = description["topic"]
                partitions = [
                    TopicPartition(topic, p["partition"]) for p in description["partitions"]
                ]
                async with asyncio.timeout(KAFKA_TIMEOUT_S):
                    offsets = await consumer.end_offsets(partitions)
                counts[topic] = sum(offsets.values())
            return dict(sorted(counts.items()))
        finally:
            await consumer.stop()
    finally:
        await admin.close()
