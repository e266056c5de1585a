"""CORS for browser keys: preflights, headers on actual (and error) responses, origin checks,
on the native and the Segment-compatible routes alike."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from collector.cors import ALLOWED_HEADERS, CORS_PATHS
from collector.segment import PREFIX
from collector.segment.handlers import route_paths
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient
from tests.factories import batch_body, track_played
from tests.unit.test_auth import start_with_config
from tests.unit.test_openapi import check

APP_KEY = "pk_app_0123456789abcdef"
DOCS_KEY = "pk_docs_0123456789abcdef"
APP = "https://app.example.com"
DOCS = "https://docs.example.com"
EVIL = "https://evil.example.net"

TOML = f"""
[[sources]]
name = "app"
kind = "browser"
keys = ["{APP_KEY}"]
events = "*"
allowed_origins = ["{APP}", "http://localhost:3000"]

[[sources]]
name = "docs"
kind = "browser"
keys = ["{DOCS_KEY}"]
events = "*"
allowed_origins = ["{DOCS}"]
"""


@pytest.fixture
async def browser(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start_with_config(tmp_path, TOML, memory_sink, schemas)
    yield client
    await client.close()


def from_origin(origin: str, key: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Origin": origin}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


@pytest.mark.parametrize("origin", [APP, DOCS, "http://localhost:3000"])
async def test_preflight_from_a_listed_origin_is_allowed(browser: HttpClient, origin: str) -> None:
    response = await browser.options(
        "/v1/batch",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, content-encoding",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Vary"] == "Origin"
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert allowed == {"content-type", "content-encoding", "authorization"}
    assert {h.strip() for h in ALLOWED_HEADERS.split(",")} == {
        "Content-Type",
        "Content-Encoding",
        "Authorization",
    }
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_preflight_from_an_unlisted_origin_is_refused_without_cors_headers(
    browser: HttpClient,
) -> None:
    response = await browser.options(
        "/v1/batch", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    )
    assert response.status == 403
    assert msgspec.json.decode(await response.read())["error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_preflight_for_another_method_is_refused(browser: HttpClient) -> None:
    response = await browser.options(
        "/v1/batch", headers={"Origin": APP, "Access-Control-Request-Method": "DELETE"}
    )
    assert response.status == 403


async def test_actual_response_to_a_listed_origin_carries_cors_headers(
    browser: HttpClient, memory_sink: MemorySink
) -> None:
    response = await browser.post(
        "/v1/batch", data=batch_body(track_played()), headers=from_origin(APP, APP_KEY)
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert len(memory_sink.records) == 1


async def test_error_response_to_a_listed_origin_is_readable_by_the_page(
    browser: HttpClient,
) -> None:
    response = await browser.post(
        "/v1/batch", data=batch_body(track_played()), headers=from_origin(APP)
    )
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == APP


async def test_browser_key_from_an_origin_not_on_its_list_is_403(
    browser: HttpClient, memory_sink: MemorySink
) -> None:
    # docs.example.com is listed, but by the docs source, not by the app key's source
    response = await browser.post(
        "/v1/batch", data=batch_body(track_played()), headers=from_origin(DOCS, APP_KEY)
    )
    body = msgspec.json.decode(await response.read())
    assert (response.status, body["error"]) == (403, "origin_not_allowed")
    assert APP_KEY not in body["detail"]
    assert response.headers["Access-Control-Allow-Origin"] == DOCS
    # from nowhere it is listed: refused, and the browser may not even read why
    response = await browser.post(
        "/v1/batch", data=batch_body(track_played()), headers=from_origin(EVIL, APP_KEY)
    )
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Vary" not in response.headers
    assert memory_sink.records == []


async def test_browser_key_without_origin_is_accepted(
    browser: HttpClient, memory_sink: MemorySink
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {APP_KEY}"}
    response = await browser.post("/v1/batch", data=batch_body(track_played()), headers=headers)
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


# Segment-compatible routes (issue 13): analytics.js in a page at an allowed origin either
# sends text/plain with the key in the body (no preflight, see test_body_write_key.py) or
# `Authorization: Basic base64(key:)` after a preflight. One definition for every ingest route.
INGEST_PATHS = ["/v1/batch", f"{PREFIX}/v1/batch", f"{PREFIX}/v1/b", f"{PREFIX}/v1/t"]


def test_every_ingest_route_answers_preflights(browser: HttpClient) -> None:
    assert browser.app is not None
    assert browser.app[CORS_PATHS] == {"/v1/batch", *route_paths()}


@pytest.mark.parametrize("path", INGEST_PATHS)
async def test_preflight_on_each_ingest_route(browser: HttpClient, path: str) -> None:
    ask = {"Access-Control-Request-Method": "POST"}
    ask["Access-Control-Request-Headers"] = "authorization, content-type"
    response = await browser.options(path, headers={"Origin": APP, **ask})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    await check(response, path, "options")
    # a refused origin's preflight: no grant, so the browser never sends the POST
    response = await browser.options(path, headers={"Origin": EVIL, **ask})
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert (await check(response, path, "options"))["error"] == "origin_not_allowed"


async def test_analytics_js_basic_auth_after_a_preflight_is_accepted(
    browser: HttpClient, memory_sink: MemorySink
) -> None:
    token = base64.b64encode(f"{APP_KEY}:".encode()).decode()
    message = {
        "type": "track",
        "event": "Track Played",
        "messageId": "m-basic-1",
        "anonymousId": "a-1",
        "properties": {"track_id": "t-1", "artist_id": "a-1", "position_ms": 10},
    }
    response = await browser.post(
        f"{PREFIX}/v1/t",
        data=msgspec.json.encode(message),
        headers={**from_origin(APP), "Authorization": f"Basic {token}"},
    )
    assert response.status == 200, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert len(memory_sink.topic("events.track_played")) == 1
    # the same key from an origin its source does not list: refused, readable by that page
    response = await browser.post(
        f"{PREFIX}/v1/t",
        data=msgspec.json.encode(message),
        headers={**from_origin(DOCS), "Authorization": f"Basic {token}"},
    )
    assert response.status == 403
    assert response.headers["Access-Control-Allow-Origin"] == DOCS
