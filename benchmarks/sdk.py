"""The SDK's costs: what one `track()` call costs its caller, and how fast one Client delivers.

`track()` is timed per call against a transport that answers 200 at once; delivery runs one
`capture_sdk.Client` against `ack_server` in a subprocess, so only the SDK is measured.
Must not measure the collector: nothing here talks to it.
"""

from __future__ import annotations

import sys
import time
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.events import mixed_batch
from benchmarks.procstats import sample_tree
from benchmarks.stats import percentile
from capture_sdk import Client, Response, Transport
from tests.kafka_broker import free_port

READY_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 300.0
Call = tuple[str, int, dict[str, Any], str | None, str | None]


class DiscardTransport(Transport):
    """Answers 200 without sending anything (the worker still encodes and gzips)."""

    REPLY = Response(200, b'{"accepted":0,"rejected":[]}')

    def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        return self.REPLY


def _calls(count: int, seed: int = 7) -> list[Call]:
    return [
        (
            event["event"],
            event["version"],
            event["properties"],
            event.get("user_id"),
            event.get("anonymous_id"),
        )
        for event in mixed_batch(count, seed=seed)
    ]


def _timer_overhead_ns(rounds: int = 100_000) -> int:
    samples = array("q")
    clock = time.perf_counter_ns
    for _ in range(rounds):
        started = clock()
        samples.append(clock() - started)
    return int(percentile(sorted(samples), 50))


def track_cost(calls: int) -> dict[str, Any]:
    """Per-call wall time of `track()`, timed one call at a time with perf_counter_ns."""
    variety = _calls(1_000)
    client = Client(transport=DiscardTransport(), max_queue_size=calls + 1)
    samples = array("q")
    clock = time.perf_counter_ns
    try:
        started = time.perf_counter()
        for i in range(calls):
            name, version, properties, user_id, anonymous_id = variety[i % len(variety)]
            before = clock()
            client.track(
                name, properties, version=version, user_id=user_id, anonymous_id=anonymous_id
            )
            samples.append(clock() - before)
        loop_s = time.perf_counter() - started
        client.flush(timeout_s=60)
    finally:
        client.shutdown(timeout_s=10)
    stats = client.stats()
    ordered = sorted(samples)
    return {
        "calls": calls,
        "median_us": round(percentile(ordered, 50) / 1000, 3),
        "p99_us": round(percentile(ordered, 99) / 1000, 3),
        "p999_us": round(percentile(ordered, 99.9) / 1000, 3),
        "mean_us": round(sum(ordered) / len(ordered) / 1000, 3),
        "calls_per_s": round(calls / loop_s),
        "timer_overhead_ns": _timer_overhead_ns(),
        "sent": stats.sent,
        "dropped": {k: v for k, v in stats.dropped.items() if v},
    }


def delivery_rate(events: int, work_dir: Path) -> dict[str, Any]:
    """Events/s one Client delivers end to end to a server that accepts at once."""
    port = free_port()
    log_path = work_dir / "ack-server.log"
    argv = [sys.executable, "-m", "benchmarks.ack_server", "--port", str(port)]
    variety = _calls(1_000, seed=11)
    with procs.running(argv, log_path=log_path) as server:
        url = f"http://127.0.0.1:{port}"
        procs.wait_http_ok(url + "/healthz", server, timeout_s=READY_TIMEOUT_S, log_path=log_path)
        server_before = sample_tree(server.pid).cpu_s
        client = Client(url, max_queue_size=events + 1)
        try:
            started = time.perf_counter()
            for i in range(events):
                name, version, properties, user_id, anonymous_id = variety[i % len(variety)]
                client.track(
                    name, properties, version=version, user_id=user_id, anonymous_id=anonymous_id
                )
            tracked_s = time.perf_counter() - started
            flushed = client.flush(timeout_s=DELIVERY_TIMEOUT_S)
            elapsed_s = time.perf_counter() - started
        finally:
            client.shutdown(timeout_s=10)
        server_cpu_s = sample_tree(server.pid).cpu_s - server_before
    stats = client.stats()
    return {
        "events": events,
        "flushed": flushed,
        "sent": stats.sent,
        "retried": stats.retried,
        "dropped": {k: v for k, v in stats.dropped.items() if v},
        "track_phase_s": round(tracked_s, 3),
        "elapsed_s": round(elapsed_s, 3),
        "delivered_eps": round(stats.sent / elapsed_s, 1),
        "ack_server_cpu_s": round(server_cpu_s, 3),
        "gzip": True,
        "batch_size": 100,
    }


def run(*, track_calls: int, delivery_events: int, work_dir: Path) -> dict[str, Any]:
    return {
        "track": track_cost(track_calls),
        "delivery": delivery_rate(delivery_events, work_dir),
    }
