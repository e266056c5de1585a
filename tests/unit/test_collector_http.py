"""The collector's HTTP edge on the in-memory sink: statuses, bodies, records, metrics."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from typing import Any

import msgspec
import pytest

from collector import keys
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, page_viewed, track_played
from tests.waiting import eventually

JSON = {"Content-Type": "application/json"}
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


async def post(
    client: HttpClient, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    response = await client.post("/v1/batch", data=body, headers=headers or JSON)
    payload = msgspec.json.decode(await response.read())
    return response.status, payload


async def test_valid_batch_is_acknowledged_after_the_sink_has_it(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    events = [
        track_played(),
        page_viewed(),
        track_played(
            version=2,
            properties={"track_id": "t", "artist_id": "a", "position_ms": 0, "shuffle": True},
        ),
    ]
    status, body = await post(collector, batch_body(*events))
    assert status == 200
    assert body == {"accepted": 3, "rejected": []}
    by_id = {msgspec.json.decode(r.value)["event_id"]: r for r in memory_sink.records}
    assert set(by_id) == {e["event_id"] for e in events}
    record = by_id[events[0]["event_id"]]
    assert record.topic == "events.track_played"
    assert record.key == b"u-42"
    headers = dict(record.headers)
    assert headers["event"] == b"track_played"
    assert headers["version"] == b"1"
    assert headers["event_id"] == events[0]["event_id"].encode()
    value = msgspec.json.decode(record.value)
    assert value["properties"] == events[0]["properties"]
    assert value["received_at"] == "2026-11-26T12:00:05Z"
    # anonymous-only events are keyed by the anonymous id
    assert by_id[events[1]["event_id"]].key == b"anon-1"
    assert by_id[events[1]["event_id"]].topic == "events.page_viewed"


async def test_gzip_body_is_accepted(collector: HttpClient, memory_sink: MemorySink) -> None:
    status, body = await post(collector, batch_body(track_played(), compress=True), GZIP_JSON)
    assert (status, body["accepted"]) == (200, 1)
    assert len(memory_sink.topic("events.track_played")) == 1


async def test_client_cannot_set_server_owned_fields(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    event = track_played(received_at="1999-01-01T00:00:00Z")
    status, _ = await post(collector, batch_body(event))
    assert status == 200
    value = msgspec.json.decode(memory_sink.records[0].value)
    assert value["received_at"] == "2026-11-26T12:00:05Z"


INVALID_EVENTS = [
    pytest.param(
        track_played(event="no_such_event"), "unknown_event", "$.event", id="unknown-event"
    ),
    pytest.param(track_played(version=9), "unknown_event", "$.version", id="unknown-version"),
    pytest.param(
        track_played(properties={"track_id": "t", "artist_id": "a", "position_ms": "12"}),
        "invalid_properties",
        "$.properties.position_ms",
        id="wrong-type",
    ),
    pytest.param(
        track_played(properties={"track_id": "t", "artist_id": "a", "position_ms": -1}),
        "invalid_properties",
        "$.properties.position_ms",
        id="below-minimum",
    ),
    pytest.param(
        track_played(properties={"track_id": "t", "position_ms": 1}),
        "invalid_properties",
        "$.properties",
        id="missing-required",
    ),
    pytest.param(
        track_played(properties={"track_id": "t", "artist_id": "a", "position_ms": 1, "extra": 1}),
        "invalid_properties",
        "$.properties",
        id="extra-field-forbidden",
    ),
    pytest.param(
        track_played(event_id="not-a-uuid"), "invalid_event", "$.event_id", id="bad-event-id"
    ),
    pytest.param(
        track_played(occurred_at="yesterday"), "invalid_event", "$.occurred_at", id="bad-time"
    ),
    pytest.param(track_played(user_id=None), "missing_identity", "$", id="no-identity"),
    pytest.param({"no": "envelope"}, "invalid_event", "$", id="not-an-event"),
    pytest.param(42, "invalid_event", "$", id="not-an-object"),
]


@pytest.mark.parametrize(("event", "reason", "path"), INVALID_EVENTS)
async def test_invalid_event_is_dead_lettered_with_its_reason(
    collector: HttpClient, memory_sink: MemorySink, event: Any, reason: str, path: str
) -> None:
    good = track_played()
    status, body = await post(collector, batch_body(good, event))
    assert status == 200
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 1
    assert rejected["reason"] == reason
    assert rejected["errors"][0]["path"] == path
    assert rejected["errors"][0]["message"]
    # nothing invalid reaches an events.<event> topic; the dead letter keeps the event as sent
    main_topics = [r for r in memory_sink.records if r.topic != "events._invalid"]
    assert [msgspec.json.decode(r.value)["event_id"] for r in main_topics] == [good["event_id"]]
    [dead] = memory_sink.topic("events._invalid")
    assert dict(dead.headers)["reason"] == reason.encode()
    letter = msgspec.json.decode(dead.value)
    assert letter["reason"] == reason
    assert letter["event"] == event
    assert letter["errors"] == rejected["errors"]


REQUEST_ERRORS = [
    pytest.param(b"not json", JSON, 400, "malformed_json", id="not-json"),
    pytest.param(b'{"batch": 3}', JSON, 400, "invalid_envelope", id="batch-not-array"),
    pytest.param(b"[1, 2]", JSON, 400, "invalid_envelope", id="top-level-array"),
    pytest.param(b'{"events": []}', JSON, 400, "invalid_envelope", id="no-batch"),
    pytest.param(b"\x1f\x8bnot really gzip", GZIP_JSON, 400, "invalid_gzip", id="broken-gzip"),
    pytest.param(b'{"batch": []}', GZIP_JSON, 400, "invalid_gzip", id="gzip-header-plain-body"),
    pytest.param(
        gzip.compress(b'{"batch": []}')[:-6], GZIP_JSON, 400, "invalid_gzip", id="truncated-gzip"
    ),
    pytest.param(
        b"{}",
        {"Content-Type": "application/json", "Content-Encoding": "br"},
        415,
        "unsupported_encoding",
        id="brotli",
    ),
    pytest.param(
        b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_content_type", id="text-plain"
    ),
]


@pytest.mark.parametrize(("body", "headers", "status", "reason"), REQUEST_ERRORS)
async def test_malformed_request_gets_a_json_error(
    collector: HttpClient,
    memory_sink: MemorySink,
    body: bytes,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    got_status, payload = await post(collector, body, headers)
    assert (got_status, payload["error"]) == (status, reason)
    assert payload["detail"]
    assert memory_sink.records == []
    # the collector stays up
    assert (await collector.get("/healthz")).status == 200


async def test_oversized_body_is_413(memory_sink: MemorySink, schemas: SchemaRegistry) -> None:
    settings = Settings(sink="memory", max_body_bytes=2_000, max_decompressed_bytes=4_000)
    client = await start_collector(settings, memory_sink, schemas)
    try:
        big = batch_body(*[track_played() for _ in range(20)])
        assert len(big) > 2_000
        status, payload = await post(client, big)
        assert (status, payload["error"]) == (413, "body_too_large")
        # a gzip bomb: small on the wire, refused before it is inflated past the cap
        bomb = gzip.compress(b'{"batch": [' + b" " * 1_000_000 + b"]}")
        assert len(bomb) < 2_000
        status, payload = await post(client, bomb, GZIP_JSON)
        assert (status, payload["error"]) == (413, "body_too_large")

        # chunked upload without Content-Length is capped while streaming
        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 500

        response = await client.post("/v1/batch", data=chunks(), headers=JSON)
        assert response.status == 413
        assert memory_sink.records == []
    finally:
        await client.close()


async def test_sink_unavailable_is_503_with_retry_after_and_never_200(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.available = False
    response = await collector.post("/v1/batch", data=batch_body(track_played()), headers=JSON)
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert (await response.json())["error"] == "sink_unavailable"
    assert memory_sink.records == []
    assert (await collector.get("/readyz")).status == 503
    memory_sink.available = True
    assert (await collector.get("/readyz")).status == 200


async def test_sink_that_stalls_past_the_deadline_gives_503(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.stall = True  # the app's deadline is 0.5 s
    response = await collector.post("/v1/batch", data=batch_body(track_played()), headers=JSON)
    assert response.status == 503
    assert "Retry-After" in response.headers


async def test_dead_letter_not_acknowledged_means_no_200(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    # Rejected events must be in the dead-letter topic before the 200 says so.
    memory_sink.fatal_topics = {"events._invalid"}
    response = await collector.post(
        "/v1/batch", data=batch_body(track_played(), track_played(version=99)), headers=JSON
    )
    assert response.status == 500
    assert (await response.json())["error"] == "sink_rejected"


async def test_unknown_route_and_method_are_json(collector: HttpClient) -> None:
    response = await collector.get("/nope")
    assert (response.status, (await response.json())["error"]) == (404, "not_found")
    response = await collector.get("/v1/batch")
    assert (response.status, (await response.json())["error"]) == (405, "method_not_allowed")


async def test_metrics_count_requests_and_events(collector: HttpClient) -> None:
    await post(collector, batch_body(track_played(), track_played(event="nope"), page_viewed()))
    await post(collector, b"nope")
    text = await (await collector.get("/metrics")).text()
    assert 'capture_http_requests_total{route="/v1/batch",status="200"} 1.0' in text
    assert 'capture_http_requests_total{route="/v1/batch",status="400"} 1.0' in text
    assert 'capture_events_total{event="track_played",outcome="accepted",version="1"} 1.0' in text
    assert 'capture_events_total{event="page_viewed",outcome="accepted",version="1"} 1.0' in text
    unknown = 'capture_events_total{event="_unknown",outcome="rejected",version="_unknown"} 1.0'
    assert unknown in text
    assert 'capture_events_rejected_total{reason="unknown_event"} 1.0' in text
    assert 'capture_request_errors_total{reason="malformed_json"} 1.0' in text
    assert "capture_inflight_bytes 0.0" in text


async def test_health_and_readiness(collector: HttpClient) -> None:
    assert (await collector.get("/healthz")).status == 200
    response = await collector.get("/readyz")
    assert response.status == 200
    assert (await response.json())["sink"] == "memory"


async def test_empty_batch_is_fine(collector: HttpClient) -> None:
    assert await post(collector, batch_body()) == (200, {"accepted": 0, "rejected": []})


async def test_event_ids_in_rejections_match_the_request(collector: HttpClient) -> None:
    event_id = str(uuid.uuid4())
    _, body = await post(collector, batch_body(track_played(event_id=event_id, version=5)))
    assert body["rejected"][0]["event_id"] == event_id


async def test_bytes_in_flight_past_the_cap_get_503_at_once(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    body = batch_body(*[track_played() for _ in range(10)])
    settings = Settings(sink="memory", sink_timeout_s=3.0, max_inflight_bytes=len(body) + 100)
    client = await start_collector(settings, memory_sink, schemas)
    try:
        memory_sink.stall = True  # the first request holds its bytes for the whole deadline
        first = asyncio.create_task(client.post("/v1/batch", data=body, headers=JSON))
        assert client.app is not None
        inflight = client.app[keys.INFLIGHT]
        await eventually(lambda: inflight.bytes > 0)
        response = await client.post("/v1/batch", data=body, headers=JSON)
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        assert (await response.json())["error"] == "overloaded"
        assert not first.done()  # refused at once, not queued behind the stalled request
        assert (await first).status == 503  # the stalled one times out: sink_unavailable
        memory_sink.stall = False
        status, _ = await post(client, body)
        assert status == 200  # its bytes were released
    finally:
        await client.close()
