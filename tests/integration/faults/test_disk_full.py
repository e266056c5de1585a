"""The file sink's disk full (issue 14): `capture serve --sink file` on a 4 MiB tmpfs, loaded
until the disk is full, then given space back by deleting a filler file.

While full, answers are 503 with a JSON reason (never 500, never 200 for a line not written);
the log keeps no torn record; once space is back the collector answers 200 again by itself.
The oracle holds acknowledged ⊆ records in the log. No Kafka: this runs in `make test`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.replay.sources import FileLogSource, Malformed, Selection
from devtools.load import Ledger, Load, drive
from devtools.oracle import Contents, Verdict, judge
from tests.integration.faults.harness import (
    Collector,
    new_prefix,
    print_log_tail,
    topics_of,
    until,
)

pytestmark = [pytest.mark.faults]

DISK_BYTES = 4 * 1024 * 1024
# Taken before the load and freed to end the fault: half the disk, so the log fills the rest
# in seconds at the load below, and deleting it gives room for the recovery's 200s.
FILLER_BYTES = 2 * 1024 * 1024
LOAD = Load(clients=4, rate_rps=20.0, events=10, invalid_every=10)
FULL_503S = 20  # 503s in a row of requests sent after the disk filled, before the heal
RECOVERED_ACKS = 10
TIMEOUT_S = 120.0
MOUNT = ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}"]


def _run(command: list[str]) -> str:
    """'' if the command succeeded, else why not (its stderr or the OS error)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return repr(exc)
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


class SmallDisk:
    """A tmpfs of DISK_BYTES at `mount_point`: mounted here if we may (root), else inside the
    collector's own user and mount namespaces (`unshare`), reached through /proc/<pid>/root."""

    def __init__(self, mount_point: Path, mode: str) -> None:
        self.mount_point = mount_point
        self.mode = mode  # "mount" or "unshare"

    def wrap(self) -> list[str]:
        if self.mode == "mount":
            return []
        script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
        user_ns = ["unshare", "--user", "--map-root-user", "--mount"]
        return [*user_ns, "sh", "-c", script, str(self.mount_point), str(DISK_BYTES)]

    def seen_from_here(self, collector: Collector) -> Path:
        """The tmpfs as this process reaches it (the collector runs it in its namespace)."""
        if self.mode == "mount":
            return self.mount_point
        assert collector.process is not None
        return Path(f"/proc/{collector.process.pid}/root") / self.mount_point.relative_to("/")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    refused = _run([*MOUNT, "tmpfs", str(mount_point)])
    if not refused:
        try:
            yield SmallDisk(mount_point, "mount")
        finally:
            _run(["umount", str(mount_point)])
        return
    if shutil.which("unshare") is None:
        pytest.skip(f"no tmpfs: mount refused ({refused}) and no `unshare` to try")
    no_namespace = _run(
        ["unshare", "--user", "--map-root-user", "--mount", *MOUNT, "tmpfs", "/mnt"]
    )
    if no_namespace:
        pytest.skip(f"no tmpfs: mount refused ({refused}); unshare refused ({no_namespace})")
    yield SmallDisk(mount_point, "unshare")  # the mount dies with the collector's namespace


