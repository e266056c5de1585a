"""SDK behaviour that Client and AsyncClient share, written once and run against both
(issue #12: near copies per client had let a fix in one go untested in the other).

The client-specific tests stay in test_sdk_client.py and test_sdk_async_client.py.
"""

from __future__ import annotations

import datetime as dt
import platform
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import pytest

from capture_sdk import (
    AsyncClient,
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
from capture_sdk.testing import AsyncRecordingTransport, RecordingTransport
from tests import sdk_clients
from tests.sdk_clients import Kind, Sdk, recording_transport

kind = sdk_clients.kind
make_sdk = sdk_clients.make_sdk

FAST_RETRY = RetryPolicy(backoff_base_s=0.01, backoff_cap_s=0.02, max_retry_time_s=5.0)
PROPS = {"track_id": "t", "artist_id": "a", "position_ms": 1}
MakeSdk = Callable[..., Sdk]
Recording = RecordingTransport | AsyncRecordingTransport


@pytest.fixture
def transport(kind: Kind) -> Recording:
    return recording_transport(kind)


@pytest.fixture
def dropped() -> list[DroppedEvent]:
    return []


@pytest.fixture
def sdk(make_sdk: MakeSdk, kind: Kind, transport: Recording, dropped: list[DroppedEvent]) -> Sdk:
    return make_sdk(
        kind, transport=transport, retry=FAST_RETRY, flush_interval_s=0.05, on_error=dropped.extend
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # the state lives on another thread
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_track_sends_the_wire_format(sdk: Sdk, transport: Recording) -> None:
    when = dt.datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=dt.UTC)
    event_id = sdk.track("track_played", PROPS, version=2, user_id="u-1", occurred_at=when)
    assert sdk.flush(5)
    [event] = transport.events
    assert event["event"] == "track_played"
    assert event["version"] == 2
    assert event["event_id"] == event_id
    assert uuid.UUID(event_id).version == 7
    assert event["occurred_at"] == "2026-11-26T12:00:00.123+00:00"
    assert event["user_id"] == "u-1"
    assert "anonymous_id" not in event
    assert event["properties"] == PROPS
    headers, body = transport.requests[0]
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert "sent_at" in body
    assert sdk.stats().sent == 1


def test_library_runtime_and_host_context_are_filled_in(sdk: Sdk, transport: Recording) -> None:
    before_ns = time.time_ns()
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a", context={"app": {"v": "9"}})
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.flush(5)
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


def test_struct_properties_are_encoded(sdk: Sdk, transport: Recording) -> None:
    class Played(msgspec.Struct):
        track_id: str
        position_ms: int

    sdk.track("track_played", Played("t", 3), user_id="u")
    assert sdk.flush(5)
    assert transport.events[0]["properties"] == {"track_id": "t", "position_ms": 3}


def test_batches_by_count(make_sdk: MakeSdk, kind: Kind, transport: Recording) -> None:
    # a long interval: only the count can trigger these sends
    sdk = make_sdk(kind, transport=transport, batch_size=10, flush_interval_s=60)
    for i in range(25):
        sdk.track("track_played", PROPS, user_id=str(i))
    wait_until(lambda: len(transport.batches) >= 2)
    time.sleep(0.05)  # a third batch, if one were wrongly sent early, would show by now
    assert [len(b) for b in transport.batches] == [10, 10]
    assert sdk.flush(5)
    assert [len(b) for b in transport.batches] == [10, 10, 5]


def test_batches_by_interval(make_sdk: MakeSdk, kind: Kind, transport: Recording) -> None:
    sdk = make_sdk(kind, transport=transport, batch_size=100, flush_interval_s=0.05)
    sdk.track("track_played", PROPS, user_id="u")
    wait_until(lambda: bool(transport.batches))
    assert len(transport.events) == 1  # sent without flush() and without a full batch


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
    sdk: Sdk, transport: Recording, failure: Response | TransportError
) -> None:
    transport.queue(failure, failure)
    ids = [sdk.track("track_played", PROPS, user_id="u") for _ in range(3)]
    assert sdk.flush(5)
    assert transport.attempts == 3
    assert [e["event_id"] for e in transport.events] == ids
    stats = sdk.stats()
    # `retried` counts events (issue #12): two retries of a request of 3 events are 6
    assert (stats.sent, stats.retried) == (3, 6)
    assert sum(stats.dropped.values()) == 0


