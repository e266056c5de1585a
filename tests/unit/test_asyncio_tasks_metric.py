"""`capture_asyncio_tasks` (collector/metrics.py): the tasks alive on the collector's loop,
counted when /metrics is scraped, so the soak of issue 14 can see a task leak."""

from __future__ import annotations

import asyncio

from tests.conftest import HttpClient


def tasks_in(text: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith("capture_asyncio_tasks ")]
    assert len(lines) == 1, text
    return float(lines[0].split()[1])


async def test_the_scrape_counts_the_tasks_alive(collector: HttpClient) -> None:
    first = tasks_in(await (await collector.get("/metrics")).text())
    assert first >= 1  # the scrape's own handler task, at least
    idle = [asyncio.create_task(asyncio.sleep(60)) for _ in range(5)]
    try:
        assert tasks_in(await (await collector.get("/metrics")).text()) >= first + 5
    finally:
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)
