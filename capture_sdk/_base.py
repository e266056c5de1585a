"""What Client and AsyncClient share on the application's side: `track()`, `on_error`, and
letting go of the parent's connection and spool in a forked child.

Each client supplies its own queue (`_put`). Nothing here starts a thread or a task,
waits, or does I/O beyond the spool's plain write (in `Intake`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from capture_sdk._async_transport import AsyncTransport
from capture_sdk._delivery import SizeLimits, queue_event
from capture_sdk._events import DroppedEvent, QueuedEvent
from capture_sdk._intake import Intake
from capture_sdk._ledger import Ledger
from capture_sdk._outcomes import Counters, Outcomes
from capture_sdk._spool import Spool
from capture_sdk._transport import Transport
from capture_sdk._validation import LocalValidator

log = logging.getLogger("capture_sdk")

OnError = Callable[[Sequence[DroppedEvent]], None]


class ClientBase:
    _disabled: bool
    _counters: Counters
    _intake: Intake
    _outcomes: Outcomes
    _ledger: Ledger
    _on_error: OnError | None
    _spool: Spool | None
    _transport: Transport | AsyncTransport
    _validator: LocalValidator
    _limits: SizeLimits
    _sample_rates: Mapping[str, float] | None
    # Puts the event in the client's memory queue; False if it is full or the client closed.
    # An attribute, not a method, so that Client can hand track() its buffer's `put` itself.
    _put: Callable[[QueuedEvent], bool]
    # whether track() calls `_queued` (AsyncClient: to start its sender); Client does not
    _starts_sender = False

    def _fresh_accounting(self) -> None:
        """New counters, ledger and intake: at construction, and in a forked child."""
        self._counters = Counters()
        self._outcomes = Outcomes(self._counters, self._report)
        # the spool is read through a reference: a forked child runs without it
        self._ledger = Ledger(self._outcomes, lambda: self._spool)
        self._intake = Intake(
            validator=self._validator,
            outcomes=self._outcomes,
            limits=self._limits,
            sample_rates=self._sample_rates,
            spool=self._spool,
        )

    def _requeue_spooled(self, replay: list[QueuedEvent], corrupt: int) -> None:
        """Count what the spool held at start and queue it (past max_queue_size: these
        events were accepted by an earlier process, and refusing them would lose them)."""
        if corrupt:
            self._counters.drop("spool_corrupt", corrupt)
        if replay:
            self._counters.add("replayed", len(replay))
            self._requeue(replay)

    def _requeue(self, events: list[QueuedEvent]) -> None:
        raise NotImplementedError

    def track(
        self,
        event: str | msgspec.Struct,
        properties: Mapping[str, Any] | msgspec.Struct | None = None,
        *,
        version: int | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        occurred_at: dt.datetime | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one event and return its event_id (kept across retries, for dedup).

        Never blocks on the network and never awaits. `event` is the event name, with
        `properties` and `version` (default 1), or a typed event such as
        `event_schemas.typed.TrackPlayedV2(...)`, which carries its name, version and
        properties (passing `properties=` too, or another version, is an InvalidEventError).

        With `disabled=True` it returns "" at once: no event is made, checked or counted.
        An event that `sample_rates` leaves out still gets its event_id back.
        """
        if self._disabled:
            return ""
        queued = queue_event(
            event, properties, version, user_id, anonymous_id, occurred_at, context
        )
        intake = self._intake
        if intake.checks and not intake.admit(queued):
            return queued.event_id
        if self._spool is not None:
            intake.spool_and_queue(queued, self._put, self._is_closed())
        elif not self._put(queued):
            self._outcomes.not_queued(queued, closed=self._is_closed())
        if self._starts_sender:
            self._queued()
        return queued.event_id

    def _is_closed(self) -> bool:
        raise NotImplementedError

    def _queued(self) -> None:
        """Runs after every track() that got past sampling (AsyncClient starts its sender)."""

    def _let_go_after_fork(self) -> None:
        """In a forked child: the connection and the spool files are the parent's."""
        self._transport.after_fork()
        if self._spool is not None:
            # one spool directory belongs to one process (its lock file says so): the child
            # runs without a spool rather than share the parent's files
            self._spool.abandon_after_fork()
            self._spool = None

    def _report(self, dropped: Sequence[DroppedEvent]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(dropped)
        except Exception:  # a broken callback must not break delivery
            log.exception("capture_sdk on_error callback raised")