@pytest.mark.parametrize("status", [400, 401, 403, 413, 415])
def test_other_4xx_is_not_retried(
    sdk: Sdk, transport: Recording, dropped: list[DroppedEvent], status: int
) -> None:
    body = msgspec.json.encode({"error": "bad_request", "detail": "nope"})
    transport.queue(Response(status, body))
    event_id = sdk.track("track_played", PROPS, user_id="u")
    assert sdk.flush(5)
    assert transport.attempts == 1
    assert sdk.stats().dropped["collector_refused"] == 1
    assert sdk.stats().retried == 0
    assert [(d.event_id, d.reason) for d in dropped] == [(event_id, "collector_refused")]
    assert f"HTTP {status} bad_request: nope" in dropped[0].detail


def test_rejected_events_reach_on_error_with_paths(
    sdk: Sdk, transport: Recording, dropped: list[DroppedEvent]
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
    sdk.track("track_played", PROPS, user_id="u")
    bad = sdk.track("track_played", {**PROPS, "position_ms": -1}, user_id="u")
    assert sdk.flush(5)
    assert transport.attempts == 1  # never retried
    [report] = dropped
    assert (report.event_id, report.reason) == (bad, "rejected")
    assert report.errors[0].path == "$.properties.position_ms"
    stats = sdk.stats()
    assert (stats.sent, stats.rejected, stats.dropped["rejected"]) == (1, 1, 1)


def test_retry_gives_up_after_max_retry_time(
    make_sdk: MakeSdk, kind: Kind, transport: Recording, dropped: list[DroppedEvent]
) -> None:
    policy = RetryPolicy(backoff_base_s=0.05, backoff_cap_s=0.05, max_retry_time_s=0.3)
    sdk = make_sdk(
        kind, transport=transport, retry=policy, flush_interval_s=0.01, on_error=dropped.extend
    )
    transport.queue(*[Response(503)] * 1000)
    event_id = sdk.track("track_played", PROPS, user_id="u")
    assert sdk.flush(10)
    assert [(d.event_id, d.reason) for d in dropped] == [(event_id, "retries_exhausted")]
    assert sdk.stats().dropped["retries_exhausted"] == 1
    assert transport.attempts >= 2


def test_queue_full_is_a_counted_drop(
    make_sdk: MakeSdk, kind: Kind, dropped: list[DroppedEvent]
) -> None:
    blocker = threading.Event()

    class Blocking(Transport):
        def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            blocker.wait(10)
            return Response(200, b'{"accepted": 0, "rejected": []}')

    sdk = make_sdk(
        kind, transport=Blocking(), batch_size=2, max_queue_size=4, on_error=dropped.extend
    )
    try:
        for _ in range(20):
            sdk.track("track_played", PROPS, user_id="u")
        stats = sdk.stats()
        # at most one batch of 2 in flight and one encoded ahead (Client's two threads)
        assert stats.dropped["queue_full"] >= 20 - 4 - 2 - 2
        assert stats.enqueued + stats.dropped["queue_full"] == 20
        assert {d.reason for d in dropped} == {"queue_full"}
    finally:
        blocker.set()
    assert sdk.shutdown(5)


def test_unserializable_properties_are_dropped_not_fatal(
    sdk: Sdk, transport: Recording, dropped: list[DroppedEvent]
) -> None:
    sdk.track("track_played", {"when": object()}, user_id="u")
    ok = sdk.track("track_played", PROPS, user_id="u")
    assert sdk.flush(5)
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
    sdk: Sdk, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidEventError):
        sdk.track(*args, **kwargs)
    assert sdk.stats().enqueued == 0


