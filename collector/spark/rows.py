"""Arrow batches <-> replay's records, for the Python stages the Spark engine runs in tasks.

Three row shapes, each an Arrow schema and the same Spark DDL:
- SOURCE: a record as a source reads it (Kafka or a file log), or a broken log line;
- SELECTED: SOURCE plus the event_id dedup keys on and the rank dedup gave it;
- OUT: what to write for a record (the source position, the record, Parquet text columns).
Every stage also yields one summary row per task (`summary` set, the rest null): the counts of
collector.replay.summary.Summary, msgpack-encoded. Nothing here decides what a record means.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import pyarrow as pa  # type: ignore[import-untyped]

from collector.replay.outputs import OutItem, jsonl_line, parquet_row
from collector.replay.sources import Item, Malformed, SourceRecord
from collector.replay.summary import Summary

_HEADERS = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
_SOURCE_FIELDS = [
    ("order", pa.int32()),  # the topic's place in the replay's list: dedup's first key
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("timestamp_ms", pa.int64()),
    ("key", pa.binary()),
    ("headers", _HEADERS),
    ("value", pa.binary()),
    ("malformed", pa.string()),  # why a log line did not parse; null for a record
]
_SUMMARY_FIELDS = [("task", pa.int32()), ("summary", pa.binary())]
SOURCE = pa.schema(_SOURCE_FIELDS)
SELECTED = pa.schema([*_SOURCE_FIELDS, ("event_id", pa.string()), *_SUMMARY_FIELDS])
RANKED = pa.schema([*_SOURCE_FIELDS, ("rank", pa.int32())])
OUT = pa.schema(
    [
        ("src_order", pa.int32()),
        ("src_topic", pa.string()),
        ("src_partition", pa.int32()),
        ("src_offset", pa.int64()),
        ("src_timestamp_ms", pa.int64()),
        ("topic", pa.string()),
        ("key", pa.binary()),
        ("headers", _HEADERS),
        ("value", pa.binary()),
        ("timestamp_ms", pa.int64()),
        # Parquet's columns as ParquetOutput writes them (parquet_row)
        ("pq_key", pa.string()),
        ("event", pa.string()),
        ("version", pa.int32()),
        ("event_id", pa.string()),
        ("pq_value", pa.string()),
        ("line", pa.binary()),  # the JSON-lines line, when it is not the value itself
        *_SUMMARY_FIELDS,
    ]
)

HEADERS_DDL = "array<struct<`key`: string, `value`: binary>>"

_summary_encoder = msgspec.msgpack.Encoder()
_summary_decoder = msgspec.msgpack.Decoder(Summary)


def ddl(schema: pa.Schema) -> str:
    """The Spark DDL of an Arrow schema built from the types above."""
    return ", ".join(f"`{f.name}` {_spark_type(f.type)}" for f in schema)


def _spark_type(kind: pa.DataType) -> str:
    if pa.types.is_list(kind):
        return f"array<{_spark_type(kind.value_type)}>"
    if pa.types.is_struct(kind):
        fields = ", ".join(f"`{f.name}`: {_spark_type(f.type)}" for f in kind)
        return f"struct<{fields}>"
    names = {pa.int32(): "int", pa.int64(): "bigint", pa.string(): "string"}
    return names.get(kind, "binary")


def items(batch: pa.RecordBatch) -> Iterator[tuple[int, Item]]:
    """(order, record or broken line) for each SOURCE row of a batch."""
    columns = batch.to_pydict()
    for order, topic, partition, offset, ts, key, headers, value, malformed in zip(
        *(columns[name] for name, _ in _SOURCE_FIELDS), strict=True
    ):
        if malformed is not None:
            yield order, Malformed(topic, partition, offset, malformed)
            continue
        pairs = [(h["key"], h["value"] or b"") for h in headers] if headers else []
        yield order, SourceRecord(topic, partition, offset, ts, key, pairs, value or b"")


def source_columns(rows: Iterable[tuple[int, Item]]) -> dict[str, list[Any]]:
    """SOURCE columns for (order, item) pairs; the inverse of `items`."""
    columns: dict[str, list[Any]] = {name: [] for name, _ in _SOURCE_FIELDS}
    for order, item in rows:
        columns["order"].append(order)
        columns["topic"].append(item.topic)
        columns["partition"].append(item.partition)
        columns["offset"].append(item.offset)
        if isinstance(item, Malformed):
            for name in ("timestamp_ms", "key", "headers", "value"):
                columns[name].append(None)
            columns["malformed"].append(item.reason)
            continue
        columns["timestamp_ms"].append(item.timestamp_ms)
        columns["key"].append(item.key)
        columns["headers"].append([{"key": k, "value": v} for k, v in item.headers])
        columns["value"].append(item.value)
        columns["malformed"].append(None)
    return columns


def out_columns(
    rows: Iterable[tuple[int, OutItem]], *, parquet: bool, lines: bool
) -> dict[str, list[Any]]:
    """OUT columns for (order, item) pairs; Parquet text and metadata lines only when asked."""
    columns: dict[str, list[Any]] = {f.name: [] for f in OUT}
    for order, out in rows:
        source, record = out.source, out.record
        columns["src_order"].append(order)
        columns["src_topic"].append(source.topic)
        columns["src_partition"].append(source.partition)
        columns["src_offset"].append(source.offset)
        columns["src_timestamp_ms"].append(source.timestamp_ms)
        columns["topic"].append(record.topic)
        columns["key"].append(record.key)
        columns["headers"].append([{"key": k, "value": v} for k, v in record.headers])
        columns["value"].append(record.value)
        columns["timestamp_ms"].append(record.timestamp_ms)
        row = parquet_row(out) if parquet else None
        columns["pq_key"].append(row[4] if row else None)
        columns["event"].append(row[5] if row else None)
        columns["version"].append(row[6] if row else None)
        columns["event_id"].append(row[7] if row else None)
        columns["pq_value"].append(row[8] if row else None)
        columns["line"].append(jsonl_line(out, with_metadata=True) if lines else None)
        columns["task"].append(None)
        columns["summary"].append(None)
    return columns


def batch(schema: pa.Schema, columns: dict[str, list[Any]]) -> pa.RecordBatch:
    size = len(next(iter(columns.values()))) if columns else 0
    for name in schema.names:
        columns.setdefault(name, [None] * size)
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def summary_batch(schema: pa.Schema, task: int, summary: Summary) -> pa.RecordBatch:
    """The one row carrying a task's counts; every other column null."""
    columns: dict[str, list[Any]] = {name: [None] for name in schema.names}
    columns["task"] = [task]
    columns["summary"] = [_summary_encoder.encode(summary)]
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def decode_summary(raw: bytes) -> Summary:
    return _summary_decoder.decode(raw)


def out_item(row: Any) -> OutItem:
    """An OutItem again from an OUT row collected on the driver (for a driver-side output)."""
    from collector.sinks.base import Record

    headers = [(h["key"], h["value"] or b"") for h in row["headers"] or []]
    value = bytes(row["value"] or b"")
    key = bytes(row["key"]) if row["key"] is not None else None
    source = SourceRecord(
        row["src_topic"],
        row["src_partition"],
        row["src_offset"],
        row["src_timestamp_ms"],
        key,
        headers,
        value,
    )
    return OutItem(source, Record(row["topic"], key, value, headers, row["timestamp_ms"]))
