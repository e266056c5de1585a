"""AsyncClient with AiohttpTransport against the real collector app (in-memory sink), both on
the test's event loop: no thread anywhere."""

from __future__ import annotations

import msgspec

from capture_sdk import AiohttpTransport, AsyncClient, DroppedEvent, RetryPolicy
from collector.sinks import MemorySink
from tests.conftest import HttpClient
from tests.waiting import eventually


async def test_async_sdk_retries_a_503_and_the_same_events_are_accepted(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.available = False  # every request answered 503 + Retry-After
    dropped: list[DroppedEvent] = []
    sdk = AsyncClient(
        str(collector.make_url("/")),
        flush_interval_s=0.05,
        retry=RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.1, retry_after_cap_s=0.2),
        on_error=dropped.extend,
    )
    ids = [sdk.track("page_viewed", {"path": f"/p/{i}"}, anonymous_id=f"a{i}") for i in range(10)]
    await eventually(lambda: sdk.stats().retried >= 2)
    assert memory_sink.records == []
    memory_sink.available = True
    assert await sdk.shutdown(30.0)

    accepted = [msgspec.json.decode(r.value) for r in memory_sink.topic("events.page_viewed")]
    assert [e["event_id"] for e in accepted] == ids
    stats = sdk.stats()
    assert (stats.sent, stats.rejected, sum(stats.dropped.values())) == (10, 0, 0)
    assert dropped == []


async def test_async_sdk_reports_a_schema_rejection_with_its_path(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    dropped: list[DroppedEvent] = []
    async with AsyncClient(str(collector.make_url("/")), on_error=dropped.extend) as sdk:
        good = sdk.track("page_viewed", {"path": "/ok"}, anonymous_id="a")
        bad = sdk.track("page_viewed", {"path": "no-slash"}, anonymous_id="a")
        assert await sdk.flush(30.0)

    [accepted] = [msgspec.json.decode(r.value) for r in memory_sink.topic("events.page_viewed")]
    assert accepted["event_id"] == good
    [report] = dropped
    assert (report.event_id, report.reason) == (bad, "rejected")
    assert report.errors[0].path == "$.properties.path"
    stats = sdk.stats()
    assert (stats.sent, stats.rejected, stats.retried) == (1, 1, 0)


async def test_async_sdk_reports_a_refused_batch_without_retrying(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    dropped: list[DroppedEvent] = []
    # the collector only speaks gzip or identity; a huge event trips its body limit (413)
    # (the SDK's own max_event_bytes would drop it first as too_large: lifted here)
    sdk = AsyncClient(
        str(collector.make_url("/")),
        gzip=False,
        on_error=dropped.extend,
        max_event_bytes=4_000_000,
    )
    sdk.track("page_viewed", {"path": "/" + "x" * 2_000_000}, anonymous_id="a")
    assert await sdk.shutdown(30.0)
    assert [d.reason for d in dropped] == ["collector_refused"]
    assert "413 body_too_large" in dropped[0].detail
    assert sdk.stats().retried == 0
    assert memory_sink.records == []


async def test_aiohttp_transport_reuses_its_connection(collector: HttpClient) -> None:
    transport = AiohttpTransport(str(collector.make_url("/")), timeout_s=5)
    body = b'{"sent_at": "2026-11-26T12:00:01Z", "batch": []}'
    headers = {"Content-Type": "application/json"}
    try:
        first = await transport.send(body, headers)
        session = transport._session
        second = await transport.send(body, headers)
        assert (first.status, second.status) == (200, 200)
        assert first.headers["content-type"].startswith("application/json")
        assert transport._session is session  # one session, kept-alive connections
    finally:
        await transport.close()
