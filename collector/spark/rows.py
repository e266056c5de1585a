"""Arrow batches <-> replay's records, for the Python stages the Spark engine runs in tasks.

Row shapes, each an Arrow schema (and its Spark DDL from `ddl`):
- SOURCE: a record as a source reads it (Kafka or a file log), or a broken log line;
- SELECTED: SOURCE plus the event_id dedup keys on (dedup then adds a `rank` column);
- OUT: what to write for a record (the source position, the record, Parquet text columns).
Every stage also yields one summary row per task (`summary` set, the rest null): the counts of
collector.replay.summary.Summary, msgpack-encoded. Nothing here decides what a record means.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa  # type: ignore[import-untyped]

from collector.replay.outputs import OutItem, jsonl_line, parquet_row
from collector.replay.sources import Item, Malformed, SourceRecord
from collector.replay.summary import Summary
from collector.sinks.base import Record

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
    names = [name for name, _ in _SOURCE_FIELDS if name != "headers"]
    columns = {name: batch.column(name).to_pylist() for name in names}
    header_lists = _header_lists(batch.column("headers"))
    for order, topic, partition, offset, ts, key, value, malformed, pairs in zip(
        *(columns[name] for name in names), header_lists, strict=True
    ):
        if malformed is not None:
            yield order, Malformed(topic, partition, offset, malformed)
            continue
        yield order, SourceRecord(topic, partition, offset, ts, key, pairs, value or b"")


def _header_lists(column: pa.Array) -> list[list[tuple[str, bytes]]]:
    """A list<struct<key, value>> column as Python lists of pairs, through its flat children
    (to_pylist on the nested column builds a dict per header: several times slower)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_pylist()
    flat = column.flatten()  # the structs of every row, one after another
    keys = flat.field("key").to_pylist()
    values = [v if v is not None else b"" for v in flat.field("value").to_pylist()]
    pairs = list(zip(keys, values, strict=True))
    return [pairs[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def _headers_array(lists: list[list[tuple[str, bytes]] | None]) -> pa.Array:
    """The inverse of _header_lists: flat children and offsets, no dict per header."""
    offsets = [0]
    keys: list[str] = []
    values: list[bytes] = []
    for pairs in lists:
        for k, v in pairs or ():
            keys.append(k)
            values.append(v)
        offsets.append(len(keys))
    structs = pa.StructArray.from_arrays(
        [pa.array(keys, pa.string()), pa.array(values, pa.binary())], names=["key", "value"]
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), structs)


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
        columns["headers"].append(item.headers)
        columns["value"].append(item.value)
        columns["malformed"].append(None)
    return columns


@dataclass(frozen=True, slots=True)
class Needs:
    """Which OUT columns an output reads, beyond the value and the source position."""

    parquet: bool = False  # Parquet's text columns (parquet_row)
    lines: bool = False  # JSON lines with metadata (jsonl_line)
    record: bool = False  # topic, key, headers and timestamp (a driver-side output)


def out_columns(rows: Iterable[tuple[int, OutItem]], needs: Needs) -> dict[str, list[Any]]:
    """OUT columns for (order, item) pairs; a column no output reads stays null."""
    pairs = list(rows)
    sources = [o.source for _, o in pairs]
    records = [o.record for _, o in pairs]
    columns: dict[str, list[Any]] = {
        "src_order": [order for order, _ in pairs],
        "src_topic": [s.topic for s in sources],
        "src_partition": [s.partition for s in sources],
        "src_offset": [s.offset for s in sources],
        "src_timestamp_ms": [s.timestamp_ms for s in sources],
        "value": [r.value for r in records],
    }
    if needs.record:
        columns["topic"] = [r.topic for r in records]
        columns["key"] = [r.key for r in records]
        columns["headers"] = [r.headers for r in records]
        columns["timestamp_ms"] = [r.timestamp_ms for r in records]
    if needs.parquet:
        table = [parquet_row(o) for _, o in pairs]
        for i, name in enumerate(("pq_key", "event", "version", "event_id", "pq_value"), 4):
            columns[name] = [row[i] for row in table]
    if needs.lines:
        columns["line"] = [jsonl_line(o, with_metadata=True) for _, o in pairs]
    return columns


def batch(schema: pa.Schema, columns: dict[str, list[Any]]) -> pa.RecordBatch:
    """A batch of `schema` from columns of Python values; `headers` holds lists of pairs."""
    size = len(next(iter(columns.values()))) if columns else 0
    arrays = []
    for field in schema:
        values = columns.get(field.name, [None] * size)
        if field.name == "headers":
            arrays.append(_headers_array(values))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


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
