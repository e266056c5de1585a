"""Metrics the request path observes (body sizes, batch sizes, sink errors, bytes in flight)
and their aggregation over worker processes in prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import textwrap

import pytest

import collector.app
from collector import keys
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, page_viewed, track_played
from tests.waiting import eventually

JSON = {"Content-Type": "application/json"}


def sample(client: HttpClient, name: str, **labels: str) -> float | None:
    assert client.app is not None
    return client.app[keys.METRICS].registry.get_sample_value(name, labels)


async def test_body_sizes_and_batch_sizes_are_observed(collector: HttpClient) -> None:
    raw = batch_body(track_played(), page_viewed(), track_played(event="nope"))
    sent = gzip.compress(raw)
    headers = {**JSON, "Content-Encoding": "gzip"}
    response = await collector.post("/v1/batch", data=sent, headers=headers)
    assert response.status == 200
    assert sample(collector, "capture_http_request_body_bytes_sum", form="sent") == len(sent)
    assert sample(collector, "capture_http_request_body_bytes_sum", form="inflated") == len(raw)
    assert sample(collector, "capture_batch_events_sum") == 3
    assert sample(collector, "capture_batch_events_count") == 1
    labels = {"event": "track_played", "version": "1", "outcome": "accepted"}
    assert sample(collector, "capture_events_total", **labels) == 1


async def test_sink_errors_are_counted_by_type(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.available = False
    body = batch_body(track_played(), page_viewed())
    assert (await collector.post("/v1/batch", data=body, headers=JSON)).status == 503
    assert sample(collector, "capture_sink_errors_total", sink="memory", type="retriable") == 2
    memory_sink.available = True
    memory_sink.fatal_topics.add("events.page_viewed")
    assert (await collector.post("/v1/batch", data=body, headers=JSON)).status == 500
    assert sample(collector, "capture_sink_errors_total", sink="memory", type="fatal") == 1
    labels = {"event": "page_viewed", "version": "1", "outcome": "failed"}
    assert sample(collector, "capture_events_total", **labels) == 2


async def test_inflight_bytes_gauge_follows_a_request(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.stall = True  # publish holds the request until the 0.5 s sink deadline
    body = batch_body(track_played())
    pending = asyncio.create_task(collector.post("/v1/batch", data=body, headers=JSON))
    await eventually(lambda: sample(collector, "capture_inflight_bytes") == len(body))
    assert (await pending).status == 503
    assert sample(collector, "capture_inflight_bytes") == 0


# Runs in a fresh interpreter: multiprocess mode changes prometheus_client for the process.
WORKERS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, tempfile
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families
    from collector.metrics import Metrics, enable_multiprocess, worker_exited

    directory = tempfile.mkdtemp()
    enable_multiprocess(directory)
    pids = []
    for requests in (3, 4):
        pid = os.fork()
        if pid == 0:
            metrics = Metrics(CollectorRegistry())
            metrics.requests.labels("/v1/batch", "200").inc(requests)
            metrics.inflight_bytes.set(100 * requests)
            metrics.sink_ready.labels("kafka").set(requests == 4)  # the first is not ready
            os._exit(0)
        os.waitpid(pid, 0)
        pids.append(pid)

    def scrape():
        found = {}
        text = Metrics(CollectorRegistry()).scrape().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in ("capture_http_requests_total", "capture_inflight_bytes",
                              "capture_sink_ready"):
                    found[s.name] = s.value
        return found

    before = scrape()
    worker_exited(pids[0], directory)
    print(json.dumps({"before": before, "after": scrape()}))
    """
)


def test_multiprocess_mode_sums_workers_and_forgets_dead_ones_gauges() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WORKERS_SCRIPT], capture_output=True, text=True, check=True
    )
    found = json.loads(result.stdout)
    assert found["before"] == {
        "capture_http_requests_total": 7.0,  # 3 + 4: counters add up
        "capture_inflight_bytes": 700.0,  # livesum
        "capture_sink_ready": 0.0,  # livemin: the worst worker
    }
    # the first worker died: its requests still count, its live gauges are gone
    assert found["after"]["capture_http_requests_total"] == 7.0
    assert found["after"]["capture_inflight_bytes"] == 400.0
    assert found["after"]["capture_sink_ready"] == 1.0  # only the ready one is left


async def test_sink_readiness_gauge_follows_the_sink_without_anyone_calling_readyz(
    monkeypatch: pytest.MonkeyPatch, schemas: SchemaRegistry
) -> None:
    # with no load balancer polling /readyz, CaptureSinkNotReady still needs a fresh gauge
    monkeypatch.setattr(collector.app, "READINESS_PROBE_S", 0.05)
    sink = MemorySink()
    client = await start_collector(Settings(sink="memory"), sink, schemas)
    try:
        await eventually(lambda: sample(client, "capture_sink_ready", sink="memory") == 1.0)
        sink.available = False
        await eventually(lambda: sample(client, "capture_sink_ready", sink="memory") == 0.0)
        sink.available = True
        await eventually(lambda: sample(client, "capture_sink_ready", sink="memory") == 1.0)
    finally:
        await client.close()
