"""How `AsyncClient` reaches the collector: the asyncio twin of `_transport`.

An async transport sends one request and returns the response, or raises TransportError when
no response came. Like the sync one, it never retries and never decides what a status means.
"""

from __future__ import annotations

import abc
import asyncio
import io
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from capture_sdk._errors import ConfigurationError, TransportError
from capture_sdk._transport import BATCH_PATH, Response

if TYPE_CHECKING:
    import aiohttp

LARGE_BODY_BYTES = 1 << 20

# aiohttp is not a dependency of the `event-capture-sdk` distribution (only of its extra), so
# the default transport says how to get it instead of a bare ModuleNotFoundError
AIOHTTP_MISSING = (
    "AsyncClient's default transport (AiohttpTransport) needs aiohttp, which the SDK does not "
    "install by itself: pip install 'event-capture-sdk[aiohttp]' (or pass transport= an "
    "AsyncTransport of your own)"
)


class AsyncTransport(abc.ABC):
    @abc.abstractmethod
    async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST one batch body; raise TransportError when there is no HTTP response."""

    async def close(self) -> None:  # noqa: B027  # optional hook
        """Release connections."""

    def after_fork(self) -> None:  # noqa: B027  # optional hook
        """In a forked child: forget connections inherited from the parent (do not close)."""


class AiohttpTransport(AsyncTransport):
    """POSTs to `<endpoint>/v1/batch` through one aiohttp ClientSession (kept-alive pool).

    The session is made on first use, on the loop that sends (a session belongs to one loop);
    if that loop has since been closed, a new session is made on the current one. aiohttp is
    imported here, not when `capture_sdk` is imported, so thread-only users do not pay for it.
    """

    def __init__(self, endpoint: str, *, timeout_s: float = 10.0) -> None:
        try:
            import aiohttp  # see the class docstring
        except ModuleNotFoundError as exc:
            if exc.name != "aiohttp":
                raise  # aiohttp is there but broken: its own error says more
            raise ImportError(AIOHTTP_MISSING, name="aiohttp") from exc

        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigurationError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s!r}")
        port = f":{url.port}" if url.port else ""
        self.url = f"{url.scheme}://{url.hostname}{port}{url.path.rstrip('/')}{BATCH_PATH}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # a session left on a closed loop cannot be closed from here; it is just dropped
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._loop = loop
        return self._session

    async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        import aiohttp  # already imported by __init__; a dict lookup

        session = self._get_session()
        try:
            # aiohttp warns (an error under -W error) on raw bytes over 1 MiB; a BytesIO is
            # the same bytes, written in chunks
            data = io.BytesIO(body) if len(body) > LARGE_BODY_BYTES else body
            async with session.post(self.url, data=data, headers=dict(headers)) as response:
                answer = await response.read()
                return Response(
                    response.status, answer, {k.lower(): v for k, v in response.headers.items()}
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"POST {self.url} failed: {exc!r}") from exc

    def after_fork(self) -> None:
        # the session's sockets and loop are the parent's; a new one is made on first use
        self._session = None
        self._loop = None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
