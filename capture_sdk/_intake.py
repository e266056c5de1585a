"""What `track()` does with an event once it is built, shared by Client and AsyncClient:
the strict local check, sampling by event name, and (with the disk spool) the spool write.

Runs on the caller's thread (or the event loop): no network, no fsync, nothing that waits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import msgspec

from capture_sdk._delivery import SizeLimits, wire_event
from capture_sdk._errors import ConfigurationError, InvalidEventError
from capture_sdk._events import QueuedEvent
from capture_sdk._outcomes import Outcomes
from capture_sdk._spool import DEFAULT_SEGMENT_BYTES, Spool
from capture_sdk._validation import LocalValidator

# Sampling reads the last 12 hex digits of the UUIDv7 event_id: 48 random bits.
_SAMPLE_BITS = 48


def sample_thresholds(sample_rates: Mapping[str, float] | None) -> dict[str, int]:
    """Per event name, the bound below which an event_id's random bits are kept."""
    thresholds: dict[str, int] = {}
    for name, rate in (sample_rates or {}).items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ConfigurationError(f"sample_rates[{name!r}] must be in [0, 1], got {rate!r}")
        if rate < 1:
            thresholds[name] = int(rate * (1 << _SAMPLE_BITS))
    return thresholds


def is_sampled_in(event_id: str, threshold: int) -> bool:
    """Deterministic by event_id: a retry, a replay or a test gets the same answer."""
    return int(event_id[-12:], 16) < threshold


def open_spool(
    spool_dir: str | os.PathLike[str] | None, max_bytes: int
) -> tuple[Spool | None, list[QueuedEvent], int]:
    """The client's spool (or None), the events a previous process left, and how many of
    its records were corrupt."""
    if spool_dir is None:
        return None, [], 0
    spool = Spool(spool_dir, max_bytes=max_bytes, segment_bytes=DEFAULT_SEGMENT_BYTES)
    replay, corrupt = spool.open()
    return spool, replay, corrupt


class Intake:
    """track()'s checks after `queue_event`; one per client."""

    def __init__(
        self,
        *,
        validator: LocalValidator,
        outcomes: Outcomes,
        limits: SizeLimits,
        sample_rates: Mapping[str, float] | None,
        spool: Spool | None,
    ) -> None:
        self._validator = validator
        self._thresholds = sample_thresholds(sample_rates)
        self.outcomes = outcomes
        self.limits = limits
        self.spool = spool
        # whether `admit` can say no at all: track() skips the call when it cannot
        self.checks = self._validator.strict or bool(self._thresholds)

    def admit(self, queued: QueuedEvent) -> bool:
        """False if sampling leaves the event out (counted as `sampled_out`, not a drop).

        Raises InvalidEventError with `validation="strict"`, before sampling, so that a
        programmer error shows every time, not at the sample rate.
        """
        if self._validator.strict:
            problem = self._validator.problem(queued)
            if problem is not None:
                raise InvalidEventError(problem)
        if self._thresholds:
            threshold = self._thresholds.get(queued.event)
            if threshold is not None and not is_sampled_in(queued.event_id, threshold):
                self.outcomes.counters.add("sampled_out")
                return False
        return True

    def spool_and_queue(
        self, queued: QueuedEvent, enqueue: Callable[[QueuedEvent], bool], closed: bool
    ) -> None:
        """Encode on the caller's thread and write() the record before returning (SIGKILL-safe).

        `enqueue` puts the event in the client's memory queue (False: full or closed).
        """
        assert self.spool is not None
        try:
            payload = msgspec.json.encode(wire_event(queued))
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            self.outcomes.refused(queued, "unserializable", f"cannot encode as JSON: {exc}")
            return
        if len(payload) > self.limits.max_event_bytes:
            # known here for free: never spool what the collector would refuse
            self.outcomes.refused(queued, "too_large", self.limits.too_large(len(payload)))
            return

        def enqueue_in(segment: int) -> bool:
            # segment -1: no record on disk (the write failed)
            return enqueue(msgspec.structs.replace(queued, encoded=payload, segment=segment))

        result = self.spool.append(payload, enqueue_in)
        if result == "full":
            self.outcomes.refused(queued, "spool_full", "spool is full")
        elif result == "refused":
            self.outcomes.not_queued(queued, closed=closed)
        elif result == "unspooled":
            # queued in memory only: delivered or counted like any other event
            self.outcomes.counters.add("spool_errors")
