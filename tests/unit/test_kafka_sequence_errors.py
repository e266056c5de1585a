"""A producer whose sequence numbers the broker no longer accepts is marked for replacement.

Found by the "every broker down" fault scenario (issue 14): after all brokers came back, one
partition answered every batch with OUT_OF_ORDER_SEQUENCE_NUMBER and the collector never
recovered. The supervisor must see such a producer as dead (sender_failure) and replace it.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import NotLeaderForPartitionError, OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.producer.message_accumulator import BatchBuilder

from collector.sinks.base import Outcome, Record
from collector.sinks.kafka_batches import PartitionQueue, sender_failure


class FailingProducer:
    """Just enough of aiokafka's producer: every batch fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def create_batch(self) -> Any:
        return BatchBuilder(16_384, 0)

    async def send_batch(self, *_: Any, **__: Any) -> Any:
        raise self.error


RECORD = Record("t", b"k", b"v", [], 0)


@pytest.mark.parametrize("error", [OutOfOrderSequenceNumber(), UnknownProducerId()])
async def test_a_sequence_error_marks_the_producer_for_replacement(error: Exception) -> None:
    producer = FailingProducer(error)
    assert sender_failure(producer) is None
    placed = PartitionQueue(producer, "t", 0, max_pending_batches=4).append(RECORD)
    assert not isinstance(placed, Outcome)
    assert await placed is Outcome.RETRIABLE  # a new producer may deliver it
    assert sender_failure(producer) == "fatal_error"


async def test_other_errors_leave_the_producer_alone() -> None:
    producer = FailingProducer(NotLeaderForPartitionError())
    placed = PartitionQueue(producer, "t", 0, max_pending_batches=4).append(RECORD)
    assert not isinstance(placed, Outcome)
    await placed
    assert sender_failure(producer) is None
