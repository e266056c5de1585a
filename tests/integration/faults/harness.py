"""Fault scenarios' shared steps: a `capture serve` process on the cluster, load, the oracle.

A scenario body injects its fault and heals it; `run_scenario` drives the load around it,
waits for the cluster and the collector to recover, reads every topic back and judges. It must
leave the cluster healthy (the conftest checks) and never hide a verdict's problems.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.kafka_cluster import KafkaCluster
from devtools.load import Ledger, Load, drive
from devtools.oracle import Verdict, judge, read_back
from devtools.ports import free_port
from devtools.sdk_load import SdkDriver

CAPTURE = Path(sys.executable).with_name("capture")
READY_TIMEOUT_S = 60.0
# Acknowledged events before the fault, so the fault meets a stream already flowing.
WARMUP_TIMEOUT_S = 180
WARMUP_ACKS = 200
# After the heal: the load must get this many 200s again before it stops.
RECOVERED_ACKS = 10
RECOVERY_TIMEOUT_S = 120.0
# The moderate load of the fault tier: bounded, loopback only (see docs/reliability.md).
TIER_LOAD = Load(clients=4, rate_rps=20.0, events=10, invalid_every=10)
SINK_TIMEOUT_S = 5.0
# The SDK driver's pace beside the raw driver (events per second, one process).
SDK_RATE_EPS = 50.0


class Collector:
    """`capture serve` as deployed, configured only through CAPTURE_* variables; `kill()` or
    `terminate()` then `start()` brings it back on the same port."""

    def __init__(self, bootstrap_servers: str, prefix: str, work_dir: Path, **extra: str):
        self.wrap: list[str] = []  # a command the collector runs under (e.g. `unshare ...`)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / f"collector-{prefix}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CAPTURE_")} | {
            "CAPTURE_HOST": "127.0.0.1",
            "CAPTURE_PORT": str(self.port),
            "CAPTURE_SINK": "kafka",
            "CAPTURE_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "CAPTURE_TOPIC_PREFIX": f"{prefix}.",
            "CAPTURE_DEAD_LETTER_TOPIC": f"{prefix}._invalid",
            "CAPTURE_DATA_DIR": str(work_dir / "data"),
            "CAPTURE_SINK_TIMEOUT_S": str(SINK_TIMEOUT_S),
            "CAPTURE_RETRY_AFTER_S": "1",
            "CAPTURE_LOG_LEVEL": "WARNING",
            **{f"CAPTURE_{k.upper()}": v for k, v in extra.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.wrap, str(CAPTURE), "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.url, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the exit code (the collector drains, then exits 0)."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout_s)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def serve(bootstrap_servers: str, prefix: str, work_dir: Path, **extra: str) -> Iterator[Collector]:
    collector = Collector(bootstrap_servers, prefix, work_dir, **extra)
    try:
        collector.start()
        yield collector
    except BaseException:
        print_log_tail(collector.log_path)  # pytest shows it with the failure
        raise
    finally:
        collector.close()


def print_log_tail(path: Path, lines: int = 60) -> None:
    # aiokafka repeats its connection errors every second; the rest is what tells
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    telling = [line for line in text if "Unable connect" not in line]
    print(f"--- last {lines} telling lines of {path.name} ({len(text)} lines) ---")
    print("\n".join(telling[-lines:]))


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert process.poll() is None, "collector exited at start"
        try:
            urllib.request.urlopen(url + "/readyz", timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "collector never became ready"
            time.sleep(0.2)


async def until(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f}s"
        await asyncio.sleep(0.05)


def new_prefix(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:6]}"


def topics_of(prefix: str) -> list[str]:
    return [f"{prefix}.track_played", f"{prefix}._invalid"]


@dataclass
class Run:
    """What a scenario body works with while the load runs."""

    cluster: KafkaCluster
    ledger: Ledger
    topic: str  # the event topic under load
    sdk: SdkDriver | None = None  # the SDK driver, when the scenario runs one


Body = Callable[[Run], Awaitable[None]]


async def run_scenario(
    name: str,
    cluster: KafkaCluster,
    url: str,
    prefix: str,
    body: Body,
    *,
    load: Load = TIER_LOAD,
    recover_from: str = "heal",
    destroyed_until: str | None = None,
    sdk: SdkDriver | None = None,
) -> tuple[Verdict, Ledger]:
    """Load, `body` (which marks `fault` and `heal`), recovery, read-back, verdict.

    With `sdk`, an SDK driver process (spool on) runs beside the raw driver from before the
    warm-up; after the recovery it is stopped (its client drains) and judged too.
    """
    topics = topics_of(prefix)
    await cluster.create_topics(topics)
    await cluster.wait_healthy(topics)
    ledger = Ledger()
    stop = asyncio.Event()
    task = asyncio.create_task(drive(url + "/v1/batch", ledger, stop, load))
    if sdk is not None:
        await asyncio.to_thread(sdk.start)
    try:
        # generous: the session's first scenario also waits out the new cluster's first
        # producer id and leader elections, which took over 60 s once on a loaded machine
        await until(
            lambda: len(ledger.acknowledged) >= WARMUP_ACKS,
            timeout_s=WARMUP_TIMEOUT_S,
            what="warm-up",
        )
        await body(Run(cluster, ledger, topics[0], sdk))
        await cluster.wait_healthy(topics)
        await until(
            lambda: ledger.acknowledged_since("heal") >= RECOVERED_ACKS,
            timeout_s=RECOVERY_TIMEOUT_S,
            what="200s after the heal",
        )
        if sdk is not None:
            await asyncio.to_thread(sdk.stop)  # shutdown() delivers what it still holds
    finally:
        stop.set()
        await task
        if sdk is not None:
            sdk.close()
    contents = await read_back(cluster.direct_bootstrap_servers, topics, topics[1])
    verdict = judge(
        name,
        ledger,
        contents,
        load=load,
        recover_s=ledger.recover_s(recover_from),
        destroyed_before=None if destroyed_until is None else ledger.marks[destroyed_until],
        sdk=None if sdk is None else sdk.finish(),
    )
    return verdict, ledger
