"""The HTTP layer under the collector: aiohttp's C parser is required, its header limits hold,
and a client that never finishes its headers is cut off by the keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from aiohttp import web

from collector.app import RUNNER_OPTIONS, create_app, require_c_http_parser
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient
from tests.factories import batch_body, track_played


def test_the_c_parser_is_in_use_here() -> None:
    require_c_http_parser()  # raises if the test environment itself runs without it


def test_serve_refuses_to_start_on_the_pure_python_parser() -> None:
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1", "CAPTURE_SINK": "memory"}
    env.pop("CAPTURE_PORT", None)
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert b"without its C HTTP parser" in done.stderr
    assert b"AIOHTTP_NO_EXTENSIONS" in done.stderr


async def test_oversized_header_is_refused_by_aiohttp_and_the_collector_stays_up(
    collector: HttpClient,
) -> None:
    # aiohttp's parser answers this itself (max_field_size 8190, kept at its default), before
    # any handler runs: so the body is aiohttp's, not our JSON error.
    headers = {"Content-Type": "application/json", "X-Padding": "p" * 20_000}
    response = await collector.post("/v1/batch", data=batch_body(track_played()), headers=headers)
    assert response.status == 400  # LineTooLong, answered in text/plain by aiohttp
    response = await collector.post(
        "/v1/batch", data=batch_body(track_played()), headers={"Content-Type": "application/json"}
    )
    assert response.status == 200


async def test_headers_that_never_finish_are_cut_off_by_the_keepalive_timeout(
    schemas: SchemaRegistry,
) -> None:
    """What protects us from slow headers: aiohttp arms `keepalive_timeout` when a connection
    opens and closes it if no complete request arrived by then (production: RUNNER_OPTIONS)."""
    assert RUNNER_OPTIONS["keepalive_timeout"] > 0
    app = create_app(Settings(sink="memory"), sink=MemorySink(), schemas=schemas)
    runner = web.AppRunner(app, **{**RUNNER_OPTIONS, "keepalive_timeout": 0.3})
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:  # a header line that never ends
            for _ in range(600):
                await asyncio.sleep(0.05)
                writer.write(b"a")

        trickling = asyncio.create_task(trickle())
        try:
            # closed by the server: EOF, long before the trickle would have ended
            assert await asyncio.wait_for(reader.read(), timeout=25) == b""
            assert not trickling.done()
        finally:
            trickling.cancel()
            writer.close()
    finally:
        await runner.cleanup()
