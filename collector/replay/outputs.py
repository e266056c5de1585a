"""Where replayed records go: JSON lines (a file or stdout), Parquet, or a topic via a Sink.

Republishing is one more driver of the collector's sinks: the same `publish`, acks and
deadlines as live traffic, paced by a token bucket so a backfill cannot flood the broker.
Outputs open (and so fail on an unwritable path) before anything is read; none decodes events.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from collector.replay.errors import BadInput, Unavailable
from collector.replay.sources import SourceRecord
from collector.sinks.base import Outcome, Record, Sink

# Pause between attempts to republish records the sink answered RETRIABLE.
RETRY_PAUSE_S = 0.2
_encoder = msgspec.json.Encoder()


class OutItem(msgspec.Struct, frozen=True, gc=False):
    source: SourceRecord
    record: Record  # what to write: the source record, or its upgraded / recovered form


class Output:
    failed_reasons: list[tuple[str, str]]  # (what, why) for records the output refused

    async def open(self) -> None:
        return None

    async def write(self, items: Sequence[OutItem]) -> int:
        """Write `items`; returns how many were written. Raises Unavailable if it cannot."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


class JsonlOutput(Output):
    """One record value per line; with metadata, one object with topic/partition/offset/..."""

    def __init__(self, path: Path | None, *, with_metadata: bool = False) -> None:
        self._path = path
        self.with_metadata = with_metadata
        self._file: IO[bytes] | None = None
        self.failed_reasons = []

    async def open(self) -> None:
        if self._path is None:
            self._file = sys.stdout.buffer
            return
        try:
            self._file = self._path.open("wb")  # once, before reading
        except OSError as exc:
            raise BadInput(f"output {self._path} is not writable: {exc.strerror}") from exc

    async def write(self, items: Sequence[OutItem]) -> int:
        return await self.write_values(
            [jsonl_line(item, with_metadata=self.with_metadata) for item in items]
        )

    async def write_values(self, lines: Sequence[bytes]) -> int:
        """Write ready lines (without their newlines): the values themselves, when the
        output has no metadata (the runner's path that builds no OutItem)."""
        assert self._file is not None
        if lines:
            self._file.write(b"\n".join(lines) + b"\n")
            self._file.flush()
        return len(lines)

    async def close(self) -> None:
        if self._file is not None and self._path is not None:
            self._file.flush()
            if stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):
                os.fsync(self._file.fileno())  # a pipe or a device cannot be fsynced
            self._file.close()


def jsonl_line(item: OutItem, *, with_metadata: bool) -> bytes:
    """One JSON-lines line (without the newline): the value, or it with its position."""
    if not with_metadata:
        return item.record.value
    source, record = item.source, item.record
    return _encoder.encode(
        {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
            "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
            "headers": [[k, v.decode("utf-8", "replace")] for k, v in record.headers],
            "value": msgspec.Raw(record.value),
        }
    )


class ParquetOutput(Output):
    """Columns: source position, key, event/version/event_id, and the value as JSON text.

    Properties differ per event and version, so they stay JSON text in `value` rather than
    columns; one file holds any mix of events. Needs the `event-capture[parquet]` extra.
    """

    COLUMNS = ("topic", "partition", "offset", "timestamp_ms", "key", "event", "version")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer: Any = None
        self.failed_reasons = []

    async def open(self) -> None:
        try:
            self._pa: Any = importlib.import_module("pyarrow")
            self._pq: Any = importlib.import_module("pyarrow.parquet")
        except ImportError as exc:
            raise BadInput(
                "Parquet output needs pyarrow: pip install 'event-capture[parquet]'"
            ) from exc
        pa = self._pa
        self._schema = pa.schema(
            [
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("timestamp_ms", pa.int64()),
                ("key", pa.string()),
                ("event", pa.string()),
                ("version", pa.int32()),
                ("event_id", pa.string()),
                ("value", pa.string()),
            ]
        )
        try:
            self._writer = self._pq.ParquetWriter(str(self._path), self._schema)
        except OSError as exc:
            raise BadInput(f"output {self._path} is not writable: {exc}") from exc

    async def write(self, items: Sequence[OutItem]) -> int:
        if not items:
            return 0
        rows = [parquet_row(item) for item in items]
        columns = {name: [row[i] for row in rows] for i, name in enumerate(self._schema.names)}
        self._writer.write_table(self._pa.table(columns, schema=self._schema))
        return len(items)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


ParquetRow = tuple[str, int, int, int, str | None, str | None, int | None, str | None, str]


def parquet_row(item: OutItem) -> ParquetRow:
    """The Parquet columns of one item, in ParquetOutput's order (both engines' one rule)."""
    source, record = item.source, item.record
    headers = dict(record.headers)
    version = headers.get("version")
    return (
        source.topic,
        source.partition,
        source.offset,
        source.timestamp_ms,
        record.key.decode("utf-8", "replace") if record.key else None,
        _text(headers.get("event")),
        int(version) if version and version.isdigit() else None,
        _text(headers.get("event_id")),
        record.value.decode("utf-8", "replace"),
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


class TokenBucket:
    """At most `rate_per_s` tokens a second, with a burst of one second's worth."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self._tokens = rate_per_s
        self._at = time.monotonic()

    @property
    def burst(self) -> int:
        return max(1, int(self.rate_per_s))

    async def take(self, count: int) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.rate_per_s, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            if self._tokens >= count:
                self._tokens -= count
                return
            await asyncio.sleep((count - self._tokens) / self.rate_per_s)


class TopicOutput(Output):
    """Republish through a Sink, keeping key, headers and timestamp; `topic` overrides."""

    def __init__(
        self,
        sink: Sink,
        *,
        topic: str | None,
        rate_per_s: float | None,
        timeout_s: float,
    ) -> None:
        self._sink = sink
        self._topic = topic
        self._bucket = TokenBucket(rate_per_s) if rate_per_s else None
        self._timeout_s = timeout_s
        self.failed_reasons = []

    async def open(self) -> None:
        await self._sink.start()

    async def write(self, items: Sequence[OutItem]) -> int:
        records = [
            item.record
            if self._topic is None
            else msgspec.structs.replace(item.record, topic=self._topic)
            for item in items
        ]
        step = self._bucket.burst if self._bucket is not None else max(1, len(records))
        written = 0
        for start in range(0, len(records), step):
            chunk = records[start : start + step]
            if self._bucket is not None:
                await self._bucket.take(len(chunk))
            try:
                written += await self._publish(chunk)
            except Unavailable as exc:  # count the chunks of this write that did land
                raise Unavailable(str(exc), written=written + exc.written) from exc
        return written

    async def _publish(self, records: list[Record]) -> int:
        """Publish until each record is OK or FATAL; RETRIABLE ones retry up to the deadline."""
        deadline = time.monotonic() + self._timeout_s
        ok = 0
        while True:
            outcomes = await self._sink.publish(records, timeout_s=self._timeout_s)
            retry = []
            for record, outcome in zip(records, outcomes, strict=True):
                if outcome is Outcome.OK:
                    ok += 1
                elif outcome is Outcome.FATAL:
                    self.failed_reasons.append((record.topic, "refused by the sink"))
                else:
                    retry.append(record)
            if not retry:
                return ok
            if time.monotonic() >= deadline:
                raise Unavailable(self._sink.unavailable_reason(), written=ok)
            await asyncio.sleep(RETRY_PAUSE_S)
            records = retry

    async def close(self) -> None:
        await self._sink.stop()
