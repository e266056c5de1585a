"""Per-partition record batches shared by concurrent requests, sent with aiokafka's batch API.

While a partition's previous batch is on its way to the broker and back (acks=all), records
from every request collect in the next batch; one produce round trip then carries them all,
and each batch has one future instead of one per record. Bounded: a partition holds at most
`max_pending_batches` batches; past that, records are refused (RETRIABLE) at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import Any

from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.partitioner import murmur2

from collector.sinks.base import Outcome, Record

log = logging.getLogger(__name__)

# Keys are user ids, which repeat: caching their murmur2 (pure Python in aiokafka) saves most
# of the partitioning cost. Cleared when full, so memory stays bounded.
_HASH_CACHE_MAX = 65_536
_hash_cache: dict[bytes, int] = {}


def partition_index(key: bytes | None, count: int) -> int:
    """The Java client's default partitioner: murmur2 of the key, positive, modulo count.

    Returns an index into the topic's partitions in ascending order; keyless records go to
    a random partition.
    """
    if key is None:
        return random.randrange(count)
    hashed = _hash_cache.get(key)
    if hashed is None:
        if len(_hash_cache) >= _HASH_CACHE_MAX:
            _hash_cache.clear()
        hashed = _hash_cache[key] = murmur2(key) & 0x7FFFFFFF
    return hashed % count


class ProducerGone(KafkaError):  # type: ignore[misc]  # aiokafka ships no type hints
    """The producer a record was handed to was replaced; the record may succeed on the next."""

    retriable = True


def sender_failure(producer: Any) -> str | None:
    """Why the producer can never deliver again (a bounded reason code), or None while it can.

    aiokafka has no health API: its sender task may be cancelled (every later send then hangs,
    aio-libs/aiokafka#1039) or die of an error that leaves the accumulator failing every send
    (aio-libs/aiokafka#1017), so this reads the two private attributes that tell.
    """
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    if task is not None and task.done():
        # aiokafka's sender routine swallows its own cancellation and returns: a task that
        # ended without an exception was cancelled.
        if task.cancelled() or task.exception() is None:
            return "sender_cancelled"
        return "sender_died"
    if getattr(getattr(producer, "_message_accumulator", None), "_exception", None) is not None:
        return "fatal_error"
    if getattr(producer, _SEQUENCE_BROKEN, False):
        return "fatal_error"
    return None


# A batch failed with one of these: the broker's idea of this producer's sequence numbers no
# longer matches the producer's (a leader that lost the records the producer gave up on, after
# every broker went down: issue 14). aiokafka keeps the sequence and every later batch to the
# partition fails the same way; only a new producer (a new producer id) delivers again.
SEQUENCE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId)
_SEQUENCE_BROKEN = "_event_capture_sequence_broken"


def read_failed_batches(producer: Any) -> None:
    """Mark the failures of a dead producer's batches as read: aiokafka fails them but never
    reads their futures, so asyncio would log each one as "never retrieved" whenever the
    garbage collector finds it (on Python 3.11.7 that can be inside an `ast.parse`, which the
    logging's traceback formatting re-enters: CPython gh-106905). Same private state as above.
    """
    batches = getattr(getattr(producer, "_message_accumulator", None), "_batches", {})
    for queue in batches.values():
        for batch in queue:
            for future in (batch.future, getattr(batch, "_drain_waiter", None)):
                if future is not None and future.done() and not future.cancelled():
                    future.exception()


def outcome_of(exc: BaseException | None) -> Outcome:
    if exc is None:
        return Outcome.OK
    if isinstance(exc, KafkaError) and not exc.retriable:
        return Outcome.FATAL
    return Outcome.RETRIABLE


class PartitionQueue:
    """The open batch of one topic-partition, the sealed ones behind it, and their sender.

    Records go into the open batch through its C builder directly (aiokafka's BatchBuilder
    wrapper adds three Python calls per record); the queue counts them itself and hands the
    count to the wrapper when the batch is sealed, before aiokafka reads it for the batch's
    sequence numbers (idempotence).
    """

    def __init__(
        self, producer: Any, topic: str, partition: int, *, max_pending_batches: int
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._max_pending = max_pending_batches
        # (builder, future of its outcome), sealed, oldest first; the open one is not in here
        self._batches: collections.deque[tuple[Any, asyncio.Future[Outcome]]] = collections.deque()
        self._open: Any = None  # aiokafka's BatchBuilder of the open batch
        self._open_append: Any = None  # its C builder's append
        self._open_count = 0
        self._open_future: asyncio.Future[Outcome] | None = None
        self._sender: asyncio.Task[None] | None = None

    def append(self, record: Record) -> asyncio.Future[Outcome] | Outcome:
        """Add a record; returns the future of its batch, or an outcome when refused."""
        add = self._open_append
        if add is not None:
            count = self._open_count
            if (
                add(count, record.timestamp_ms, record.key, record.value, record.headers)
                is not None
            ):
                self._open_count = count + 1
                return self._open_future  # type: ignore[return-value]  # set with _open
            self._seal()
        if len(self._batches) >= self._max_pending:
            return Outcome.RETRIABLE
        builder = self._producer.create_batch()
        add = builder._builder.append
        if add(0, record.timestamp_ms, record.key, record.value, record.headers) is None:
            log.error("record of %d bytes does not fit an empty batch", len(record.value))
            return Outcome.FATAL
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._open, self._open_append, self._open_count = builder, add, 1
        self._open_future = future
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all(), name=f"kafka-{self._topic}")
        return future

    def _seal(self) -> None:
        """Close the open batch and queue it for its sender."""
        builder, future = self._open, self._open_future
        if builder is None or future is None:
            return
        builder._relative_offset = self._open_count  # what aiokafka's record_count() reads
        builder.close()
        self._batches.append((builder, future))
        self._open = self._open_append = self._open_future = None
        self._open_count = 0

    async def _send_all(self) -> None:
        try:
            while True:
                if not self._batches:
                    self._seal()  # the open batch goes once the one before it is answered
                if not self._batches:
                    break
                builder, future = self._batches.popleft()
                outcome = await self._send(builder)
                if not future.done():
                    future.set_result(outcome)
        finally:
            self._sender = None

    async def _send(self, builder: Any) -> Outcome:
        try:
            delivery = await self._producer.send_batch(
                builder, self._topic, partition=self._partition
            )
            # One batch in flight per partition (as idempotence allows); the next one fills
            # with every request's records meanwhile.
            await delivery
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # any failure is an outcome for the requests
            # repr now: a log record holding `exc` would keep its traceback, and the failed
            # aiokafka futures its frames hold, alive for as long as a handler keeps the record
            log.warning("kafka batch to %s[%d] failed: %s", self._topic, self._partition, repr(exc))
            if isinstance(exc, SEQUENCE_ERRORS):
                setattr(self._producer, _SEQUENCE_BROKEN, True)  # the supervisor replaces it
            if sender_failure(self._producer) is not None:
                # the producer died, not the records: a new producer may take them
                return Outcome.RETRIABLE
            return outcome_of(exc)
        return Outcome.OK

    def fail_all(self, outcome: Outcome) -> None:
        """Answer everything still queued (the sink stops, or its producer was replaced)."""
        self._seal()
        while self._batches:
            _, future = self._batches.popleft()
            if not future.done():
                future.set_result(outcome)
