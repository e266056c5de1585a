"""The demo page of `make run` (issue 13, section 3): off unless CAPTURE_DEMO is on, its page
and SDK bundle, its browser key (own origins, own events) and the refusal of a missing bundle.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from collector import cli, demo
from collector.cli import main
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, page_viewed, track_played
from tests.unit.test_settings_and_cli import must_not_serve

BUNDLE_JS = b"window.EventCapture = {createClient() {}};\n"
# the collector's own origin as the browser names it (Settings' default host and port)
OWN = "http://127.0.0.1:8080"
SERVER_KEY = "sk_server_0123456789abcdef"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "capture.iife.js"
    path.write_bytes(BUNDLE_JS)
    return path


async def start(settings: Settings, sink: MemorySink, schemas: SchemaRegistry) -> HttpClient:
    return await start_collector(msgspec.structs.replace(settings, sink="memory"), sink, schemas)


@pytest.fixture
async def with_demo(
    bundle: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start(Settings(demo=True, demo_bundle=str(bundle)), memory_sink, schemas)
    yield client
    await client.close()


def as_browser(origin: str = OWN) -> dict[str, str]:
    """What the SDK's safelisted requests carry (the key goes in the query string)."""
    return {"Content-Type": "text/plain", "Origin": origin}


DEMO_QUERY = {"write_key": demo.DEMO_WRITE_KEY}


async def test_no_demo_page_or_key_unless_the_setting_is_on(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    for path in (demo.PAGE_PATH, demo.BUNDLE_PATH):
        response = await collector.get(path)
        assert response.status == 404, path
    # the demo key is no key at all: an open collector still refuses text/plain bodies
    response = await collector.post(
        "/v1/batch", params=DEMO_QUERY, data=batch_body(page_viewed()), headers=as_browser()
    )
    assert response.status == 415
    assert memory_sink.records == []


async def test_the_demo_page_is_html_that_loads_the_bundle_with_the_demo_key(
    with_demo: HttpClient,
) -> None:
    response = await with_demo.get(demo.PAGE_PATH)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert f'<script src="{demo.BUNDLE_PATH}"></script>' in page
    assert f'writeKey: "{demo.DEMO_WRITE_KEY}"' in page
    assert demo.KEY_MARKER not in page
    # the server key stays out of the page: it holds no other key-looking string
    assert "Authorization" not in page


async def test_the_bundle_is_served_as_javascript_as_built_now(
    with_demo: HttpClient, bundle: Path
) -> None:
    response = await with_demo.get(demo.BUNDLE_PATH)
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.read() == BUNDLE_JS
    # no restart needed after `npm run build`
    await asyncio.to_thread(bundle.write_bytes, b"// rebuilt\n")
    assert await (await with_demo.get(demo.BUNDLE_PATH)).read() == b"// rebuilt\n"
    await asyncio.to_thread(bundle.unlink)
    response = await with_demo.get(demo.BUNDLE_PATH)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_the_demo_key_sends_the_pages_events_from_the_collectors_own_origin(
    with_demo: HttpClient, memory_sink: MemorySink
) -> None:
    event = page_viewed()
    response = await with_demo.post(
        "/v1/batch", params=DEMO_QUERY, data=batch_body(event), headers=as_browser()
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == 1
    assert [msgspec.json.decode(r.value)["event_id"] for r in memory_sink.records] == [
        event["event_id"]
    ]


async def test_the_demo_key_is_refused_from_another_origin_and_for_other_events(
    with_demo: HttpClient, memory_sink: MemorySink
) -> None:
    response = await with_demo.post(
        "/v1/batch",
        params=DEMO_QUERY,
        data=batch_body(page_viewed()),
        headers=as_browser("http://evil.example"),
    )
    assert response.status == 403
    assert (await response.json())["error"] == "origin_not_allowed"
    identify = {**page_viewed(), "event": "identify", "properties": {}}
    response = await with_demo.post(
        "/v1/batch", params=DEMO_QUERY, data=batch_body(identify), headers=as_browser()
    )
    assert response.status == 403
    assert (await response.json())["error"] == "event_not_allowed"
    assert memory_sink.records == []


async def test_an_open_collector_stays_open_with_the_demo_on(
    with_demo: HttpClient, memory_sink: MemorySink
) -> None:
    # the Python demo of `make run` sends no key
    response = await with_demo.post(
        "/v1/batch", data=batch_body(track_played()), headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    assert len(memory_sink.records) == 1


async def test_configured_keys_keep_their_rules_beside_the_demo_key(
    tmp_path: Path, bundle: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'[[sources]]\nname = "backend"\nkind = "server"\nkey = "{SERVER_KEY}"\nevents = "*"\n'
    )
    settings = Settings(demo=True, demo_bundle=str(bundle), config_file=str(config))
    client = await start(settings, memory_sink, schemas)
    try:
        json_body = {"Content-Type": "application/json"}
        response = await client.post("/v1/batch", data=batch_body(page_viewed()), headers=json_body)
        assert response.status == 401  # keys are configured: no longer open
        response = await client.post(
            "/v1/batch",
            data=batch_body(page_viewed()),
            headers={**json_body, "Authorization": f"Bearer {SERVER_KEY}"},
        )
        assert response.status == 200
        response = await client.post(
            "/v1/batch", params=DEMO_QUERY, data=batch_body(page_viewed()), headers=as_browser()
        )
        assert response.status == 200
    finally:
        await client.close()
    assert len(memory_sink.records) == 2


LOOPBACK_9000 = {"http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000"}


@pytest.mark.parametrize(
    ("host", "origins"),
    [
        ("127.0.0.1", LOOPBACK_9000),
        ("localhost", LOOPBACK_9000),
        ("0.0.0.0", LOOPBACK_9000),
        ("::", LOOPBACK_9000),
        ("10.1.2.3", {"http://10.1.2.3:9000"}),
        ("fd00::7", {"http://[fd00::7]:9000"}),
        ("Capture.Example", {"http://capture.example:9000"}),
    ],
)
def test_the_demo_key_is_allowed_for_the_collectors_own_origins(
    host: str, origins: set[str]
) -> None:
    assert demo.demo_origins(Settings(host=host, port=9000)) == origins


def test_a_missing_bundle_refuses_to_start_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("CAPTURE_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setattr(cli, "serve_one", must_not_serve)
    missing = tmp_path / "dist" / "capture.iife.js"
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]
    assert main([*args, "--demo", "1", "--demo-bundle", str(missing)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("capture serve: invalid setting CAPTURE_DEMO_BUNDLE")
    assert str(missing) in lines[-1]
    assert not any("Traceback" in line for line in lines)
