"""`capture serve --workers 2`: two processes share the port, a dead worker is replaced, and
/metrics in either worker reports the sum over both (prometheus_client multiprocess mode).
"""

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
from prometheus_client.parser import text_string_to_metric_families

from devtools.kafka import KafkaBroker
from devtools.ports import free_port
from tests.factories import batch_body, track_played
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


def sample(port: int, name: str, labels: dict[str, str]) -> float | None:
    """One sample of a fresh /metrics scrape (a fresh connection: any worker may answer)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def post_batch(port: int) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batch",
        data=batch_body(track_played()),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["accepted"] == 1


def start_workers(broker: KafkaBroker, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CAPTURE_PORT": str(port),
        "CAPTURE_WORKERS": "2",
        "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisor makes its own
    return subprocess.Popen([str(CAPTURE), "serve"], env=env)


def test_metrics_are_summed_over_workers(kafka_broker: KafkaBroker) -> None:
    port = free_port()
    parent = start_workers(kafka_broker, port)
    try:
        wait_ready(port, parent)
        assert len(worker_pids(port)) == 2  # both serve, so each holds part of the count
        sent = 40
        for _ in range(sent):  # fresh connections: the kernel spreads them over both
            post_batch(port)
        ok = {"route": "/v1/batch", "status": "200"}
        accepted = {"event": "track_played", "version": "1", "outcome": "accepted"}
        # whichever worker answers the scrape, it reports both workers' requests
        for _ in range(10):
            assert sample(port, "capture_http_requests_total", ok) == sent
            assert sample(port, "capture_events_total", accepted) == sent
            assert sample(port, "capture_batch_events_count", {}) == sent
            assert sample(port, "capture_inflight_bytes", {}) == 0
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0


def test_two_workers_share_the_port_and_are_supervised(kafka_broker: KafkaBroker) -> None:
    port = free_port()
    parent = start_workers(kafka_broker, port)
    try:
        wait_ready(port, parent)
        pids = worker_pids(port)
        assert len(pids) == 2
        assert parent.pid not in pids

        post_batch(port)

        # SIGHUP to the parent reloads every worker's plan and leaves the parent running:
        # the reload counter, summed over the workers, reaches 2 (one reload in each)
        os.kill(parent.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while True:
            assert parent.poll() is None
            try:
                if sample(port, "capture_schema_reloads_total", {"outcome": "ok"}) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the reload did not reach every worker"
            time.sleep(0.1)

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


def alive(pid: int) -> bool:
    """Whether `pid` still runs: a zombie (dead, not yet reaped by its new parent) is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_workers_exit_when_the_parent_is_killed(kafka_broker: KafkaBroker) -> None:
    # SIGKILL runs no handler in the parent: the workers must notice on their own, or they
    # keep serving as orphans and hold the port
    port = free_port()
    parent = start_workers(kafka_broker, port)
    try:
        wait_ready(port, parent)
        pids = worker_pids(port)
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait(timeout=30)
    deadline = time.monotonic() + 30  # a graceful drain of idle workers, with room to spare
    while orphans := [pid for pid in pids if alive(pid)]:
        if time.monotonic() > deadline:
            for pid in orphans:  # leave no process behind on the port for later tests
                os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"workers {orphans} outlived their killed parent")
        time.sleep(0.1)
