"""The disk spool (issue #6): recovery from corrupt files, the byte bound, deletion, replay."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import capture_sdk._spool
from capture_sdk import AsyncClient, Client, ConfigurationError, Response, RetryPolicy
from capture_sdk._spool import encode_record, read_records
from capture_sdk.testing import AsyncRecordingTransport, RecordingTransport

# No retries worth waiting for: an unanswered batch is given up at once and stays on disk.
GIVE_UP = RetryPolicy(backoff_base_s=0.001, backoff_cap_s=0.001, max_retry_time_s=0.0)
UNAVAILABLE = Response(503, b'{"error": "sink_unavailable", "detail": "down"}')


def down_transport(requests: int = 1_000) -> RecordingTransport:
    return RecordingTransport([UNAVAILABLE] * requests)


def track_paths(client: Client, count: int, prefix: str = "/p/") -> list[str]:
    return [
        client.track("page_viewed", {"path": f"{prefix}{i}"}, anonymous_id="a")
        for i in range(count)
    ]


def segments(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*.seg"))


def leave_on_disk(spool_dir: Path, count: int) -> list[str]:
    """Track `count` events that the collector never accepts: they stay in the spool."""
    client = Client(transport=down_transport(), spool_dir=spool_dir, retry=GIVE_UP)
    ids = track_paths(client, count)
    client.shutdown(10)
    assert client.stats().sent == 0
    return ids


def restart(spool_dir: Path) -> tuple[Client, RecordingTransport]:
    transport = RecordingTransport()
    client = Client(transport=transport, spool_dir=spool_dir)
    assert client.flush(10)
    return client, transport


def test_records_round_trip_and_damage_is_counted_not_fatal() -> None:
    records = [encode_record(b'{"n":%d}' % i) for i in range(4)]
    flipped = bytearray(records[1])
    flipped[12] ^= 0x55
    data = records[0] + bytes(flipped) + records[2] + records[3][:-5]
    payloads, corrupt = read_records(data)
    assert payloads == [b'{"n":0}', b'{"n":2}']
    assert corrupt == 2  # the flipped record and the torn tail
    assert read_records(b"garbage without crc\n\x00\x01") == ([], 2)


def test_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    transport = RecordingTransport()
    client = Client(transport=transport, spool_dir=tmp_path, batch_size=10)
    ids = track_paths(client, 95)
    assert segments(tmp_path)  # written before track() returned
    assert client.flush(10)
    assert [e["event_id"] for e in transport.events] == ids
    assert segments(tmp_path) == []
    client.shutdown(10)


def test_restart_replays_what_was_not_acknowledged(tmp_path: Path) -> None:
    ids = leave_on_disk(tmp_path, 30)
    assert segments(tmp_path)
    client, transport = restart(tmp_path)
    assert [e["event_id"] for e in transport.events] == ids
    assert [e["properties"]["path"] for e in transport.events] == [f"/p/{i}" for i in range(30)]
    stats = client.stats()
    assert (stats.replayed, stats.sent, stats.enqueued) == (30, 30, 0)
    assert segments(tmp_path) == []
    client.shutdown(10)


def test_partly_acknowledged_spool_replays_the_rest_with_counted_duplicates(
    tmp_path: Path,
) -> None:
    # the first batch of 10 is acknowledged, every later one refused with 503
    transport = RecordingTransport(
        [Response(200, b'{"accepted": 10, "rejected": []}')] + [UNAVAILABLE] * 100
    )
    first = Client(transport=transport, spool_dir=tmp_path, retry=GIVE_UP, batch_size=10)
    ids = track_paths(first, 30)
    first.shutdown(10)
    delivered = [e["event_id"] for e in transport.events]
    assert delivered == ids[:10]

    second, replay = restart(tmp_path)
    replayed = [e["event_id"] for e in replay.events]
    assert set(ids[10:]) <= set(replayed)  # nothing unacknowledged is lost
    assert set(delivered) | set(replayed) == set(ids)
    # duplicates are possible (same segment), and visible in stats
    assert second.stats().replayed == len(replayed)
    second.shutdown(10)


def test_torn_and_corrupt_records_are_skipped_and_counted(tmp_path: Path) -> None:
    ids = leave_on_disk(tmp_path, 20)
    [segment] = segments(tmp_path)
    lines = segment.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 20
    damaged = bytearray(lines[5])
    damaged[len(damaged) // 2] ^= 0xFF  # a flipped byte inside record 5
    lines[5] = bytes(damaged)
    torn = b"\n".join(lines) + b"\n"
    segment.write_bytes(torn[: -len(lines[19]) // 2])  # record 19 cut mid-way (a crash)

    client, transport = restart(tmp_path)
    expected = [i for n, i in enumerate(ids) if n not in (5, 19)]
    assert [e["event_id"] for e in transport.events] == expected
    stats = client.stats()
    assert stats.dropped["spool_corrupt"] == 2
    assert stats.sent == 18
    assert segments(tmp_path) == []
    client.shutdown(10)


def test_the_spool_is_bounded_in_bytes_and_drops_new_events(tmp_path: Path) -> None:
    max_bytes = 4_000
    dropped: list[str] = []
    client = Client(
        transport=down_transport(),
        spool_dir=tmp_path,
        spool_max_bytes=max_bytes,
        retry=GIVE_UP,
        flush_interval_s=60,  # nothing leaves the spool while we fill it
        on_error=lambda events: dropped.extend(e.reason for e in events),
    )
    track_paths(client, 100)
    on_disk = sum(p.stat().st_size for p in segments(tmp_path))
    assert max_bytes - 200 < on_disk <= max_bytes
    full = client.stats().dropped["spool_full"]
    assert full > 50
    assert dropped.count("spool_full") == full
    client.shutdown(10)


def test_a_second_live_client_cannot_share_a_spool_dir(tmp_path: Path) -> None:
    first = Client(transport=RecordingTransport(), spool_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="in use by another live process"):
        Client(transport=RecordingTransport(), spool_dir=tmp_path)
    first.shutdown(10)
    second = Client(transport=RecordingTransport(), spool_dir=tmp_path)  # the lock is released
    second.shutdown(10)


FORK_CHILD = """
import os, sys
from capture_sdk import Client
from capture_sdk.testing import RecordingTransport

