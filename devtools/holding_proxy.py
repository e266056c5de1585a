"""Dev tool: a loopback HTTP proxy in front of the collector that holds one batch request.

The first `POST /v1/batch` through it waits until `release()`, either before it reaches the
collector (the request is then lost: it gets a 503 the collector never sent) or after the
collector answered (a lost response). Every other request passes straight through, unchanged.
It is a real hop on the network, not request interception, so the browser sees CORS as is.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

# Per-hop headers, and the ones aiohttp sets again from the body it forwards (RFC 9110 7.6.1).
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)
Held = Literal["lost", "answered_late"]


def event_ids(body: bytes) -> list[str]:
    """The event_ids of a batch body (JSON, whatever its Content-Type); [] if it is not one."""
    try:
        batch = json.loads(body)["batch"]
        return [str(event["event_id"]) for event in batch]
    except (ValueError, KeyError, TypeError):
        return []


class HoldingProxy:
    """`async with HoldingProxy(collector_url, held="lost") as proxy:` use `proxy.url`."""

    def __init__(self, upstream: str, *, held: Held) -> None:
        self.upstream = upstream.rstrip("/")
        self.held = held
        self.url = ""
        self.held_ids: list[str] = []
        # the event_ids of every batch request that passed through, in arrival order
        self.passed: list[list[str]] = []
        self.holding = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def release(self) -> None:
        self._release.set()

    async def __aenter__(self) -> HoldingProxy:
        # auto_decompress off: bodies go back byte for byte, with their own Content-Encoding
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._release.set()  # a held request must not keep the runner's cleanup waiting
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        hold = (
            request.method == "POST" and request.path == "/v1/batch" and not self.holding.is_set()
        )
        ids = event_ids(body)
        if hold:
            self.held_ids = ids
            self.holding.set()
            if self.held == "lost":
                await self._release.wait()
                # the collector never sees it; the page that sent it is gone by now
                return web.json_response(
                    {"error": "proxy_lost", "detail": "held, then dropped by the test proxy"},
                    status=503,
                )
        else:
            self.passed.append(ids)
        response = await self._forward(request, body)
        if hold:
            await self._release.wait()  # the collector answered; the page hears it late
        return response

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS
        )
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            answer = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
            )
            return web.Response(status=upstream.status, headers=answer, body=payload)
