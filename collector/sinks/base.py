"""The sink interface: publish records, answer one outcome per record, never raise for delivery.

A sink must return from `publish` by its deadline; a record it could not confirm by then is
RETRIABLE. Folding outcomes into an HTTP status is the handler's job, not the sink's.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence

import msgspec

Headers = list[tuple[str, bytes]]  # a list: aiokafka's C record builder takes no tuple


class Record(msgspec.Struct, frozen=True, gc=False):
    """One message for a topic. Positional fields: one is built per event on the hot path."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int


class Outcome(enum.Enum):
    OK = "ok"  # durably accepted (Kafka acks=all, or fsynced)
    RETRIABLE = "retriable"  # not accepted now; the same record may succeed later
    FATAL = "fatal"  # the sink will never accept this record


class Sink(abc.ABC):
    """Start/stop around the app's life; `publish` is called concurrently by many requests."""

    name: str = "sink"

    async def start(self) -> None:  # noqa: B027  # optional hook
        """Connect or open; may leave the sink not ready (publish then answers RETRIABLE)."""

    async def stop(self, *, timeout_s: float | None = None) -> None:  # noqa: B027  # optional
        """Flush what is in flight and release resources, giving up after `timeout_s`."""

    @abc.abstractmethod
    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        """Return one outcome per record, in order, within `timeout_s`."""

    def unavailable_reason(self) -> str:
        """Why records were not accepted, in words for an operator (replay prints it when a
        republish gives up); a sink that knows more than "unavailable" says it here."""
        return f"the {self.name} sink is unavailable"

    @abc.abstractmethod
    async def ready(self) -> bool:
        """Whether a publish now could succeed (drives /readyz)."""
