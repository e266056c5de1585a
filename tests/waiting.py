"""Polling helpers for state another thread changes (no asyncio.Event can signal it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_S = 0.02


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Wait until `predicate()` holds; fail the test if it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():  # the state lives on another thread
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(POLL_S)
