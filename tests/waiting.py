"""Polling helpers for state another thread changes (no asyncio.Event can signal it)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Callable

POLL_S = 0.02


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Wait until `predicate()` holds; fail the test if it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():  # the state lives on another thread
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(POLL_S)


def wait_ready(port: int, process: subprocess.Popen[bytes], *, timeout_s: float = 30.0) -> None:
    """Block until the collector on `port` answers /readyz (it must not exit meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, "collector exited at start"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "collector never became ready"
            time.sleep(0.1)
