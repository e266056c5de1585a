"""The write key in the body (issue 13): browser keys only, on the native and Segment routes.

Each rule is written once and run against every route form: the native batch (`write_key`),
Segment's batch and analytics.js's single-call short path (`writeKey`). Where the key comes
from is decided in one place (`browser_forms.key_place`), so the rules must hold alike.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse

from collector.browser_forms import without_member
from collector.segment import PREFIX
from collector.segment.mapping import event_id_for
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient
from tests.factories import track_played
from tests.unit.test_auth import start_with_config
from tests.unit.test_openapi import check

BROWSER_KEY = "pk_web_0123456789abcdef"
SERVER_KEY = "sk_api_0123456789abcdef"
UNKNOWN_KEY = "pk_nobody_0123456789abcdef"
ORIGIN = "https://app.example.com"
EVIL = "https://evil.example.net"

TOML = f"""
[[sources]]
name = "web"
kind = "browser"
keys = ["{BROWSER_KEY}"]
events = "*"
allowed_origins = ["{ORIGIN}"]

[[sources]]
name = "api"
kind = "server"
keys = ["{SERVER_KEY}"]
events = "*"
"""
# what analytics.js's fetch and a beacon send: a safelisted content type, no Authorization
TEXT_PLAIN = {"Content-Type": "text/plain", "Origin": ORIGIN}
ABSENT = object()


def segment_message(event_id: str, key: object) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": "Track Played",
        "messageId": event_id,
        "timestamp": "2026-11-26T12:00:00.000+00:00",
        "anonymousId": "a-1",
        "properties": {"track_id": "t-1", "artist_id": "a-1", "position_ms": 10},
    }
    if key is not ABSENT:
        message["writeKey"] = key  # analytics.js puts it in every message too
    return message


def native_body(event_id: str, key: object) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sent_at": "2026-11-26T12:00:01Z",
        "batch": [track_played(event_id=event_id)],
    }
    if key is not ABSENT:
        body["write_key"] = key
    return body


def segment_batch(event_id: str, key: object) -> dict[str, Any]:
    body: dict[str, Any] = {
        "batch": [segment_message(event_id, key)],
        "sentAt": "2026-11-26T12:00:01Z",
    }
    if key is not ABSENT:
        body["writeKey"] = key  # analytics.js's batching dispatcher, at the top level
    return body


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    make: Callable[[str, object], dict[str, Any]]

    def body(self, key: object = ABSENT, *, compress: bool = False) -> tuple[bytes, str]:
        """The body with `key` in the route's key field, and the id its event is stored under."""
        message_id = str(uuid.uuid4())
        encoded = msgspec.json.encode(self.make(message_id, key))
        segment = self.path.startswith(PREFIX)  # the event id comes from the messageId
        stored_id = str(event_id_for(message_id)) if segment else message_id
        return (gzip.compress(encoded) if compress else encoded), stored_id


ROUTES = [
    Route("native", "/v1/batch", native_body),
    Route("segment-batch", f"{PREFIX}/v1/batch", segment_batch),
    Route("analytics-js-track", f"{PREFIX}/v1/t", segment_message),
]
routes = pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])


