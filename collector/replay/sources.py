"""Replay sources: read the records of some topics, from Kafka or from the file sink's log.

Both snapshot where each partition ends when they open, so a replay always ends. The Kafka
source never joins a consumer group and never commits: production consumers see nothing.
Sources only select by offset and time; they never decode record values (select.py does).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from collector.replay.errors import BadInput, Unavailable
from collector.sinks.file import LogLine, topic_logs, topic_path

log = logging.getLogger(__name__)

# Records handed over per batch; bounds memory and how often progress is redrawn.
BATCH_RECORDS = 1_000
# Bytes of a file log read at a time (then cut into whole lines).
READ_CHUNK_BYTES = 1 << 20
# Batches of a file log parsed per trip to a worker thread.
BATCHES_PER_READ = 8


# msgspec Structs, not dataclasses: one is built per record read, and a Struct is several
# times cheaper to build; gc=False as they hold only strings, numbers, bytes and pairs of them.
class SourceRecord(msgspec.Struct, frozen=True, gc=False):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    headers: list[tuple[str, bytes]]
    value: bytes


class Malformed(msgspec.Struct, frozen=True, gc=False):
    """A record the source could not even parse (a broken log line)."""

    topic: str
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records: timestamps in [since_ms, until_ms), offsets in [from_offset, to_offset)."""

    since_ms: int | None = None
    until_ms: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def check(self) -> None:
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since >= until:
            raise BadInput("empty range: --since must be before --until")
        start, stop = self.from_offset, self.to_offset
        if start is not None and stop is not None and start >= stop:
            raise BadInput("empty range: --from-offset must be below --to-offset")

    @property
    def everything(self) -> bool:
        """No bound at all: every record is kept (and `keeps` need not be asked)."""
        return (
            self.since_ms is None
            and self.until_ms is None
            and self.from_offset is None
            and self.to_offset is None
        )

    def keeps(self, offset: int, timestamp_ms: int) -> bool:
        return (
            (self.since_ms is None or timestamp_ms >= self.since_ms)
            and (self.until_ms is None or timestamp_ms < self.until_ms)
            and (self.from_offset is None or offset >= self.from_offset)
            and (self.to_offset is None or offset < self.to_offset)
        )


Item = SourceRecord | Malformed


class Source:
    """Open (may raise BadInput/Unavailable), then iterate batches, then close."""

    total: int | None = None  # records in range, when known up front (for the ETA)
    selection: Selection

    async def open(self) -> None:
        raise NotImplementedError

    def batches(self) -> AsyncIterator[list[Item]]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FileLogSource(Source):
    """The file sink's logs in `data_dir`: partition 0 of a topic is `<topic>.jsonl`, partition
    i (collector worker i's) `<topic>@<i>.jsonl`; offsets are line numbers within each file, so
    --from-offset/--to-offset bound every partition alike, as on Kafka."""

    def __init__(
        self,
        data_dir: Path,
        topics: Sequence[str],
        selection: Selection,
        *,
        optional: Sequence[str] = (),
    ) -> None:
        """`optional`: topics read when they exist (a hot key's overflow lane), else skipped."""
        self._data_dir = data_dir
        self._optional = frozenset(optional)
        self.topics = [*topics, *optional]  # in the order they are read
        self.selection = self._selection = selection
        self._logs: list[tuple[str, int, Path, int]] = []

    async def open(self) -> None:
        found = topic_logs(self._data_dir)
        for topic in self.topics:
            partitions = found.get(topic, {})
            if not partitions and topic in self._optional:
                continue
            if not partitions:
                name = topic_path(self._data_dir, topic).name
                raise BadInput(f"unknown topic `{topic}`: no log at {name}")
            for partition, path in sorted(partitions.items()):
                # the size now is where this replay ends, even if the collector keeps appending
                self._logs.append((topic, partition, path, path.stat().st_size))

    @property
    def logs(self) -> list[tuple[str, int, Path, int]]:
        """(topic, partition, path, end in bytes) of each log to read, in reading order: topics
        in the order given, then partitions by number (KafkaSource's order, which dedup's
        "first by (topic, partition, offset)" relies on); known once open."""
        return list(self._logs)

    async def batches(self) -> AsyncIterator[list[Item]]:
        for topic, partition, path, end_bytes in self.logs:
            lines = read_log(topic, path, end_bytes, self._selection, partition=partition)
            # several batches per trip to the thread: the trips, not the reads, were the cost
            while batches := await asyncio.to_thread(_take, lines, BATCHES_PER_READ):
                for batch in batches:
                    yield batch