spool_dir = sys.argv[1]
client = Client(transport=RecordingTransport(), spool_dir=spool_dir, flush_interval_s=60)
pid = os.fork()
if pid == 0:
    client.track("page_viewed", {"path": "/child"}, anonymous_id="c")
    ok = client.flush(10)
    # the child ran without the spool: nothing it tracked is in the parent's files
    on_disk = b"".join(p.read_bytes() for p in __import__("pathlib").Path(spool_dir).glob("*.seg"))
    os._exit(0 if ok and b"/child" not in on_disk else 3)
_, status = os.waitpid(pid, 0)
client.track("page_viewed", {"path": "/parent"}, anonymous_id="p")
assert client.flush(10) and client.stats().sent == 1
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_does_not_write_to_the_parents_spool(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_CHILD, str(tmp_path)], timeout=60, check=False
    )
    assert result.returncode == 0


# --- AsyncClient: the same spool, its fsync off the loop ----------------------------------


async def test_async_client_spool_survives_a_restart_and_fsyncs_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def fsync_spy(fd: int) -> None:
        fsync_threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_spy)
    first = AsyncClient(
        transport=AsyncRecordingTransport([UNAVAILABLE] * 100), spool_dir=tmp_path, retry=GIVE_UP
    )
    ids = [first.track("page_viewed", {"path": f"/a/{i}"}, anonymous_id="a") for i in range(30)]
    assert segments(tmp_path)  # written before track() returned
    await first.shutdown(10)
    assert first.stats().sent == 0
    assert fsync_threads  # the group commits and the final one ran...
    assert threading.get_ident() not in fsync_threads  # ...never on the loop's thread

    transport = AsyncRecordingTransport()
    second = AsyncClient(transport=transport, spool_dir=tmp_path)
    assert await second.flush(10)
    assert [e["event_id"] for e in transport.events] == ids
    stats = second.stats()
    assert (stats.replayed, stats.sent, stats.enqueued) == (30, 30, 0)
    assert segments(tmp_path) == []  # acknowledged: deleted
    with pytest.raises(ConfigurationError, match="in use"):
        AsyncClient(transport=AsyncRecordingTransport(), spool_dir=tmp_path)
    await second.shutdown(10)