@pytest.fixture
async def keyed(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start_with_config(tmp_path, TOML, memory_sink, schemas)
    yield client
    await client.close()


async def send(
    client: HttpClient, route: Route, body: bytes, headers: dict[str, str], query: str = ""
) -> tuple[ClientResponse, Any]:
    response = await client.post(route.path + query, data=body, headers=headers)
    payload = await check(response, route.path)  # every answer is one the document lists
    return response, payload


def stored_ids(sink: MemorySink) -> list[str]:
    return [msgspec.json.decode(record.value)["event_id"] for record in sink.records]


@routes
@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8"])
async def test_a_browser_key_in_a_text_plain_body_is_accepted_and_not_stored(
    keyed: HttpClient, memory_sink: MemorySink, route: Route, content_type: str
) -> None:
    body, event_id = route.body(BROWSER_KEY)
    response, _ = await send(keyed, route, body, {"Content-Type": content_type, "Origin": ORIGIN})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert stored_ids(memory_sink) == [event_id]
    assert all(BROWSER_KEY.encode() not in record.value for record in memory_sink.records)


@routes
async def test_a_gzip_text_plain_body_with_the_key_inside_is_sniffed(
    keyed: HttpClient, memory_sink: MemorySink, route: Route
) -> None:
    body, event_id = route.body(BROWSER_KEY, compress=True)
    response, _ = await send(keyed, route, body, TEXT_PLAIN)
    assert response.status == 200
    assert stored_ids(memory_sink) == [event_id]


@routes
async def test_a_server_key_in_the_body_is_refused(
    keyed: HttpClient, memory_sink: MemorySink, route: Route
) -> None:
    body, _ = route.body(SERVER_KEY)
    response, payload = await send(keyed, route, body, {"Content-Type": "application/json"})
    assert (response.status, payload["error"]) == (401, "key_in_body")
    assert SERVER_KEY not in payload["detail"]
    assert memory_sink.records == []


@routes
@pytest.mark.parametrize("bad", [123, True, ["k"], {"key": BROWSER_KEY}], ids=repr)
async def test_a_body_key_that_is_not_a_string_is_a_bad_envelope(
    keyed: HttpClient, memory_sink: MemorySink, route: Route, bad: object
) -> None:
    body, _ = route.body(bad)
    response, payload = await send(keyed, route, body, TEXT_PLAIN)
    assert (response.status, payload["error"]) == (400, "invalid_envelope")
    assert memory_sink.records == []


@routes
@pytest.mark.parametrize("key", [ABSENT, None, ""], ids=["absent", "null", "empty"])
async def test_no_key_anywhere_is_missing(
    keyed: HttpClient, memory_sink: MemorySink, route: Route, key: object
) -> None:
    body, _ = route.body(key)
    response, payload = await send(keyed, route, body, TEXT_PLAIN)
    assert (response.status, payload["error"]) == (401, "missing_key")
    assert memory_sink.records == []


@routes
async def test_the_query_key_wins_over_a_different_body_key(
    keyed: HttpClient, memory_sink: MemorySink, route: Route
) -> None:
    # the body is not consulted when the query string has a key: a good body key cannot
    # rescue a bad query key, and a bad body key does not spoil a good query key
    body, _ = route.body(BROWSER_KEY)
    response, payload = await send(keyed, route, body, TEXT_PLAIN, f"?write_key={UNKNOWN_KEY}")
    assert (response.status, payload["error"]) == (401, "unknown_key")
    body, event_id = route.body(UNKNOWN_KEY)
    response, _ = await send(keyed, route, body, TEXT_PLAIN, f"?write_key={BROWSER_KEY}")
    assert response.status == 200
    assert stored_ids(memory_sink) == [event_id]


@routes
async def test_authorization_wins_over_the_body_key(
    keyed: HttpClient, memory_sink: MemorySink, route: Route
) -> None:
    body, _ = route.body(BROWSER_KEY)
    headers = {**TEXT_PLAIN, "Authorization": f"Bearer {UNKNOWN_KEY}"}
    response, payload = await send(keyed, route, body, headers)
    assert (response.status, payload["error"]) == (401, "unknown_key")
    # a server key in its header: a body field that is no key at all is not even read
    body, event_id = route.body(12345)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SERVER_KEY}"}
    response, _ = await send(keyed, route, body, headers)
    assert response.status == 200
    assert stored_ids(memory_sink) == [event_id]


@routes
async def test_a_body_key_from_a_refused_origin_gets_no_cors_grant(
    keyed: HttpClient, memory_sink: MemorySink, route: Route
) -> None:
    body, _ = route.body(BROWSER_KEY)
    response, payload = await send(
        keyed, route, body, {"Content-Type": "text/plain", "Origin": EVIL}
    )
    assert (response.status, payload["error"]) == (403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert memory_sink.records == []


@routes
async def test_a_body_that_is_not_an_object_cannot_carry_a_key(
    keyed: HttpClient, memory_sink: MemorySink, route: Route
) -> None:
    response, payload = await send(keyed, route, b'["write_key", "writeKey"]', TEXT_PLAIN)
    assert (response.status, payload["error"]) == (400, "invalid_envelope")


async def test_a_segment_dead_letter_keeps_the_message_without_its_write_key(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    # unmapped: dead-lettered as sent, where analytics.js's writeKey would sit in the topic
    message = segment_message("m-dead-1", BROWSER_KEY) | {"event": "No Such Event"}
    route = ROUTES[1]
    body = msgspec.json.encode({"batch": [message], "writeKey": BROWSER_KEY})
    response, payload = await send(keyed, route, body, TEXT_PLAIN)
    assert response.status == 200
    assert payload["accepted"] == 0
    [dead] = memory_sink.topic("events._invalid")
    assert BROWSER_KEY.encode() not in dead.value
    kept = msgspec.json.decode(dead.value)["event"]
    assert kept == {name: v for name, v in message.items() if name != "writeKey"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"writeKey":"k"}', b"{}"),
        (b'{"a":1,"writeKey":"k"}', b'{"a":1}'),
        (b'{"writeKey":"k", "a": {"writeKey": 1}}', b'{ "a": {"writeKey": 1}}'),  # top level only
        (b'{"a":[1,{"writeKey":2}] ,"write\\u004bey":"k"}', b'{"a":[1,{"writeKey":2}] }'),
        (b'{"writeKey":"a","b":"\\"writeKey\\"","writeKey":"b"}', b'{"b":"\\"writeKey\\""}'),
        (b'{"x":"writeKey"}', b'{"x":"writeKey"}'),  # a value, not a name
        (b" { } ", b" { } "),
        (b'["writeKey"]', b'["writeKey"]'),  # not an object: left alone
    ],
)
def test_without_member_cuts_only_top_level_names(raw: bytes, expected: bytes) -> None:
    assert without_member(raw, "writeKey") == expected
    msgspec.json.decode(without_member(raw, "writeKey"))  # still valid JSON


