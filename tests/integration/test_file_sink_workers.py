"""`capture serve --workers 2` on the file sink (issue #17): each worker appends to a log of its
own (partition i of a topic), a worker killed mid-load is restarted on the same logs, and
nothing acknowledged is lost or doubled; a second collector on the same logs is refused.

How "nothing acknowledged is lost" is known: every event gets a fresh event_id and is sent
once (never retried); an id counts as acknowledged only when its request got a 200 saying all
of the batch was accepted. Afterwards `capture replay` (the real CLI, a subprocess) reads every
partition back, and each acknowledged id must be in its output exactly once. Requests cut off
by the kill got no 200, so their ids may or may not be there: that is not counted.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from devtools.ports import free_port
from tests.factories import batch_body, track_played
from tests.integration.test_workers import worker_pids
from tests.waiting import wait_ready

CAPTURE = Path(sys.executable).with_name("capture")
TOPIC = "events.track_played"
SENDERS = 6  # client threads, each opening a fresh connection per request
BATCH = 25
PHASE_EVENTS = 2_000  # acknowledged before the kill, and again after the restart
DEADLINE_S = 120.0


def collector_env(data_dir: Path, port: int, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes its own
    env |= {
        "CAPTURE_PORT": str(port),
        "CAPTURE_WORKERS": str(workers),
        "CAPTURE_SINK": "file",
        "CAPTURE_DATA_DIR": str(data_dir),
    }
    return env


class Senders:
    """Threads posting batches of fresh events until stopped; the ids acknowledged with 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[str] = []
        self.failed = 0  # requests without a 200 (cut off by the kill)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send) for _ in range(SENDERS)]

    def __enter__(self) -> Senders:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _send(self) -> None:
        while not self._stop.is_set():
            events = [track_played() for _ in range(BATCH)]
            ok = False
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request(
                    "POST",
                    "/v1/batch",
                    body=batch_body(*events),
                    headers={"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and json.loads(body)["accepted"] == BATCH
            except (OSError, http.client.HTTPException):
                ok = False  # the worker died under this request: not acknowledged
            finally:
                connection.close()
            with self._lock:
                if ok:
                    self.acked += [e["event_id"] for e in events]
                else:
                    self.failed += 1


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_workers_write_partitions_and_lose_nothing_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    logs = [data_dir / f"{TOPIC}.jsonl", data_dir / f"{TOPIC}@1.jsonl"]
    parent = subprocess.Popen([str(CAPTURE), "serve"], env=collector_env(data_dir, port, workers=2))
    try:
        wait_ready(port, parent)
        pids = worker_pids(port)
        assert len(pids) == 2
        with Senders(port) as senders:
            wait_for("load before the kill", lambda: senders.count() >= PHASE_EVENTS)
            assert all(lines(log) > 0 for log in logs)  # both workers took some
            dead = sorted(pids)[0]
            os.kill(dead, signal.SIGKILL)  # mid-load: requests are in flight on it

            def replaced() -> bool:
                now = worker_pids(port)
                return len(now) == 2 and dead not in now

            wait_for("the restart", replaced)
            before = [lines(log) for log in logs]
            acked_before = senders.count()
            # both partitions grow again: the restarted worker reopened its log and appends
            wait_for(
                "load after the restart",
                lambda: (
                    senders.count() >= acked_before + PHASE_EVENTS
                    and all(lines(log) > n for log, n in zip(logs, before, strict=True))
                ),
            )
        # while it runs, a second collector on the same logs is refused at start-up
        other = subprocess.run(
            [str(CAPTURE), "serve"],
            env=collector_env(data_dir, free_port(), workers=1),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert other.returncode == 2, other.stderr
        assert f"another process is writing {TOPIC}.jsonl" in other.stderr.decode()
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0

    out = tmp_path / "replayed.jsonl"
    args = ["replay", "--data-dir", str(data_dir), "--topic", TOPIC, "--with-metadata"]
    replay = subprocess.run(
        [str(CAPTURE), *args, "--out", str(out)],
        env=collector_env(data_dir, port, workers=1),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "malformed=0" in replay.stderr.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    found = Counter(row["value"]["event_id"] for row in rows)
    acked = senders.acked
    assert len(acked) == len(set(acked)) >= 2 * PHASE_EVENTS
    missing = [i for i in acked if found[i] == 0]
    doubled = [i for i in acked if found[i] > 1]
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert not doubled, f"{len(doubled)} acknowledged events written twice"
    # one partition per worker, each numbered from 0 without a gap (the restart continued)
    offsets: dict[int, list[int]] = {}
    for row in rows:
        offsets.setdefault(row["partition"], []).append(row["offset"])
    assert sorted(offsets) == [0, 1]
    for partition, numbers in offsets.items():
        assert numbers == list(range(len(numbers))), partition
