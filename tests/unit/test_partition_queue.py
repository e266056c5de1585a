"""PartitionQueue (collector/sinks/kafka_batches.py) fills aiokafka's real batch builders
through their C append and counts the records itself: the count aiokafka reads for the
batch's sequence numbers, the built bytes, the roll-over to a new batch and the bound on
pending batches are checked here against a producer twin that holds each send until told."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from collector.sinks.base import Outcome, Record
from collector.sinks.kafka import KafkaSink
from collector.sinks.kafka_batches import PartitionQueue, partition_index


class HeldProducer:
    """aiokafka's producer as far as the queue uses it; each send waits for `release()`."""

    def __init__(self, batch_bytes: int = 16_384) -> None:
        self.batch_bytes = batch_bytes
        self.sent: list[Any] = []  # the builders, in send order
        self._gate = asyncio.Event()

    def create_batch(self) -> Any:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        self.sent.append(builder)
        await self._gate.wait()
        self._gate.clear()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def release(self) -> None:
        self._gate.set()


def record(i: int, value_bytes: int = 10) -> Record:
    return Record("t", b"k%d" % i, b"%d:" % i + b"v" * value_bytes, [("n", b"%d" % i)], 1000 + i)


def read(builder: Any) -> list[tuple[int, bytes | None, bytes | None, list[Any]]]:
    batch = DefaultRecordBatch(builder._build())
    return [(r.offset, r.key, r.value, list(r.headers)) for r in batch]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_records_sent_while_a_batch_is_in_flight_share_the_next_batch() -> None:
    producer = HeldProducer()
    queue = PartitionQueue(producer, "t", 0, max_pending_batches=4)
    first = queue.append(record(0))
    await settle()  # the sender took batch 1 and waits for its answer
    later = [queue.append(record(i)) for i in range(1, 6)]
    assert all(f is later[0] for f in later)
    assert later[0] is not first
    producer.release()
    assert await first is Outcome.OK  # type: ignore[misc]
    await settle()
    producer.release()
    assert await later[0] is Outcome.OK  # type: ignore[misc]
    assert [b.record_count() for b in producer.sent] == [1, 5]  # what aiokafka's sequence uses
    assert [r[0] for r in read(producer.sent[1])] == [0, 1, 2, 3, 4]  # offsets within the batch
    got = [(k, v, h) for _, k, v, h in read(producer.sent[1])]
    want = [(r.key, r.value, r.headers) for r in map(record, range(1, 6))]
    assert got == [(k, v, [(n, x) for n, x in h]) for k, v, h in want]


async def test_a_full_batch_rolls_over_and_pending_batches_are_bounded() -> None:
    producer = HeldProducer(batch_bytes=300)
    queue = PartitionQueue(producer, "t", 0, max_pending_batches=2)
    placed = [queue.append(record(i, value_bytes=100)) for i in range(12)]
    futures = [p for p in placed if not isinstance(p, Outcome)]
    refused = [p for p in placed if isinstance(p, Outcome)]
    assert refused
    assert set(refused) == {Outcome.RETRIABLE}
    assert placed.index(refused[0]) == len(futures)  # every accepted record came first
    batches = list(dict.fromkeys(futures))  # distinct futures, in order
    assert len(batches) == 2
    for _ in batches:
        await settle()
        producer.release()
    assert await asyncio.gather(*batches) == [Outcome.OK, Outcome.OK]
    counts = [b.record_count() for b in producer.sent]
    assert sum(counts) == len(futures)
    assert all(c > 0 for c in counts)
    assert [len(read(b)) for b in producer.sent] == counts


async def test_fail_all_answers_the_open_batch_too() -> None:
    producer = HeldProducer()
    queue = PartitionQueue(producer, "t", 0, max_pending_batches=4)
    first = queue.append(record(0))
    await settle()
    open_batch = queue.append(record(1))
    queue.fail_all(Outcome.RETRIABLE)
    assert not isinstance(open_batch, Outcome)
    assert open_batch.done()
    assert open_batch.result() is Outcome.RETRIABLE
    producer.release()
    assert await first is Outcome.OK  # type: ignore[misc]


class InstantProducer(HeldProducer):
    """Answers every batch at once and remembers which partition it went to."""

    def __init__(self) -> None:
        super().__init__()
        self.partitions: list[int] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3, 4}

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        self.partitions.append(partition)
        self.release()
        return await super().send_batch(builder, topic, partition=partition)


async def test_publish_places_each_key_where_the_java_partitioner_does() -> None:
    """KafkaSink.publish places records by partition_index: the same partition for every
    key, keyless records spread over the partitions, and every outcome OK."""
    sink = KafkaSink("127.0.0.1:1")
    producer = InstantProducer()
    sink._producer = producer  # the twin: publish never touches a network
    keys = [b"user-%d" % i for i in range(40)] + [None] * 40
    records = [Record("t", k, b"v", [], 0) for k in keys]
    assert await sink.publish(records, timeout_s=5) == [Outcome.OK] * len(records)
    assert await sink.publish(records, timeout_s=5) == [Outcome.OK] * len(records)  # cached
    placed: dict[bytes | None, set[int]] = {}
    for partition, builder in zip(producer.partitions, producer.sent, strict=True):
        for _, key, _, _ in read(builder):
            placed.setdefault(key, set()).add(partition)
    for key in keys[:40]:
        assert placed[key] == {partition_index(key, 5)}
    assert len(placed[None]) > 1  # keyless: a random partition each
