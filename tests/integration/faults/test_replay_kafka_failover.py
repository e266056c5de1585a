"""The Kafka replay source when its partition's leader is killed mid-read, on a three-broker
cluster (replication factor 3): the fetches fail until the controller fences the dead broker
and moves the leadership, then the replay follows the new leader and reads every record once,
in order, as aiokafka's consumer did. Nothing here is timed; the replay's own request timeout
bounds each step. It runs on the fault tier's session cluster, which restarts the broker after.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from collector.replay.sources import KafkaSource, Selection, SourceRecord
from devtools.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.kafka

RECORDS = 6_000
PADDING_BYTES = 1_024  # ~6 MB: many fetches, so the leader stops with most still unread
# longer than the controller takes to fence a dead broker (its session timeout, 9 s)
REQUEST_TIMEOUT_MS = 30_000


async def test_follows_the_new_leader_after_a_kill(cluster: KafkaCluster) -> None:
    topic = "failover.replay"
    await cluster.create_topics([topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send(topic, b'{"n":%d,"pad":"%s"}' % (i, b"x" * PADDING_BYTES))
        await producer.flush()
    finally:
        await producer.stop()

    source = KafkaSource(
        cluster.bootstrap_servers, [topic], Selection(), request_timeout_ms=REQUEST_TIMEOUT_MS
    )
    offsets: list[int] = []
    stopped = None
    try:
        await source.open()
        async for batch in source.batches():
            for item in batch:
                assert isinstance(item, SourceRecord)
                offsets.append(item.offset)
                assert item.value.startswith(b'{"n":%d,' % item.offset)
            if stopped is None:  # the first records are in: kill the leader under the read
                leader = source._consumer._client.cluster.leader_for_partition(
                    next(iter(source._stops))
                )
                stopped = cluster.node(leader)
                await asyncio.to_thread(stopped.kill)
    finally:
        await source.close()

    assert stopped is not None
    assert offsets == list(range(RECORDS))
