"""Replay's fast paths (issue #17) give what the shared per-record steps give.

- runner._values (JSON lines without metadata) against runner._step, record for record: the
  same lines in the same order and the same counts, over a batch that holds every kind of
  record (broken, undecodable, not an object, dead letter, duplicate, old version, unknown
  event, no event_id) with and without a filter, dedup and upgrade;
- sources.read_log, reading the log a chunk at a time, against the log's lines one by one:
  lines cut across chunks, blank and broken lines (line-number offsets), a torn last line,
  `end_bytes` and a time window;
- Upgrader.is_newest against Upgrader.upgrade; run_replay leaves the collector's GC alone.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.replay import runner, sources
from collector.replay.outputs import JsonlOutput
from collector.replay.runner import Plan, run_replay
from collector.replay.select import Filter
from collector.replay.sources import FileLogSource, Item, Malformed, Selection, SourceRecord
from collector.replay.summary import Summary
from collector.replay.transform import Deduper, UpgradeFailed, Upgrader
from collector.sinks.file import LogLine
from event_schemas import load_registry
from tests.factories import track_played

DEAD_LETTERS = "events._invalid"


def _record(offset: int, value: bytes, topic: str = "events.track_played") -> SourceRecord:
    headers = [("event", b"track_played"), ("version", b"1")]
    return SourceRecord(topic, 0, offset, 1_000 + offset, b"k", headers, value)


def _mixed_batch() -> list[Item]:
    first = track_played(version=1)
    newest = track_played(version=2, properties={"track_id": "t", "artist_id": "a"})
    letter = {
        "reason": "invalid",
        "errors": [],
        "received_at": "2026-11-26T12:00:00Z",
        "index": 0,
        "event": first,
    }
    values: list[bytes] = [
        json.dumps(first).encode(),
        json.dumps(newest).encode(),
        json.dumps(first).encode(),  # a duplicate of the first
        b"[1, 2]",  # JSON, not an object
        b'{"event": "track_played", ',  # not JSON
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": 1e400}',  # a number out of range
        json.dumps(track_played(event="no_such_event")).encode(),  # upgrade fails
        json.dumps({**first, "event_id": 7}).encode(),  # never deduplicates
        json.dumps(track_played(version=1, user_id="someone")).encode(),
        b"{}",
    ]
    batch: list[Item] = [_record(i, v) for i, v in enumerate(values)]
    batch.insert(3, Malformed("events.track_played", 0, 99, "not a log line: truncated"))
    batch.append(_record(50, json.dumps(letter).encode(), topic=DEAD_LETTERS))
    batch.append(_record(51, b"not a dead letter", topic=DEAD_LETTERS))
    return batch


PLANS: dict[str, dict[str, Any]] = {
    "plain": {},
    "dedup": {"dedup": True},
    "upgrade": {"upgrade": True},
    "dedup_upgrade": {"dedup": True, "upgrade": True},
    "filtered": {"dedup": True, "upgrade": True, "users": frozenset({"someone"})},
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_values_path_writes_what_the_shared_steps_write(name: str) -> None:
    options = PLANS[name]
    schemas = load_registry()

    def plan() -> Plan:
        return Plan(
            filter=Filter(user_ids=options.get("users", frozenset())),
            dead_letter_topic=DEAD_LETTERS,
            dedup=bool(options.get("dedup")),
            upgrader=Upgrader(schemas) if options.get("upgrade") else None,
            schemas=schemas,
        )

    batch = _mixed_batch()
    expected_summary, got_summary = Summary(), Summary()
    first_plan = plan()
    first_dedup = Deduper() if first_plan.dedup else None
    expected = [
        o.record.value
        for item in batch
        for o in runner._step(item, first_plan, expected_summary, first_dedup) or ()
    ]
    second_plan = plan()
    second_dedup = Deduper() if second_plan.dedup else None
    got = runner._values(batch, second_plan, got_summary, second_dedup)
    assert got == expected
    assert got_summary == expected_summary
    # the batch exercises what it should: every kind of record is met in every plan
    assert expected_summary.malformed == 6  # the broken line, 4 bad values, not a dead letter
    if options.get("upgrade") and not options.get("users"):
        assert expected_summary.upgraded >= 2
        assert expected_summary.failed == 2  # an unknown event, and no event at all
    if options.get("dedup") and not options.get("users"):
        assert expected_summary.deduplicated == 2  # the copy, and the dead letter of it


def test_upgrader_is_newest_agrees_with_upgrade() -> None:
    schemas = load_registry()
    upgrader = Upgrader(schemas)
    cases: list[Any] = [
        track_played(version=1),
        track_played(version=2, properties={"track_id": "t", "artist_id": "a"}),
        track_played(version=99),
        track_played(version=True),
        track_played(version="2"),
        track_played(event="no_such_event"),
        {"version": 2},
    ]
    for doc in cases:
        try:
            none = upgrader.upgrade(doc) is None
        except UpgradeFailed:
            none = False
        assert upgrader.is_newest(doc.get("event"), doc.get("version")) is none, doc


def _log_line(offset: int) -> bytes:
    value = track_played(user_id=f"user-{offset}")
    line = {
        "offset": offset,
        "timestamp_ms": 1_000 + offset,
        "key": f"user-{offset}",
        "headers": [["event", "track_played"], ["version", "1"]],
        "value": value,
    }
    return msgspec.json.encode(line) + b"\n"


def _expected(lines: list[bytes], selection: Selection) -> list[Item]:
    """The log's reading rule, a line at a time (as replay read it before issue #17)."""
    decoder = msgspec.json.Decoder(LogLine)
    found: list[Item] = []
    for number, line in enumerate(lines):
        try:
            entry = decoder.decode(line)
        except msgspec.DecodeError as exc:
            found.append(Malformed("t", 0, number, f"not a log line: {exc}"))
            continue
        if not selection.keeps(entry.offset, entry.timestamp_ms):
            continue
        key = entry.key.encode() if entry.key is not None else None
        headers = [(k, v.encode()) for k, v in entry.headers]
        record = SourceRecord("t", 0, entry.offset, entry.timestamp_ms, key, headers, b"")
        found.append(msgspec.structs.replace(record, value=bytes(entry.value)))
    return found


