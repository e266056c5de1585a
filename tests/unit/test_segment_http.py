"""The Segment-compatible routes on the in-memory sink (issue #8): statuses, records, auth."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from collector import keys
from collector.app import RUNNER_OPTIONS, create_app
from collector.config_file import load_config_file
from collector.openapi import openapi_document
from collector.segment import PREFIX, build_segment_config
from collector.segment.mapping import TYPES, event_id_for
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import FIXED_NOW, HttpClient

JSON = {"Content-Type": "application/json"}
KEY = "sk_segment_0123456789abcdef"
PAGES_ONLY_KEY = "sk_pages_only_0123456789abcdef"
CONFIG_TOML = f"""
[[sources]]
name = "segment-server"
kind = "server"
key = "{KEY}"
events = "*"

[[sources]]
name = "pages-only"
kind = "server"
key = "{PAGES_ONLY_KEY}"
events = ["page"]

[segment.events]
"Song Started" = "track_played@1"
"""


def track(**fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": "Track Played",
        "messageId": "m-track-1",
        "timestamp": "2026-11-26T12:00:00.000+00:00",
        "userId": "u-1",
        "properties": {"track_id": "t-1", "artist_id": "a-1", "position_ms": 10},
    }
    message.update(fields)
    return message


def batch(*messages: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"batch": list(messages), "sentAt": "2026-11-26T12:00:01Z"})


async def post(
    client: HttpClient, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any, ClientResponse]:
    response = await client.post(PREFIX + path, data=body, headers=headers or JSON)
    return response.status, msgspec.json.decode(await response.read()), response


def sample(client: HttpClient, name: str, **labels: str) -> float:
    assert client.app is not None
    return client.app[keys.METRICS].registry.get_sample_value(name, labels) or 0.0


def value(record: Any) -> Any:
    return msgspec.json.decode(record.value)


@pytest.fixture
async def keyed(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    """The collector with a write key and a [segment] map in its config file."""
    path = tmp_path / "collector.toml"
    path.write_text(CONFIG_TOML, encoding="utf-8")
    settings = Settings(sink="memory", sink_timeout_s=0.5, config_file=str(path))
    app = create_app(settings, sink=memory_sink, clock=lambda: FIXED_NOW, schemas=schemas)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    client: HttpClient = TestClient(server)
    await client.start_server()
    yield client
    await client.close()


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {**JSON, "Authorization": f"Basic {token}"}


async def test_batch_lands_in_the_native_topics(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch(
        track(),
        {"type": "identify", "messageId": "m-id", "userId": "u-1", "traits": {"plan": "pro"}},
        {"type": "page", "messageId": "m-page", "anonymousId": "a-1", "name": "Home"},
    )
    status, payload, _ = await post(collector, "/v1/batch", body)
    assert status == 200
    assert payload == {"success": True, "accepted": 3, "rejected": []}
    (played,) = memory_sink.topic("events.track_played")
    record = value(played)
    assert record["event_id"] == str(event_id_for("m-track-1"))
    assert record["properties"] == {"track_id": "t-1", "artist_id": "a-1", "position_ms": 10}
    assert record["sent_at"] == "2026-11-26T12:00:01Z"  # enrichment ran as on /v1/batch
    assert record["received_at"] is not None
    (identify,) = memory_sink.topic("events.identify")
    assert value(identify)["properties"] == {"traits": {"plan": "pro"}}
    assert identify.key == b"u-1"
    (page,) = memory_sink.topic("events.page")
    assert value(page)["properties"] == {"properties": {}, "name": "Home"}
    assert not memory_sink.topic("events._invalid")


async def test_bad_messages_are_dead_lettered_counted_and_never_published(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    messages = [
        track(messageId="ok"),
        track(messageId="bad-props", properties={"track_id": "t"}),  # required fields missing
        track(messageId="no-map", event="Nobody Mapped This"),
        track(messageId="no-event", event=None),
        {"type": "teleport", "messageId": "odd", "userId": "u"},
        track(messageId="m" * 101),
    ]
    status, payload, _ = await post(collector, "/v1/batch", batch(*messages))
    assert status == 200
    reasons = [(r["index"], r["reason"]) for r in payload["rejected"]]
    assert reasons == [
        (1, "invalid_properties"),
        (2, "unmapped_event"),
        (3, "missing_event"),
        (4, "unknown_type"),
        (5, "message_id_too_long"),
    ]
    assert len(memory_sink.topic("events.track_played")) == 1
    dead = memory_sink.topic("events._invalid")
    assert len(dead) == len(reasons)
    for record, (index, reason) in zip(dead, reasons, strict=True):
        letter = value(record)
        assert (letter["index"], letter["reason"]) == (index, reason)
        assert letter["event"] == messages[index]  # the Segment message as sent
        assert dict(record.headers)["reason"] == reason.encode()
    for _, reason in reasons:
        assert sample(collector, "capture_events_rejected_total", reason=reason) == 1


async def test_retried_message_id_gives_the_same_event_id(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    for sent_at in ("2026-11-26T12:00:01Z", "2026-11-26T12:00:09Z"):
        body = msgspec.json.encode({"batch": [track(messageId="retry-me")], "sentAt": sent_at})
        assert (await post(collector, "/v1/batch", body))[0] == 200
    ids = {value(r)["event_id"] for r in memory_sink.topic("events.track_played")}
    assert ids == {str(event_id_for("retry-me"))}


@pytest.mark.parametrize(
    ("route", "message", "topic"),
    [
        ("/v1/track", track(type=None), "events.track_played"),
        ("/v1/identify", {"userId": "u", "traits": {}}, "events.identify"),
        ("/v1/page", {"userId": "u", "properties": {"path": "/"}}, "events.page"),
        ("/v1/screen", {"userId": "u", "name": "Home"}, "events.screen"),
        ("/v1/group", {"userId": "u", "groupId": "g-1"}, "events.group"),
        ("/v1/alias", {"userId": "u", "previousId": "anon"}, "events.alias"),
    ],
)
async def test_single_call_routes(
    collector: HttpClient, memory_sink: MemorySink, route: str, message: Any, topic: str
) -> None:
    status, payload, _ = await post(collector, route, msgspec.json.encode(message))
    assert (status, payload["accepted"]) == (200, 1), payload
    assert len(memory_sink.topic(topic)) == 1


async def test_gzip_body(collector: HttpClient, memory_sink: MemorySink) -> None:
    headers = {**JSON, "Content-Encoding": "gzip"}
    status, _, _ = await post(collector, "/v1/batch", gzip.compress(batch(track())), headers)
    assert status == 200
    assert len(memory_sink.topic("events.track_played")) == 1


@pytest.mark.parametrize(
    ("route", "body", "reason"),
    [
        ("/v1/batch", b"{not json", "malformed_json"),
        ("/v1/batch", b'{"messages": []}', "invalid_envelope"),
        ("/v1/batch", b'{"batch": {}}', "invalid_envelope"),
        ("/v1/track", b"[1]", "invalid_envelope"),
        ("/v1/batch", b'{"batch": [' + b"[" * 40 + b"]" * 40 + b"]}", "too_deep"),
    ],
)
async def test_malformed_request_is_400_with_a_json_error(
    collector: HttpClient, memory_sink: MemorySink, route: str, body: bytes, reason: str
) -> None:
    status, payload, _ = await post(collector, route, body)
    assert (status, payload["error"]) == (400, reason)
    assert not memory_sink.records


async def test_sink_failure_is_503_with_retry_after(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    memory_sink.available = False
    status, payload, response = await post(collector, "/v1/batch", batch(track()))
    assert (status, payload["error"]) == (503, "sink_unavailable")
    assert response.headers["Retry-After"]
    assert not memory_sink.records


async def test_write_key_as_basic_username_or_bearer(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch(track(event="Song Started"))
    assert (await post(keyed, "/v1/batch", body, basic(KEY)))[0] == 200
    bearer = {**JSON, "Authorization": f"Bearer {KEY}"}
    assert (await post(keyed, "/v1/batch", body, bearer))[0] == 200
    status, payload, _ = await post(keyed, "/v1/batch", body)
    assert (status, payload["error"]) == (401, "missing_key")
    status, payload, _ = await post(keyed, "/v1/batch", body, basic("sk_wrong_0123456789"))
    assert (status, payload["error"]) == (401, "unknown_key")
    records = memory_sink.topic("events.track_played")
    assert [value(r)["version"] for r in records] == [1, 1]  # the [segment.events] map


async def test_a_source_may_send_only_its_events_by_their_mapped_schema_name(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    page = {"type": "page", "messageId": "m-page-1", "anonymousId": "a-1", "name": "Home"}
    status, payload, _ = await post(keyed, "/v1/batch", batch(page), basic(PAGES_ONLY_KEY))
    assert status == 200
    # "Track Played" maps to track_played, which this source does not list: the whole request
    # is refused before anything is published, the page with it
    body = batch(dict(page, messageId="m-page-2"), track())
    status, payload, _ = await post(keyed, "/v1/batch", body, basic(PAGES_ONLY_KEY))
    assert (status, payload["error"]) == (403, "event_not_allowed")
    assert "track_played" in payload["detail"]
    assert [value(r)["event_id"] for r in memory_sink.topic("events.page")] == [
        str(event_id_for("m-page-1"))
    ]
    assert memory_sink.topic("events.track_played") == []


@pytest.mark.parametrize(
    ("traits", "context_traits", "stored"),
    [
        (
            None,
            {"plan": "pro", "email": "x@example.com"},
            {"plan": "pro", "email": "x@example.com"},
        ),
        # both: merged, and the name the caller passed to identify wins over the context's
        ({"plan": "team"}, {"plan": "pro", "seats": 3}, {"plan": "team", "seats": 3}),
        ({"plan": "team"}, None, {"plan": "team"}),
        ({"plan": "team"}, "not an object", {"plan": "team"}),
    ],
    ids=["context-only", "both", "top-only", "context-not-an-object"],
)
async def test_rudderstack_identify_traits_under_context_are_kept(
    collector: HttpClient,
    memory_sink: MemorySink,
    traits: Any,
    context_traits: Any,
    stored: dict[str, Any],
) -> None:
    # RudderStack's SDKs send identify traits as context.traits, not top-level traits
    message: dict[str, Any] = {"type": "identify", "messageId": "m-rs-1", "userId": "u-7"}
    if traits is not None:
        message["traits"] = traits
    if context_traits is not None:
        message["context"] = {"traits": context_traits, "library": {"name": "rudder"}}
    status, payload, _ = await post(collector, "/v1/identify", msgspec.json.encode(message))
    assert (status, payload["accepted"]) == (200, 1)
    (identify,) = memory_sink.topic("events.identify")
    assert value(identify)["properties"] == {"traits": stored}


async def test_every_compat_route_is_in_the_openapi_document(collector: HttpClient) -> None:
    assert collector.app is not None
    routes = {
        resource.canonical
        for resource in collector.app.router.resources()
        if resource.canonical.startswith(PREFIX)
    }
    # the batch route and one per call type, each also under analytics.js's short name
    assert len(routes) == 2 * (1 + len(TYPES))
    assert f"{PREFIX}/v1/t" in routes
    paths = openapi_document()["paths"]
    assert routes == {path for path in paths if path.startswith(PREFIX)}


def test_example_config_file_has_a_valid_segment_map() -> None:
    path = Path(__file__).parents[2] / "examples" / "collector.toml"
    config = build_segment_config(load_config_file(str(path)), path=str(path))
    assert config.events["Song Started"] == ("track_played", 2)
