"""File sink: an append-only JSON-lines log per topic under a data directory.

A record counts as accepted only after its line is fsynced. Concurrent requests share one
writer, so one fsync per touched file covers every request that arrived meanwhile (group
commit). The writer never leaves a partial line behind: a failed write is truncated away.

Each collector worker (`capture serve --workers N`) is one writer with logs of its own: a
topic's log of writer i is partition i of the topic for replay, `<topic>.jsonl` for writer 0
(and a collector alone), `<topic>@<i>.jsonl` for the others ('@' is never in a topic name).
Offsets are line numbers within one file. A file has one writer only: the sink holds an
exclusive flock on every log it opens and refuses a log another process holds.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from collector.sinks.base import Outcome, Record, Sink
from event_schemas.topics import is_topic

log = logging.getLogger(__name__)

LOG_SUFFIX = ".jsonl"
# Between a topic and its partition (writer) number in a log's name; never in a Kafka topic.
PARTITION_MARK = "@"


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a topic log; replay reads these exactly as it reads Kafka records."""

    offset: int
    timestamp_ms: int
    key: str | None
    headers: list[tuple[str, str]]
    value: msgspec.Raw


def topic_path(data_dir: Path, topic: str, partition: int = 0) -> Path:
    """The log of `topic` that writer `partition` appends to."""
    name = topic if partition == 0 else f"{topic}{PARTITION_MARK}{partition}"
    return data_dir / f"{name}{LOG_SUFFIX}"


def parse_log_name(name: str) -> tuple[str, int] | None:
    """(topic, partition) of a log's file name as `topic_path` makes it; None for any other
    name (a partition number is written without leading zeros and is never 0 after a mark)."""
    if not name.endswith(LOG_SUFFIX):
        return None
    stem = name.removesuffix(LOG_SUFFIX)
    topic, mark, number = stem.rpartition(PARTITION_MARK)
    if not mark:
        return (stem, 0) if is_topic(stem) else None
    if not (number.isascii() and number.isdigit()) or str(int(number)) != number:
        return None
    partition = int(number)
    return (topic, partition) if partition > 0 and is_topic(topic) else None


def topic_logs(data_dir: Path) -> dict[str, dict[int, Path]]:
    """Every log file in `data_dir`: topic -> partition -> path (empty if there is no dir)."""
    found: dict[str, dict[int, Path]] = {}
    try:
        entries = list(os.scandir(data_dir))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        parsed = parse_log_name(entry.name)
        if parsed is not None and entry.is_file():
            topic, partition = parsed
            found.setdefault(topic, {})[partition] = Path(entry.path)
    return found


class LogLocked(OSError):
    """Another process holds a log this sink would write: two writers would interleave."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"another process is writing the file sink's log {path}: each log has one writer"
            " (is a second collector, or a second worker with the same index, using this data"
            " directory?)"
        )
        self.path = path


def lock_log(fd: int, path: Path) -> None:
    """Take the one-writer lock of an open log without waiting; LogLocked if it is held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise LogLocked(path) from exc


class _TopicLog:
    """An open, locked log file and the offset its next line gets. Writer thread only."""

    def __init__(self, path: Path) -> None:
        created = not path.exists()
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # before recovery: a torn end may be another live writer's line in progress
            lock_log(self.fd, path)
        except OSError:
            os.close(self.fd)
            raise
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

    def __init__(self, data_dir: Path | str, *, writer: int = 0) -> None:
        """`writer`: which collector worker this is (0 alone), so which partition it writes."""
        if writer < 0:
            raise ValueError(f"writer must be 0 or more, not {writer}")
        self.data_dir = Path(data_dir)
        self.writer = writer
        self._logs: dict[str, _TopicLog] = {}
        # set when a log turned out to be another process's: writes nothing from then on
        self._conflict: LogLocked | None = None
        self._last_failure = "it is not running"  # why records were last not accepted
        self._pending: list[tuple[Sequence[Record], asyncio.Future[list[Outcome]]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._encoder = msgspec.json.Encoder()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._conflict = None
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
        self._close_logs()

    def _close_logs(self) -> None:
        for topic_log in self._logs.values():
            topic_log.close()  # closing the last descriptor releases the lock
        self._logs.clear()

    def unavailable_reason(self) -> str:
        if self._conflict is not None:
            return str(self._conflict)
        return f"the file sink did not accept the records: {self._last_failure}"

    async def ready(self) -> bool:
        return (
            self._conflict is None
            and self._writer is not None
            and not self._writer.done()
            and os.access(self.data_dir, os.W_OK)
        )

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        if not records:
            return []
        if self._writer is None or self._stopping or self._conflict is not None:
            if self._conflict is None:
                self._last_failure = "it is not running"
            return [Outcome.RETRIABLE] * len(records)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                # shield: a request that gives up must not cancel the write other requests share
                return await asyncio.shield(future)
        except TimeoutError:
            self._last_failure = f"no fsync'd write of {self.data_dir} within {timeout_s:g} s"
            return [Outcome.RETRIABLE] * len(records)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    results = await asyncio.to_thread(self._write, [r for r, _ in batch])
                except LogLocked as exc:
                    # a misconfiguration (`capture serve` checks at start-up, but two can
                    # race): out of service until restarted, leaving the logs to the owner
                    if self._conflict is None:
                        log.error("file sink not ready: %s", exc)
                    self._conflict = exc
                    results = [[Outcome.RETRIABLE] * len(r) for r, _ in batch]
                except OSError as exc:
                    log.exception("file sink write failed; answering retriable")
                    self._last_failure = f"writing to {self.data_dir} failed: {exc}"
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
            path = topic_path(self.data_dir, topic, self.writer)
            topic_log = self._logs[topic] = _TopicLog(path)
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
