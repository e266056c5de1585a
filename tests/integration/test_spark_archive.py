"""`capture archive` (Spark Structured Streaming) from the real broker into a Parquet lake.

Events go through the real collector on a KafkaSink (a 200 means acks=all for every accepted
event), including SDK-style retries (the same event twice) and invalid events (dead letters);
one hot user's events go to the overflow lanes. The archive runs as a subprocess, is killed
with SIGKILL (its whole process group, the JVM too) mid-stream, restarted, stopped with SIGTERM
and finished with --available-now. The lake is read as analysts are told to: only the files
that the tables' `_spark_metadata` logs name.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.replay.transform import Upgrader, upgraded_record
from collector.sinks.base import Record
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import page_viewed, track_played
from tests.integration.kafka_helpers import consume, kafka_settings

pytestmark = pytest.mark.kafka

pq: Any = importlib.import_module("pyarrow.parquet")

DAY = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
TWO_DAYS_EARLIER = DAY - dt.timedelta(days=2)
# Spark in the subprocess: small, quiet, few state partitions (2 shared cores)
SPARK_CONF = [
    "spark.driver.memory=512m",
    "spark.sql.shuffle.partitions=2",
    "spark.ui.enabled=false",
]
# a generous bound for a run on a loaded machine (the JVM alone takes 15-30 s to start)
RUN_TIMEOUT_S = 300.0


@dataclass
class Clock:
    """The collector's receive time: the record timestamp Kafka keeps."""

    now: dt.datetime = DAY

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Produced:
    """What the collector acknowledged."""

    event_ids: set[str]
    dead_ids: set[str]
    posted: int = 0  # events in accepted batches, duplicates included


