"""The browser wire forms (issue 13): for browser keys only, the key in the query string and
text/plain bodies, gzip found by its magic bytes; server keys stay in Authorization."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from collector import keys
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient
from tests.factories import batch_body, track_played
from tests.unit.test_auth import start_with_config
from tests.waiting import eventually

BROWSER_KEY = "pk_web_0123456789abcdef"
SERVER_KEY = "sk_api_0123456789abcdef"
ORIGIN = "https://app.example.com"

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
# what navigator.sendBeacon(url, string) sends: no Authorization, no Content-Encoding
BEACON = {"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN}


@pytest.fixture
async def collector_with_keys(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start_with_config(tmp_path, TOML, memory_sink, schemas)
    yield client
    await client.close()


async def test_a_beacon_with_the_browser_key_in_the_query_is_accepted(
    collector_with_keys: HttpClient, memory_sink: MemorySink
) -> None:
    event = track_played()
    response = await collector_with_keys.post(
        f"/v1/batch?write_key={BROWSER_KEY}", data=batch_body(event), headers=BEACON
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == 1
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    [record] = memory_sink.records
    assert msgspec.json.decode(record.value)["event_id"] == event["event_id"]


async def test_a_gzip_beacon_is_recognised_by_its_magic_bytes(
    collector_with_keys: HttpClient, memory_sink: MemorySink
) -> None:
    body = batch_body(track_played(), track_played(), compress=True)
    response = await collector_with_keys.post(
        f"/v1/batch?write_key={BROWSER_KEY}", data=body, headers=BEACON
    )
    assert response.status == 200, await response.text()
    assert len(memory_sink.records) == 2


async def test_a_sniffed_gzip_body_keeps_the_decompressed_limit(
    collector_with_keys: HttpClient, memory_sink: MemorySink
) -> None:
    bomb = gzip.compress(b'{"sent_at": "2026-11-26T12:00:01Z", "batch": [' + b" " * 50_000_000)
    response = await collector_with_keys.post(
        f"/v1/batch?write_key={BROWSER_KEY}", data=bomb, headers=BEACON
    )
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"
    assert memory_sink.records == []


async def test_a_sniffed_gzip_body_holds_its_size_in_the_in_flight_budget(
    collector_with_keys: HttpClient, memory_sink: MemorySink
) -> None:
    # inflated inside read_body, like a declared gzip body, not beside the budget
    assert collector_with_keys.app is not None
    inflight = collector_with_keys.app[keys.INFLIGHT]
    raw = batch_body(*[track_played() for _ in range(50)])
    body = gzip.compress(raw)
    memory_sink.stall = True  # the request holds its bytes until the sink deadline
    pending = asyncio.create_task(
        collector_with_keys.post(f"/v1/batch?write_key={BROWSER_KEY}", data=body, headers=BEACON)
    )
    await eventually(lambda: inflight.bytes > 0)
    assert inflight.bytes == len(body) + len(raw)
    assert (await pending).status == 503
    assert inflight.bytes == 0


@pytest.mark.parametrize("authorization", ["Basic \u00e9", "Bearer", "Token x"])
async def test_an_unusable_authorization_does_not_let_a_query_key_in(
    collector_with_keys: HttpClient, memory_sink: MemorySink, authorization: str
) -> None:
    # the query form is for requests without Authorization; a broken header is no key at all
    response = await collector_with_keys.post(
        f"/v1/batch?write_key={SERVER_KEY}",
        data=batch_body(track_played()),
        headers={"Content-Type": "application/json", "Authorization": authorization},
    )
    assert response.status == 401
    assert (await response.json())["error"] == "missing_key"
    assert memory_sink.records == []


async def test_a_server_key_in_the_query_string_is_refused(
    collector_with_keys: HttpClient, memory_sink: MemorySink
) -> None:
    response = await collector_with_keys.post(
        f"/v1/batch?write_key={SERVER_KEY}",
        data=batch_body(track_played()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 401
    body = await response.json()
    assert body["error"] == "key_in_query"
    assert SERVER_KEY not in body["detail"]
    assert memory_sink.records == []


async def test_text_plain_is_for_browser_keys_only(
    collector_with_keys: HttpClient, memory_sink: MemorySink
) -> None:
    response = await collector_with_keys.post(
        "/v1/batch",
        data=batch_body(track_played()),
        headers={"Content-Type": "text/plain", "Authorization": f"Bearer {SERVER_KEY}"},
    )
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_content_type"
    assert memory_sink.records == []


async def test_an_unknown_key_in_the_query_is_unknown(collector_with_keys: HttpClient) -> None:
    response = await collector_with_keys.post(
        "/v1/batch?write_key=not-a-key-0123456789", data=batch_body(track_played()), headers=BEACON
    )
    assert response.status == 401
    assert (await response.json())["error"] == "unknown_key"
