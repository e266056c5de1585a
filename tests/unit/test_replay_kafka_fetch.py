"""Replay's own reading of fetched Kafka bytes (collector/replay/kafka_fetch.py) against the
reader aiokafka's consumer uses on the same bytes (its PartitionRecords, what `capture replay`
read through before): the same records, fields and next fetch offset, for every fetch offset
and stop. The batches are built by aiokafka's own batch builder, then given what a broker's
log can hold and a producer never writes: a base offset, a control (transaction marker) flag,
a last offset past the last record (compaction removed it), a compressed batch.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from collector.replay.errors import Unavailable
from collector.replay.kafka_fetch import _batches, _records
from collector.replay.sources import SourceRecord

TP = TopicPartition("t.fetch", 2)
CODEC_ZSTD = 4
CONTROL_FLAG = 0x20
# v2 batch layout: base offset (0), length (8), leader epoch (12), magic (16), CRC (17),
# attributes (21), last offset delta (23); the CRC covers the attributes onward
CRC_AT, ATTRIBUTES_AT, LAST_DELTA_AT = 17, 21, 23

Row = tuple[int, int, bytes | None, bytes, list[Any]]


def batch(
    base: int,
    deltas: list[int],
    *,
    control: bool = False,
    last_delta: int | None = None,
    codec: int = 0,
    value: bytes | None = b'{"n":1}',
) -> bytes:
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for i, delta in enumerate(deltas):
        builder.append(
            delta,
            timestamp=1_700_000_000_000 + base + delta,
            key=None if i % 3 == 0 else f"k{base + delta}".encode(),
            value=None if value is None else value + str(base + delta).encode(),
            headers=[("h", None)] if i % 2 else [("version", b"1"), ("h", b"x")],
        )
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    if control:
        (attributes,) = struct.unpack_from(">h", data, ATTRIBUTES_AT)
        struct.pack_into(">h", data, ATTRIBUTES_AT, attributes | CONTROL_FLAG)
    if last_delta is not None:
        struct.pack_into(">i", data, LAST_DELTA_AT, last_delta)
    struct.pack_into(">I", data, CRC_AT, calc_crc32c(bytes(data[ATTRIBUTES_AT:])))
    return bytes(data)


# (next offset, batch): offsets 0-4; a marker at 5; 6, 8, 11 left by compaction of 6-13;
# 14-19 compressed; a tombstone (no value) at 20; a marker at 21
LOG = [
    (5, batch(0, [0, 1, 2, 3, 4])),
    (6, batch(5, [0], control=True)),
    (14, batch(6, [0, 2, 5], last_delta=7)),
    (20, batch(14, list(range(6)), codec=CODEC_ZSTD)),
    (21, batch(20, [0], value=None)),
    (22, batch(21, [0], control=True)),
]
END = 22


def fetched(position: int) -> bytes:
    """What the broker answers a fetch from `position`: whole batches, from the one holding it."""
    return b"".join(data for after, data in LOG if after > position)


def consumer_read(data: bytes, position: int, stop: int) -> tuple[list[Row], int]:
    """What aiokafka's consumer made of the bytes (then cut at `stop`, as the replay did)."""
    reader = PartitionRecords(
        TP, MemoryRecords(data), [], position, None, None, True, READ_UNCOMMITTED
    )
    rows = [
        (r.offset, r.timestamp, r.key, r.value if r.value is not None else b"", list(r.headers))
        for r in reader
        if r.offset < stop
    ]
    return rows, reader.next_fetch_offset


def replay_read(data: bytes, position: int, stop: int, keeps: Any = None) -> tuple[list[Row], int]:
    batches, after = _batches(data, position)
    rows: list[Row] = []
    for item in _records(TP.topic, TP.partition, batches, position, stop, keeps):
        assert isinstance(item, SourceRecord)
        assert (item.topic, item.partition) == (TP.topic, TP.partition)
        rows.append((item.offset, item.timestamp_ms, item.key, item.value, list(item.headers)))
    return rows, after


@pytest.mark.parametrize("position", range(END + 1))
def test_reads_what_the_consumer_read(position: int) -> None:
    data = fetched(position)
    for stop in range(position + 1, END + 2):
        assert replay_read(data, position, stop) == consumer_read(data, position, stop)
    # what the cases rely on: markers, gaps and the tombstone are really there
    rows, after = consumer_read(fetched(0), 0, END)
    assert [row[0] for row in rows] == [0, 1, 2, 3, 4, 6, 8, 11, *range(14, 21)]
    assert after == END
    assert rows[-1][3] == b""


def test_selection_picks_by_offset_and_timestamp() -> None:
    def keeps(offset: int, timestamp_ms: int) -> bool:
        return offset % 2 == 0 and timestamp_ms != 1_700_000_000_000 + 16

    rows, after = replay_read(fetched(3), 3, END, keeps)
    assert [row[0] for row in rows] == [4, 6, 8, 14, 18, 20]
    assert after == END  # the position passes the records left out too


def test_a_batch_failing_its_crc_is_an_error() -> None:
    good = batch(0, [0, 1])
    broken = good[:-3] + bytes([good[-3] ^ 0xFF]) + good[-2:]
    batches, _ = _batches(broken, 0)
    with pytest.raises(Unavailable, match="CRC"):
        _records(TP.topic, TP.partition, batches, 0, 10, None)


def test_a_torn_last_batch_is_left_for_the_next_fetch() -> None:
    data = batch(0, [0, 1]) + batch(2, [0, 1])[:-5]  # the broker cut the fetch mid-batch
    rows, after = replay_read(data, 0, 10)
    assert [row[0] for row in rows] == [0, 1]
    assert after == 2
    assert replay_read(b"", 7, 10) == ([], 7)  # nothing fetched: the position stays
