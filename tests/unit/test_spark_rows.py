"""The Spark engine's plumbing that needs no Spark: Arrow rows round-trip replay's records,
task summaries fold into exact counts, and the tracking plan pickles to the workers."""

from __future__ import annotations

import pickle

import msgspec
import pytest

from collector.replay.outputs import OutItem, jsonl_line, parquet_row
from collector.replay.sources import Item, Malformed, SourceRecord
from collector.replay.summary import MAX_LISTED, Summary
from collector.replay.transform import Upgrader
from collector.sinks.base import Record
from event_schemas import SchemaRegistry, load_registry
from tests.factories import track_played

pytest.importorskip("pyarrow")
from collector.spark import rows

RECORD = SourceRecord(
    topic="events.track_played",
    partition=2,
    offset=41,
    timestamp_ms=1_764_000_000_123,
    key=b"user-\xc3\xa9",
    headers=[("event", b"track_played"), ("version", b"1"), ("empty", b"")],
    value=b'{"event":"track_played","event_id":"e-1"}',
)


def test_source_rows_round_trip_records_and_broken_lines() -> None:
    broken = Malformed("events.x", 0, 7, "not a log line: truncated")
    keyless = SourceRecord("t", 0, 1, 5, None, [], b"")
    pairs: list[tuple[int, Item]] = [(0, RECORD), (1, broken), (3, keyless)]
    batch = rows.batch(rows.SOURCE, rows.source_columns(pairs))
    assert batch.schema == rows.SOURCE
    assert list(rows.items(batch)) == pairs


def test_out_rows_carry_the_record_and_both_outputs_columns() -> None:
    upgraded = Record("events.other", b"k", b'{"v":2}', [("version", b"2")], 99)
    item = OutItem(RECORD, upgraded)
    columns = rows.out_columns([(4, item)], rows.Needs(parquet=True, lines=True, record=True))
    batch = rows.batch(rows.OUT, columns)
    (row,) = batch.to_pylist()
    again = rows.out_item(row)
    # what a driver-side output needs: the source position and the record as written
    assert (again.source.topic, again.source.partition, again.source.offset) == (
        "events.track_played",
        2,
        41,
    )
    assert again.source.timestamp_ms == RECORD.timestamp_ms
    assert again.record == upgraded
    assert row["src_order"] == 4
    assert row["line"] == jsonl_line(item, with_metadata=True)
    assert (row["pq_key"], row["event"], row["version"], row["event_id"], row["pq_value"]) == (
        parquet_row(item)[4:]
    )
    plain = rows.batch(rows.OUT, rows.out_columns([(4, item)], rows.Needs(record=True)))
    assert plain.to_pylist()[0]["line"] is None  # the value itself is the line


def test_summaries_of_tasks_fold_into_exact_counts_and_capped_lists() -> None:
    total = Summary()
    for task in range(3):
        part = Summary(read=10, matched=7, deduplicated=task)
        for i in range(MAX_LISTED):
            part.fail(f"e{task}-{i}", "why")
            part.bad_record("t", task, i, "broken")
        encoded = rows.summary_batch(rows.OUT, task, part).to_pylist()[0]
        assert encoded["task"] == task
        assert encoded["value"] is None
        total.add(rows.decode_summary(encoded["summary"]))
    assert (total.read, total.matched, total.deduplicated) == (30, 21, 3)
    assert (total.failed, total.malformed) == (3 * MAX_LISTED, 3 * MAX_LISTED)
    assert len(total.failures) == MAX_LISTED
    assert total.failures[0] == ("e0-0", "why")
    assert len(total.malformed_at) == MAX_LISTED


def test_ddl_names_spark_types() -> None:
    assert rows.ddl(rows.SOURCE) == (
        "`order` int, `topic` string, `partition` int, `offset` bigint, `timestamp_ms` bigint, "
        f"`key` binary, `headers` {rows.HEADERS_DDL}, `value` binary, `malformed` string"
    )


def test_the_tracking_plan_pickles_as_its_documents_and_validates_the_same() -> None:
    registry = load_registry()
    copy: SchemaRegistry = pickle.loads(pickle.dumps(registry))  # noqa: S301 - our own bytes
    assert [(s.event, s.version, s.document) for s in copy] == [
        (s.event, s.version, s.document) for s in registry
    ]
    original = registry.get("track_played", 2)
    twin = copy.get("track_played", 2)
    assert original is not None
    assert twin is not None
    assert twin.decoder is not original.decoder  # compiled again from the document
    with pytest.raises(msgspec.ValidationError, match="position_ms"):
        twin.decode_properties(b'{"track_id": "t", "artist_id": "a", "position_ms": -1}')
    doc = track_played(version=1)
    upgrader: Upgrader = pickle.loads(pickle.dumps(Upgrader(registry)))  # noqa: S301
    assert upgrader.upgrade(doc) == Upgrader(registry).upgrade(doc)
    assert upgrader.upgrade(doc) is not None  # v1 -> v2 does happen
