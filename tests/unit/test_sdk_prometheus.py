"""capture_sdk.prometheus: a client's stats() scraped from a fresh registry (issue #6)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from capture_sdk import AsyncClient, Client, Response, RetryPolicy
from capture_sdk.prometheus import register
from capture_sdk.testing import AsyncRecordingTransport, RecordingTransport


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_shows_the_clients_stats_as_they_change() -> None:
    transport = RecordingTransport([Response(400, b'{"error": "bad", "detail": "no"}')])
    client = Client(
        transport=transport, retry=RetryPolicy(max_retry_time_s=0.0), flush_interval_s=60
    )
    registry = CollectorRegistry()
    register(client, registry)
    for i in range(3):
        client.track("page_viewed", {"path": f"/{i}"}, anonymous_id="a")
    before = scrape(registry)
    assert before[("capture_sdk_events_enqueued_total", ())] == 3
    assert before[("capture_sdk_queue_depth", ())] == 3
    assert before[("capture_sdk_events_sent_total", ())] == 0
    assert client.flush(10)  # the first batch is refused as a whole (400)
    client.track("page_viewed", {"path": "/ok"}, anonymous_id="a")
    assert client.shutdown(10)
    after = scrape(registry)
    assert after[("capture_sdk_events_sent_total", ())] == 1
    assert after[("capture_sdk_events_dropped_total", (("reason", "collector_refused"),))] == 3
    assert after[("capture_sdk_events_dropped_total", (("reason", "queue_full"),))] == 0
    assert after[("capture_sdk_queue_depth", ())] == 0
    assert after[("capture_sdk_events_sampled_out_total", ())] == 0


async def test_an_async_clients_sampling_shows_in_the_scrape() -> None:
    client = AsyncClient(transport=AsyncRecordingTransport(), sample_rates={"page_viewed": 0.0})
    registry = CollectorRegistry()
    register(client, registry)
    client.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert await client.shutdown(10)
    samples = scrape(registry)
    assert samples[("capture_sdk_events_sampled_out_total", ())] == 1
    assert samples[("capture_sdk_events_enqueued_total", ())] == 0


def test_a_second_client_on_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    first, second = Client("http://127.0.0.1:1"), Client("http://127.0.0.1:1")
    register(first, registry)
    with pytest.raises(ValueError, match="Duplicated"):
        register(second, registry)
    first.shutdown(1)
    second.shutdown(1)


def test_importing_capture_sdk_does_not_import_prometheus_client() -> None:
    code = "import sys, capture_sdk; print('prometheus_client' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout.strip() == "False", result.stderr
