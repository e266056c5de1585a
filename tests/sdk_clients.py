"""One sync facade over both SDK clients, so each behaviour test is written once for both.

`Sdk` drives a `Client` directly, or an `AsyncClient` on a loop of its own in a thread (every
call runs on that loop's thread, as AsyncClient requires). Tests only; no assertions here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, Literal, TypeVar

import pytest

from capture_sdk import AsyncClient, AsyncTransport, Client, ClientStats, Response, Transport
from capture_sdk.testing import AsyncRecordingTransport, RecordingTransport

Kind = Literal["thread", "async"]
KINDS: tuple[Kind, ...] = ("thread", "async")
T = TypeVar("T")


class ThreadedAsyncTransport(AsyncTransport):
    """A sync transport for AsyncClient, run in a worker thread (so it may block or hang
    without blocking the loop)."""

    def __init__(self, sync: Transport) -> None:
        self.sync = sync

    async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        return await asyncio.to_thread(self.sync.send, body, headers)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)


class Sdk:
    """track / flush / shutdown / stats of either client, called from the test's thread."""

    def __init__(self, kind: Kind, **options: Any) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.client: Client | AsyncClient
        if kind == "thread":
            self.client = Client(**options)
            return
        transport = options.get("transport")
        if isinstance(transport, Transport):
            options["transport"] = ThreadedAsyncTransport(transport)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="sdk-test-loop")
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(**options)

        self.client = self._on_loop(make())

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the client's thread (the loop's, for AsyncClient)."""
        if self._loop is None:
            return fn()

        async def run() -> T:
            return fn()

        return self._on_loop(run())

    def track(self, *args: Any, **kwargs: Any) -> str:
        return self.call(lambda: self.client.track(*args, **kwargs))

    def flush(self, timeout_s: float = 10.0) -> bool:
        if isinstance(self.client, Client):
            return self.client.flush(timeout_s)
        return self._on_loop(self.client.flush(timeout_s))

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        if isinstance(self.client, Client):
            return self.client.shutdown(timeout_s)
        return self._on_loop(self.client.shutdown(timeout_s))

    def stats(self) -> ClientStats:
        return self.call(self.client.stats)

    def abandon_loop(self) -> asyncio.AbstractEventLoop:
        """AsyncClient only: stop and close its loop *without* cancelling the client's tasks
        (as an application that closes its own loop carelessly does), then go on with a new
        loop. Returns the closed loop (its abandoned tasks live as long as it is referenced)."""
        old, thread = self._loop, self._thread
        assert old is not None, "a thread Client has no loop"
        assert thread is not None
        old.call_soon_threadsafe(old.stop)
        thread.join(30)
        old.close()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sdk-test-loop")
        self._thread.start()
        return old

    def close(self) -> None:
        """Shut the client down (bounded) and stop the loop thread."""
        self.shutdown(5)
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
            self._loop = None


def recording_transport(kind: Kind) -> RecordingTransport | AsyncRecordingTransport:
    """The recording transport that fits `kind` (both record the same way)."""
    return RecordingTransport() if kind == "thread" else AsyncRecordingTransport()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@pytest.fixture
def make_sdk() -> Iterator[Callable[..., Sdk]]:
    """`make_sdk(kind, **client_options)`; every Sdk made is closed at teardown."""
    made: list[Sdk] = []

    def make(kind: Kind, **options: Any) -> Sdk:
        sdk = Sdk(kind, **options)
        made.append(sdk)
        return sdk

    yield make
    for sdk in made:
        sdk.close()
