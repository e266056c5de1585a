"""What only `AsyncClient` does: starting its sender on the loop, restarting it on a new
loop, keeping the loop responsive, and its aiohttp transport.

The behaviour both clients share (batching, retries, drops, bounded shutdown) is tested once
for both in test_sdk_behaviour.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import threading
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest

from capture_sdk import (
    AiohttpTransport,
    AsyncClient,
    AsyncTransport,
    ConfigurationError,
    DroppedEvent,
    Response,
    RetryPolicy,
    TransportError,
)
from capture_sdk.testing import AsyncRecordingTransport
from tests.conftest import LoopBlockGuard
from tests.waiting import eventually

FAST_RETRY = RetryPolicy(backoff_base_s=0.01, backoff_cap_s=0.02, max_retry_time_s=5.0)
PROPS = {"track_id": "t", "artist_id": "a", "position_ms": 1}


@pytest.fixture
def transport() -> AsyncRecordingTransport:
    return AsyncRecordingTransport()


@pytest.fixture
def dropped() -> list[DroppedEvent]:
    return []


def test_track_is_a_plain_function() -> None:
    # an `async def track` would silently do nothing when the caller forgets to await it
    assert not inspect.iscoroutinefunction(AsyncClient.track)
    assert inspect.iscoroutinefunction(AsyncClient.flush)
    assert inspect.iscoroutinefunction(AsyncClient.shutdown)


async def test_first_track_in_a_loop_starts_the_sender(
    transport: AsyncRecordingTransport,
) -> None:
    # no start(), no `async with`, no flush(): tracking from the loop is enough
    sdk = AsyncClient(transport=transport, flush_interval_s=0.01)
    event_id = sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    await eventually(lambda: len(transport.events) == 1)
    assert transport.events[0]["event_id"] == event_id
    assert await sdk.shutdown(5)
    assert transport.closed


def test_events_tracked_before_any_loop_are_sent_from_the_loop(
    transport: AsyncRecordingTransport,
) -> None:
    sdk = AsyncClient(transport=transport, flush_interval_s=0.01)
    event_id = sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")  # no loop running

    async def main() -> bool:
        return await sdk.shutdown(5)

    assert asyncio.run(main())
    assert [e["event_id"] for e in transport.events] == [event_id]


def test_sender_restarts_on_a_new_loop(transport: AsyncRecordingTransport) -> None:
    sdk = AsyncClient(transport=transport, flush_interval_s=0.01)

    async def track_and_flush(path: str) -> bool:
        sdk.track("page_viewed", {"path": path}, anonymous_id="a")
        return await sdk.flush(5)

    assert asyncio.run(track_and_flush("/1"))
    assert asyncio.run(track_and_flush("/2"))  # the first loop is closed by now
    assert [e["properties"]["path"] for e in transport.events] == ["/1", "/2"]


async def test_async_with_shuts_down(transport: AsyncRecordingTransport) -> None:
    async with AsyncClient(transport=transport, flush_interval_s=60) as sdk:
        sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert len(transport.events) == 1  # sent by shutdown, well before the interval
    assert transport.closed
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.stats().dropped["client_closed"] == 1


async def test_retry_after_is_a_floor(transport: AsyncRecordingTransport) -> None:
    sdk = AsyncClient(transport=transport, retry=FAST_RETRY, flush_interval_s=0.01)
    transport.queue(Response(503, b"{}", {"retry-after": "0.3"}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    sdk.track("track_played", PROPS, user_id="u")
    assert await sdk.flush(5)
    assert loop.time() - started >= 0.3
    assert transport.attempts == 2
    await sdk.shutdown(5)


async def test_track_never_yields_so_a_full_queue_is_exact(dropped: list[DroppedEvent]) -> None:
    release = asyncio.Event()

    class Blocking(AsyncTransport):
        async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            await release.wait()
            return Response(200, b'{"accepted": 0, "rejected": []}')

    sdk = AsyncClient(transport=Blocking(), batch_size=2, max_queue_size=4, on_error=dropped.extend)
    try:
        for _ in range(20):
            sdk.track("track_played", PROPS, user_id="u")
        stats = sdk.stats()
        # track() never yields, so the sender has not even taken a batch yet
        assert (stats.enqueued, stats.dropped["queue_full"], stats.queue_depth) == (4, 16, 4)
        assert {d.reason for d in dropped} == {"queue_full"}
        assert len(dropped) == 16
    finally:
        release.set()
        assert await sdk.shutdown(5)


async def test_shutdown_is_bounded_when_the_transport_ignores_cancellation() -> None:
    let_go = asyncio.Event()

    class Stubborn(AsyncTransport):
        async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            while not let_go.is_set():  # a badly behaved transport swallows cancellation
                with contextlib.suppress(asyncio.CancelledError):
                    await let_go.wait()
            raise TransportError("gave up")

    sdk = AsyncClient(transport=Stubborn(), flush_interval_s=0.01)
    sdk.track("track_played", PROPS, user_id="u")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await sdk.shutdown(0.5) is False
    assert loop.time() - started < 5
    # issue #12: counted before shutdown() returned, though the sender never let go
    dropped_at_return = sdk.stats().dropped["shutdown"]
    # leave no task behind for the loop's teardown
    let_go.set()
    sender = sdk._task
    assert sender is not None
    for _ in range(50):  # the first cancellation was swallowed; this one lands
        sender.cancel()
        await asyncio.wait({sender}, timeout=0.1)
        if sender.done():
            break
    assert sender.done()
    assert dropped_at_return == 1


async def test_large_bodies_are_gzipped_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies: list[bytes] = []
    threads: list[int] = []

    class Capturing(AsyncTransport):
        async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            bodies.append(body)
            return Response(200, b'{"accepted": 1, "rejected": []}')

    real_compress = gzip.compress

    def spy(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return real_compress(data, *args, **kwargs)

    monkeypatch.setattr(gzip, "compress", spy)
    sdk = AsyncClient(transport=Capturing(), flush_interval_s=0.01)
    sdk.track("page_viewed", {"path": "/small"}, anonymous_id="a")
    assert await sdk.flush(5)
    for _ in range(20):  # 20 events of 20 KB: one body over INLINE_GZIP_MAX_BYTES
        sdk.track("page_viewed", {"path": "/" + "x" * 20_000}, anonymous_id="a")
    assert await sdk.shutdown(5)
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread  # small: inline
    assert threads[1] != loop_thread  # large: in the executor
    assert msgspec.json.decode(gzip.decompress(bodies[1]))["batch"][0]["properties"]["path"]


async def test_the_loop_keeps_running_while_10000_events_are_tracked_and_flushed(
    transport: AsyncRecordingTransport,
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    guard = LoopBlockGuard()
    guard.start()
    ticking = asyncio.create_task(ticker())
    sdk = AsyncClient(transport=transport, flush_interval_s=0.05)
    try:
        for i in range(10_000):  # no await in between: all queued before the sender runs
            sdk.track("page_viewed", {"path": f"/{i}"}, anonymous_id="a")
        assert sdk.stats().queue_depth == 10_000
        ticks_before_flush = ticks
        assert await sdk.flush(30)
        # the recording transport never suspends: only the sender's own yields let the
        # ticker run between the 100 batches
        assert ticks - ticks_before_flush >= 50
        assert len(transport.events) == 10_000
        assert sdk.stats().sent == 10_000
    finally:
        ticking.cancel()
        await guard.stop()
        await sdk.shutdown(5)
    assert guard.max_lag_s < guard.MAX_LAG_S, f"event loop blocked for {guard.max_lag_s:.3f}s"


async def test_aiohttp_transport_raises_transport_error_when_nothing_listens() -> None:
    # a port nobody listens on: connection refused, a network error the client retries
    transport = AiohttpTransport("http://127.0.0.1:9", timeout_s=2)
    try:
        with pytest.raises(TransportError):
            await transport.send(b"{}", {"Content-Type": "application/json"})
    finally:
        await transport.close()


def test_aiohttp_transport_builds_the_batch_url() -> None:
    assert AiohttpTransport("http://h:1/base/").url == "http://h:1/base/v1/batch"
    with pytest.raises(ConfigurationError):
        AiohttpTransport("ftp://h")


async def test_async_recording_transport_decodes_gzip() -> None:
    transport = AsyncRecordingTransport()
    body = gzip.compress(b'{"batch": [{"event": "x"}]}')
    response = await transport.send(body, {"Content-Encoding": "gzip"})
    assert response.status == 200
    assert transport.events == [{"event": "x"}]