SERVER_ONLY_TOML = f"""
[[sources]]
name = "api"
kind = "server"
keys = ["{SERVER_KEY}"]
events = "*"
"""
# not gzip: a collector that reads the body answers 400 invalid_gzip, one that refuses the
# request before reading it answers with the auth refusal
UNREADABLE = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


@routes
async def test_a_keyless_request_is_refused_unread_when_no_body_key_could_be_admitted(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry, route: Route
) -> None:
    # Only browser keys are admitted from a body. With no browser source, or from an origin no
    # browser source lists, no body key can pass: reading (and inflating) an unauthenticated
    # body would only let keyless clients hold the in-flight budget that keyed traffic needs.
    server_only = await start_with_config(tmp_path, SERVER_ONLY_TOML, memory_sink, schemas)
    try:
        response, payload = await send(server_only, route, b"not gzip", UNREADABLE)
        assert (response.status, payload["error"]) == (401, "missing_key")
    finally:
        await server_only.close()
    keyed = await start_with_config(tmp_path, TOML, memory_sink, schemas)
    try:
        response, payload = await send(keyed, route, b"not gzip", {**UNREADABLE, "Origin": EVIL})
        assert (response.status, payload["error"]) == (403, "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in response.headers
        # a header or query key is decided before the body, which a refusal leaves unread
        headers = {**UNREADABLE, "Authorization": f"Bearer {UNKNOWN_KEY}"}
        response, payload = await send(keyed, route, b"not gzip", headers)
        assert (response.status, payload["error"]) == (401, "unknown_key")
        query = f"?write_key={UNKNOWN_KEY}"
        response, payload = await send(keyed, route, b"not gzip", UNREADABLE, query)
        assert (response.status, payload["error"]) == (401, "unknown_key")
        # a listed origin, or none (curl with a browser key), may carry a body key: read
        for headers in (UNREADABLE, {**UNREADABLE, "Origin": ORIGIN}):
            response, payload = await send(keyed, route, b"not gzip", headers)
            assert (response.status, payload["error"]) == (400, "invalid_gzip")
    finally:
        await keyed.close()
    assert memory_sink.records == []


@pytest.mark.parametrize("path", [f"{PREFIX}/v1/batch", f"{PREFIX}/v1/t"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("key", [BROWSER_KEY, SERVER_KEY])
async def test_no_write_key_reaches_a_segment_dead_letter(
    keyed: HttpClient, memory_sink: MemorySink, path: str, compress: bool, key: str
) -> None:
    # whoever sends it and however: a server key in Authorization with the same key in the
    # messages (as some libraries do), a browser key in the body; every way a message fails
    base = segment_message("m-0", key)
    messages = [
        base | {"messageId": "m-1", "event": "No Such Event"},
        base | {"messageId": "m-2", "properties": {"track_id": 5}},
        base | {"messageId": "m-3", "anonymousId": "a" * 300},
        base | {"messageId": "m-4", "timestamp": "not a time"},
        base | {"messageId": "m" * 101},
        {name: v for name, v in base.items() if name != "event"},
    ]
    headers = dict(TEXT_PLAIN)
    if key == SERVER_KEY:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    single = path.endswith("/t")
    bodies = messages if single else [{"batch": messages, "writeKey": key}]
    for body in bodies:
        encoded = msgspec.json.encode(body)
        data = gzip.compress(encoded) if compress else encoded
        response = await keyed.post(path, data=data, headers=headers)
        assert response.status == 200, await response.text()
        assert (await response.json())["accepted"] == 0
    dead = memory_sink.topic("events._invalid")
    assert len(dead) == len(messages)
    assert all(key.encode() not in record.value for record in dead)
