"""Dev tool: a TCP fault proxy (asyncio) between clients and one upstream, driven from tests.

It forwards bytes unchanged and can add latency, cap bandwidth, reset connections, blackhole
(accept and read nothing, answer nothing, until healed) and drop everything (reset every
connection, old and new). It never parses or rewrites the protocol it carries.

The proxies run on an event loop of their own in a thread (`ProxyHost`), so sync code (the
cluster harness, benchmarks) and async tests drive them alike; the controls are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 65_536
# A capped link is written in small slices, so its pace is smooth rather than bursty.
CAPPED_CHUNK_BYTES = 4_096
# Chunks read ahead of the writer per direction: bounded, so a slow link pushes back on TCP.
PIPE_DEPTH = 64
CONTROL_TIMEOUT_S = 10.0


@dataclass
class ProxyStats:
    accepted: int = 0
    resets: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on `port` and forwards each connection to `upstream_port` on loopback.

    Controls: `set_latency(s)` (each direction, so a round trip grows by twice that),
    `set_bandwidth(bytes_per_s)`, `reset_connections()`, `blackhole()`, `drop()`, `heal()`.
    Create it through `ProxyHost.add`, which runs it on the host's loop.
    """

    def __init__(self, host: ProxyHost, port: int, upstream_port: int) -> None:
        self._host = host
        self.port = port
        self.upstream_port = upstream_port
        self.latency_s = 0.0
        self.bandwidth_bytes_per_s: float | None = None
        self.dropping = False
        self.stats = ProxyStats()
        self._flowing = asyncio.Event()  # cleared while blackholed; created on the host loop
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    # controls, called from any thread but the host's own

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    def set_latency(self, seconds: float) -> None:
        self.latency_s = seconds  # read per chunk; a plain float store is atomic

    def set_bandwidth(self, bytes_per_s: float | None) -> None:
        self.bandwidth_bytes_per_s = bytes_per_s

    def blackhole(self) -> None:
        """Stop reading both ways: connections stay open, requests get no answer. Bytes
        already sent stay in the kernel's buffers and go through when healed, as after a
        real partition heals (a request the client gave up on may still arrive)."""
        self._host.call(self._flowing.clear)

    def drop(self) -> None:
        """Reset every connection, and every new one as soon as it is accepted."""
        self.dropping = True
        self._host.call(self._reset_all)

    def reset_connections(self) -> None:
        """Reset the connections open now; new ones go through as usual."""
        self._host.call(self._reset_all)

    def heal(self) -> None:
        """Undo every fault: no latency, no cap, flowing, accepting."""
        self.latency_s = 0.0
        self.bandwidth_bytes_per_s = None
        self.dropping = False
        self._host.call(self._flowing.set)

    # the proxy itself, on the host loop

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        if self._server is not None:
            await self._server.wait_closed()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            self.stats.resets += 1
            _reset(writer)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self.dropping:
            self.stats.resets += 1
            _reset(writer)
            return
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a blackholed proxy accepts, then sits silent
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port
                )
            except OSError:
                _reset(writer)  # upstream down: the client sees its connection reset
                return
            self._writers.add(upstream_writer)
            await asyncio.gather(
                self._pipe(reader, upstream_writer, up=True),
                self._pipe(upstream_reader, writer, up=False),
            )
        finally:
            for end in (writer, upstream_writer):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        """One direction: a reader that stamps each chunk with when it is due, and a writer
        that sends it then, at the capped pace; an end closing closes the other end."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(PIPE_DEPTH)
        loop = asyncio.get_running_loop()

        async def read() -> None:
            try:
                while True:
                    await self._flowing.wait()
                    size = CHUNK_BYTES if self.bandwidth_bytes_per_s is None else CAPPED_CHUNK_BYTES
                    data = await reader.read(size)
                    await chunks.put((loop.time() + self.latency_s, data))
                    if not data:
                        return
            except OSError:
                await chunks.put((loop.time(), b""))

        async def write() -> None:
            while True:
                due, data = await chunks.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                if not data:
                    writer.transport.abort()  # the other side closed: pass the close on
                    return
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
                cap = self.bandwidth_bytes_per_s
                if cap:
                    await asyncio.sleep(len(data) / cap)

        reading = asyncio.create_task(read())
        try:
            await write()
        except OSError:
            pass  # reset by a peer or by us: the connection is over
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


class ProxyHost:
    """A thread running the event loop that all its proxies share."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy")
        self._thread.daemon = True  # never keeps a test run alive on its own
        self._thread.start()
        self.proxies: list[FaultProxy] = []

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(CONTROL_TIMEOUT_S)

    def call(self, function: Callable[[], object]) -> None:
        """Run `function` on the host loop and wait for it (controls touch loop objects)."""

        async def run() -> None:
            function()

        self.run(run())

    def add(self, port: int, upstream_port: int) -> FaultProxy:
        async def create() -> FaultProxy:
            proxy = FaultProxy(self, port, upstream_port)
            await proxy._start()
            return proxy

        proxy: FaultProxy = self.run(create())
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for proxy in self.proxies:
            self.run(proxy._stop())
        self.proxies.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT_S)

        # what is left are pipes of reset connections; they must end before the loop closes
        async def finish() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # aborted transports close their sockets on later turns

        self._loop.run_until_complete(finish())
        self._loop.close()

    def __enter__(self) -> ProxyHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
