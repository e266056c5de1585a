"""`capture replay` (issue #7) on the file sink's log; the scenarios are shared with Kafka.

Each `check_*` scenario writes records through a real sink, runs `capture replay` in-process
and asserts exact sets and counts; tests/integration/test_replay_kafka.py runs the same
scenarios against the real broker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pytest

from collector.cli import main
from collector.replay.progress import Progress
from collector.replay.select import Filter, parse_where
from collector.routing import RouteTable, Topics, route
from collector.sinks.base import Record
from collector.sinks.file import FileSink, LogLine, topic_path
from collector.validation import InvalidEvent, validate_event
from event_schemas import load_registry
from tests.factories import track_played
from tests.file_logs import write_as

T0_MS = int(dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)


class Backend(Protocol):
    prefix: str  # topic prefix, unique per test on a shared broker

    def source_args(self) -> list[str]: ...

    async def write(self, records: Sequence[Record]) -> None: ...

    async def read(self, topic: str, expected: int) -> list[Record]: ...


class FileBackend:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.prefix = "ev."

    def source_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir)]

    async def write(self, records: Sequence[Record]) -> None:
        await write_as(self.data_dir, 0, records)

    async def read(self, topic: str, expected: int) -> list[Record]:
        path = topic_path(self.data_dir, topic)
        if not path.exists():
            return []
        lines = [msgspec.json.decode(line, type=LogLine) for line in path.read_bytes().splitlines()]
        return [
            Record(
                topic,
                line.key.encode() if line.key is not None else None,
                bytes(line.value),
                [(k, v.encode()) for k, v in line.headers],
                line.timestamp_ms,
            )
            for line in lines
        ]


@pytest.fixture
def file_backend(tmp_path: Path) -> FileBackend:
    return FileBackend(tmp_path / "data")


def event_record(prefix: str, at_ms: int, **overrides: Any) -> Record:
    event = track_played(**overrides)
    headers = [("event", b"track_played"), ("version", str(event["version"]).encode())]
    headers.append(("event_id", event["event_id"].encode()))
    return Record(
        prefix + event["event"], b"u-42", msgspec.json.encode(event), headers, T0_MS + at_ms
    )


def replay(*argv: str) -> tuple[int, dict[str, int], str]:
    """Run `capture replay`; the exit code, the summary counts and all of stderr."""
    err = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        code = main(["replay", *argv])
    text = err.getvalue()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("replay summary"):
            for pair in line.split(": ", 1)[1].split():
                name, value = pair.split("=")
                counts[name] = int(value)
    return code, counts, text


async def run(*argv: str) -> tuple[int, dict[str, int], str]:
    # the CLI runs its own event loop, so it runs on a thread here
    return await asyncio.to_thread(replay, *argv)


def values(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- scenarios shared with Kafka ------------------------------------------------------------


async def check_time_window(backend: Backend, tmp_path: Path) -> None:
    records = [
        event_record(backend.prefix, i * 1000, event_id=str(uuid.uuid4())) for i in range(10)
    ]
    await backend.write(records)
    out = tmp_path / "window.jsonl"
    since = "2026-11-26T12:00:03Z"
    until = "2026-11-26T14:00:07+02:00"  # the same instant as 12:00:07Z
    code, counts, err = await run(
        *backend.source_args(),
        "--topic-prefix",
        backend.prefix,
        "--event",
        "track_played",
        "--since",
        since,
        "--until",
        until,
        "--out",
        str(out),
    )
    assert code == 0, err
    expected = [json.loads(r.value)["event_id"] for r in records[3:7]]
    assert [v["event_id"] for v in values(out)] == expected
    assert counts["matched"] == 4
    assert counts["written"] == 4


async def check_dedup(backend: Backend, tmp_path: Path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    order = [0, 1, 0, 2, 1, 0]
    await backend.write(
        [event_record(backend.prefix, i, event_id=ids[k]) for i, k in enumerate(order)]
    )
    out = tmp_path / "dedup.jsonl"
    code, counts, err = await run(
        *backend.source_args(),
        "--topic",
        backend.prefix + "track_played",
        "--dedup",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert [v["event_id"] for v in values(out)] == ids
    assert counts["read"] == 6
    assert counts["deduplicated"] == 3
    assert counts["written"] == 3


def write_plan(root: Path, versions: list[dict[str, Any]]) -> Path:
    """A tracking plan with `track_played` v1..vN (each a dict of properties, all optional
    except `track_id`)."""
    for number, properties in enumerate(versions, start=1):
        path = root / "track_played" / f"v{number}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "type": "object",
            "properties": {"track_id": {"type": "string"}, **properties},
            "required": ["track_id"],
        }
        path.write_text(json.dumps(document))
    return root


async def check_upgrade(backend: Backend, tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "plan",
        [
            {"position_ms": {"type": "integer"}},
            {
                "position_ms": {"type": "integer", "maximum": 1_000_000},
                "shuffle": {"type": "boolean", "default": False},
                "mood": {"type": "string"},  # added without a default: stays absent
            },
        ],
    )
    old = event_record(backend.prefix, 0, properties={"track_id": "t", "position_ms": 5})
    too_big = event_record(backend.prefix, 1, properties={"track_id": "t", "position_ms": 2**31})
    new = event_record(backend.prefix, 2, version=2, properties={"track_id": "t", "shuffle": True})
    await backend.write([old, too_big, new])
    out = tmp_path / "upgraded.jsonl"
    code, counts, err = await run(
        *backend.source_args(),
        "--topic",
        backend.prefix + "track_played",
        "--upgrade",
        "--schemas-dir",
        str(plan),
        "--with-metadata",
        "--out",
        str(out),
    )
    assert code == 0, err
    lines = values(out)
    assert [(v["value"]["version"], v["value"]["properties"]) for v in lines] == [
        (2, {"track_id": "t", "position_ms": 5, "shuffle": False}),
        (2, {"track_id": "t", "shuffle": True}),
    ]
    assert ["upgraded_from", "1"] in lines[0]["headers"]
    assert ["version", "2"] in lines[0]["headers"]
    assert (counts["upgraded"], counts["failed"], counts["written"]) == (1, 1, 2)
    assert json.loads(too_big.value)["event_id"] in err  # the failure is reported by id


def dead_letters(prefix: str, plan: Path, events: list[dict[str, Any]]) -> list[Record]:
    """Dead letters exactly as the collector writes them under `plan`."""
    registry = load_registry(plan)
    invalid = []
    for index, event in enumerate(events):
        raw = msgspec.Raw(msgspec.json.encode(event))
        verdict = validate_event(index, raw, registry)
        assert isinstance(verdict, InvalidEvent)
        verdict.raw = raw
        invalid.append(verdict)
    table = RouteTable(Topics(prefix, prefix + "_invalid"), registry)
    received_at = dt.datetime.fromtimestamp(T0_MS / 1000, dt.UTC)
    return route([], invalid, table=table, received_at=received_at)


async def check_recovery(backend: Backend, tmp_path: Path) -> None:
    strict = write_plan(tmp_path / "a", [{"position_ms": {"type": "integer", "maximum": 10}}])
    fixed = write_plan(tmp_path / "b", [{"position_ms": {"type": "integer", "maximum": 100}}])
    events = [
        track_played(properties={"track_id": "t", "position_ms": 50}),  # valid under b
        track_played(properties={"track_id": "t", "position_ms": 500}),  # still too big
        track_played(properties={"track_id": "t", "position_ms": "x"}),  # wrong type
        track_played(properties={"track_id": "t", "position_ms": 60}, user_id="u-7"),
    ]
    await backend.write(dead_letters(backend.prefix, strict, events))
    args = [
        *backend.source_args(),
        "--topic-prefix",
        backend.prefix,
        "--dead-letter-topic",
        backend.prefix + "_invalid",
        "--dead-letters",
        "--recover",
        "--schemas-dir",
        str(fixed),
    ]
    code, counts, err = await run(*args, "--dry-run")
    assert code == 0, err
    assert (counts["recovered"], counts["still_invalid"], counts["written"]) == (2, 2, 0)
    assert await backend.read(backend.prefix + "track_played", expected=0) == []

    code, counts, err = await run(*args)
    assert code == 0, err
    assert (counts["recovered"], counts["still_invalid"], counts["written"]) == (2, 2, 2)
    republished = await backend.read(backend.prefix + "track_played", expected=2)
    got = {json.loads(r.value)["event_id"]: r for r in republished}
    assert set(got) == {events[0]["event_id"], events[3]["event_id"]}
    recovered = got[events[3]["event_id"]]
    assert recovered.key == b"u-7"
    assert ("event_id", events[3]["event_id"].encode()) in recovered.headers
    # the receive time is the original one, from the dead letter
    assert json.loads(recovered.value)["received_at"].startswith("2026-11-26T12:00:00")
    assert recovered.timestamp_ms == T0_MS


async def check_malformed_and_republish(backend: Backend, tmp_path: Path) -> None:
    good = event_record(backend.prefix, 0)
    bad = msgspec.structs.replace(good, value=b"{not json", headers=[("h", b"1")])
    last = event_record(backend.prefix, 1)
    await backend.write([good, bad, last])
    target = backend.prefix + "copy"
    code, counts, err = await run(
        *backend.source_args(), "--topic", good.topic, "--to-topic", target, "--rate", "100"
    )
    assert code == 0, err
    assert (counts["read"], counts["malformed"], counts["written"]) == (3, 1, 2)
    # reported with its partition (one key, so one partition) and offset; the file sink
    # writes the broken value into its line, so there the whole line is malformed
    assert re.search(rf"malformed {re.escape(good.topic)}\[\d+\]@1: ", err)
    copied = await backend.read(target, expected=2)
    assert [(r.key, r.value, r.headers, r.timestamp_ms) for r in copied] == [
        (r.key, r.value, r.headers, r.timestamp_ms) for r in (good, last)
    ]


async def check_bad_input(backend: Backend, tmp_path: Path) -> None:
    await backend.write([event_record(backend.prefix, 0)])
    topic = backend.prefix + "track_played"
    code, _, err = await run(*backend.source_args(), "--topic", backend.prefix + "nope")
    assert code == 2
    assert "unknown topic" in err
    code, _, err = await run(
        *backend.source_args(), "--topic", topic, "--since", "2026-11-27", "--until", "2026-11-26"
    )
    assert code == 2
    assert "empty range" in err
    blocked = tmp_path / "no-such-dir" / "out.jsonl"
    code, counts, err = await run(*backend.source_args(), "--topic", topic, "--out", str(blocked))
    assert code == 2
    assert "not writable" in err
    assert counts == {}  # failed before reading anything


SCENARIOS = [
    check_time_window,
    check_dedup,
    check_upgrade,
    check_recovery,
    check_malformed_and_republish,
    check_bad_input,
]


# ---- the file log -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_file_log(scenario: Any, file_backend: FileBackend, tmp_path: Path) -> None:
    await scenario(file_backend, tmp_path)


# ---- file-only: filters, dry run, Parquet, progress ----------------------------------------


def test_where_predicates() -> None:
    doc = {"event": "e", "properties": {"source": "radio", "position_ms": 5, "on": True}}
    assert parse_where("properties.source=radio").matches(doc)
    assert not parse_where("properties.source!=radio").matches(doc)
    assert parse_where("properties.position_ms<6").matches(doc)
    assert not parse_where("properties.position_ms>5").matches(doc)
    assert not parse_where("properties.source<5").matches(doc)  # a string is not a number
    assert not parse_where("properties.on=1").matches(doc)  # JSON keeps true and 1 apart
    assert parse_where("properties.on=true").matches(doc)
    assert parse_where("properties.source exists").matches(doc)
    assert not parse_where("properties.mood exists").matches(doc)
    assert not Filter(events=frozenset({"e"})).matches([1])  # a non-object never matches


async def test_filters_and_dry_run(file_backend: FileBackend, tmp_path: Path) -> None:
    prefix = file_backend.prefix
    await file_backend.write(
        [
            event_record(prefix, 0, user_id="u-1"),
            event_record(prefix, 1, user_id="u-2"),
            event_record(prefix, 2, user_id="u-1", properties={"track_id": "t", "source": "radio"}),
        ]
    )
    out = tmp_path / "out.jsonl"
    args = [*file_backend.source_args(), "--topic-prefix", prefix, "--event", "track_played"]
    args += ["--user-id", "u-1"]
    args += ["--where", "properties.source=radio", "--out", str(out)]
    code, counts, _ = await run(*args, "--dry-run")
    assert code == 0
    assert (counts["read"], counts["matched"], counts["written"]) == (3, 1, 0)
    assert not out.exists()  # a dry run opens no output
    code, counts, _ = await run(*args)
    assert [v["properties"] for v in values(out)] == [{"track_id": "t", "source": "radio"}]


async def test_republish_into_a_log_another_process_writes(
    file_backend: FileBackend, tmp_path: Path
) -> None:
    """`--to-topic` into the data dir of a running file-sink collector meets its log's lock:
    the replay gives up after its request timeout and says who holds the log."""
    record = event_record(file_backend.prefix, 0)
    await file_backend.write([record])
    target = file_backend.prefix + "copy"
    holder = FileSink(file_backend.data_dir)  # stands for the running collector (a real flock)
    await holder.start()
    try:
        assert await holder.publish([msgspec.structs.replace(record, topic=target)], timeout_s=10)
        code, counts, err = await run(
            *file_backend.source_args(),
            "--topic",
            record.topic,
            "--to-topic",
            target,
            "--request-timeout-ms",
            "300",
        )
    finally:
        await holder.stop()
    assert code == 1, err
    assert counts["written"] == 0
    held = topic_path(file_backend.data_dir, target)
    assert f"another process is writing the file sink's log {held}" in err
    assert "broker" not in err


async def test_parquet_output(file_backend: FileBackend, tmp_path: Path) -> None:
    pq = pytest.importorskip(
        "pyarrow.parquet", reason="Parquet output needs the event-capture[parquet] extra"
    )
    records = [event_record(file_backend.prefix, i) for i in range(3)]
    await file_backend.write(records)
    out = tmp_path / "out.parquet"
    code, _, err = await run(
        *file_backend.source_args(),
        "--topic",
        file_backend.prefix + "track_played",
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert code == 0, err
    table = pq.read_table(out).to_pydict()
    assert table["offset"] == [0, 1, 2]
    assert table["event_id"] == [json.loads(r.value)["event_id"] for r in records]
    assert [json.loads(v) for v in table["value"]] == [json.loads(r.value) for r in records]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal() -> None:
    piped = io.StringIO()
    Progress(piped, total=10).finish(10)
    assert piped.getvalue() == ""
    terminal = Terminal()
    progress = Progress(terminal, total=10)
    progress.update(5, force=True)
    progress.finish(10)
    assert "replay: 5/10 (50%)" in terminal.getvalue()
    assert "ETA" in terminal.getvalue()
    assert "replay: 10/10 (100%)" in terminal.getvalue()


# ---- partitions: one log per collector worker (issue #17) ----------------------------------


def positions(path: Path) -> list[tuple[int, int, str, int]]:
    """(partition, offset, event_id, position_ms) of each line of a --with-metadata output."""
    return [
        (
            v["partition"],
            v["offset"],
            v["value"]["event_id"],
            v["value"]["properties"]["position_ms"],
        )
        for v in values(path)
    ]


async def test_replay_reads_every_partition_in_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    topic = "ev.track_played"

    def copy(at_ms: int, event_id: str, position_ms: int) -> Record:
        properties = {"track_id": "t", "position_ms": position_ms}
        return event_record("ev.", at_ms, event_id=event_id, properties=properties)

    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    # worker 1 received the later copies of a and b first in time: dedup still keeps the
    # first by (partition, offset), as on Kafka, not the earliest timestamp
    await write_as(data, 1, [copy(0, b, 10), copy(1, c, 11), copy(2, a, 12)])
    await write_as(data, 0, [copy(5, a, 0), copy(6, b, 1)])
    out = tmp_path / "all.jsonl"
    args = ["--data-dir", str(data), "--topic", topic, "--with-metadata", "--out", str(out)]
    code, counts, err = await run(*args)
    assert code == 0, err
    assert positions(out) == [
        (0, 0, a, 0),
        (0, 1, b, 1),
        (1, 0, b, 10),
        (1, 1, c, 11),
        (1, 2, a, 12),
    ]
    assert counts["read"] == 5

    code, counts, err = await run(*args, "--dedup")
    assert code == 0, err
    assert positions(out) == [(0, 0, a, 0), (0, 1, b, 1), (1, 1, c, 11)]
    assert counts["deduplicated"] == 2

    # offsets bound each partition alike (Kafka's --from-offset/--to-offset)
    code, counts, err = await run(*args, "--from-offset", "1", "--to-offset", "2")
    assert code == 0, err
    assert positions(out) == [(0, 1, b, 1), (1, 1, c, 11)]


async def test_a_topic_only_a_later_worker_wrote_is_known(tmp_path: Path) -> None:
    data = tmp_path / "data"
    records = [event_record("ev.", i) for i in range(2)]
    await write_as(data, 3, records)
    out = tmp_path / "out.jsonl"
    args = ["--data-dir", str(data), "--topic", "ev.track_played", "--with-metadata"]
    code, counts, err = await run(*args, "--out", str(out))
    assert code == 0, err
    assert [(v["partition"], v["offset"]) for v in values(out)] == [(3, 0), (3, 1)]
    assert counts["read"] == 2
    code, _, err = await run("--data-dir", str(data), "--topic", "ev.nope")
    assert code == 2
    assert "unknown topic `ev.nope`: no log at ev.nope.jsonl" in err


async def test_broken_and_torn_lines_in_a_later_partition(tmp_path: Path) -> None:
    data = tmp_path / "data"
    topic = "ev.track_played"
    await write_as(data, 0, [event_record("ev.", 0)])
    await write_as(data, 1, [event_record("ev.", i) for i in range(1, 4)])
    later = topic_path(data, topic, 1)
    with later.open("ab") as log:
        log.write(b"this is no log line\n")
    await write_as(data, 1, [event_record("ev.", 4)])
    with later.open("ab") as log:
        log.write(b'{"offset": 5, "torn')  # a crash before the fsync: never acknowledged
    out = tmp_path / "out.jsonl"
    args = ["--data-dir", str(data), "--topic", topic, "--with-metadata", "--out", str(out)]
    code, counts, err = await run(*args)
    assert code == 0, err
    # the broken line is reported where it is; the torn one is not there yet
    assert f"malformed {topic}[1]@3: not a log line" in err
    assert (counts["read"], counts["malformed"], counts["written"]) == (6, 1, 5)
    assert [(v["partition"], v["offset"]) for v in values(out)] == [
        (0, 0),
        (1, 0),
        (1, 1),
        (1, 2),
        (1, 4),
    ]
    # the worker that wrote it, restarted, drops the torn line and goes on after the rest
    await write_as(data, 1, [event_record("ev.", 5)])
    code, counts, err = await run(*args)
    assert code == 0, err
    assert [(v["partition"], v["offset"]) for v in values(out)][-2:] == [(1, 4), (1, 5)]
    assert counts["malformed"] == 1


async def test_a_single_log_per_topic_reads_as_partition_0(
    file_backend: FileBackend, tmp_path: Path
) -> None:
    # a data dir of the one-writer collector (and every data dir before workers) as before
    await file_backend.write([event_record("ev.", i) for i in range(3)])
    assert sorted(p.name for p in file_backend.data_dir.iterdir()) == ["ev.track_played.jsonl"]
    out = tmp_path / "out.jsonl"
    args = [*file_backend.source_args(), "--topic", "ev.track_played", "--with-metadata"]
    code, _, err = await run(*args, "--out", str(out))
    assert code == 0, err
    assert [(v["partition"], v["offset"]) for v in values(out)] == [(0, 0), (0, 1), (0, 2)]
