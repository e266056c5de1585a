"""Shared fixtures: the tracking plan, the collector app on an in-memory sink, a real broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector.app import RUNNER_OPTIONS, create_app
from collector.settings import Settings
from collector.sinks import MemorySink, Sink
from event_schemas import SchemaRegistry, load_registry
from tests.kafka_broker import KafkaBroker

FIXED_NOW = dt.datetime(2026, 11, 26, 12, 0, 5, tzinfo=dt.UTC)

HttpClient = TestClient[web.Request, web.Application]


@pytest.fixture(scope="session")
def schemas() -> SchemaRegistry:
    return load_registry()


@pytest.fixture
def memory_sink() -> MemorySink:
    return MemorySink()


async def start_collector(settings: Settings, sink: Sink, schemas: SchemaRegistry) -> HttpClient:
    """The real app and handlers on a real loopback socket, as `capture serve` runs them."""
    app = create_app(settings, sink=sink, clock=lambda: FIXED_NOW, schemas=schemas)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    client: HttpClient = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture
async def collector(memory_sink: MemorySink, schemas: SchemaRegistry) -> AsyncIterator[HttpClient]:
    client = await start_collector(
        Settings(sink="memory", sink_timeout_s=0.5), memory_sink, schemas
    )
    yield client
    await client.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker
