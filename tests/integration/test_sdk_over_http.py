"""The SDK's real HTTP transport against the real collector app (in-memory sink)."""

from __future__ import annotations

import asyncio

import msgspec

from capture_sdk import Client, DroppedEvent, RetryPolicy
from collector.sinks import MemorySink
from tests.conftest import HttpClient
from tests.waiting import eventually


async def test_sdk_retries_a_503_and_the_same_events_are_accepted(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.available = False  # every request answered 503 + Retry-After
    dropped: list[DroppedEvent] = []
    sdk = Client(
        str(collector.make_url("/")),
        flush_interval_s=0.05,
        retry=RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.1, retry_after_cap_s=0.2),
        on_error=dropped.extend,
    )
    ids = [sdk.track("page_viewed", {"path": f"/p/{i}"}, anonymous_id=f"a{i}") for i in range(10)]
    bad = sdk.track("page_viewed", {"path": "no-slash"}, anonymous_id="a")
    await eventually(lambda: sdk.stats().retried >= 2)
    assert memory_sink.records == []
    memory_sink.available = True
    assert await asyncio.to_thread(sdk.shutdown, 30.0)

    accepted = [msgspec.json.decode(r.value) for r in memory_sink.topic("events.page_viewed")]
    assert [e["event_id"] for e in accepted] == ids
    stats = sdk.stats()
    assert (stats.sent, stats.rejected) == (10, 1)
    [report] = dropped
    assert (report.event_id, report.reason) == (bad, "rejected")
    assert report.errors[0].path == "$.properties.path"


async def test_sdk_reports_a_refused_batch_without_retrying(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    dropped: list[DroppedEvent] = []
    # the collector only speaks gzip or identity; a huge event trips its body limit (413)
    # (the SDK's own max_event_bytes would drop it first as too_large: lifted here)
    sdk = Client(
        str(collector.make_url("/")),
        gzip=False,
        on_error=dropped.extend,
        max_event_bytes=4_000_000,
    )
    sdk.track("page_viewed", {"path": "/" + "x" * 2_000_000}, anonymous_id="a")
    assert await asyncio.to_thread(sdk.shutdown, 30.0)
    assert [d.reason for d in dropped] == ["collector_refused"]
    assert "413 body_too_large" in dropped[0].detail
    assert sdk.stats().retried == 0
    assert memory_sink.records == []
