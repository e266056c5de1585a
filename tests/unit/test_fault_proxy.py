"""The fault proxy (devtools/faultproxy.py) against a loopback echo server: each fault does what
the fault scenarios rely on, and healing undoes it (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from devtools.faultproxy import FaultProxy, ProxyHost
from devtools.ports import free_port

# Long enough to tell "no answer" from a slow one on a loaded machine, short enough to wait.
SILENCE_S = 0.5


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    """An echo server; its connections are closed with it (asyncio leaves that to us)."""
    writers: set[asyncio.StreamWriter] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        with contextlib.suppress(OSError):
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(0.05)  # the aborted transports close their sockets on the next turns


@pytest.fixture
def host() -> Iterator[ProxyHost]:
    with ProxyHost() as running:
        yield running


@pytest.fixture
def proxy(host: ProxyHost, upstream: int) -> FaultProxy:
    return host.add(free_port(), upstream)


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def round_trip(proxy: FaultProxy, payload: bytes = b"ping") -> bytes:
    reader, writer = await connect(proxy)
    try:
        async with asyncio.timeout(30):  # a proxy that loses bytes fails, not hangs
            writer.write(payload)
            await writer.drain()
            return await reader.readexactly(len(payload))
    finally:
        await close(writer)


async def is_cut(reader: asyncio.StreamReader) -> bool:
    """Whether the connection was closed or reset under us (rather than left silent)."""
    try:
        async with asyncio.timeout(5):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def new_connection_cut(proxy: FaultProxy) -> bool:
    """Whether a new connection is reset (the reset may already arrive during the connect)."""
    try:
        reader, writer = await connect(proxy)
    except ConnectionResetError:
        return True
    try:
        return await is_cut(reader)
    finally:
        await close(writer)


async def test_bytes_pass_unchanged_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4_096  # 1 MiB, more than one chunk
    assert await round_trip(proxy, payload) == payload
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)


async def test_latency_is_added_each_way(proxy: FaultProxy) -> None:
    proxy.set_latency(0.2)
    started = time.monotonic()
    assert await round_trip(proxy) == b"ping"
    assert time.monotonic() - started >= 0.4  # a lower bound: never flaky on a slow machine
    proxy.heal()
    assert proxy.latency_s == 0


async def test_bandwidth_is_capped(proxy: FaultProxy) -> None:
    proxy.set_bandwidth(64 * 1024)
    payload = b"x" * (64 * 1024)
    started = time.monotonic()
    assert await round_trip(proxy, payload) == payload
    # 64 KiB at 64 KiB/s (the way back overlaps the way up); a lower bound only
    assert time.monotonic() - started >= 0.8


async def test_blackhole_accepts_answers_nothing_then_heals(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    proxy.blackhole()
    writer.write(b"ping")
    await writer.drain()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(SILENCE_S):
            await reader.readexactly(4)
    # new connections are accepted too, and just as silent
    late_reader, late_writer = await connect(proxy)
    late_writer.write(b"pong")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(SILENCE_S):
            await late_reader.readexactly(4)
    proxy.heal()
    # what was sent during the blackhole went through once healed, as after a real partition
    assert await reader.readexactly(4) == b"ping"
    assert await late_reader.readexactly(4) == b"pong"
    await close(writer)
    await close(late_writer)


async def test_drop_cuts_every_connection_until_healed(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    proxy.drop()
    assert await is_cut(reader)
    await close(writer)
    assert await new_connection_cut(proxy)
    proxy.heal()
    assert await round_trip(proxy) == b"ping"


async def test_reset_cuts_open_connections_only(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    proxy.reset_connections()
    assert await is_cut(reader)
    await close(writer)
    assert await round_trip(proxy) == b"ping"
    assert proxy.stats.resets >= 1


async def test_upstream_down_resets_the_client(host: ProxyHost) -> None:
    nothing_there = free_port()
    proxy = host.add(free_port(), nothing_there)
    assert proxy.port != nothing_there
    assert await new_connection_cut(proxy)
