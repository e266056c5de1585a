"""Shared fixtures: the tracking plan, the collector app on an in-memory sink, a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from collector.app import RUNNER_OPTIONS, create_app
from collector.keys import Clock
from collector.settings import Settings
from collector.sinks import MemorySink, Sink
from devtools.kafka import KafkaBroker
from event_schemas import SchemaRegistry, load_registry

FIXED_NOW = dt.datetime(2026, 11, 26, 12, 0, 5, tzinfo=dt.UTC)

HttpClient = TestClient[web.Request, web.Application]


@pytest.fixture(scope="session")
def schemas() -> SchemaRegistry:
    return load_registry()


@pytest.fixture
def memory_sink() -> MemorySink:
    return MemorySink()


async def start_collector(
    settings: Settings, sink: Sink, schemas: SchemaRegistry, *, clock: Clock | None = None
) -> HttpClient:
    """The real app and handlers on a real loopback socket, as `capture serve` runs them;
    the clock is fixed (FIXED_NOW) unless one is given."""
    app = create_app(settings, sink=sink, clock=clock or (lambda: FIXED_NOW), schemas=schemas)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    client: HttpClient = TestClient(server)
    await client.start_server()
    return client


class LoopBlockGuard:
    """Measures how late the event loop wakes a 10 ms sleeper; a blocked loop shows as lag.

    The bound is loose on purpose (shared 2-core machines): it catches handlers that block
    the loop on I/O or on a lock, not a slow callback.
    """

    TICK_S = 0.01
    MAX_LAG_S = 0.5

    def __init__(self) -> None:
        self.max_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.TICK_S)
            self.max_lag_s = max(self.max_lag_s, loop.time() - before - self.TICK_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def collector(memory_sink: MemorySink, schemas: SchemaRegistry) -> AsyncIterator[HttpClient]:
    """The collector on the in-memory sink; the test fails if anything blocked its loop."""
    guard = LoopBlockGuard()
    guard.start()
    settings = Settings(sink="memory", sink_timeout_s=0.5)
    client = await start_collector(settings, memory_sink, schemas)
    yield client
    await client.close()
    await guard.stop()
    assert guard.max_lag_s < guard.MAX_LAG_S, f"event loop blocked for {guard.max_lag_s:.3f}s"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def own_broker() -> Iterator[KafkaBroker]:
    """A broker of the test's own, for tests that stop and restart it under load."""
    with KafkaBroker() as broker:
        yield broker
