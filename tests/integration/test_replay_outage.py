"""`capture replay` (issue #7) when the broker disappears mid-replay, on both sides.

Reading: the output is a pipe the test stops draining, so the replay is provably mid-topic
when the broker is stopped. Republishing: a file log is republished to the broker at a low
rate and the broker is stopped once the first records landed. Either way the replay must end
with exit code 1, a clear message and the exact count written so far. Nothing here times
the replay; the waits only bound a hang.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.sinks.base import Outcome
from collector.sinks.kafka import KafkaSink
from devtools.kafka import KafkaBroker
from tests.integration.kafka_helpers import consume
from tests.unit.test_replay_file import FileBackend, event_record, run

pytestmark = pytest.mark.kafka

# ~11 MB uncompressed: many broker fetches (1 MiB per partition each) and pipe buffers' worth,
# so the consumer cannot have fetched the whole topic before the broker goes
TOPIC_RECORDS = 10_000
PADDING_BYTES = 512
REPUBLISH_RECORDS = 1_000
REQUEST_TIMEOUT_MS = "3000"
# Bounds a hang (the replay waits at most the request timeout per step); not a speed check.
REPLAY_BOUND_S = 120


@pytest.fixture(scope="module")
def module_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def broker(module_broker: KafkaBroker) -> KafkaBroker:
    module_broker.start()  # the previous test stopped it
    return module_broker


def written_count(err: str) -> int:
    found = re.search(r"broker unavailable.* after (\d+) records written", err)
    assert found, err
    return int(found.group(1))


class PipeReader:
    """Reads a FIFO on a thread: the first bytes, then nothing until `drain()`, then to EOF."""

    def __init__(self, path: Path) -> None:
        self.started = threading.Event()
        self._go = threading.Event()
        self.data = b""
        self._thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self._thread.start()

    def _read(self, path: Path) -> None:
        with path.open("rb") as pipe:
            first = pipe.read(1)
            self.started.set()
            self._go.wait()
            self.data = first + pipe.read()

    def drain(self) -> None:
        self._go.set()

    def join(self) -> bytes:
        self._thread.join(REPLAY_BOUND_S)
        return self.data


async def test_broker_gone_while_reading(broker: KafkaBroker, tmp_path: Path) -> None:
    prefix = f"ro{uuid.uuid4().hex[:8]}."
    sink = KafkaSink(broker.bootstrap_servers, compression_type=None)
    await sink.start()
    try:
        records = [
            event_record(prefix, i, properties={"track_id": "t", "pad": "x" * PADDING_BYTES})
            for i in range(TOPIC_RECORDS)
        ]
        for start in range(0, len(records), 2_000):
            chunk = records[start : start + 2_000]
            assert await sink.publish(chunk, timeout_s=30) == [Outcome.OK] * len(chunk)
    finally:
        await sink.stop()
    fifo = tmp_path / "out.pipe"
    os.mkfifo(fifo)
    reader = PipeReader(fifo)
    replay = asyncio.create_task(
        run(
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--topic",
            records[0].topic,
            "--request-timeout-ms",
            REQUEST_TIMEOUT_MS,
            "--out",
            str(fifo),
        )
    )
    # the replay has read and is now blocked on the full pipe: stop the broker under it
    assert await asyncio.to_thread(reader.started.wait, REPLAY_BOUND_S)
    await asyncio.to_thread(broker.stop)
    reader.drain()
    code, counts, err = await asyncio.wait_for(replay, REPLAY_BOUND_S)
    lines = (await asyncio.to_thread(reader.join)).splitlines()

    assert code == 1, err
    written = written_count(err)
    assert 0 < written < TOPIC_RECORDS  # really cut short
    assert counts["written"] == written == len(lines)
    # exactly the first `written` records, in order, none torn
    expected = [json.loads(r.value)["event_id"] for r in records[:written]]
    assert [json.loads(line)["event_id"] for line in lines] == expected


async def test_broker_gone_while_republishing(broker: KafkaBroker, tmp_path: Path) -> None:
    source = FileBackend(tmp_path / "data")
    records = [event_record(source.prefix, i) for i in range(REPUBLISH_RECORDS)]
    await source.write(records)
    target = f"rp{uuid.uuid4().hex[:8]}.copy"
    replay = asyncio.create_task(
        run(
            *source.source_args(),
            "--topic",
            records[0].topic,
            "--to-topic",
            target,
            "--to-bootstrap-servers",
            broker.bootstrap_servers,
            "--rate",
            "10",
            "--request-timeout-ms",
            REQUEST_TIMEOUT_MS,
        )
    )
    # the first records landed: the republish is under way (at 10/s it has far to go)
    landed = await consume(broker.bootstrap_servers, [target], expected=1, timeout_s=60)
    assert landed
    await asyncio.to_thread(broker.stop)
    code, counts, err = await asyncio.wait_for(replay, REPLAY_BOUND_S)

    assert code == 1, err
    written = written_count(err)
    assert 0 < written < REPUBLISH_RECORDS
    assert counts["written"] == written
    # every record counted as written was acknowledged, so it is there after a restart, in
    # order; one whose acknowledgement was lost may follow (at-least-once)
    await asyncio.to_thread(broker.start)
    copied = await consume(broker.bootstrap_servers, [target], expected=written, timeout_s=60)
    copied.sort(key=lambda r: r.offset)
    assert len(copied) >= written
    assert [r.value for r in copied[:written]] == [r.value for r in records[:written]]
