"""The Kafka replay source's own fetches against the real broker, beside aiokafka's consumer
on the same partition: the same records in the same order, over several fetches (each read
while the next is under way), from and to an offset inside a batch, with the markers of a
committed and an aborted transaction in the partition (and one as its very last offset).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from collector.replay import kafka_fetch
from collector.replay.sources import KafkaSource, Selection, SourceRecord
from devtools.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

PLAIN_RECORDS = 3_000
PADDING_BYTES = 1_024  # ~3 MB in all: several fetches of PARTITION_FETCH_BYTES each
Row = tuple[int, int, bytes | None, bytes, list[Any]]


async def fill(servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    plain = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=20)
    await plain.start()
    try:
        for i in range(PLAIN_RECORDS):
            value = b'{"n":%d,"pad":"%s"}' % (i, b"x" * PADDING_BYTES)
            await plain.send(topic, value, key=b"k%d" % i, headers=[("i", b"%d" % i)])
        await plain.flush()
    finally:
        await plain.stop()
    transactional = AIOKafkaProducer(
        bootstrap_servers=servers, transactional_id=f"t-{uuid.uuid4().hex}"
    )
    await transactional.start()
    try:
        for commit, count in ((True, 5), (False, 3), (True, 4)):
            await transactional.begin_transaction()
            for i in range(count):
                await transactional.send(topic, b'{"txn":%d}' % i)
            if commit:
                await transactional.commit_transaction()
            else:
                await transactional.abort_transaction()
    finally:
        await transactional.stop()


async def consumer_rows(servers: str, tp: TopicPartition, start: int, stop: int) -> list[Row]:
    """The partition as aiokafka's consumer reads it (read uncommitted, as the replay)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await consumer.start()
    rows: list[Row] = []
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < stop:
            fetched = await consumer.getmany(tp, timeout_ms=1_000)
            rows += [
                (r.offset, r.timestamp, r.key, r.value or b"", list(r.headers))
                for r in fetched.get(tp, ())
                if r.offset < stop
            ]
    finally:
        await consumer.stop()
    return rows


async def replay_rows(servers: str, topic: str, selection: Selection) -> list[Row]:
    source = KafkaSource(servers, [topic], selection)
    rows: list[Row] = []
    try:
        await source.open()
        async for batch in source.batches():
            for item in batch:
                assert isinstance(item, SourceRecord)
                rows.append(
                    (item.offset, item.timestamp_ms, item.key, item.value, list(item.headers))
                )
    finally:
        await source.close()
    return rows


async def test_reads_what_the_consumer_reads(kafka_broker: KafkaBroker) -> None:
    servers = kafka_broker.bootstrap_servers
    topic = f"kf{uuid.uuid4().hex[:8]}.fetch"
    await fill(servers, topic)
    tp = TopicPartition(topic, 0)
    probe = AIOKafkaConsumer(bootstrap_servers=servers, group_id=None)
    await probe.start()
    try:
        end = (await probe.end_offsets([tp]))[tp]
    finally:
        await probe.stop()
    # 3,000 records, 12 transactional ones and 3 markers (the last offset is a commit's)
    assert end == PLAIN_RECORDS + 12 + 3

    everything = await replay_rows(servers, topic, Selection())
    assert everything == await consumer_rows(servers, tp, 0, end)
    assert len(everything) == PLAIN_RECORDS + 12  # the aborted ones too, as read uncommitted
    assert sum(len(row[3]) for row in everything) > 2 * kafka_fetch.PARTITION_FETCH_BYTES

    middle = Selection(from_offset=1_234, to_offset=PLAIN_RECORDS + 7)
    part = await replay_rows(servers, topic, middle)
    assert part == await consumer_rows(servers, tp, 1_234, PLAIN_RECORDS + 7)
    assert part[0][0] == 1_234
