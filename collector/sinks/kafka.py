"""Kafka sink: one long-lived idempotent aiokafka producer (acks=all) per process.

aiokafka has no delivery timeout of its own, so every publish is bounded here by the caller's
deadline; a record not acknowledged by then is RETRIABLE (it may still land later: duplicates
are allowed by the at-least-once contract, loss is not). Never blocks past the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from collector.sinks.base import Outcome, Record, Sink
from collector.sinks.kafka_batches import PartitionQueue, outcome_of, partition_index

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
    ) -> None:
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

    async def start(self) -> None:
        """Start the producer; if no broker answers yet, keep trying in the background."""
        try:
            await self._start_producer()
        except KafkaError as exc:
            log.warning("kafka not reachable at start (%s); retrying in the background", exc)
            self._starter = asyncio.create_task(self._keep_starting(), name="kafka-sink-start")
        self._watcher = asyncio.create_task(self._watch(), name="kafka-sink-watch")

    async def _watch(self) -> None:
        """Keep a cheap health verdict, so that publish can refuse at once while Kafka is down."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
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

    async def _keep_starting(self) -> None:
        while self._producer is None:
            await asyncio.sleep(START_RETRY_S)
            try:
                await self._start_producer()
            except KafkaError as exc:
                log.debug("kafka still not reachable: %s", exc)
        log.info("kafka producer started")

    async def stop(self) -> None:
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
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await producer.stop()
            except TimeoutError:
                log.error(
                    "kafka producer did not stop within %.0fs; abandoning records that were"
                    " never acknowledged (their requests were answered 503)",
                    STOP_TIMEOUT_S,
                )

    async def ready(self) -> bool:
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
        outcomes = [Outcome.RETRIABLE] * len(records)
        if producer is None or not records or self.unavailable:
            return outcomes
        pending: list[tuple[int, asyncio.Future[Outcome]]] = []
        try:
            async with asyncio.timeout(timeout_s):
                routes: dict[str, list[PartitionQueue]] = {}
                for index, record in enumerate(records):  # the hot loop: one pass, no awaits
                    queues = routes.get(record.topic)
                    if queues is None:
                        queues = routes[record.topic] = await self._queues_for(
                            producer, record.topic
                        )
                    placed = queues[partition_index(record.key, len(queues))].append(record)
                    if isinstance(placed, Outcome):
                        outcomes[index] = placed
                    else:
                        pending.append((index, placed))
                if pending:
                    await asyncio.wait({future for _, future in pending})
        except TimeoutError:
            log.warning(
                "kafka did not acknowledge %d records within %.1fs", len(records), timeout_s
            )
        except KafkaError as exc:  # metadata for a topic could not be had
            log.warning("kafka refused the records: %r", exc)
            return [outcome_of(exc)] * len(records)
        for index, future in pending:
            if future.done():
                outcomes[index] = future.result()
        return outcomes

    async def _queues_for(self, producer: Any, topic: str) -> list[PartitionQueue]:
        """The topic's partition queues in partition order (the partitioner indexes them)."""
        partitions = sorted(await producer.partitions_for(topic))
        queues = []
        for partition in partitions:
            queue = self._queues.get((topic, partition))
            if queue is None:
                queue = self._queues[(topic, partition)] = PartitionQueue(
                    producer, topic, partition, max_pending_batches=self._max_pending_batches
                )
            queues.append(queue)
        return queues
