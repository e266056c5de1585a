"""Polling helpers for state another thread changes (no asyncio.Event can signal it)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

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


def process_alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie waits for whoever reaps it here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_process_gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether process `pid` ended (or became a zombie) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