class Producer:
    def __init__(self, http: HttpClient) -> None:
        self.http = http
        self.acked = Produced(set(), set())
        self.sent: list[dict[str, Any]] = []  # valid events, for retries

    async def post(self, events: list[dict[str, Any]]) -> None:
        body = msgspec.json.encode({"sent_at": "2026-12-01T09:30:00Z", "batch": events})
        response = await self.http.post(
            "/v1/batch", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status == 200, await response.text()
        answer = await response.json()
        rejected = {r["index"] for r in answer["rejected"]}
        for index, event in enumerate(events):
            (self.acked.dead_ids if index in rejected else self.acked.event_ids).add(
                event["event_id"]
            )
            if index not in rejected:
                self.sent.append(event)
        self.acked.posted += len(events)

    async def round(self, n: int, *, retries: int) -> None:
        """`n` new events in batches of 50 (2 of 50 invalid, 1 of 5 from the hot user), then
        `retries` earlier ones sent again as they were."""
        for start in range(0, n, 50):
            batch = []
            for i in range(start, min(start + 50, n)):
                if i % 25 == 7:  # invalid: dead letter
                    batch.append(track_played(properties={"track_id": "t", "position_ms": "x"}))
                elif i % 5 == 0:
                    batch.append(track_played(user_id="hot-user"))
                elif i % 2:
                    batch.append(page_viewed(anonymous_id=f"anon-{i}"))
                else:
                    batch.append(track_played(user_id=f"u-{i % 40}", version=1 + i % 3 // 2))
            await self.post(batch)
        again = self.sent[:: max(1, len(self.sent) // retries)][:retries]
        await self.post(again)


def committed_rows(table: Path) -> list[dict[str, Any]]:
    """Every row of the files the table's `_spark_metadata` log names, with the partition
    values of their directories."""
    log = table / "_spark_metadata"
    if not log.is_dir():
        return []
    added: set[str] = set()
    for entry in sorted(log.iterdir()):
        if entry.name.startswith("."):
            continue  # .crc, or a log file being written
        for line in entry.read_text().splitlines()[1:]:  # after the "v1" line
            item = json.loads(line)
            path = urllib.parse.unquote(urllib.parse.urlparse(item["path"]).path)
            if item["action"] == "add":
                added.add(path)
            else:
                added.discard(path)
    rows = []
    for name in sorted(added):
        file = Path(name)
        parts = dict(p.split("=", 1) for p in file.relative_to(table).parts[:-1])
        for row in pq.read_table(file).to_pylist():
            rows.append({**row, **{f"_dir_{k}": v for k, v in parts.items()}})
    return rows


class Archive:
    def __init__(self, broker: KafkaBroker, prefix: str, lake: Path) -> None:
        self.broker = broker
        self.prefix = prefix
        self.lake = lake
        self.kills = 0
        self.pending = 0  # kills that left a batch to redo
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "CAPTURE_TOPIC_PREFIX": f"{self.prefix}.",
            "CAPTURE_DEAD_LETTER_TOPIC": f"{self.prefix}._invalid",
        }
        args = ["--bootstrap-servers", self.broker.bootstrap_servers, "--lake", str(self.lake)]
        for pair in SPARK_CONF:
            args += ["--spark-conf", pair]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector.spark.archive",
                *args,
                "--master",
                "local[2]",
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: SIGKILL reaches the JVM as well
        )
        self.started.append(process)
        return process

    def close(self) -> None:
        """Kill what a failed test left running (its JVM too)."""
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate(timeout=30)

    def run(self, *extra: str) -> tuple[int, str]:
        process = self.start(*extra)
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
        return process.returncode, err

    def kill(self, process: subprocess.Popen[str]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        self.kills += 1
        # a batch planned (offsets/N) but not committed (commits/N) is redone on restart
        checkpoint = self.lake / "_checkpoints" / "events"
        planned, committed = (
            max((int(p.name) for p in (checkpoint / d).glob("[0-9]*")), default=-1)
            for d in ("offsets", "commits")
        )
        self.pending += planned > committed

    def wait_rows(self, process: subprocess.Popen[str], more_than: int) -> int:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            count = len(committed_rows(self.lake / "events"))
            if count > more_than:
                return count
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the archive wrote nothing in time"
            time.sleep(0.5)


@pytest.fixture
async def collector(
    kafka_broker: KafkaBroker, schemas: SchemaRegistry
) -> AsyncIterator[tuple[Producer, Clock, str]]:
    prefix = f"arch{uuid.uuid4().hex[:8]}"
    # one key faster than 1/s past a burst of 20 goes to its topic's overflow lane
    settings = kafka_settings(kafka_broker, prefix, hot_key_rate_per_s=1.0, hot_key_burst=20)
    clock = Clock()
    client = await start_collector(
        settings, KafkaSink(kafka_broker.bootstrap_servers), schemas, clock=clock
    )
    yield Producer(client), clock, prefix
    await client.close()


@pytest.fixture
def archive(
    kafka_broker: KafkaBroker, collector: tuple[Producer, Clock, str], tmp_path: Path
) -> Iterator[Archive]:
    made = Archive(kafka_broker, collector[2], tmp_path / "lake")
    yield made
    made.close()


async def kafka_records(broker: KafkaBroker, prefix: str, expected: int) -> dict[Any, Any]:
    topics = [
        f"{prefix}.{event}{lane}"
        for event in ("track_played", "page_viewed")
        for lane in ("", "_overflow")
    ]
    found = await consume(broker.bootstrap_servers, topics, expected=expected)
    assert len(found) == expected
    return {(r.topic, r.partition, r.offset): r for r in found}


async def test_archive_survives_kills_exactly_once(
    kafka_broker: KafkaBroker, collector: tuple[Producer, Clock, str], archive: Archive
) -> None:
    producer, clock, prefix = collector
    await producer.round(1500, retries=60)

    first = archive.start("--trigger-seconds", "1")
    seen = archive.wait_rows(first, 0)
    await producer.round(1000, retries=40)  # while it runs
    archive.kill(first)  # mid-stream: some batch is planned, running or half written

    second = archive.start("--trigger-seconds", "1")
    # records republished with their original receive time (as replay --recover does)
    # must not count as late
    clock.now = TWO_DAYS_EARLIER
    await producer.round(500, retries=30)  # retries include events archived before the kill
    archive.wait_rows(second, seen)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=RUN_TIMEOUT_S)
    assert second.returncode == 0, err
    assert "capture archive: events:" in err
    assert "capture archive: dead_letters:" in err

    clock.now = DAY
    await producer.round(300, retries=10)
    code, err = archive.run("--available-now")
    assert code == 0, err

    acked = producer.acked
    valid_records = acked.posted - len(acked.dead_ids)
    kafka = await kafka_records(kafka_broker, prefix, valid_records)
    rows = committed_rows(archive.lake / "events")
    ids = [row["event_id"] for row in rows]
    assert len(ids) == len(set(ids)), "an event_id archived twice"
    assert set(ids) == acked.event_ids
    assert len(kafka) > len(rows)  # the retries reached Kafka: the archive dropped them
    lanes = set()
    for row in rows:
        record = kafka[(row["topic"], row["partition"], row["offset"])]
        lanes.add(row["topic"])
        headers = dict(record.headers)
        assert row["value"].encode() == record.value
        assert row["event_id"].encode() == headers["event_id"]
        assert row["key"].encode() == record.key
        assert row["timestamp_ms"] == record.timestamp
        assert str(row["version"]).encode() == headers["version"]
        event = headers["event"].decode()
        assert row["_dir_event"] == event
        assert "event" not in row  # a partition column, not in the files
        day = dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC).date()
        assert row["_dir_date"] == day.isoformat()
    assert {f"{prefix}.track_played_overflow", f"{prefix}.page_viewed"} <= lanes
    assert {row["_dir_date"] for row in rows} == {"2026-12-01", "2026-11-29"}

    dead_records = await consume(
        kafka_broker.bootstrap_servers, [f"{prefix}._invalid"], expected=len(acked.dead_ids)
    )
    assert len(dead_records) == len(acked.dead_ids)
    dead = committed_rows(archive.lake / "dead_letters")
    assert sorted(row["event_id"] for row in dead) == sorted(acked.dead_ids)
    by_offset = {(r.partition, r.offset): r for r in dead_records}
    for row in dead:
        record = by_offset[(row["partition"], row["offset"])]
        assert row["value"].encode() == record.value
        assert row["reason"] == "invalid_properties"
        assert "_dir_event" not in row
    print(
        f"\narchive: {acked.posted} events posted, {len(acked.event_ids)} distinct valid, "
        f"{len(acked.dead_ids)} dead letters, {len(kafka)} event records in Kafka, "
        f"{len(rows)} rows in the lake, {archive.kills} SIGKILL(s), "
        f"{archive.pending} of them mid-batch"
    )


async def test_archive_upgrade_matches_replay(
    kafka_broker: KafkaBroker,
    collector: tuple[Producer, Clock, str],
    archive: Archive,
    schemas: SchemaRegistry,
) -> None:
    producer, _, prefix = collector
    old = [track_played(user_id=f"u{i}", version=1) for i in range(20)]
    new = [track_played(user_id=f"u{i}", version=2) for i in range(5)]
    await producer.post(old + new)
    code, err = archive.run("--available-now", "--upgrade")
    assert code == 0, err
    kafka = await kafka_records(kafka_broker, prefix, len(old) + len(new))
    rows = committed_rows(archive.lake / "events")
    assert len(rows) == len(old) + len(new)
    upgrader = Upgrader(schemas)
    for row in rows:
        record = kafka[(row["topic"], row["partition"], row["offset"])]
        doc = msgspec.json.decode(record.value)
        upgraded = upgrader.upgrade(doc)
        if doc["version"] == 1:
            assert upgraded is not None
            as_replay = Record(record.topic, record.key, record.value, list(record.headers), 0)
            expected = upgraded_record(as_replay, *upgraded).value
        else:
            assert upgraded is None
            expected = record.value
        assert row["value"].encode() == expected
        assert row["version"] == 2


def refused_archive(*args: str) -> subprocess.CompletedProcess[str]:
    """`capture archive` with flags it must refuse before starting Spark."""
    return subprocess.run(
        [sys.executable, "-m", "collector.spark.archive", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dedup-watermark", "soon"], "--dedup-watermark"),
        (["--spark-conf", "nokey"], "--spark-conf"),
        (["--topic", "bad topic"], "bad topic"),
        (["--trigger-seconds", "0"], "--trigger-seconds"),
    ],
)
def test_bad_input_exits_2(flags: list[str], message: str, tmp_path: Path) -> None:
    args = ["--bootstrap-servers", "127.0.0.1:9", "--lake", str(tmp_path / "lake"), *flags]
    done = refused_archive(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("capture archive: ")
    assert message in done.stderr
    assert not (tmp_path / "lake").exists()


def test_no_topics_exits_2(tmp_path: Path) -> None:
    # a plan without events has no event topics
    plan = tmp_path / "plan"
    plan.mkdir()
    done = refused_archive(
        *("--bootstrap-servers", "127.0.0.1:9", "--lake", str(tmp_path / "lake")),
        *("--schemas-dir", str(plan)),
    )
    assert done.returncode == 2
    assert done.stderr.startswith("capture archive: ")
