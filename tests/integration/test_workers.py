"""`capture serve --workers 2`: two processes share the port; a dead worker is replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.factories import batch_body, track_played
from tests.kafka_broker import KafkaBroker, free_port
from tests.waiting import wait_ready

pytestmark = pytest.mark.kafka

CAPTURE = Path(sys.executable).with_name("capture")


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, object] = json.load(response)
        return result


def worker_pids(port: int, tries: int = 200) -> set[int]:
    """Ask /healthz on fresh connections; the kernel spreads them over the workers."""
    pids = set()
    for _ in range(tries):
        try:
            pid = get_json(f"http://127.0.0.1:{port}/healthz")["pid"]
        except OSError:
            # a connection queued on a worker that just died is reset by the kernel
            continue
        assert isinstance(pid, int)
        pids.add(pid)
        if len(pids) == 2:
            break
    return pids


def test_two_workers_share_the_port_and_are_supervised(kafka_broker: KafkaBroker) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CAPTURE_PORT": str(port),
        "CAPTURE_WORKERS": "2",
        "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
    }
    parent = subprocess.Popen([str(CAPTURE), "serve"], env=env)
    try:
        wait_ready(port, parent)
        pids = worker_pids(port)
        assert len(pids) == 2
        assert parent.pid not in pids

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/batch",
            data=batch_body(track_played()),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["accepted"] == 1

        # SIGHUP to the parent reloads every worker's plan and leaves the parent running:
        # 20 answers in a row (fresh connections, spread over both workers) show the reload
        os.kill(parent.pid, signal.SIGHUP)
        reloaded = 'capture_schema_reloads_total{outcome="ok"} 1.0'
        deadline = time.monotonic() + 30
        in_a_row = 0
        while in_a_row < 20:
            assert time.monotonic() < deadline, "the reload did not reach every worker"
            assert parent.poll() is None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    in_a_row = in_a_row + 1 if reloaded in r.read().decode() else 0
            except OSError:
                continue

        dead = pids.pop()
        os.kill(dead, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = worker_pids(port)
            if len(now) == 2 and dead not in now:
                break
            assert time.monotonic() < deadline, f"worker {dead} was not replaced: {now}"
            time.sleep(0.2)
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
