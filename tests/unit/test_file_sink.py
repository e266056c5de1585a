"""The file sink: fsynced JSON lines per topic, offsets, torn-line recovery, group commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import pytest

from collector.sinks.base import Outcome, Record
from collector.sinks.file import FileSink, LogLine, topic_path


def record(topic: str, n: int) -> Record:
    return Record(
        topic=topic,
        key=f"user-{n}".encode(),
        value=msgspec.json.encode({"n": n}),
        headers=[("event", b"e"), ("event_id", str(n).encode())],
        timestamp_ms=1_700_000_000_000 + n,
    )


def read_log(data_dir: Path, topic: str) -> list[LogLine]:
    lines = topic_path(data_dir, topic).read_bytes().splitlines()
    return [msgspec.json.decode(line, type=LogLine) for line in lines]


async def test_publish_writes_one_line_per_record(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    try:
        outcomes = await sink.publish(
            [record("events.a", 0), record("events.b", 1), record("events.a", 2)], timeout_s=5
        )
        assert outcomes == [Outcome.OK] * 3
    finally:
        await sink.stop()
    lines = read_log(tmp_path, "events.a")
    assert [line.offset for line in lines] == [0, 1]
    assert [msgspec.json.decode(line.value) for line in lines] == [{"n": 0}, {"n": 2}]
    assert lines[0].key == "user-0"
    assert lines[0].headers == [("event", "e"), ("event_id", "0")]
    assert lines[0].timestamp_ms == 1_700_000_000_000
    assert len(read_log(tmp_path, "events.b")) == 1


async def test_publish_fsyncs_before_acknowledging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    sink = FileSink(tmp_path)
    await sink.start()
    try:
        await sink.publish([record("events.a", 0)], timeout_s=5)
        assert synced, "acknowledged without an fsync"
    finally:
        await sink.stop()


async def test_offsets_continue_after_restart_and_torn_line_is_dropped(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    await sink.publish([record("events.a", 0), record("events.a", 1)], timeout_s=5)
    await sink.stop()
    # a crash mid-write leaves a partial line that was never acknowledged
    with topic_path(tmp_path, "events.a").open("ab") as f:
        f.write(b'{"offset":2,"timest')
    sink = FileSink(tmp_path)
    await sink.start()
    await sink.publish([record("events.a", 2)], timeout_s=5)
    await sink.stop()
    lines = read_log(tmp_path, "events.a")
    assert [line.offset for line in lines] == [0, 1, 2]
    assert msgspec.json.decode(lines[2].value) == {"n": 2}


async def test_concurrent_requests_share_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    try:
        results = await asyncio.gather(
            *(sink.publish([record("events.a", i)], timeout_s=5) for i in range(50))
        )
    finally:
        await sink.stop()
    assert all(r == [Outcome.OK] for r in results)
    assert len(read_log(tmp_path, "events.a")) == 50
    assert fsyncs < 50  # grouped: far fewer fsyncs than requests


async def test_bad_topic_name_is_fatal_and_others_still_land(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    try:
        outcomes = await sink.publish([record("../escape", 0), record("events.a", 1)], timeout_s=5)
    finally:
        await sink.stop()
    assert outcomes == [Outcome.FATAL, Outcome.OK]
    assert not (tmp_path.parent / "escape.jsonl").exists()


async def test_write_failure_is_retriable_and_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FileSink(tmp_path)
    await sink.start()
    try:
        await sink.publish([record("events.a", 0)], timeout_s=5)

        def failing_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        assert await sink.publish([record("events.a", 1)], timeout_s=5) == [Outcome.RETRIABLE]
        monkeypatch.undo()
        assert await sink.publish([record("events.a", 2)], timeout_s=5) == [Outcome.OK]
    finally:
        await sink.stop()
    lines = read_log(tmp_path, "events.a")
    assert [msgspec.json.decode(line.value)["n"] for line in lines] == [0, 2]
    assert [line.offset for line in lines] == [0, 1]


async def test_not_started_or_stopped_sink_answers_retriable(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    assert not await sink.ready()
    assert await sink.publish([record("events.a", 0)], timeout_s=1) == [Outcome.RETRIABLE]
    await sink.start()
    assert await sink.ready()
    await sink.stop()
    assert await sink.publish([record("events.a", 0)], timeout_s=1) == [Outcome.RETRIABLE]
