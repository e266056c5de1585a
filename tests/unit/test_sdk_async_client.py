"""capture_sdk.AsyncClient against the async recording transport: the same behaviour as
Client (batching, retries, drops, bounded shutdown) on the event loop, with no thread."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
import pytest

from capture_sdk import (
    AiohttpTransport,
    AsyncClient,
    AsyncTransport,
    ConfigurationError,
    DroppedEvent,
    InvalidEventError,
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


@pytest.fixture
async def client(
    transport: AsyncRecordingTransport, dropped: list[DroppedEvent]
) -> AsyncIterator[AsyncClient]:
    sdk = AsyncClient(
        transport=transport, retry=FAST_RETRY, flush_interval_s=0.05, on_error=dropped.extend
    )
    yield sdk
    await sdk.shutdown(5)


async def test_track_sends_the_wire_format(
    client: AsyncClient, transport: AsyncRecordingTransport
) -> None:
    when = dt.datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=dt.UTC)
    event_id = client.track("track_played", PROPS, version=2, user_id="u-1", occurred_at=when)
    assert await client.flush(5)
    [event] = transport.events
    assert event["event"] == "track_played"
    assert event["version"] == 2
    assert event["event_id"] == event_id
    assert uuid.UUID(event_id).version == 7
    assert event["occurred_at"] == "2026-11-26T12:00:00.123+00:00"
    assert event["user_id"] == "u-1"
    assert "anonymous_id" not in event
    assert event["properties"] == PROPS
    assert event["context"]["library"]["name"] == "capture-sdk-python"
    headers, body = transport.requests[0]
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert "sent_at" in body
    assert client.stats().sent == 1


async def test_struct_properties_are_encoded(
    client: AsyncClient, transport: AsyncRecordingTransport
) -> None:
    class Played(msgspec.Struct):
        track_id: str
        position_ms: int

    client.track("track_played", Played("t", 3), user_id="u")
    assert await client.flush(5)
    assert transport.events[0]["properties"] == {"track_id": "t", "position_ms": 3}


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


async def test_batches_by_count(transport: AsyncRecordingTransport) -> None:
    # a long interval: only the count can trigger these sends
    sdk = AsyncClient(transport=transport, batch_size=10, flush_interval_s=60)
    try:
        for i in range(25):
            sdk.track("track_played", PROPS, user_id=str(i))
        await eventually(lambda: len(transport.batches) >= 2)
        await asyncio.sleep(0.05)
        assert [len(b) for b in transport.batches] == [10, 10]
        assert await sdk.flush(5)
        assert [len(b) for b in transport.batches] == [10, 10, 5]
    finally:
        await sdk.shutdown(5)


async def test_batches_by_interval(transport: AsyncRecordingTransport) -> None:
    sdk = AsyncClient(transport=transport, batch_size=100, flush_interval_s=0.05)
    try:
        sdk.track("track_played", PROPS, user_id="u")
        await eventually(lambda: bool(transport.batches))
        assert len(transport.events) == 1  # sent without flush() and without a full batch
    finally:
        await sdk.shutdown(5)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(TransportError("connection refused"), id="network"),
        pytest.param(Response(503, b"{}", {"retry-after": "0"}), id="503"),
        pytest.param(Response(500), id="500"),
        pytest.param(Response(429, b"{}", {"retry-after": "0"}), id="429"),
        pytest.param(Response(408), id="408"),
    ],
)
async def test_retries_keep_the_same_event_ids(
    client: AsyncClient, transport: AsyncRecordingTransport, failure: Response | TransportError
) -> None:
    transport.queue(failure, failure)
    ids = [client.track("track_played", PROPS, user_id="u") for _ in range(3)]
    assert await client.flush(5)
    assert transport.attempts == 3
    assert [e["event_id"] for e in transport.events] == ids
    stats = client.stats()
    assert (stats.sent, stats.retried) == (3, 2)
    assert sum(stats.dropped.values()) == 0


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


@pytest.mark.parametrize("status", [400, 401, 403, 413, 415])
async def test_other_4xx_is_not_retried(
    client: AsyncClient,
    transport: AsyncRecordingTransport,
    dropped: list[DroppedEvent],
    status: int,
) -> None:
    body = msgspec.json.encode({"error": "bad_request", "detail": "nope"})
    transport.queue(Response(status, body))
    event_id = client.track("track_played", PROPS, user_id="u")
    assert await client.flush(5)
    assert transport.attempts == 1
    assert client.stats().dropped["collector_refused"] == 1
    assert [(d.event_id, d.reason) for d in dropped] == [(event_id, "collector_refused")]
    assert f"HTTP {status} bad_request: nope" in dropped[0].detail


async def test_rejected_events_reach_on_error_with_paths(
    client: AsyncClient, transport: AsyncRecordingTransport, dropped: list[DroppedEvent]
) -> None:
    rejection = {
        "accepted": 1,
        "rejected": [
            {
                "index": 1,
                "event_id": "x",
                "reason": "invalid_properties",
                "errors": [{"path": "$.properties.position_ms", "message": "Expected `int` >= 0"}],
            }
        ],
    }
    transport.queue(Response(200, msgspec.json.encode(rejection)))
    client.track("track_played", PROPS, user_id="u")
    bad = client.track("track_played", {**PROPS, "position_ms": -1}, user_id="u")
    assert await client.flush(5)
    assert transport.attempts == 1  # never retried
    [report] = dropped
    assert (report.event_id, report.reason) == (bad, "rejected")
    assert report.errors[0].path == "$.properties.position_ms"
    stats = client.stats()
    assert (stats.sent, stats.rejected, stats.dropped["rejected"]) == (1, 1, 1)


async def test_retry_gives_up_after_max_retry_time(
    transport: AsyncRecordingTransport, dropped: list[DroppedEvent]
) -> None:
    policy = RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.05, max_retry_time_s=0.3)
    sdk = AsyncClient(
        transport=transport, retry=policy, flush_interval_s=0.01, on_error=dropped.extend
    )
    transport.queue(*[Response(503)] * 1000)
    try:
        event_id = sdk.track("track_played", PROPS, user_id="u")
        assert await sdk.flush(10)
        assert [(d.event_id, d.reason) for d in dropped] == [(event_id, "retries_exhausted")]
        assert sdk.stats().dropped["retries_exhausted"] == 1
        assert transport.attempts >= 2
    finally:
        await sdk.shutdown(1)


async def test_queue_full_is_a_counted_drop(dropped: list[DroppedEvent]) -> None:
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


async def test_unserializable_properties_are_dropped_not_fatal(
    client: AsyncClient, transport: AsyncRecordingTransport, dropped: list[DroppedEvent]
) -> None:
    client.track("track_played", {"when": object()}, user_id="u")
    ok = client.track("track_played", PROPS, user_id="u")
    assert await client.flush(5)
    assert [e["event_id"] for e in transport.events] == [ok]
    assert [d.reason for d in dropped] == ["unserializable"]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param(("",), {"user_id": "u"}, id="empty-name"),
        pytest.param((42,), {"user_id": "u"}, id="name-not-str"),
        pytest.param(("track_played",), {}, id="no-identity"),
        pytest.param(("track_played",), {"user_id": "u", "version": 0}, id="version-0"),
        pytest.param(("track_played",), {"user_id": "u", "version": True}, id="version-bool"),
        pytest.param(
            ("track_played", ["not", "a", "mapping"]), {"user_id": "u"}, id="bad-properties"
        ),
        pytest.param(
            ("track_played",),
            {"user_id": "u", "occurred_at": dt.datetime(2026, 1, 1)},
            id="naive-time",
        ),
    ],
)
async def test_programmer_errors_raise_at_track(
    client: AsyncClient, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidEventError):
        client.track(*args, **kwargs)
    assert client.stats().enqueued == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-endpoint"),
        pytest.param({"endpoint": "ftp://x"}, id="not-http"),
        pytest.param({"endpoint": "http://x", "batch_size": 0}, id="batch-0"),
        pytest.param({"endpoint": "http://x", "flush_interval_s": 0}, id="interval-0"),
        pytest.param({"endpoint": "http://x", "max_queue_size": 0}, id="queue-0"),
        pytest.param({"endpoint": "http://x", "request_timeout_s": 0}, id="timeout-0"),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        AsyncClient(**kwargs)


async def test_flush_and_shutdown_return_within_their_timeouts(
    dropped: list[DroppedEvent],
) -> None:
    sent = asyncio.Event()

    class Hanging(AsyncTransport):
        async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            sent.set()
            await asyncio.Event().wait()  # forever
            raise AssertionError("unreachable")

    sdk = AsyncClient(transport=Hanging(), flush_interval_s=0.01, on_error=dropped.extend)
    sdk.track("track_played", PROPS, user_id="u")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await sdk.flush(0.3) is False
    assert sent.is_set()
    sdk.track("track_played", PROPS, user_id="u")  # still queued behind the hung send
    assert await sdk.shutdown(0.5) is False
    # bounded, not a speed check: a hang would be forever
    assert loop.time() - started < 5
    # the cancelled batch and the queued event are both dropped as `shutdown`
    assert [d.reason for d in dropped] == ["shutdown", "shutdown"]
    stats = sdk.stats()
    assert (stats.dropped["shutdown"], stats.sent, stats.queue_depth) == (2, 0, 0)


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


async def test_track_after_shutdown_is_counted(
    transport: AsyncRecordingTransport, dropped: list[DroppedEvent]
) -> None:
    sdk = AsyncClient(transport=transport, on_error=dropped.extend)
    assert await sdk.shutdown(5)
    sdk.track("track_played", PROPS, user_id="u")
    assert sdk.stats().dropped["client_closed"] == 1
    assert [d.reason for d in dropped] == ["client_closed"]
    assert transport.attempts == 0


async def test_gzip_off_sends_plain_json(transport: AsyncRecordingTransport) -> None:
    sdk = AsyncClient(transport=transport, gzip=False, flush_interval_s=0.01)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert await sdk.shutdown(5)
    headers, _ = transport.requests[0]
    assert "Content-Encoding" not in headers


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


async def test_broken_on_error_callback_does_not_stop_delivery(
    transport: AsyncRecordingTransport,
) -> None:
    def explode(events: Any) -> None:
        raise RuntimeError("callback bug")

    transport.queue(Response(400))
    sdk = AsyncClient(transport=transport, flush_interval_s=0.01, on_error=explode)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert await sdk.flush(5)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert await sdk.shutdown(5)
    assert sdk.stats().sent == 1


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