def _take(batches: Iterator[list[Item]], count: int) -> list[list[Item]]:
    return list(itertools.islice(batches, count))


def read_log(
    topic: str, path: Path, end_bytes: int, selection: Selection, *, partition: int = 0
) -> Iterator[list[Item]]:
    """The records of one log (partition `partition` of `topic`) up to `end_bytes`, in
    batches: the file log's one reading rule, for this source and for the Spark engine's
    tasks. Offsets of broken lines are line numbers."""
    decoder = msgspec.json.Decoder(LogLine)
    everything = selection.everything
    with path.open("rb") as log:
        offset = 0
        for lines in _read_lines(log, end_bytes):
            for start in range(0, len(lines), BATCH_RECORDS):
                part = lines[start : start + BATCH_RECORDS]
                batch = _parse_lines(decoder, topic, offset, part, partition)
                offset += len(part)
                if not everything:
                    batch = [
                        item
                        for item in batch
                        if isinstance(item, Malformed)
                        or selection.keeps(item.offset, item.timestamp_ms)
                    ]
                yield batch


def _parse_lines(
    decoder: msgspec.json.Decoder[LogLine],
    topic: str,
    offset: int,
    lines: list[bytes],
    partition: int = 0,
) -> list[Item]:
    """Whole lines (newline included) as records; `offset` is the first one's line number.
    All at once when every line is exactly one entry, else line by line to place the broken
    ones.

    The lines are decoded as one JSON array, one element per line (not `decode_lines`, which
    reads a stream of values: it skips blank lines and reads two entries on one line as two).
    The comma between lines could still join a line's unfinished value to the next line, so
    the array is first split into its elements' bytes: each element must start at its line's
    first byte (a `{`) and span the whole line but its newline. Element i then is line i, by
    induction, and the one typed decode reads exactly what line-by-line decoding would.
    """
    joined = b"[" + b",".join(lines) + b"]"
    try:
        spans = _spans_decoder.decode(joined)
        exact = len(spans) == len(lines) and all(
            len(span) == len(line) - 1 and line[:1] == b"{"
            for span, line in zip(spans, lines, strict=True)
        )
        entries = _entries_decoder.decode(joined) if exact else None
    except msgspec.DecodeError:
        entries = None
    if entries is None:  # a broken, blank or padded line, or one entry over several lines
        return [_parse(decoder, topic, partition, offset + i, line) for i, line in enumerate(lines)]
    return [_record(topic, partition, entry) for entry in entries]


def _parse(
    decoder: msgspec.json.Decoder[LogLine], topic: str, partition: int, offset: int, line: bytes
) -> Item:
    try:
        entry = decoder.decode(line)
    except msgspec.DecodeError as exc:
        return Malformed(topic, partition, offset, f"not a log line: {exc}")
    return _record(topic, partition, entry)


def _record(topic: str, partition: int, entry: LogLine) -> SourceRecord:
    key = entry.key
    return SourceRecord(
        topic,
        partition,
        entry.offset,
        entry.timestamp_ms,
        key.encode() if key is not None else None,
        [(k, v.encode()) for k, v in entry.headers],
        bytes(entry.value),
    )


def _read_lines(log: IO[bytes], end_bytes: int) -> Iterator[list[bytes]]:
    """The whole lines before `end_bytes`, newline included, a chunk of the file at a time
    (a torn last line is left out, as is anything after it)."""
    at = log.tell()
    rest = b""
    while at < end_bytes:
        chunk = log.read(min(READ_CHUNK_BYTES, end_bytes - at))
        if not chunk:
            return  # the file shrank under us: what was read is all there is
        at += len(chunk)
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield _LINE.findall(data, 0, cut)


