"""Both SDK clients sign their requests for a server key that requires signatures (#5's HMAC
scheme), against the real collector app: a right secret is accepted, a wrong one refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from capture_sdk import AsyncClient, Client, ConfigurationError, DroppedEvent
from collector.app import utc_now
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector

KEY = "server-key-0123456789abcdef"
SECRET = "signing-secret-0123456789abcdef"  # noqa: S105  # a test secret
CONFIG = f"""
[[sources]]
name = "backend"
kind = "server"
key = "{KEY}"
events = "*"
signing_secrets = ["{SECRET}"]
"""


@pytest.fixture
async def signing_collector(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    path = tmp_path / "capture.toml"
    path.write_text(CONFIG)
    # the real clock: the SDK stamps its signatures with the machine's time
    client = await start_collector(
        Settings(sink="memory", config_file=str(path)), memory_sink, schemas, clock=utc_now
    )
    yield client
    await client.close()


def page(i: int) -> dict[str, str]:
    return {"path": f"/p/{i}"}


@pytest.mark.parametrize("gzip", [True, False])
async def test_client_signs_each_request(
    signing_collector: HttpClient, memory_sink: MemorySink, gzip: bool
) -> None:
    sdk = Client(
        str(signing_collector.make_url("/")), write_key=KEY, signing_secret=SECRET, gzip=gzip
    )
    ids = [sdk.track("page_viewed", page(i), anonymous_id="a") for i in range(20)]
    assert await asyncio.to_thread(sdk.shutdown, 30.0)
    assert sdk.stats().sent == 20
    assert len(memory_sink.topic("events.page_viewed")) == len(ids)


async def test_async_client_signs_each_request(
    signing_collector: HttpClient, memory_sink: MemorySink
) -> None:
    sdk = AsyncClient(str(signing_collector.make_url("/")), write_key=KEY, signing_secret=SECRET)
    for i in range(20):
        sdk.track("page_viewed", page(i), anonymous_id="a")
    assert await sdk.shutdown(30.0)
    assert sdk.stats().sent == 20
    assert len(memory_sink.topic("events.page_viewed")) == 20


async def test_a_wrong_or_missing_secret_is_refused_and_reported(
    signing_collector: HttpClient, memory_sink: MemorySink
) -> None:
    for secret in ("not-the-secret-0123456789", None):
        dropped: list[DroppedEvent] = []
        sdk = Client(
            str(signing_collector.make_url("/")),
            write_key=KEY,
            signing_secret=secret,
            on_error=dropped.extend,
        )
        sdk.track("page_viewed", page(0), anonymous_id="a")
        assert await asyncio.to_thread(sdk.shutdown, 30.0)
        assert [d.reason for d in dropped] == ["collector_refused"]
        assert "401 invalid_signature" in dropped[0].detail
        assert SECRET not in dropped[0].detail
    assert memory_sink.records == []


def test_an_empty_signing_secret_is_a_programmer_error() -> None:
    with pytest.raises(ConfigurationError, match="signing_secret"):
        Client("http://127.0.0.1:9", signing_secret="")
