"""Issue #6 done-when: events accepted by track() with the disk spool on survive SIGKILL.

A child interpreter tracks 10,000 events against a port where nothing listens, says so, and
is killed with SIGKILL; a new client on the same spool_dir then delivers all of them to the
real collector (in-memory sink). Duplicates are allowed, and counted. Run for both `Client`
and `AsyncClient` (the async child tracks from inside its running loop).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from capture_sdk import AsyncClient, Client, RetryPolicy
from collector.sinks import MemorySink
from devtools.ports import free_port
from tests.conftest import HttpClient

EVENTS = 10_000

TRACKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from capture_sdk import AsyncClient, Client, RetryPolicy

    url, spool_dir, ids_path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    options = dict(
        spool_dir=spool_dir, max_queue_size=count, flush_interval_s=0.05,
        retry=RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.2),
    )

    def track_all(client):
        ids = [
            client.track("page_viewed", {"path": f"/p/{i}"}, anonymous_id=f"a{i % 97}")
            for i in range(count)
        ]
        with open(ids_path, "w") as f:
            f.write("\\n".join(ids))
        print("tracked", flush=True)

    async def track_async():
        track_all(AsyncClient(url, **options))  # its sender task retries on this loop
        await asyncio.sleep(600)  # killed long before this

    if sys.argv[5] == "async":
        asyncio.run(track_async())
    else:
        track_all(Client(url, **options))
        time.sleep(600)  # killed long before this
    """
)


def track_then_get_killed(spool_dir: Path, ids_path: Path, kind: str) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: nothing is delivered
    argv = [dead_url, str(spool_dir), str(ids_path), str(EVENTS), kind]
    child = subprocess.Popen(
        [sys.executable, "-c", TRACKER, *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "tracked"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.parametrize("kind", ["thread", "async"])
async def test_events_tracked_before_sigkill_are_delivered_after_restart(
    kind: str, tmp_path: Path, collector: HttpClient, memory_sink: MemorySink
) -> None:
    spool_dir, ids_path = tmp_path / "spool", tmp_path / "ids"
    await asyncio.to_thread(track_then_get_killed, spool_dir, ids_path, kind)
    tracked = set(ids_path.read_text().split("\n"))
    assert len(tracked) == EVENTS
    assert memory_sink.records == []

    url = str(collector.make_url("/"))
    retry = RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.2)
    restarted: Client | AsyncClient
    if kind == "async":
        restarted = AsyncClient(url, spool_dir=spool_dir, flush_interval_s=0.05, retry=retry)
        assert await restarted.shutdown(120.0)
    else:
        restarted = Client(url, spool_dir=spool_dir, flush_interval_s=0.05, retry=retry)
        assert await asyncio.to_thread(restarted.shutdown, 120.0)

    arrived = Counter(
        msgspec.json.decode(r.value)["event_id"] for r in memory_sink.topic("events.page_viewed")
    )
    assert set(arrived) == tracked
    duplicates = sum(arrived.values()) - len(arrived)
    stats = restarted.stats()
    # nothing reached the collector before the kill, so the restart replays each event once
    assert stats.replayed == EVENTS
    assert stats.sent == EVENTS + duplicates
    assert stats.dropped["spool_corrupt"] == 0
    # everything settled: the restarted client leaves no segment behind
    assert sorted(p.name for p in spool_dir.iterdir()) == ["spool.lock"]