async def test_async_client_spool_counts_corrupt_records_and_respects_its_bound(
    tmp_path: Path,
) -> None:
    leave_on_disk(tmp_path, 10)  # a thread Client's spool is an AsyncClient's too
    [segment] = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[20] ^= 0xFF  # corrupt the first record
    segment.write_bytes(bytes(data))
    transport = AsyncRecordingTransport()
    client = AsyncClient(
        transport=transport, spool_dir=tmp_path, spool_max_bytes=4_000, flush_interval_s=60
    )
    for i in range(100):
        client.track("page_viewed", {"path": f"/new/{i}"}, anonymous_id="a")
    stats = client.stats()
    assert stats.dropped["spool_corrupt"] == 1
    assert stats.replayed == 9
    assert stats.dropped["spool_full"] > 50
    assert sum(p.stat().st_size for p in segments(tmp_path)) <= 4_000
    assert await client.shutdown(10)
    assert len(transport.events) == 9 + stats.enqueued


# --- a disk that fails (issue #12) -------------------------------------------------------


class FailingOs:
    """The os module as the spool sees it; `write` does what the test says."""

    def __init__(self, write: Callable[[int, bytes], int]) -> None:
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_a_short_write_is_cut_back_so_the_next_record_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def short_second(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        return os.write(fd, data[: len(data) // 2] if calls == 2 else data)

    monkeypatch.setattr(capture_sdk._spool, "os", FailingOs(short_second))
    client = Client(transport=down_transport(), spool_dir=tmp_path, retry=GIVE_UP)
    ids = track_paths(client, 3)
    monkeypatch.undo()
    client.shutdown(10)
    [segment] = segments(tmp_path)
    payloads, corrupt = read_records(segment.read_bytes())
    assert corrupt == 0  # the torn half was truncated away, not left to swallow record 3
    on_disk = [msgspec.json.decode(p)["event_id"] for p in payloads]
    assert on_disk == [ids[0], ids[2]]
    stats = client.stats()
    # the one not on disk was in memory only: given up, it is dropped; the others are kept
    assert (stats.spool_errors, stats.spooled, stats.dropped["retries_exhausted"]) == (1, 2, 1)


def test_a_spool_segment_deleted_under_the_client_is_not_trusted(tmp_path: Path) -> None:
    dropped: list[str] = []
    client = Client(
        transport=down_transport(),
        spool_dir=tmp_path,
        retry=GIVE_UP,
        flush_interval_s=60,
        on_error=lambda events: dropped.extend(e.reason for e in events),
    )
    track_paths(client, 2)
    for segment in segments(tmp_path):
        segment.unlink()  # an over-eager cleanup job
    track_paths(client, 2, "/after/")  # a new segment, not the deleted one
    client.shutdown(10)
    stats = client.stats()
    # the first two are in a file that is gone: dropped, not counted as kept on disk
    assert (stats.spooled, stats.dropped["shutdown"] + stats.dropped["retries_exhausted"]) == (
        2,
        2,
    )
    assert len(dropped) == 2
    [segment] = segments(tmp_path)
    assert b"/after/0" in segment.read_bytes()
