"""capture_sdk.Client against the recording transport: batching, retries, drops, shutdown."""

from __future__ import annotations

import datetime as dt
import gzip
import platform
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import pytest

from capture_sdk import (
    Client,
    ConfigurationError,
    DroppedEvent,
    InvalidEventError,
    Response,
    RetryPolicy,
    Transport,
    TransportError,
    __version__,
)
from capture_sdk.testing import RecordingTransport

FAST_RETRY = RetryPolicy(backoff_base_s=0.01, backoff_cap_s=0.02, max_retry_time_s=5.0)
PROPS = {"track_id": "t", "artist_id": "a", "position_ms": 1}


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def dropped() -> list[DroppedEvent]:
    return []


@pytest.fixture
def client(transport: RecordingTransport, dropped: list[DroppedEvent]) -> Iterator[Client]:
    sdk = Client(
        transport=transport, retry=FAST_RETRY, flush_interval_s=0.05, on_error=dropped.extend
    )
    yield sdk
    sdk.shutdown(5)


def test_track_sends_the_wire_format(client: Client, transport: RecordingTransport) -> None:
    when = dt.datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=dt.UTC)
    event_id = client.track("track_played", PROPS, version=2, user_id="u-1", occurred_at=when)
    assert client.flush(5)
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


def test_library_runtime_and_host_context_are_filled_in(
    client: Client, transport: RecordingTransport
) -> None:
    before_ns = time.time_ns()
    client.track("page_viewed", {"path": "/"}, anonymous_id="a", context={"app": {"v": "9"}})
    client.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert client.flush(5)
    first, second = transport.events
    for event in (first, second):
        context = event["context"]
        assert context["library"] == {"name": "capture-sdk-python", "version": __version__}
        assert context["runtime"]["version"] == platform.python_version()
        assert context["host"] == {"name": socket.gethostname()}
        occurred = dt.datetime.fromisoformat(event["occurred_at"])
        assert occurred >= dt.datetime.fromtimestamp(before_ns // 1_000_000 / 1000, dt.UTC)
    assert first["context"]["app"] == {"v": "9"}
    assert "app" not in second["context"]


def test_struct_properties_are_encoded(client: Client, transport: RecordingTransport) -> None:
    class Played(msgspec.Struct):
        track_id: str
        position_ms: int

    client.track("track_played", Played("t", 3), user_id="u")
    assert client.flush(5)
    assert transport.events[0]["properties"] == {"track_id": "t", "position_ms": 3}


def test_batches_by_count(transport: RecordingTransport) -> None:
    # a long interval: only the count can trigger these sends
    sdk = Client(transport=transport, batch_size=10, flush_interval_s=60)
    try:
        for i in range(25):
            sdk.track("track_played", PROPS, user_id=str(i))
        deadline = time.monotonic() + 10
        while len(transport.batches) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [len(b) for b in transport.batches] == [10, 10]
        assert sdk.flush(5)
        assert [len(b) for b in transport.batches] == [10, 10, 5]
    finally:
        sdk.shutdown(5)


def test_batches_by_interval(transport: RecordingTransport) -> None:
    sdk = Client(transport=transport, batch_size=100, flush_interval_s=0.05)
    try:
        sdk.track("track_played", PROPS, user_id="u")
        deadline = time.monotonic() + 10
        while not transport.batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(transport.events) == 1  # sent without flush() and without a full batch
    finally:
        sdk.shutdown(5)


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
def test_retries_keep_the_same_event_ids(
    client: Client, transport: RecordingTransport, failure: Response | TransportError
) -> None:
    transport.queue(failure, failure)
    ids = [client.track("track_played", PROPS, user_id="u") for _ in range(3)]
    assert client.flush(5)
    assert transport.attempts == 3
    assert [e["event_id"] for e in transport.events] == ids
    stats = client.stats()
    assert (stats.sent, stats.retried) == (3, 2)
    assert sum(stats.dropped.values()) == 0


@pytest.mark.parametrize("status", [400, 401, 403, 413, 415])
def test_other_4xx_is_not_retried(
    client: Client, transport: RecordingTransport, dropped: list[DroppedEvent], status: int
) -> None:
    body = msgspec.json.encode({"error": "bad_request", "detail": "nope"})
    transport.queue(Response(status, body))
    event_id = client.track("track_played", PROPS, user_id="u")
    assert client.flush(5)
    assert transport.attempts == 1
    assert client.stats().dropped["collector_refused"] == 1
    assert [(d.event_id, d.reason) for d in dropped] == [(event_id, "collector_refused")]
    assert f"HTTP {status} bad_request: nope" in dropped[0].detail


def test_rejected_events_reach_on_error_with_paths(
    client: Client, transport: RecordingTransport, dropped: list[DroppedEvent]
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
    assert client.flush(5)
    assert transport.attempts == 1  # never retried
    [report] = dropped
    assert (report.event_id, report.reason) == (bad, "rejected")
    assert report.errors[0].path == "$.properties.position_ms"
    stats = client.stats()
    assert (stats.sent, stats.rejected, stats.dropped["rejected"]) == (1, 1, 1)


def test_retry_gives_up_after_max_retry_time(
    transport: RecordingTransport, dropped: list[DroppedEvent]
) -> None:
    policy = RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.05, max_retry_time_s=0.3)
    sdk = Client(transport=transport, retry=policy, flush_interval_s=0.01, on_error=dropped.extend)
    transport.queue(*[Response(503)] * 1000)
    try:
        event_id = sdk.track("track_played", PROPS, user_id="u")
        assert sdk.flush(10)
        assert [(d.event_id, d.reason) for d in dropped] == [(event_id, "retries_exhausted")]
        assert sdk.stats().dropped["retries_exhausted"] == 1
    finally:
        sdk.shutdown(1)


def test_queue_full_is_a_counted_drop(dropped: list[DroppedEvent]) -> None:
    blocker = threading.Event()

    class Blocking(Transport):
        def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            blocker.wait(10)
            return Response(200, b'{"accepted": 0, "rejected": []}')

    sdk = Client(transport=Blocking(), batch_size=2, max_queue_size=4, on_error=dropped.extend)
    try:
        for _ in range(20):
            sdk.track("track_played", PROPS, user_id="u")
        stats = sdk.stats()
        assert stats.dropped["queue_full"] >= 20 - 4 - 2  # at most one batch of 2 in flight
        assert stats.enqueued + stats.dropped["queue_full"] == 20
        assert {d.reason for d in dropped} == {"queue_full"}
    finally:
        blocker.set()
        sdk.shutdown(5)


def test_unserializable_properties_are_dropped_not_fatal(
    client: Client, transport: RecordingTransport, dropped: list[DroppedEvent]
) -> None:
    client.track("track_played", {"when": object()}, user_id="u")
    ok = client.track("track_played", PROPS, user_id="u")
    assert client.flush(5)
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
def test_programmer_errors_raise_at_track(
    client: Client, args: tuple[Any, ...], kwargs: dict[str, Any]
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
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Client(**kwargs)


def test_flush_and_shutdown_return_within_their_timeouts(dropped: list[DroppedEvent]) -> None:
    release = threading.Event()

    class Hanging(Transport):
        def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            release.wait(30)
            raise TransportError("gave up")

    sdk = Client(transport=Hanging(), flush_interval_s=0.01, on_error=dropped.extend)
    sdk.track("track_played", PROPS, user_id="u")
    started = time.monotonic()
    assert sdk.flush(0.3) is False
    assert sdk.shutdown(0.5) is False
    # bounded, not a speed check: a hang would be 30 s
    assert time.monotonic() - started < 10
    release.set()
    # the abandoned batch is dropped as `shutdown` once the transport lets go
    deadline = time.monotonic() + 10
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [d.reason for d in dropped] == ["shutdown"]


def test_track_after_shutdown_is_counted(
    transport: RecordingTransport, dropped: list[DroppedEvent]
) -> None:
    sdk = Client(transport=transport, on_error=dropped.extend)
    assert sdk.shutdown(5)
    sdk.track("track_played", PROPS, user_id="u")
    assert sdk.stats().dropped["client_closed"] == 1
    assert [d.reason for d in dropped] == ["client_closed"]


def test_gzip_off_sends_plain_json(transport: RecordingTransport) -> None:
    sdk = Client(transport=transport, gzip=False, flush_interval_s=0.01)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.shutdown(5)
    headers, _ = transport.requests[0]
    assert "Content-Encoding" not in headers


def test_broken_on_error_callback_does_not_stop_delivery(transport: RecordingTransport) -> None:
    def explode(events: Any) -> None:
        raise RuntimeError("callback bug")

    transport.queue(Response(400))
    sdk = Client(transport=transport, flush_interval_s=0.01, on_error=explode)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.flush(5)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.shutdown(5)
    assert sdk.stats().sent == 1


def test_retry_policy_honours_retry_after_as_a_floor_with_a_cap() -> None:
    policy = RetryPolicy(backoff_base_s=0.1, backoff_cap_s=1.0, retry_after_cap_s=5.0)
    for attempt in range(1, 10):
        assert 0 <= policy.delay_s(attempt) <= min(1.0, 0.1 * 2 ** (attempt - 1))
        assert policy.delay_s(attempt, retry_after_s=3.0) >= 3.0
        assert policy.delay_s(attempt, retry_after_s=3600) <= 5.0


def test_recording_transport_decodes_gzip() -> None:
    transport = RecordingTransport()
    body = gzip.compress(b'{"batch": [{"event": "x"}]}')
    response = transport.send(body, {"Content-Encoding": "gzip"})
    assert response.status == 200
    assert transport.events == [{"event": "x"}]