# A log line ends at a newline byte only (bytes.splitlines also cuts at a lone `\r`, which
# JSON allows between tokens).
_LINE = re.compile(rb"[^\n]*\n")
_entries_decoder = msgspec.json.Decoder(list[LogLine])
_spans_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class KafkaSource(Source):
    """Manually assigned partitions of a consumer without a group; offsets from the broker."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        selection: Selection,
        *,
        request_timeout_ms: int = 10_000,
        optional: Sequence[str] = (),
    ) -> None:
        """`optional`: topics read when they exist (a hot key's overflow lane), else skipped."""
        self._topics = list(topics)
        self._optional = list(optional)
        self.selection = self._selection = selection
        self._stall_s = request_timeout_ms / 1000
        self.bootstrap_servers = bootstrap_servers
        self.request_timeout_ms = request_timeout_ms
        self.topics = [*self._topics, *self._optional]  # in the order they are read
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": "event-capture-replay",
            "group_id": None,  # no group: no rebalance, no offsets stored, nobody disturbed
            "enable_auto_commit": False,
            "request_timeout_ms": request_timeout_ms,
            "auto_offset_reset": "earliest",
        }
        self._consumer: Any = None
        self._stops: dict[Any, int] = {}
        # (topic, partition) -> [start, stop) offsets this replay reads, known once open
        self.ranges: dict[tuple[str, int], tuple[int, int]] = {}

    async def open(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(**self._options)
        self._consumer = consumer
        try:
            async with asyncio.timeout(self._stall_s):
                await consumer.start()
                # the consumer knows partitions only of topics in its metadata; reading all
                # topics' metadata (unlike asking for one) never auto-creates a topic
                cluster = await consumer._client.fetch_all_metadata()
            partitions = []
            for topic in [*self._topics, *self._optional]:
                ids = cluster.partitions_for_topic(topic)
                if not ids and topic in self._optional:
                    continue
                if not ids:
                    raise BadInput(f"unknown topic `{topic}`")
                partitions += [TopicPartition(topic, p) for p in sorted(ids)]
            consumer.assign(partitions)
            await self._place(consumer, partitions)
        except (KafkaError, TimeoutError) as exc:
            raise Unavailable(f"broker unavailable: {exc!r}") from exc

    async def _place(self, consumer: Any, partitions: list[Any]) -> None:
        """Seek each partition to the range's start; remember its end (the snapshot)."""
        select = self._selection
        starts = await consumer.beginning_offsets(partitions)
        stops = await consumer.end_offsets(partitions)
        if select.since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, select.since_ms))
            starts = {tp: found[tp].offset if found[tp] else stops[tp] for tp in partitions}
        if select.until_ms is not None:
            # assumes timestamps grow along a partition (the collector stamps receive time);
            # records are also filtered by timestamp, so the window itself stays exact
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, select.until_ms))
            stops = {tp: found[tp].offset if found[tp] else stops[tp] for tp in partitions}
        for tp in partitions:
            start = max(starts[tp], select.from_offset or 0)
            stop = stops[tp] if select.to_offset is None else min(stops[tp], select.to_offset)
            if start < stop:
                consumer.seek(tp, start)
                self._stops[tp] = stop
                self.ranges[(tp.topic, tp.partition)] = (start, stop)
        consumer.pause(*partitions)  # batches() resumes them one at a time
        self.total = sum(stop - starts[tp] for tp, stop in self._stops.items())

    async def batches(self) -> AsyncIterator[list[Item]]:
        """One partition at a time, topics in the order given, then partitions by number: the
        first record of an event_id met is the first by (topic, partition, offset), the rule
        dedup keeps in both engines, whatever order the broker would answer fetches in."""
        from collector.replay.kafka_fetch import read_partition

        keeps = None if self._selection.everything else self._selection.keeps
        rank = {topic: i for i, topic in enumerate(self.topics)}
        for tp in sorted(self._stops, key=lambda tp: (rank[tp.topic], tp.partition)):
            start, stop = self.ranges[(tp.topic, tp.partition)]
            records = read_partition(
                self._consumer,
                tp,
                start,
                stop,
                keeps=keeps,
                stall_s=self._stall_s,
                batch_records=BATCH_RECORDS,
            )
            async for batch in records:
                yield batch

    async def close(self) -> None:
        """Stop the consumer within the request timeout; a broker already gone is no error."""
        if self._consumer is None:
            return
        from aiokafka.errors import KafkaError

        try:
            async with asyncio.timeout(self._stall_s):
                await self._consumer.stop()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("replay consumer did not stop cleanly: %r", exc)
        except asyncio.CancelledError:
            # With the broker gone, aiokafka's stop() re-raises the cancellation of its own
            # failing fetch task; only a cancellation of this task itself may propagate.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("replay consumer stopped while its fetcher was failing")