@pytest.mark.parametrize("chunk", [1, 97, 1 << 20])
@pytest.mark.parametrize("window", [False, True])
def test_read_log_in_chunks_reads_what_line_by_line_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, window: bool
) -> None:
    monkeypatch.setattr(sources, "READ_CHUNK_BYTES", chunk)
    monkeypatch.setattr(sources, "BATCH_RECORDS", 7)
    lines = [_log_line(i) for i in range(30)]
    lines[4] = b"\n"  # blank
    lines[11] = b'{"offset": 11, "timestamp_ms"\n'  # broken
    torn = _log_line(30)[:-9]  # the collector was still writing it
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(lines) + torn + b"\n" + _log_line(31))
    end = sum(map(len, lines)) + len(torn)  # where the snapshot ends: inside a line
    selection = Selection(since_ms=1_005, to_offset=25) if window else Selection()
    batches = list(sources.read_log("t", path, end, selection))
    assert all(len(batch) <= 7 for batch in batches)
    got = [item for batch in batches for item in batch]
    assert got == _expected(lines, selection)
    assert sum(isinstance(item, Malformed) for item in got) == 2


def test_run_replay_restores_gc_thresholds(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_bytes(b"".join(_log_line(i) for i in range(5)))
    out = tmp_path / "out.jsonl"
    before = gc.get_threshold()
    source = FileLogSource(tmp_path, ["t"], Selection())
    summary = asyncio.run(run_replay(source, JsonlOutput(out), Plan(), progress_to=io.StringIO()))
    assert summary.written == 5
    assert len(out.read_bytes().splitlines()) == 5
    assert gc.get_threshold() == before
