"""Write keys at the HTTP edge: 401 missing/unknown key, 403 events, HMAC signing, open mode."""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from collector.app import RUNNER_OPTIONS, create_app
from collector.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import FIXED_NOW, HttpClient
from tests.factories import batch_body, page_viewed, track_played

WEB_KEY = "pk_web_0123456789abcdef"
TRACKS_KEY = "sk_tracks_0123456789abcdef"
SIGNED_KEY = "sk_signed_0123456789abcdef"
OLD_SECRET = "whsec_old_0123456789abcdef"  # noqa: S105  # a test secret
NEW_SECRET = "whsec_new_0123456789abcdef"  # noqa: S105  # a test secret

SOURCES_TOML = f"""
[[sources]]
name = "web"
kind = "browser"
keys = ["{WEB_KEY}"]
events = "*"
allowed_origins = ["https://app.example.com"]

[[sources]]
name = "tracks"
kind = "server"
key = "{TRACKS_KEY}"
events = ["track_played"]

[[sources]]
name = "billing"
kind = "server"
key_env = "BILLING_KEY"
events = "*"
signing_secrets = ["{OLD_SECRET}", "{NEW_SECRET}"]
"""
ENVIRON = {"BILLING_KEY": SIGNED_KEY}


async def start_with_config(
    tmp_path: Path,
    toml: str,
    sink: MemorySink,
    schemas: SchemaRegistry,
    *,
    clock: Callable[[], dt.datetime] = lambda: FIXED_NOW,
    environ: Mapping[str, str] | None = None,
) -> HttpClient:
    """The real app on a loopback socket, with write keys from a config file."""
    path = tmp_path / "collector.toml"
    path.write_text(toml, encoding="utf-8")
    settings = Settings(sink="memory", sink_timeout_s=0.5, config_file=str(path))
    app = create_app(settings, sink=sink, clock=clock, schemas=schemas, environ=environ or {})
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    client: HttpClient = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture
async def keyed(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start_with_config(tmp_path, SOURCES_TOML, memory_sink, schemas, environ=ENVIRON)
    yield client
    await client.close()


def bearer(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


async def post(
    client: HttpClient, body: bytes, headers: dict[str, str]
) -> tuple[int, Any, bytes, dict[str, str]]:
    response = await client.post("/v1/batch", data=body, headers=headers)
    raw = await response.read()
    return response.status, msgspec.json.decode(raw), raw, dict(response.headers)


async def test_missing_key_is_401_and_nothing_is_published(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    status, body, _, headers = await post(
        keyed, batch_body(track_played()), {"Content-Type": "application/json"}
    )
    assert (status, body["error"]) == (401, "missing_key")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert memory_sink.records == []


async def test_unknown_key_is_401_and_the_key_is_not_echoed(
    keyed: HttpClient, memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk_guess_0123456789abcdef"
    with caplog.at_level(logging.DEBUG):
        status, body, raw, _ = await post(keyed, batch_body(track_played()), bearer(wrong))
    assert (status, body["error"]) == (401, "unknown_key")
    assert wrong.encode() not in raw
    assert wrong not in caplog.text
    assert memory_sink.records == []


async def test_malformed_authorization_counts_as_missing(keyed: HttpClient) -> None:
    headers = {"Content-Type": "application/json", "Authorization": "Token abc"}
    status, body, _, _ = await post(keyed, batch_body(track_played()), headers)
    assert (status, body["error"]) == (401, "missing_key")


async def test_bearer_and_basic_with_the_key_as_username_are_accepted(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    status, _, _, _ = await post(keyed, batch_body(track_played()), bearer(TRACKS_KEY))
    assert status == 200
    basic = base64.b64encode(f"{TRACKS_KEY}:".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {basic}"}
    status, body, _, _ = await post(keyed, batch_body(track_played()), headers)
    assert (status, body["accepted"]) == (200, 1)
    assert len(memory_sink.topic("events.track_played")) == 2


async def test_event_the_key_may_not_send_refuses_the_whole_request(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    body_bytes = batch_body(track_played(), page_viewed())
    status, body, raw, _ = await post(keyed, body_bytes, bearer(TRACKS_KEY))
    assert (status, body["error"]) == (403, "event_not_allowed")
    assert "page_viewed" in body["detail"]
    assert TRACKS_KEY.encode() not in raw
    assert memory_sink.records == []  # not even the allowed track_played
    metrics = await (await keyed.get("/metrics")).text()
    assert 'capture_source_refusals_total{reason="event_not_allowed",source="tracks"} 1.0' in (
        metrics
    )


async def test_event_check_also_reads_names_when_an_envelope_is_broken(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    broken = page_viewed(event_id="not-a-uuid")  # the raw (slow) decoding path
    status, body, _, _ = await post(keyed, batch_body(track_played(), broken), bearer(TRACKS_KEY))
    assert (status, body["error"]) == (403, "event_not_allowed")
    assert memory_sink.records == []


async def test_server_key_from_a_browser_is_refused(keyed: HttpClient) -> None:
    headers = bearer(TRACKS_KEY) | {"Origin": "https://app.example.com"}
    status, body, _, _ = await post(keyed, batch_body(track_played()), headers)
    assert (status, body["error"]) == (403, "origin_not_allowed")


def signed(key: str, secret: str, body: bytes, timestamp_s: int) -> dict[str, str]:
    return bearer(key) | {
        TIMESTAMP_HEADER: str(timestamp_s),
        SIGNATURE_HEADER: sign(secret.encode(), timestamp_s, body),
    }


NOW_S = int(FIXED_NOW.timestamp())


@pytest.mark.parametrize("secret", [OLD_SECRET, NEW_SECRET])
async def test_either_of_two_rotating_secrets_signs(
    keyed: HttpClient, memory_sink: MemorySink, secret: str
) -> None:
    body_bytes = batch_body(track_played())
    status, body, _, _ = await post(
        keyed, body_bytes, signed(SIGNED_KEY, secret, body_bytes, NOW_S)
    )
    assert (status, body["accepted"]) == (200, 1)
    assert len(memory_sink.records) == 1


async def test_signature_covers_the_gzip_bytes_as_sent(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    body_bytes = batch_body(track_played(), compress=True)
    headers = signed(SIGNED_KEY, NEW_SECRET, body_bytes, NOW_S) | {"Content-Encoding": "gzip"}
    status, _, _, _ = await post(keyed, body_bytes, headers)
    assert status == 200
    assert len(memory_sink.records) == 1


@pytest.mark.parametrize(
    ("case", "make_headers"),
    [
        ("unsigned", lambda body: bearer(SIGNED_KEY)),
        (
            "wrong secret",
            lambda body: signed(SIGNED_KEY, "whsec_bad_0123456789abcdef", body, NOW_S),
        ),
        ("other body", lambda body: signed(SIGNED_KEY, NEW_SECRET, body + b" ", NOW_S)),
        ("too old", lambda body: signed(SIGNED_KEY, NEW_SECRET, body, NOW_S - 301)),
        ("from the future", lambda body: signed(SIGNED_KEY, NEW_SECRET, body, NOW_S + 301)),
        (
            # signed for NOW_S, sent as NOW_S + 1: inside the window, so only the signature
            # covering the timestamp can catch it
            "timestamp not signed",
            lambda body: (
                signed(SIGNED_KEY, NEW_SECRET, body, NOW_S) | {TIMESTAMP_HEADER: str(NOW_S + 1)}
            ),
        ),
        (
            "not a number",
            lambda body: signed(SIGNED_KEY, NEW_SECRET, body, NOW_S) | {TIMESTAMP_HEADER: "1e9"},
        ),
    ],
)
async def test_bad_signature_is_401_and_nothing_is_published(
    keyed: HttpClient,
    memory_sink: MemorySink,
    case: str,
    make_headers: Callable[[bytes], dict[str, str]],
) -> None:
    body_bytes = batch_body(track_played())
    status, body, raw, _ = await post(keyed, body_bytes, make_headers(body_bytes))
    assert (status, body["error"]) == (401, "invalid_signature"), case
    assert OLD_SECRET.encode() not in raw
    assert NEW_SECRET.encode() not in raw
    assert memory_sink.records == []
    # the process stays healthy: a good request right after is accepted
    status, _, _, _ = await post(
        keyed, body_bytes, signed(SIGNED_KEY, OLD_SECRET, body_bytes, NOW_S)
    )
    assert status == 200


async def test_within_the_tolerance_window_is_accepted(keyed: HttpClient) -> None:
    body_bytes = batch_body(track_played())
    for timestamp_s in (NOW_S - 300, NOW_S + 300):
        headers = signed(SIGNED_KEY, NEW_SECRET, body_bytes, timestamp_s)
        status, _, _, _ = await post(keyed, body_bytes, headers)
        assert status == 200


async def test_without_sources_the_collector_stays_open_and_warns_once(
    memory_sink: MemorySink, schemas: SchemaRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(sink="memory", sink_timeout_s=0.5)
    app = create_app(settings, sink=memory_sink, clock=lambda: FIXED_NOW, schemas=schemas)
    server = TestServer(app, host="127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="collector.app"):
        await server.start_server(**RUNNER_OPTIONS)
    client: HttpClient = TestClient(server)
    await client.start_server()
    try:
        status, _, _, _ = await post(
            client, batch_body(track_played()), {"Content-Type": "application/json"}
        )
        assert status == 200
        warnings = [r for r in caplog.records if "without a key" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await client.close()
