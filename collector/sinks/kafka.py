"""Kafka sink: one long-lived idempotent aiokafka producer (acks=all) per process.

aiokafka has no delivery timeout of its own, so every publish is bounded here by the caller's
deadline; a record not acknowledged by then is RETRIABLE (it may still land later: duplicates
are allowed by the at-least-once contract, loss is not). Never blocks past the deadline.
A supervisor replaces a producer whose sender died; it never retries records itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from collector.sinks.base import Outcome, Record, Sink
from collector.sinks.kafka_batches import (
    PartitionQueue,
    ProducerGone,
    outcome_of,
    partition_index,
    read_failed_batches,
    sender_failure,
)

log = logging.getLogger(__name__)

# How long /readyz may spend asking whether a broker connection can be made.
READY_CHECK_TIMEOUT_S = 1.0
# Pause between attempts to start the producer while no broker answers.
START_RETRY_S = 1.0
# How often the watcher asks whether a broker connection can be made, and how many failed
# checks in a row make publish refuse at once instead of waiting out its deadline.
WATCH_INTERVAL_S = 1.0
UNHEALTHY_AFTER_CHECKS = 2
# aiokafka's stop() flushes pending batches and can wait forever while no broker answers
# (aio-libs/aiokafka#1101); shutdown must not.
STOP_TIMEOUT_S = 10.0
# A dead producer is closed before its replacement starts; its sender is gone, so closing only
# drops connections, but aiokafka gives no bound of its own.
DEAD_CLOSE_TIMEOUT_S = 5.0


class KafkaSink(Sink):
    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "event-capture-collector",
        compression_type: str | None = "zstd",
        linger_ms: int = 0,
        request_timeout_ms: int = 10_000,
        max_batch_bytes: int = 524_288,
        max_pending_batches: int = 16,
        on_producer_restart: Callable[[str], None] | None = None,
    ) -> None:
        """`on_producer_restart(reason)` is called each time a dead producer was replaced;
        `reason` is a bounded code (sender_cancelled, sender_died, fatal_error)."""
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": compression_type,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
            "max_batch_size": max_batch_bytes,
        }
        self._max_pending_batches = max_pending_batches
        self._queues: dict[tuple[str, int], PartitionQueue] = {}
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._failed_checks = 0  # consecutive failed readiness checks
        self._on_producer_restart = on_producer_restart

    async def start(self) -> None:
        """Start the producer; if no broker answers yet, keep trying in the background."""
        try:
            await self._start_producer()
        except KafkaError as exc:
            log.warning("kafka not reachable at start (%s); retrying in the background", exc)
            self._starter = asyncio.create_task(self._keep_starting(), name="kafka-sink-start")
        self._watcher = asyncio.create_task(self._watch(), name="kafka-sink-watch")

    async def _watch(self) -> None:
        """Keep a cheap health verdict, so that publish can refuse at once while Kafka is down;
        replace the producer if its sender died (nothing else would notice while idle)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self._check_producer()
            reachable = await self._reachable()
            if reachable is None:
                continue  # no answer in time (a busy loop, say): no verdict either way
            if reachable:
                if self._failed_checks >= UNHEALTHY_AFTER_CHECKS:
                    log.info("kafka reachable again")
                self._failed_checks = 0
            else:
                self._failed_checks += 1
                if self._failed_checks == UNHEALTHY_AFTER_CHECKS:
                    log.warning("kafka unreachable; refusing requests at once until it is back")

    @property
    def unavailable(self) -> bool:
        return self._producer is None or self._failed_checks >= UNHEALTHY_AFTER_CHECKS

    async def _start_producer(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def _keep_starting(self, *, first_delay_s: float = START_RETRY_S) -> None:
        await asyncio.sleep(first_delay_s)
        while True:
            try:
                await self._start_producer()
            except KafkaError as exc:
                log.debug("kafka still not reachable: %s", exc)
            else:
                break
            await asyncio.sleep(START_RETRY_S)
        log.info("kafka producer started")

    def _check_producer(self) -> bool:
        """Whether the producer can deliver; if its sender died, start replacing it."""
        producer = self._producer
        if producer is None:
            return False
        why = sender_failure(producer)
        if why is None:
            return True
        log.error("kafka producer cannot deliver (%s); replacing it", why)
        self._producer = None  # publish refuses and /readyz fails until the new one is up
        queues = list(self._queues.values())
        self._queues.clear()
        self._starter = asyncio.create_task(
            self._replace(producer, queues, why), name="kafka-sink-restart"
        )
        return False

    async def _replace(self, dead: Any, queues: list[PartitionQueue], why: str) -> None:
        # Answer every batch the dead producer holds, and every batch not yet handed to it,
        # so no request waits for a sender that is gone (they get RETRIABLE -> 503).
        dead._message_accumulator.fail_all(ProducerGone(f"the producer was replaced: {why}"))
        for queue in queues:
            queue.fail_all(Outcome.RETRIABLE)
        await _stop_producer(dead, DEAD_CLOSE_TIMEOUT_S)
        read_failed_batches(dead)
        await self._keep_starting(first_delay_s=0)
        log.warning("kafka producer replaced (%s)", why)
        if self._on_producer_restart is not None:
            self._on_producer_restart(why)

    async def stop(self, *, timeout_s: float | None = None) -> None:
        for task in (self._starter, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        producer, self._producer = self._producer, None
        for queue in self._queues.values():
            queue.fail_all(Outcome.RETRIABLE)
        self._queues.clear()
        if producer is not None:
            await _stop_producer(producer, STOP_TIMEOUT_S if timeout_s is None else timeout_s)

    def unavailable_reason(self) -> str:
        return "broker unavailable"

    async def ready(self) -> bool:
        if not self._check_producer():  # being (re)started, or its sender just died
            return False
        return await self._reachable() is True

    async def _reachable(self) -> bool | None:
        """True if a broker connection is up or can be made, False if refused, None if unsure."""
        producer = self._producer
        if producer is None:
            return False
        client = producer.client
        timed_out = False
        for broker in client.cluster.brokers():
            try:
                async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
                    if await client.ready(broker.nodeId):
                        return True
            except TimeoutError:
                timed_out = True
            except (KafkaError, OSError):
                pass
        return None if timed_out else False

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        producer = self._producer
        if producer is None or not records or self.unavailable or not self._check_producer():
            return [Outcome.RETRIABLE] * len(records)
        # per record, in order: its batch's future, or the outcome it was refused with
        placed: list[asyncio.Future[Outcome] | Outcome] = []
        place = placed.append
        futures: set[asyncio.Future[Outcome]] = set()
        try:
            async with asyncio.timeout(timeout_s):
                routes: dict[str, list[PartitionQueue]] = {}
                for record in records:  # the hot loop: one pass, no awaits once routes are known
                    queues = routes.get(record.topic)
                    if queues is None:
                        queues = routes[record.topic] = await self._queues_for(
                            producer, record.topic
                        )
                    place(queues[partition_index(record.key, len(queues))].append(record))
                futures = {p for p in placed if not isinstance(p, Outcome)}  # a few batches
                if futures:
                    await asyncio.wait(futures)
        except TimeoutError:
            log.warning(
                "kafka did not acknowledge %d records within %.1fs", len(records), timeout_s
            )
            futures = {p for p in placed if not isinstance(p, Outcome)}
        except KafkaError as exc:  # no metadata for a topic, or the producer was replaced
            log.warning("kafka refused the records: %r", exc)
            return [outcome_of(exc)] * len(records)
        answered = {future: future.result() for future in futures if future.done()}
        retriable = Outcome.RETRIABLE
        outcomes = [p if isinstance(p, Outcome) else answered.get(p, retriable) for p in placed]
        # records after a timeout inside the loop were never placed
        outcomes += [retriable] * (len(records) - len(outcomes))
        return outcomes

    async def _queues_for(self, producer: Any, topic: str) -> list[PartitionQueue]:
        """The topic's partition queues in partition order (the partitioner indexes them)."""
        partitions = sorted(await producer.partitions_for(topic))
        if producer is not self._producer:  # replaced while we waited: its queues are gone
            raise ProducerGone("the producer was replaced")
        queues = []
        for partition in partitions:
            queue = self._queues.get((topic, partition))
            if queue is None:
                queue = self._queues[(topic, partition)] = PartitionQueue(
                    producer, topic, partition, max_pending_batches=self._max_pending_batches
                )
            queues.append(queue)
        return queues


async def _stop_producer(producer: Any, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await producer.stop()
    except TimeoutError:
        log.error(
            "kafka producer did not stop within %.0fs; abandoning records that were"
            " never acknowledged (their requests were answered 503)",
            timeout_s,
        )
