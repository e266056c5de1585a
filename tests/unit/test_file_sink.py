"""The file sink: fsynced JSON lines per topic, offsets, torn-line recovery, group commit,
one writer per log (a partition per collector worker)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import msgspec
import pytest

from collector.settings import SettingsError, load_settings
from collector.sinks.base import Outcome, Record
from collector.sinks.file import FileSink, LogLine, parse_log_name, topic_logs, topic_path
from collector.startup import check_data_dir


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


# ---- one writer per log: collector workers write partitions of their own (issue #17) -------


async def test_each_writer_appends_to_a_partition_of_its_own(tmp_path: Path) -> None:
    first, second = FileSink(tmp_path, writer=0), FileSink(tmp_path, writer=1)
    await first.start()
    await second.start()
    try:
        # interleaved, as two workers take requests at once
        for n in range(3):
            assert await first.publish([record("events.a", n)], timeout_s=5) == [Outcome.OK]
            assert await second.publish([record("events.a", 10 + n)], timeout_s=5) == [Outcome.OK]
        assert await second.publish([record("events.b", 20)], timeout_s=5) == [Outcome.OK]
    finally:
        await first.stop()
        await second.stop()
    assert sorted(os.listdir(tmp_path)) == [
        "events.a.jsonl",
        "events.a@1.jsonl",
        "events.b@1.jsonl",
    ]

    def numbers(path: Path) -> list[tuple[int, int]]:
        lines = [msgspec.json.decode(x, type=LogLine) for x in path.read_bytes().splitlines()]
        return [(line.offset, msgspec.json.decode(line.value)["n"]) for line in lines]

    # offsets are line numbers within each file
    assert numbers(topic_path(tmp_path, "events.a")) == [(0, 0), (1, 1), (2, 2)]
    assert numbers(topic_path(tmp_path, "events.a", 1)) == [(0, 10), (1, 11), (2, 12)]
    assert numbers(topic_path(tmp_path, "events.b", 1)) == [(0, 20)]
    assert topic_logs(tmp_path) == {
        "events.a": {0: tmp_path / "events.a.jsonl", 1: tmp_path / "events.a@1.jsonl"},
        "events.b": {1: tmp_path / "events.b@1.jsonl"},
    }


async def test_a_second_writer_of_the_same_log_is_refused(tmp_path: Path) -> None:
    owner = FileSink(tmp_path, writer=1)
    await owner.start()
    try:
        assert await owner.publish([record("events.a", 0)], timeout_s=5) == [Outcome.OK]
        # a line the owner is in the middle of writing (no newline yet)
        with topic_path(tmp_path, "events.a", 1).open("ab") as f:
            f.write(b'{"offset":1,"timest')
        intruder = FileSink(tmp_path, writer=1)
        await intruder.start()
        try:
            assert await intruder.ready()
            outcomes = await intruder.publish([record("events.a", 1)], timeout_s=5)
            assert outcomes == [Outcome.RETRIABLE]
            assert not await intruder.ready()  # it says so, and stays so: it writes nothing
            assert await intruder.publish([record("events.b", 2)], timeout_s=5) == [
                Outcome.RETRIABLE
            ]
            assert not await intruder.ready()
        finally:
            await intruder.stop()
        # the intruder took the log for nobody's: it neither appended nor "recovered" the
        # owner's unfinished line away
        assert topic_path(tmp_path, "events.a", 1).read_bytes().endswith(b'{"offset":1,"timest')
        assert await owner.ready()
        assert not topic_path(tmp_path, "events.b", 1).exists()
        assert await owner.publish([record("events.b", 2)], timeout_s=5) == [Outcome.OK]
    finally:
        await owner.stop()
    # once the owner is gone, the same index opens the log again: torn line dropped
    restarted = FileSink(tmp_path, writer=1)
    await restarted.start()
    try:
        assert await restarted.publish([record("events.a", 3)], timeout_s=5) == [Outcome.OK]
    finally:
        await restarted.stop()
    lines = topic_path(tmp_path, "events.a", 1).read_bytes().splitlines()
    got = [msgspec.json.decode(x, type=LogLine) for x in lines]
    assert [(x.offset, msgspec.json.decode(x.value)["n"]) for x in got] == [(0, 0), (1, 3)]


def test_log_names_and_partitions() -> None:
    assert topic_path(Path("d"), "events.a") == Path("d/events.a.jsonl")
    assert topic_path(Path("d"), "events.a", 3) == Path("d/events.a@3.jsonl")
    assert parse_log_name("events.a.jsonl") == ("events.a", 0)
    assert parse_log_name("events.a@3.jsonl") == ("events.a", 3)
    assert parse_log_name("events.a@12.jsonl") == ("events.a", 12)
    # what the sink never writes is no partition
    for name in ["events.a@0.jsonl", "events.a@03.jsonl", "events.a@.jsonl", "events.a@x.jsonl"]:
        assert parse_log_name(name) is None, name
    assert parse_log_name("events.a@-1.jsonl") is None
    assert parse_log_name("events.a.json") is None
    assert parse_log_name(".capture-probe-x") is None


def test_several_workers_are_allowed_on_the_file_sink_not_the_memory_sink() -> None:
    assert load_settings({"CAPTURE_WORKERS": "2"}).workers == 2  # the file sink by default
    file_sink = {"CAPTURE_WORKERS": "3", "CAPTURE_SINK": "file"}
    assert load_settings(file_sink).workers == 3
    with pytest.raises(SettingsError, match="CAPTURE_WORKERS=2 needs the kafka or file sink"):
        load_settings({"CAPTURE_WORKERS": "2", "CAPTURE_SINK": "memory"})


def test_start_up_refuses_a_log_another_process_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    held = topic_path(data, "events.a", 1)
    held.touch()
    topic_path(data, "events.a").touch()
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another writer of partition 1
        check_data_dir(str(data), writers=1)  # this run writes partition 0 only
        with pytest.raises(SettingsError, match=r"another process is writing events\.a@1\.jsonl"):
            check_data_dir(str(data), writers=2)
    finally:
        os.close(fd)
    check_data_dir(str(data), writers=2)  # the probe itself keeps no lock
    check_data_dir(str(data), writers=2)


async def test_the_reason_given_when_records_were_not_accepted(tmp_path: Path) -> None:
    """What `capture replay --to-topic` prints when a republish gives up: the last cause."""
    sink = FileSink(tmp_path)
    record = Record("events.a", None, b"{}", [], 0)
    assert await sink.publish([record], timeout_s=1) == [Outcome.RETRIABLE]
    assert sink.unavailable_reason().endswith("it is not running")
    await sink.start()
    try:
        assert await sink.publish([record], timeout_s=0) == [Outcome.RETRIABLE]
        assert f"no fsync'd write of {tmp_path} within 0 s" in sink.unavailable_reason()
    finally:
        await sink.stop()
