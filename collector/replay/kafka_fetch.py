"""Replay's reading of one Kafka partition: fetch requests of its own, sent through aiokafka's
client, and each fetched record batch read by aiokafka's C batch reader straight into
SourceRecords.

aiokafka's consumer builds a ConsumerRecord per record in Python and hands records over
through its background fetcher; a replay needs neither (one partition at a time, up to an
offset known up front), and that machinery cost more than reading the batches themselves.
The consumer still finds the partitions, their leaders and their offsets (sources.py).
What the consumer did per batch is kept: a batch failing its CRC is an error, control
batches (transaction markers) are skipped but move the position, records before the fetch
offset (the start of a batch the broker returns whole) are skipped, and the next fetch starts
after the batch's last offset even if compaction removed its last records. Records of
aborted transactions are read, as the consumer's default isolation (read uncommitted) does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiokafka.errors as errors
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from collector.replay.errors import Unavailable
from collector.replay.sources import Item, SourceRecord

# How long the broker may hold a fetch of a partition with nothing new (as the consumer's poll).
FETCH_WAIT_MS = 200
# Bytes of one partition per fetch (the consumer's default); the broker returns at least
# one whole batch even when a batch is larger.
PARTITION_FETCH_BYTES = 1 << 20
# Pause before fetching again after a failed fetch or a leader change.
RETRY_BACKOFF_S = 0.1
READ_UNCOMMITTED = 0

Keeps = Callable[[int, int], bool]


async def read_partition(
    consumer: Any,
    tp: Any,
    start: int,
    stop: int,
    *,
    keeps: Keeps | None,
    stall_s: float,
    batch_records: int,
) -> AsyncIterator[list[Item]]:
    """The records of `tp` in [start, stop) in order, in lists of at most `batch_records`
    (`keeps(offset, timestamp_ms)` picks, None: all). The fetch of the next range is sent
    before a fetched one is read, so the broker works while this process does. Raises
    Unavailable when nothing came for `stall_s` (a slow reader of the lists is no stall)."""
    position = start
    last_progress = time.monotonic()
    ahead: asyncio.Task[bytes] | None = None
    try:
        while position < stop:
            try:
                if ahead is not None:
                    data, ahead = await ahead, None
                else:
                    data = await _fetch(consumer, tp, position, stall_s)
            except _OutOfRange:
                position = await _earliest(consumer, tp, position, stall_s)
                continue
            batches, after = _batches(data, position)
            if position < after < stop:
                ahead = asyncio.create_task(_fetch(consumer, tp, after, stall_s))
            if after == position:
                if time.monotonic() - last_progress > stall_s:
                    raise Unavailable("broker unavailable (no records within the request timeout)")
                if data:  # bytes but no whole batch: do not ask again at once
                    await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            records = _records(tp.topic, tp.partition, batches, position, stop, keeps)
            position = after
            for at in range(0, len(records), batch_records):
                yield records[at : at + batch_records]
            # stamped once the records are taken: a slow output (a paused pipe) is no stall
            last_progress = time.monotonic()
    finally:
        if ahead is not None:
            ahead.cancel()
            if ahead.done() and not ahead.cancelled():
                ahead.exception()  # retrieved: a failed fetch nobody waits for is no error


class _OutOfRange(Exception):
    """The broker has no record at the fetch offset."""


async def _fetch(consumer: Any, tp: Any, position: int, stall_s: float) -> bytes:
    """The record bytes the partition's leader returns from `position`; b"" when none came
    (nothing yet, a leader change, a failed request: after a pause, the caller asks again)."""
    client = consumer._client
    node = client.cluster.leader_for_partition(tp)
    if node is None or node == -1:
        client.force_metadata_update()
        await asyncio.sleep(RETRY_BACKOFF_S)
        return b""
    request = FetchRequest(
        FETCH_WAIT_MS,
        1,
        PARTITION_FETCH_BYTES,
        READ_UNCOMMITTED,
        [(tp.topic, [(tp.partition, position, PARTITION_FETCH_BYTES)])],
    )
    try:
        async with asyncio.timeout(stall_s):
            response = await client.send(node, request)
    except (errors.KafkaError, OSError, TimeoutError):
        client.force_metadata_update()  # the leader may have moved (or be gone)
        await asyncio.sleep(RETRY_BACKOFF_S)
        return b""
    for topic, partitions in response.topics:
        for partition, code, _highwater, *rest in partitions:
            if topic != tp.topic or partition != tp.partition:
                continue
            error = errors.for_code(code)
            if error is errors.NoError:
                data: bytes | None = rest[-1]
                return data or b""
            if error is errors.OffsetOutOfRangeError:
                raise _OutOfRange
            if getattr(error, "retriable", False) or getattr(error, "invalid_metadata", False):
                client.force_metadata_update()
                await asyncio.sleep(RETRY_BACKOFF_S)
                return b""
            raise Unavailable(f"cannot read {topic}[{partition}]: {error.__name__}")
    return b""


async def _earliest(consumer: Any, tp: Any, position: int, stall_s: float) -> int:
    """Where to go on when `position` is out of range: records before it were deleted
    (retention) while the replay ran, and, as the consumer reset to the earliest offset, the
    read goes on from the partition's first record. Any other case is an error."""
    try:
        async with asyncio.timeout(stall_s):
            earliest: int = (await consumer.beginning_offsets([tp]))[tp]
    except (errors.KafkaError, TimeoutError) as exc:
        raise Unavailable(f"broker unavailable: {exc!r}") from exc
    if earliest <= position:
        raise Unavailable(f"offset {position} of {tp.topic}[{tp.partition}] is out of range")
    return earliest


def _batches(data: bytes, position: int) -> tuple[list[Any], int]:
    """The record batches of fetched bytes (headers only read) and the offset after them."""
    batches = []
    records = MemoryRecords(data)
    after = position
    while records.has_next():
        batch = records.next_batch()
        if batch is None:
            break
        batches.append(batch)
        after = max(after, batch.next_offset)
    return batches, after


def _records(
    topic: str,
    partition: int,
    batches: list[Any],
    position: int,
    stop: int,
    keeps: Keeps | None,
) -> list[Item]:
    records: list[Item] = []
    append = records.append
    for batch in batches:
        if not batch.validate_crc():
            raise Unavailable(f"corrupt record batch in {topic}[{partition}] (CRC mismatch)")
        if batch.is_control_batch:
            continue
        for r in batch:
            offset = r.offset
            if offset < position:
                continue  # before the fetch offset, in a batch the broker returned whole
            if offset >= stop:
                return records
            timestamp = r.timestamp
            if keeps is not None and not keeps(offset, timestamp):
                continue
            value = r.value
            append(
                SourceRecord(
                    topic,
                    partition,
                    offset,
                    timestamp,
                    r.key,
                    r.headers,
                    value if value is not None else b"",
                )
            )
    return records
