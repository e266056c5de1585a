"""SIGTERM to `capture serve` (real process, real broker): no acknowledged event is lost.

On SIGTERM the collector closes its listener, lets requests in flight finish, flushes the
producer and exits 0; every event answered 200 before it went away must be in Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from devtools.kafka import KafkaBroker
from devtools.ports import free_port
from tests.factories import batch_body, track_played
from tests.integration.kafka_helpers import consume
from tests.integration.load_driver import LoadResult, drive
from tests.waiting import eventually, wait_ready

pytestmark = pytest.mark.kafka

CAPTURE = Path(sys.executable).with_name("capture")
SHUTDOWN_TIMEOUT_S = 15
# The collector's own bound is SHUTDOWN_TIMEOUT_S (drain and flush); the margin is for a
# loaded machine.
EXIT_TIMEOUT_S = SHUTDOWN_TIMEOUT_S + 30
JSON = {"Content-Type": "application/json"}


def start_serve(
    broker: KafkaBroker,
    prefix: str,
    port: int,
    log: Path,
    workers: int = 1,
    extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CAPTURE_PORT": str(port),
        "CAPTURE_WORKERS": str(workers),
        "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CAPTURE_TOPIC_PREFIX": f"{prefix}.",
        "CAPTURE_DEAD_LETTER_TOPIC": f"{prefix}._invalid",
        "CAPTURE_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        **(extra or {}),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(CAPTURE), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def landed_ids(broker: KafkaBroker, prefix: str, expected: int) -> set[str]:
    records = await consume(
        broker.bootstrap_servers, [f"{prefix}.track_played"], expected=expected, timeout_s=60
    )
    return {msgspec.json.decode(r.value)["event_id"] for r in records}


def kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def refuses_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_load_loses_no_acknowledged_event(
    kafka_broker: KafkaBroker, tmp_path: Path, workers: int
) -> None:
    prefix = f"term{uuid.uuid4().hex[:8]}"
    port = free_port()
    process = start_serve(kafka_broker, prefix, port, tmp_path / "serve.log", workers)
    stop = asyncio.Event()
    result = LoadResult()
    load: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(wait_ready, port, process, timeout_s=60)
        url = f"http://127.0.0.1:{port}/v1/batch"
        load = asyncio.create_task(drive(url, stop, result, clients=4))
        await eventually(lambda: len(result.acked) >= 100, timeout_s=60)

        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, EXIT_TIMEOUT_S)
        assert code == 0
    finally:
        stop.set()
        if load is not None:
            await load
        kill_if_running(process)

    assert result.bad == []  # only 200s and 503s (with Retry-After); the rest were refused
    missing = result.acked - await landed_ids(kafka_broker, prefix, len(result.acked))
    assert not missing, f"{len(missing)} of {len(result.acked)} acknowledged events not in Kafka"


async def inflight_bytes(port: int) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        for line in (await response.text()).splitlines():
            if line.startswith("capture_inflight_bytes "):
                return float(line.split()[1])
    raise AssertionError("no capture_inflight_bytes in /metrics")


class StuckRequest:
    """A request whose handler waits for acks from a frozen (SIGSTOP) broker."""

    def __init__(self, task: asyncio.Task[aiohttp.ClientResponse], broker_pid: int) -> None:
        self.task = task
        self._broker_pid = broker_pid

    def thaw_broker(self) -> None:
        os.kill(self._broker_pid, signal.SIGCONT)  # harmless when it already runs


@contextlib.asynccontextmanager
async def stuck_request(
    broker: KafkaBroker, process: subprocess.Popen[bytes], port: int, event: dict[str, Any]
) -> AsyncIterator[StuckRequest]:
    """`capture serve` warmed up (topic made, producer connected), then the broker frozen with
    `event`'s request in the handler, waiting for its acks; the broker thaws on exit. Fault
    injection on the real broker: frozen, it holds the produce unanswered."""
    assert broker._process is not None
    await asyncio.to_thread(wait_ready, port, process, timeout_s=60)
    url = f"http://127.0.0.1:{port}/v1/batch"
    async with aiohttp.ClientSession() as session:
        warm = await session.post(url, data=batch_body(track_played()), headers=JSON)
        assert warm.status == 200
        os.kill(broker._process.pid, signal.SIGSTOP)
        stuck = StuckRequest(
            asyncio.create_task(session.post(url, data=batch_body(event), headers=JSON)),
            broker._process.pid,
        )
        try:
            deadline = time.monotonic() + 20
            while await inflight_bytes(port) == 0:  # the handler is waiting for the acks
                assert time.monotonic() < deadline, "the request never reached the sink"
                await asyncio.sleep(0.05)
            yield stuck
        finally:
            stuck.thaw_broker()


async def test_sigterm_waits_for_the_acks_of_a_request_in_flight(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    prefix = f"drain{uuid.uuid4().hex[:8]}"
    port = free_port()
    process = start_serve(
        kafka_broker, prefix, port, tmp_path / "serve.log", extra={"CAPTURE_SINK_TIMEOUT_S": "20"}
    )
    event = track_played()
    try:
        async with stuck_request(kafka_broker, process, port, event) as stuck:
            process.send_signal(signal.SIGTERM)
            # New connections are refused while the request in flight is still served.
            deadline = time.monotonic() + 20
            while not await asyncio.to_thread(refuses_connections, port):
                assert time.monotonic() < deadline, "the listener stayed open after SIGTERM"
                await asyncio.sleep(0.05)
            assert process.poll() is None
            assert not stuck.task.done()

            stuck.thaw_broker()
            response = await asyncio.wait_for(stuck.task, timeout=60)
            assert response.status == 200  # answered after the acks, before the exit
        code = await asyncio.to_thread(process.wait, EXIT_TIMEOUT_S)
        assert code == 0
    finally:
        kill_if_running(process)
    assert event["event_id"] in await landed_ids(kafka_broker, prefix, 1)


async def test_sigterm_with_kafka_frozen_exits_within_the_shutdown_budget(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Drain and flush share one deadline: neither a request waiting for acks nor a producer
    that cannot flush keeps the process past CAPTURE_SHUTDOWN_TIMEOUT_S (plus start-up slack)."""
    budget_s = 3.0
    prefix = f"budget{uuid.uuid4().hex[:8]}"
    port = free_port()
    extra = {"CAPTURE_SINK_TIMEOUT_S": "60", "CAPTURE_SHUTDOWN_TIMEOUT_S": str(budget_s)}
    process = start_serve(kafka_broker, prefix, port, tmp_path / "serve.log", extra=extra)
    try:
        async with stuck_request(kafka_broker, process, port, track_played()) as stuck:
            process.send_signal(signal.SIGTERM)
            # Before one deadline: drain (the whole budget) + Kafka's own 10 s flush bound.
            # The bound below sits between the two, with room for a loaded machine.
            code = await asyncio.to_thread(process.wait, budget_s + 8)
            assert code == 0
            try:
                response = await asyncio.wait_for(stuck.task, timeout=10)
            except aiohttp.ClientError:
                pass  # cut off: no answer at all, so nothing was acknowledged
            else:
                assert response.status != 200  # never a 200 for an event Kafka did not ack
    finally:
        kill_if_running(process)
