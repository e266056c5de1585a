"""In-memory sink: the unit-test twin of the Kafka and file sinks. Not for production use.

It keeps every acknowledged record in a list, and can be switched to fail or stall so that
tests can drive the collector's 503 path without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from collector.sinks.base import Outcome, Record, Sink


class MemorySink(Sink):
    name = "memory"

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.available = True  # False: every publish answers RETRIABLE
        self.stall = False  # True: publish waits past its deadline
        self.fatal_topics: set[str] = set()  # records for these topics answer FATAL
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self, *, timeout_s: float | None = None) -> None:
        self.started = False

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        if self.stall:
            await asyncio.sleep(timeout_s)
            return [Outcome.RETRIABLE] * len(records)
        if not self.available:
            return [Outcome.RETRIABLE] * len(records)
        outcomes = []
        for record in records:
            if record.topic in self.fatal_topics:
                outcomes.append(Outcome.FATAL)
            else:
                self.records.append(record)
                outcomes.append(Outcome.OK)
        return outcomes

    async def ready(self) -> bool:
        return self.available and not self.stall

    def topic(self, name: str) -> list[Record]:
        return [r for r in self.records if r.topic == name]
