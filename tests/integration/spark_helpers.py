"""The data set of the Spark replay differential test, and how to read what a replay wrote.

One data set per backend (the file log, the real broker): `track_played` v1..v3 records over
forty minutes under several keys, duplicated event_ids (twice and thrice, the same key, some
copies with another position_ms so which copy dedup keeps shows in the output), undecodable
values, a broken and a torn log line (file log), and a dead-letter topic written under a
strict plan, some of whose letters the test plan accepts. Some letters share an event_id with
a record of the main topic. The file log has two partitions (two collector workers' logs).
Nothing here runs a replay.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from collector.sinks.base import Outcome, Record
from collector.sinks.file import topic_path
from collector.sinks.kafka import KafkaSink
from tests.factories import track_played
from tests.file_logs import write_as
from tests.unit.test_replay_file import T0_MS, dead_letters, write_plan

MAIN_EVENTS = 2_000
LETTERS = 160
STEP_MS = 1_000  # between consecutive records of the main topic
TOO_BIG = 2_000_000  # above v3's maximum: upgrading a v1/v2 event with it fails
USERS = [f"u-{n}" for n in range(7)]
# the --since/--until window: ten minutes to thirty minutes after T0
SINCE = "2026-11-26T12:10:00Z"
UNTIL = "2026-11-26T14:30:00+02:00"


def plans(root: Path) -> tuple[Path, Path]:
    """(the plan replays run with, the stricter plan the dead letters were written under)."""

    def versions(maximum: int | None) -> list[dict[str, Any]]:
        position: dict[str, Any] = {"type": "integer"}
        if maximum is not None:
            position["maximum"] = maximum
        limited = {**position, "maximum": maximum or 1_000_000}
        return [
            {"position_ms": position},
            {"position_ms": position, "shuffle": {"type": "boolean", "default": False}},
            {
                "position_ms": limited,
                "shuffle": {"type": "boolean", "default": False},
                "quality": {"type": "string", "default": "high"},
                "mood": {"type": "string"},  # added without a default: stays absent
            },
        ]

    return write_plan(root / "plan", versions(None)), write_plan(root / "strict", versions(100))


def _record(prefix: str, event: dict[str, Any], at_ms: int) -> Record:
    headers = [("event", b"track_played"), ("version", str(event["version"]).encode())]
    headers.append(("event_id", event["event_id"].encode()))
    key = event["user_id"].encode()
    return Record(prefix + "track_played", key, msgspec.json.encode(event), headers, at_ms)


def _event(n: int) -> dict[str, Any]:
    version = n % 3 + 1
    properties: dict[str, Any] = {"track_id": f"t-{n % 50}", "position_ms": n * 37 % 250}
    if n % 41 == 0:
        properties["position_ms"] = TOO_BIG
    if version >= 2 and n % 4 == 0:
        properties["shuffle"] = True
    if version == 3 and n % 5 == 0:
        properties["quality"] = "low"
    return track_played(version=version, user_id=USERS[n % len(USERS)], properties=properties)


def _copy(event: dict[str, Any], n: int) -> dict[str, Any]:
    """A later copy of an event (a retry); every other copy differs in position_ms."""
    if n % 2:
        return event
    properties = {**event["properties"], "position_ms": event["properties"]["position_ms"] + 90}
    return {**event, "properties": properties}


@dataclass
class DataSet:
    """What one backend holds; `source_args` select it for `capture replay`."""

    source_args: list[str]
    prefix: str
    plan: Path
    main_topic: str
    dead_letter_topic: str
    main_ids: list[str] = field(default_factory=list)

    def grid_args(self) -> list[str]:
        """Read the main topic and the dead letters (in that order), plan at hand."""
        return [
            *self.source_args,
            "--topic",
            self.main_topic,
            "--dead-letters",
            "--dead-letter-topic",
            self.dead_letter_topic,
            "--schemas-dir",
            str(self.plan),
        ]


def main_records(prefix: str) -> tuple[list[Record], list[str]]:
    """The main topic in write order, one second apart; and its distinct event_ids."""
    events = [_event(n) for n in range(MAIN_EVENTS)]
    later: dict[int, list[dict[str, Any]]] = {}
    for n, event in enumerate(events):
        if n % 9 == 0:  # twice
            later.setdefault(n + 3, []).append(_copy(event, n))
        if n % 27 == 0:  # thrice: one more copy much later (across the window's edge)
            later.setdefault(n + 400, []).append(_copy(event, n + 1))
    values: list[Record | bytes] = []
    for n, event in enumerate(events):
        values.append(_record(prefix, event, 0))
        values += [_record(prefix, copy, 0) for copy in later.get(n, [])]
        if n % 250 == 17:
            values += [b"{not json", b"[1, 2]", b'"just a string"']
    records = []
    for i, item in enumerate(values):
        at = T0_MS + i * STEP_MS
        if isinstance(item, bytes):
            key = USERS[i % len(USERS)].encode()
            item = Record(prefix + "track_played", key, item, [("h", b"1")], at)
        records.append(msgspec.structs.replace(item, timestamp_ms=at))
    return records, [e["event_id"] for e in events]


def letter_records(prefix: str, strict: Path, main_ids: Sequence[str] | None) -> list[Record]:
    """Dead letters as the collector wrote them under `strict`, spread over the same hour;
    with `main_ids`, some share an event_id with a record of the main topic."""
    events = []
    for n in range(LETTERS):
        version = n % 3 + 1
        properties: dict[str, Any] = {"track_id": "t-d", "position_ms": 150 + n}
        if n % 5 == 1:
            properties["position_ms"] = TOO_BIG  # still too big for v3
        if n % 7 == 2:
            properties["position_ms"] = "soon"  # never an integer
        overrides: dict[str, Any] = {"version": version, "user_id": USERS[n % len(USERS)]}
        if main_ids is not None and n % 16 == 3:  # dedup keeps the main topic's record
            overrides["event_id"] = main_ids[n * 7]
        events.append(track_played(properties=properties, **overrides))
    events += [events[n] for n in range(0, LETTERS, 10)]  # a retried request, dead again
    events += [events[n] for n in range(0, LETTERS, 30)]  # and a third time
    letters = dead_letters(prefix, strict, events)
    assert all(r.topic == prefix + "_invalid" for r in letters)
    spread = [
        msgspec.structs.replace(r, timestamp_ms=T0_MS + i * 15 * STEP_MS)
        for i, r in enumerate(letters)
    ]
    bad = Record(prefix + "_invalid", b"u-0", b'{"event": 1}', [], T0_MS + 5 * STEP_MS)
    return [*spread[:3], bad, *spread[3:]]


def build(
    root: Path, source_args: list[str], prefix: str, *, shared_ids: bool
) -> tuple[DataSet, list[Record], list[Record]]:
    """The data set, the main topic's records and the dead letters.

    `shared_ids`: letters reuse event_ids of the main topic, so that dedup must go by topic
    order. Off on Kafka: the process engine meets records of the two topics in the order
    the consumer fetches them, not in topic order (reported; see test_spark_replay.py)."""
    plan, strict = plans(root)
    records, ids = main_records(prefix)
    letters = letter_records(prefix, strict, ids if shared_ids else None)
    data = DataSet(source_args, prefix, plan, prefix + "track_played", prefix + "_invalid", ids)
    return data, records, letters


def write_file_log(data_dir: Path, records: Sequence[Record], letters: Sequence[Record]) -> None:
    """Through the real FileSink of two collector workers, so each topic has two partitions:
    worker 1 takes the first half (partition 1, which gets a broken line at its end) and
    the dead letters (partition 1 only), worker 0 the later half (partition 0, which ends in
    a torn line). Partition 0 holds the later copies of duplicated ids: dedup must go by
    (partition, offset), not by time."""
    half = len(records) // 2
    asyncio.run(write_as(data_dir, 1, [*records[:half], *letters]))
    with topic_path(data_dir, records[0].topic, 1).open("ab") as log:
        log.write(b"this is no log line\n")
    asyncio.run(write_as(data_dir, 0, records[half:]))
    with topic_path(data_dir, records[0].topic).open("ab") as log:
        log.write(b'{"offset": 99999, "torn')


def write_kafka(servers: str, records: Sequence[Record]) -> None:
    async def publish() -> None:
        sink = KafkaSink(servers)
        await sink.start()
        try:
            outcomes = await sink.publish(records, timeout_s=60)
            assert outcomes == [Outcome.OK] * len(records)
        finally:
            await sink.stop()

    asyncio.run(publish())


def new_prefix() -> str:
    return f"s{uuid.uuid4().hex[:8]}."


# ---- what a replay wrote --------------------------------------------------------------------


def keyed(lines: Sequence[bytes]) -> list[tuple[str, bytes]]:
    """(event_id, line) of JSON-lines values, sorted: a multiset, duplicates kept."""
    return sorted((_event_id(line), line) for line in lines)


def _event_id(value: bytes) -> str:
    doc = json.loads(value)
    if isinstance(doc, dict) and "offset" in doc and "value" in doc:  # --with-metadata
        doc = doc["value"]
    if isinstance(doc, dict) and isinstance(doc.get("event"), dict):  # a dead letter
        doc = doc["event"]
    return str(doc.get("event_id")) if isinstance(doc, dict) else ""


def file_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def spark_lines(directory: Path) -> list[bytes]:
    """The lines of the part files Spark's text writer left in `directory`."""
    assert (directory / "_SUCCESS").is_file(), sorted(p.name for p in directory.iterdir())
    parts = sorted(directory.glob("part-*.txt"))
    assert parts, sorted(p.name for p in directory.iterdir())
    return [line for part in parts for line in part.read_bytes().splitlines()]
