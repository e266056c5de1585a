"""File sink: an append-only JSON-lines log per topic under a data directory.

A record counts as accepted only after its line is fsynced. Concurrent requests share one
writer, so one fsync per touched file covers every request that arrived meanwhile (group
commit). The writer never leaves a partial line behind: a failed write is truncated away.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from collector.sinks.base import Outcome, Record, Sink
from event_schemas.topics import is_topic

log = logging.getLogger(__name__)

LOG_SUFFIX = ".jsonl"


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a topic log; replay reads these exactly as it reads Kafka records."""

    offset: int
    timestamp_ms: int
    key: str | None
    headers: list[tuple[str, str]]
    value: msgspec.Raw


def topic_path(data_dir: Path, topic: str) -> Path:
    return data_dir / f"{topic}{LOG_SUFFIX}"


class _TopicLog:
    """An open log file and the offset its next line gets. Used by the writer thread only."""

    def __init__(self, path: Path) -> None:
        created = not path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.next_offset = self._recover()
        if created:
            # The new directory entry must be durable too, or the acked file could vanish.
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _recover(self) -> int:
        """Count whole lines, dropping a torn last line left by a crash before its fsync."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return 0
        data = os.pread(self.fd, size, 0)
        complete = data.rfind(b"\n") + 1
        if complete != size:
            log.warning(
                "truncating a torn line at the end of a topic log (%d bytes)", size - complete
            )
            os.ftruncate(self.fd, complete)
            os.fsync(self.fd)
        return data.count(b"\n", 0, complete)

    def append(self, lines: list[bytes]) -> None:
        before = os.fstat(self.fd).st_size
        try:
            data = b"".join(lines)
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            os.fsync(self.fd)
        except OSError:
            # Leave no partial line behind; the caller answers RETRIABLE for all of them.
            os.ftruncate(self.fd, before)
            raise
        self.next_offset += len(lines)

    def close(self) -> None:
        os.close(self.fd)


class FileSink(Sink):
    name = "file"

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self._logs: dict[str, _TopicLog] = {}
        self._pending: list[tuple[Sequence[Record], asyncio.Future[list[Outcome]]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._encoder = msgspec.json.Encoder()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._writer = asyncio.create_task(self._run(), name="file-sink-writer")

    async def stop(self, *, timeout_s: float | None = None) -> None:
        self._stopping = True
        self._wake.set()
        if self._writer is not None:
            # the writer ends after its last group commit; a disk that hangs must not hang exit
            done, _ = await asyncio.wait([self._writer], timeout=timeout_s)
            if not done:
                log.error("file sink writer did not finish within %.1fs; exiting anyway", timeout_s)
                self._writer.cancel()
            self._writer = None
        for topic_log in self._logs.values():
            topic_log.close()
        self._logs.clear()

    async def ready(self) -> bool:
        return (
            self._writer is not None
            and not self._writer.done()
            and os.access(self.data_dir, os.W_OK)
        )

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        if not records:
            return []
        if self._writer is None or self._stopping:
            return [Outcome.RETRIABLE] * len(records)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                # shield: a request that gives up must not cancel the write other requests share
                return await asyncio.shield(future)
        except TimeoutError:
            return [Outcome.RETRIABLE] * len(records)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    results = await asyncio.to_thread(self._write, [r for r, _ in batch])
                except OSError:
                    log.exception("file sink write failed; answering retriable")
                    results = [[Outcome.RETRIABLE] * len(r) for r, _ in batch]
                for (_, future), outcomes in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(outcomes)
            if self._stopping and not self._pending:
                return

    def _write(self, batches: list[Sequence[Record]]) -> list[list[Outcome]]:
        """Runs in a worker thread: append every record, one fsync per touched topic file."""
        results = [[Outcome.OK] * len(records) for records in batches]
        by_topic: dict[str, list[bytes]] = {}
        for b, records in enumerate(batches):
            for i, record in enumerate(records):
                # Kafka's rule for topic names (start-up checks every topic the collector
                # can write); here it also keeps a topic a file name inside data_dir.
                if not is_topic(record.topic):
                    results[b][i] = Outcome.FATAL
                    continue
                topic_log = self._log(record.topic)
                lines = by_topic.setdefault(record.topic, [])
                lines.append(self._line(record, topic_log.next_offset + len(lines)))
        for topic, lines in by_topic.items():
            self._logs[topic].append(lines)
        return results

    def _log(self, topic: str) -> _TopicLog:
        topic_log = self._logs.get(topic)
        if topic_log is None:
            topic_log = self._logs[topic] = _TopicLog(topic_path(self.data_dir, topic))
        return topic_log

    def _line(self, record: Record, offset: int) -> bytes:
        line = LogLine(
            offset=offset,
            timestamp_ms=record.timestamp_ms,
            key=record.key.decode("utf-8", "replace") if record.key is not None else None,
            headers=[(k, v.decode("utf-8", "replace")) for k, v in record.headers],
            value=msgspec.Raw(record.value),
        )
        return self._encoder.encode(line) + b"\n"
