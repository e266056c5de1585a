"""Dev tool: a real headless Chromium, driven over the DevTools protocol (CDP) on a websocket.

Starts Debian's `chromium` with a fresh profile on a free loopback port, opens tabs, evaluates
JavaScript in them, reloads and closes them. It never downloads a browser and never intercepts
requests (interception hides CORS preflights, which the browser tests must see).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from devtools.processes import guard, release

# Flags that work on these machines: no sandbox as root, no GPU, nothing that phones home.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


class ChromiumError(RuntimeError):
    """The browser did not start, or a CDP call failed or threw in the page."""


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else `chromium` on PATH."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium")


class Page:
    """One tab, attached with a flat CDP session."""

    def __init__(self, browser: Chromium, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.browser.call(
            method, session_id=self.session_id, **params
        )
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` (awaited if a promise), as JSON; raises if it threw."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ChromiumError(f"page threw: {text}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Poll until `expression` is truthy in the page; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(ChromiumError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"timed out waiting for {expression!r}")
            await asyncio.sleep(0.1)

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def reload(self) -> None:
        """Reload as a user would: pagehide fires on the old document first."""
        await self.evaluate("window.__reloading = 1")
        await self.call("Page.reload")
        await self.wait_for("document.readyState === 'complete' && !window.__reloading")

    async def close(self) -> None:
        """Close the tab as a user would (unload handlers run), and wait until it is gone."""
        await self.browser.call("Target.closeTarget", targetId=self.target_id)


class Chromium:
    """`async with Chromium() as browser: page = await browser.new_page(url)`."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or find_chromium()
        if found is None:
            raise ChromiumError("chromium not found: run scripts/browser-deps.sh (or set CHROMIUM)")
        self.binary = found
        self._profile = tempfile.TemporaryDirectory(prefix="capture-chromium-")
        self._process: asyncio.subprocess.Process | None = None
        self._guardian: subprocess.Popen[bytes] | None = None  # kills it if we die first
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    async def __aenter__(self) -> Chromium:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        profile = Path(self._profile.name)
        self._process = await asyncio.create_subprocess_exec(
            self.binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() can end every child
        )
        self._guardian = guard(self._process)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._process.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise ChromiumError(
                    f"{self.binary} did not start (exit {self._process.returncode})"
                )
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/version") as response:
            ws_url = (await response.json())["webSocketDebuggerUrl"]
        self._ws = await self._session.ws_connect(ws_url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif "method" in data:
                for listener in self._listeners:
                    listener(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChromiumError("the browser closed the connection"))

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener` with every CDP event (a dict with method, params, sessionId)."""
        self._listeners.append(listener)

    async def call(self, method: str, *, session_id: str | None = None, **params: Any) -> Any:
        if self._ws is None:
            raise ChromiumError("the browser is not started")
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_str(json.dumps(message))
        answer = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        if "error" in answer:
            raise ChromiumError(f"{method}: {answer['error'].get('message')}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def new_page(self, url: str) -> Page:
        """A new tab at `url`, loaded."""
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        await page.navigate(url)
        return page

    async def stop(self) -> None:
        """Close the browser (gracefully first), end its process group, remove the profile."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("Browser.close"), 5)
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
        process = self._process
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.terminate()
                await asyncio.wait_for(process.wait(), 10)
            # renderers and helpers may outlive the main process for a moment
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        guardian, self._guardian = self._guardian, None
        release(guardian)
        self._profile.cleanup()
