"""Concurrent HTTP load for failure tests: unique event ids per request, every answer recorded.

It only drives and records; the tests decide what the answers must be. Every client loop is
bounded by a request count as well as by the caller's stop event.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import aiohttp

from tests.factories import batch_body, track_played

# Pause after a refused or failed request, so a collector that refuses at once is not spun on.
REFUSED_PAUSE_S = 0.05
REQUEST_TIMEOUT_S = 60.0


@dataclass
class LoadResult:
    acked: set[str] = field(default_factory=set)  # event ids answered 200
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    connection_errors: int = 0
    # answers that break the contract: a status other than 200/503, or a 503 without Retry-After
    bad: list[str] = field(default_factory=list)
    last_ok_at: float = 0.0  # time.monotonic() when the latest 200 arrived


async def _client(
    url: str, result: LoadResult, stop: asyncio.Event, *, events: int, max_requests: int
) -> None:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(max_requests):
            if stop.is_set():
                return
            batch = [track_played(user_id=f"u-{i}") for i in range(events)]
            try:
                async with session.post(
                    url, data=batch_body(*batch), headers={"Content-Type": "application/json"}
                ) as response:
                    body = await response.json(content_type=None)
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError):
                # refused or cut off: not acknowledged, the client would retry elsewhere
                result.connection_errors += 1
                await asyncio.sleep(REFUSED_PAUSE_S)
                continue
            result.statuses[status] += 1
            if status == 200 and body.get("accepted") == events:
                result.acked.update(event["event_id"] for event in batch)
                result.last_ok_at = time.monotonic()
            elif status == 503 and retry_after is not None and "error" in body:
                await asyncio.sleep(REFUSED_PAUSE_S)
            else:
                result.bad.append(f"{status} {retry_after=} {body}")


async def drive(
    url: str,
    stop: asyncio.Event,
    result: LoadResult,
    *,
    clients: int = 3,
    events: int = 5,
    max_requests: int = 2_000,
) -> None:
    """POST batches of `events` from `clients` concurrent sessions into `result` until `stop`
    is set (the test reads `result` while the load runs)."""
    await asyncio.gather(
        *(
            _client(url, result, stop, events=events, max_requests=max_requests)
            for _ in range(clients)
        )
    )