def read_log(data_dir: Path, prefix: str) -> tuple[Contents, list[str]]:
    """Every record of the scenario's logs through replay's reader, and every sign of a torn
    or out-of-order record."""
    # a process that never got an invalid event writes no dead-letter log: read what exists
    dead_letter_topic = topics_of(prefix)[1]
    topics = [t for t in topics_of(prefix) if (data_dir / f"{t}.jsonl").exists()]
    contents = Contents()
    problems: list[str] = []

    async def read() -> None:
        source = FileLogSource(data_dir, topics, Selection())
        await source.open()
        expected = dict.fromkeys(topics, 0)
        async for batch in source.batches():
            for item in batch:
                if isinstance(item, Malformed):
                    problems.append(f"malformed record in {item.topic}: {item.reason}")
                    continue
                if item.offset != expected[item.topic]:
                    problems.append(f"{item.topic}: offset {item.offset}, expected {expected}")
                expected[item.topic] = item.offset + 1
                contents.records += 1
                event_id = dict(item.headers).get("event_id")
                if event_id is None:
                    contents.no_id += 1
                    continue
                dead = item.topic == dead_letter_topic
                copies = contents.dead_letters if dead else contents.events
                copies[event_id.decode()] = copies.get(event_id.decode(), 0) + 1
        await source.close()

    asyncio.run(read())
    for topic in topics:
        data = (data_dir / f"{topic}.jsonl").read_bytes()
        if data and not data.endswith(b"\n"):
            problems.append(f"{topic}: the log ends in a torn line")
    return contents, problems


PROBE_EVENTS = 50  # more bytes than a full disk has room for (the driver's batches are 10)


def probe_ids() -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(PROBE_EVENTS)]


def post_probe(url: str) -> tuple[int, dict[str, object]]:
    """One big batch while the disk is full: its whole answer, body included."""
    batch = [
        {
            "event": "track_played",
            "version": 1,
            "event_id": event_id,
            "occurred_at": "2026-11-26T12:00:00Z",
            "user_id": "u-probe",
            "properties": {"track_id": "t", "artist_id": "a", "position_ms": 1},
        }
        for event_id in probe_ids()
    ]
    body = json.dumps({"sent_at": "2026-11-26T12:00:01Z", "batch": batch}).encode()
    request = urllib.request.Request(
        url + "/v1/batch", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_file_sink_disk_full_is_503_with_no_torn_record_then_recovers(
    small_disk: SmallDisk, tmp_path: Path, record_verdict: list[Verdict]
) -> None:
    prefix = new_prefix("full")
    collector = Collector("", prefix, tmp_path, sink="file", data_dir=str(small_disk.mount_point))
    collector.wrap = small_disk.wrap()
    ledger = Ledger()
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(collector.start)
        disk = small_disk.seen_from_here(collector)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * FILLER_BYTES)
        task = asyncio.create_task(drive(collector.url + "/v1/batch", ledger, stop, LOAD))
        try:
            await until(lambda: ledger.statuses()[503] > 0, timeout_s=TIMEOUT_S, what="disk full")
            ledger.mark("full")

            def refused_since_full() -> int:
                since = ledger.marks["full"]
                return sum(1 for a in ledger.attempts if a.started_s >= since and a.status == 503)

            await until(lambda: refused_since_full() >= FULL_503S, timeout_s=60, what="503s")
            status, answer = await asyncio.to_thread(post_probe, collector.url)
            assert (status, answer.get("error")) == (503, "sink_unavailable"), answer
            filler.unlink()  # space is back; nothing is restarted
            ledger.mark("heal")
            await until(
                lambda: ledger.acknowledged_since("heal") >= RECOVERED_ACKS,
                timeout_s=TIMEOUT_S,
                what="200s after space came back",
            )
        finally:
            stop.set()
            await task
        # read back while the collector still runs (an unshare'd tmpfs ends with it)
        contents, torn = await asyncio.to_thread(read_log, disk, prefix)
        for event_id in probe_ids():  # refused, but a 503 may still have landed them
            contents.events.pop(event_id, None)
    except BaseException:
        print_log_tail(collector.log_path)
        raise
    finally:
        collector.close()
    verdict = judge(
        "file sink: disk full (4 MiB tmpfs), space freed",
        ledger,
        contents,
        load=LOAD,
        recover_s=ledger.recover_s("heal"),
    )
    record_verdict.append(verdict)
    assert not torn, torn
    assert verdict.ok, "\n".join(verdict.problems)
    assert verdict.lost == 0
    assert set(verdict.statuses) <= {"200", "503"}, verdict.statuses