@pytest.mark.parametrize("cls", [Client, AsyncClient])
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
def test_bad_configuration_raises(cls: type[Client | AsyncClient], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        cls(**kwargs)


def test_flush_and_shutdown_are_bounded_and_settle_everything_before_returning(
    make_sdk: MakeSdk, kind: Kind, dropped: list[DroppedEvent]
) -> None:
    # issue #12: Client.shutdown() used to return with the events queued behind a hung
    # request neither sent nor counted
    release = threading.Event()
    started_send = threading.Event()
    answered = threading.Event()

    class Hanging(Transport):
        def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            started_send.set()
            release.wait(30)
            answered.set()
            # a late 200: the events were settled as `shutdown` already, and stay so
            return Response(200, b'{"accepted": 1, "rejected": []}')

    sdk = make_sdk(
        kind, transport=Hanging(), batch_size=2, flush_interval_s=0.01, on_error=dropped.extend
    )
    try:
        sdk.track("track_played", PROPS, user_id="u")
        assert sdk.flush(0.3) is False
        assert started_send.is_set()
        for _ in range(5):  # queued behind the hung request
            sdk.track("track_played", PROPS, user_id="u")
        started = time.monotonic()
        assert sdk.shutdown(0.5) is False
        assert time.monotonic() - started < 10  # bounded, not a speed check: a hang is 30 s
        # settled before shutdown() returned, not whenever the transport lets go
        stats = sdk.stats()
        assert (stats.dropped["shutdown"], stats.sent, stats.queue_depth) == (6, 0, 0)
        assert sorted(d.reason for d in dropped) == ["shutdown"] * 6
    finally:
        release.set()
    wait_until(answered.is_set)
    time.sleep(0.2)  # the sender reads the late answer now: nothing is counted twice
    stats = sdk.stats()
    assert (stats.dropped["shutdown"], stats.sent) == (6, 0)
    assert len(dropped) == 6


def test_an_internal_error_drops_only_what_was_not_sent(
    make_sdk: MakeSdk, kind: Kind, dropped: list[DroppedEvent]
) -> None:
    # issue #12: an error after the first chunk was delivered counted the whole batch as
    # dropped, the delivered chunk included
    recording = RecordingTransport()

    class FailsSecond(Transport):
        def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
            if recording.attempts == 1:
                recording.attempts += 1
                raise RuntimeError("a bug in a custom transport")
            return recording.send(body, headers)

    sdk = make_sdk(
        kind,
        transport=FailsSecond(),
        batch_size=100,
        max_batch_bytes=1_000,  # several chunks per batch
        flush_interval_s=60,
        on_error=dropped.extend,
    )
    for i in range(30):
        sdk.track("page_viewed", {"path": f"/{i:0100d}"}, anonymous_id="a")
    assert sdk.flush(10)
    stats = sdk.stats()
    first_chunk = len(recording.batches[0])
    assert 0 < first_chunk < 30
    assert stats.sent == first_chunk
    assert stats.dropped["internal_error"] == 30 - first_chunk
    assert sum(stats.dropped.values()) == 30 - first_chunk
    assert {d.reason for d in dropped} == {"internal_error"}
    assert stats.enqueued == stats.sent + sum(stats.dropped.values())


def test_track_after_shutdown_is_counted(
    make_sdk: MakeSdk, kind: Kind, transport: Recording, dropped: list[DroppedEvent]
) -> None:
    sdk = make_sdk(kind, transport=transport, on_error=dropped.extend)
    assert sdk.shutdown(5)
    sdk.track("track_played", PROPS, user_id="u")
    assert sdk.stats().dropped["client_closed"] == 1
    assert [d.reason for d in dropped] == ["client_closed"]
    assert transport.attempts == 0


def test_gzip_off_sends_plain_json(make_sdk: MakeSdk, kind: Kind, transport: Recording) -> None:
    sdk = make_sdk(kind, transport=transport, gzip=False, flush_interval_s=0.01)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.shutdown(5)
    headers, _ = transport.requests[0]
    assert "Content-Encoding" not in headers


def test_broken_on_error_callback_does_not_stop_delivery(
    make_sdk: MakeSdk, kind: Kind, transport: Recording
) -> None:
    def explode(events: Any) -> None:
        raise RuntimeError("callback bug")

    transport.queue(Response(400))
    sdk = make_sdk(kind, transport=transport, flush_interval_s=0.01, on_error=explode)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.flush(5)
    sdk.track("page_viewed", {"path": "/"}, anonymous_id="a")
    assert sdk.shutdown(5)
    assert sdk.stats().sent == 1


def test_event_ids_do_not_repeat_when_the_app_seeds_the_global_random(
    sdk: Sdk, transport: Recording
) -> None:
    # issue #12: ids drew on the global `random`, so random.seed() repeated them and dedup
    # downstream then removed distinct events
    random_bits = (1 << 80) - 1  # everything after the 48-bit millisecond timestamp
    random.seed(12)
    first = sdk.track("page_viewed", {"path": "/1"}, anonymous_id="a")
    random.seed(12)
    second = sdk.track("page_viewed", {"path": "/2"}, anonymous_id="a")
    assert uuid.UUID(first).int & random_bits != uuid.UUID(second).int & random_bits
    assert sdk.flush(5)
    assert [e["event_id"] for e in transport.events] == [first, second]
