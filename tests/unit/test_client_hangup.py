"""A client that hangs up mid-body or mid-publish, and `Expect` headers (issue #12).

Neither is a 500: a hang-up mid-body is counted as 400 incomplete_body (nobody reads the
answer), a hang-up while the sink publishes is no error at all, and the in-flight budget is
given back either way. Both aiohttp modes are run: `capture serve` does not cancel a handler
whose client left (run_app's default), aiohttp's test servers do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from aiohttp import web

from collector import keys
from collector.app import RUNNER_OPTIONS, create_app
from collector.settings import Settings
from collector.sinks import MemorySink
from collector.sinks.base import Outcome, Record
from event_schemas import SchemaRegistry
from tests import raw_http
from tests.conftest import FIXED_NOW
from tests.factories import batch_body, track_played

INGEST_ROUTES = ["/v1/batch", "/compat/segment/v1/batch", "/compat/segment/v1/track"]
EVERY_ROUTE = [*INGEST_ROUTES, "/healthz", "/readyz", "/metrics", "/openapi.json"]


class HeldSink(MemorySink):
    """Holds every publish until `release` is set (the client hangs up meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        self.publishing.set()
        await self.release.wait()
        return await super().publish(records, timeout_s=timeout_s)


@dataclass
class Served:
    app: web.Application
    port: int
    sink: HeldSink
    cancels: bool  # aiohttp cancels a handler whose client left (test servers do)

    def counted(self, needle: str) -> float:
        total = 0.0
        for line in self.app[keys.METRICS].scrape().decode().splitlines():
            if "_total{" in line and needle in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(params=[False, True], ids=["serve", "cancelling"])
async def served(request: pytest.FixtureRequest, schemas: SchemaRegistry) -> AsyncIterator[Served]:
    sink = HeldSink()
    sink.release.set()
    app = create_app(
        Settings(sink="memory"),
        sink=sink,
        clock=lambda: FIXED_NOW,
        schemas=schemas,
        reload_on_sighup=False,
    )
    runner = web.AppRunner(app, handler_cancellation=request.param, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Served(app, port, sink, request.param)
    await runner.cleanup()


async def hang_up_after(port: int, path: str, sent: bytes, declared: int) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    await asyncio.sleep(0.1)  # the body read has begun
    writer.close()
    await writer.wait_closed()


async def settled(served: Served) -> None:
    for _ in range(100):  # the handler notices the hang-up on the next loop turns
        if served.app[keys.INFLIGHT].bytes == 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)


@pytest.mark.parametrize("path", INGEST_ROUTES)
async def test_a_hang_up_mid_body_is_no_500_and_frees_the_budget(
    served: Served, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await hang_up_after(served.port, path, b'{"batch":[', declared=100)
    await settled(served)
    assert served.counted('reason="internal_error"') == 0
    assert served.counted('status="500"') == 0
    assert served.app[keys.INFLIGHT].bytes == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # a cancelled handler answers nothing; `capture serve` counts the request as a 400
    expected = 0 if served.cancels else 1
    assert served.counted('reason="incomplete_body"') == expected
    assert served.counted('status="400"') == expected


async def test_a_hang_up_while_the_sink_publishes_is_no_500(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.sink.release.clear()
    body = batch_body(track_played())
    task = asyncio.create_task(hang_up_after(served.port, "/v1/batch", body, declared=len(body)))
    await asyncio.wait_for(served.sink.publishing.wait(), 5)
    assert served.app[keys.INFLIGHT].bytes == len(body)  # held while the sink works
    await task  # the client is gone
    await asyncio.sleep(0.1)
    served.sink.release.set()
    await settled(served)
    assert served.app[keys.INFLIGHT].bytes == 0
    assert served.counted('status="5') == 0
    assert served.counted('reason="internal_error"') == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("path", EVERY_ROUTE)
@pytest.mark.parametrize("value", [b"\xe9", b"foo", b"100-continue, foo"])
async def test_an_expectation_but_100_continue_is_a_json_417(
    served: Served, path: str, value: bytes
) -> None:
    method = "POST" if path in INGEST_ROUTES else "GET"
    answer = await raw_http.request(
        served.port, method, path, [(b"Expect", value), (b"Content-Type", b"application/json")]
    )
    assert answer.status == 417, answer
    assert answer.headers["content-type"].startswith("application/json")
    assert json.loads(answer.body)["error"] == "expectation_failed"
    assert served.counted('reason="expectation_failed"') == 1


@pytest.mark.parametrize(
    ("method", "path", "plain"),
    [("POST", "/nope", 404), ("GET", "/v1/batch", 405), ("DELETE", "/healthz", 405)],
)
async def test_a_request_no_route_takes_gets_the_same_expect_handling(
    served: Served, method: str, path: str, plain: int
) -> None:
    # aiohttp answers these itself, with its own Expect handler, unless a route of ours does
    answer = await raw_http.request(served.port, method, path, [(b"Expect", b"\xe9")])
    assert answer.status == 417, answer
    assert json.loads(answer.body)["error"] == "expectation_failed"
    answer = await raw_http.request(served.port, method, path, [])
    assert answer.status == plain, answer
    assert json.loads(answer.body)["error"] == {404: "not_found", 405: "method_not_allowed"}[plain]


@pytest.mark.parametrize("value", [b"100-continue", b"100-Continue", b" 100-CONTINUE "])
async def test_100_continue_in_any_case_is_answered_and_the_request_served(
    served: Served, value: bytes
) -> None:
    body = batch_body(track_played())
    answer = await raw_http.request(
        served.port,
        "POST",
        "/v1/batch",
        [(b"Expect", value), (b"Content-Type", b"application/json")],
        body,
    )
    assert answer.interim == [100]
    assert answer.status == 200, answer
    assert json.loads(answer.body)["accepted"] == 1
