"""GET /openapi.json describes the real API: every response the app gives in these tests has
a documented status, and its JSON body validates against that status's schema.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import referencing
import referencing.jsonschema
from aiohttp import ClientResponse

from collector.handlers import HTTP_REASONS
from collector.openapi import openapi_document
from collector.segment import PREFIX
from collector.segment.handlers import route_paths
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, page_viewed, track_played

DOC_URI = "urn:capture:openapi"
JSON = {"Content-Type": "application/json"}
WRITE_KEY = "test-server-key-0123456789"


def _validator(pointer: str) -> jsonschema.Draft202012Validator:
    resource = referencing.Resource.from_contents(
        openapi_document(), default_specification=referencing.jsonschema.DRAFT202012
    )
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(DOC_URI, resource)
    return jsonschema.Draft202012Validator(
        {"$ref": f"{DOC_URI}#{pointer}"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


async def check(response: ClientResponse, path: str, method: str = "post") -> Any:
    """Assert the status is documented for the operation and the body matches its schema."""
    operation = openapi_document()["paths"][path][method]
    status = str(response.status)
    assert status in operation["responses"], f"{method} {path} answered undocumented {status}"
    documented = operation["responses"][status]
    for header in documented.get("headers", {}):
        assert header in response.headers, f"{status} must carry {header}"
    if "content" not in documented:
        assert await response.read() == b"", f"{status} is documented without a body"
        return None
    content_type = response.content_type
    assert content_type in documented["content"], (status, content_type)
    if content_type != "application/json":
        return await response.text()
    body = msgspec.json.decode(await response.read())
    where = ("paths", _escape(path), method, "responses", status, "content", _escape(content_type))
    pointer = "/" + "/".join((*where, "schema"))
    _validator(pointer).validate(body)
    return body


def test_component_schemas_are_valid_json_schema() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_request_schema_accepts_what_clients_send_and_refuses_a_bad_envelope() -> None:
    pointer = "/components/schemas/Batch"
    good = msgspec.json.decode(batch_body(track_played(), page_viewed()))
    _validator(pointer).validate(good)
    bad = msgspec.json.decode(batch_body(track_played(version=0, event_id="nope")))
    errors = list(_validator(pointer).iter_errors(bad))
    assert {tuple(error.absolute_path)[-1] for error in errors} == {"version", "event_id"}


async def test_openapi_json_is_served(collector: HttpClient) -> None:
    response = await collector.get("/openapi.json")
    assert await check(response, "/openapi.json", "get") == openapi_document()


async def test_batch_responses_match_the_document(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    async def post(body: bytes, headers: dict[str, str] | None = None) -> ClientResponse:
        return await collector.post("/v1/batch", data=body, headers=headers or JSON)

    seen = set()

    async def expect(status: int, response: ClientResponse) -> Any:
        assert response.status == status
        seen.add(status)
        return await check(response, "/v1/batch")

    body = await expect(200, await post(batch_body(track_played(), page_viewed())))
    assert body == {"accepted": 2, "rejected": []}
    body = await expect(200, await post(batch_body(track_played(event="nope"))))
    assert body["rejected"][0]["reason"] == "unknown_event"
    gz = {**JSON, "Content-Encoding": "gzip"}
    await expect(200, await post(batch_body(track_played(), compress=True), gz))
    await expect(400, await post(b"{nope"))
    await expect(400, await post(b'{"batch": 3}'))
    await expect(400, await post(b"not gzip", gz))
    await expect(415, await post(b"{}", {"Content-Type": "text/plain"}))
    await expect(415, await post(b"{}", {**JSON, "Content-Encoding": "br"}))
    await expect(413, await post(gzip.compress(b" " * 20_000_000), gz))
    memory_sink.available = False
    await expect(503, await post(batch_body(track_played())))
    memory_sink.available = True
    memory_sink.fatal_topics.add("events.track_played")
    await expect(500, await post(batch_body(track_played())))
    assert seen == {200, 400, 413, 415, 500, 503}


async def test_health_ready_and_metrics_match_the_document(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    assert (await check(await collector.get("/healthz"), "/healthz", "get"))["status"] == "ok"
    assert (await check(await collector.get("/readyz"), "/readyz", "get"))["status"] == "ready"
    text = await check(await collector.get("/metrics"), "/metrics", "get")
    assert "capture_http_requests_total" in text
    memory_sink.available = False
    response = await collector.get("/readyz")
    assert response.status == 503
    assert (await check(response, "/readyz", "get"))["error"] == "sink_unavailable"


@pytest.fixture
def keyed_config(tmp_path: Path) -> str:
    path = tmp_path / "capture.toml"
    path.write_text(
        "[[sources]]\n"
        'name = "backend"\n'
        'kind = "server"\n'
        'events = ["track_played"]\n'
        f'key = "{WRITE_KEY}"\n'
        "rate_limit_per_s = 0.01\n"
        "burst = 1\n"
    )
    return str(path)


async def test_key_refusals_match_the_document(
    keyed_config: str, memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    settings = Settings(sink="memory", config_file=keyed_config)
    client = await start_collector(settings, memory_sink, schemas)
    try:
        keyed = {**JSON, "Authorization": f"Bearer {WRITE_KEY}"}
        statuses = []
        for headers, body in [
            (JSON, batch_body(track_played())),  # no key
            ({**JSON, "Authorization": "Bearer not-a-known-key-at-all"}, batch_body()),
            (keyed, batch_body(page_viewed())),  # not this source's event; spends the bucket
            (keyed, batch_body(track_played())),  # the bucket (burst 1) is empty
        ]:
            response = await client.post("/v1/batch", data=body, headers=headers)
            statuses.append(response.status)
            await check(response, "/v1/batch")
        assert statuses == [401, 401, 403, 429]
    finally:
        await client.close()


async def test_cors_preflights_match_the_document(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    path = tmp_path / "capture.toml"
    path.write_text(
        "[[sources]]\n"
        'name = "web"\n'
        'kind = "browser"\n'
        'events = "*"\n'
        'key = "browser-key-0123456789"\n'
        'allowed_origins = ["https://app.example.com"]\n'
    )
    client = await start_collector(
        Settings(sink="memory", config_file=str(path)), memory_sink, schemas
    )
    try:
        statuses = []
        for origin, method in [
            ("https://app.example.com", "POST"),
            ("https://evil.example.net", "POST"),
            ("https://app.example.com", "DELETE"),
        ]:
            response = await client.options(
                "/v1/batch",
                headers={"Origin": origin, "Access-Control-Request-Method": method},
            )
            statuses.append(response.status)
            await check(response, "/v1/batch", "options")
        assert statuses == [204, 403, 403]
    finally:
        await client.close()


async def test_a_body_timeout_matches_the_document(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    client = await start_collector(
        Settings(sink="memory", body_read_timeout_s=0.3), memory_sink, schemas
    )
    body = batch_body(track_played())
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[:10]
        )
        await writer.drain()  # the rest never comes
        status_line = await asyncio.wait_for(reader.readline(), timeout=30)
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, text = line.decode().partition(":")
            headers[name.strip().lower()] = text.strip()
        payload = msgspec.json.decode(await reader.readexactly(int(headers["content-length"])))
    finally:
        writer.close()
        await client.close()
    status = status_line.split()[1].decode()
    operation = openapi_document()["paths"]["/v1/batch"]["post"]
    assert status == "408"
    assert status in operation["responses"]
    assert headers["content-type"].startswith("application/json")
    pointer = "/paths/~1v1~1batch/post/responses/408/content/application~1json/schema"
    _validator(pointer).validate(payload)
    assert payload["error"] == "body_timeout"


# Every `reason` the collector can answer with, read from its source: an error class's
# `reason = "..."`, a `reason="..."` argument, or aiohttp's statuses mapped in handlers.py.
_REASON = re.compile(r'reason(?::\s*ClassVar\[str\])?\s*=\s*"([a-z_]+)"')
_COLLECTOR = Path(__file__).parents[2] / "collector"


def _reasons_in_code() -> set[str]:
    found = {
        match
        for path in _COLLECTOR.rglob("*.py")
        for match in _REASON.findall(path.read_text(encoding="utf-8"))
    }
    return found | set(HTTP_REASONS.values())


def _readme_error_table() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index('Every other answer has a JSON body `{"error"')
    return readme[start : readme.index("\n\n", readme.index("| status |", start))]


def test_every_error_reason_is_in_the_readme_table_and_the_document() -> None:
    reasons = _reasons_in_code()
    assert {"key_in_query", "key_in_body", "internal_error", "not_found"} <= reasons
    table = _readme_error_table()
    assert sorted(r for r in reasons if f"`{r}`" not in table) == []
    document = msgspec.json.encode(openapi_document()).decode()
    # a path that does not exist is not an operation of the document
    assert sorted(r for r in reasons - {"not_found"} if r not in document) == []


def test_every_ingest_route_documents_the_browser_forms() -> None:
    paths = openapi_document()["paths"]
    ingest = ["/v1/batch", *route_paths()]
    for path in ingest:
        post = paths[path]["post"]
        assert set(post["requestBody"]["content"]) == {"application/json", "text/plain"}, path
        assert {p["name"] for p in post["parameters"]} >= {"write_key", "Content-Encoding"}
        assert {"writeKeyQuery": []} in post["security"]
        assert "204" in paths[path]["options"]["responses"], path
    batch = openapi_document()["components"]["schemas"]["Batch"]
    assert "write_key" in batch["properties"]
    segment = paths[f"{PREFIX}/v1/batch"]["post"]["requestBody"]["content"]["text/plain"]
    assert "writeKey" in segment["schema"]["properties"]
