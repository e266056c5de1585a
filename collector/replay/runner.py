"""Drive one replay: source -> decode -> filter -> dedup / upgrade / recover -> output.

The runner owns the counts and the order of the steps; it opens the output before reading
(an unwritable path fails before any work) and always closes both ends. A record that does
not decode is counted as malformed with its position and skipped, never a crash.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgspec

from collector.limits import DEFAULT_MAX_EVENT_BYTES
from collector.model import DeadLetter
from collector.replay.errors import Unavailable
from collector.replay.outputs import OutItem, Output
from collector.replay.progress import Progress
from collector.replay.segment import SegmentRecovery
from collector.replay.select import Filter
from collector.replay.sources import Malformed, Source, SourceRecord
from collector.replay.summary import Summary
from collector.replay.transform import (
    Deduper,
    StillInvalid,
    UpgradeFailed,
    Upgrader,
    decode_dead_letter,
    recover,
    upgraded_record,
)
from collector.routing import RouteTable
from collector.sinks.base import Record
from event_schemas import SchemaRegistry


@dataclass(slots=True)
class Plan:
    """What to do with each selected record, beyond writing it."""

    filter: Filter = field(default_factory=Filter)
    dead_letter_topic: str = "events._invalid"
    dedup: bool = False
    upgrader: Upgrader | None = None
    # recovery: re-validate dead letters and route those that pass to their normal topic
    recover_with: RouteTable | None = None
    schemas: SchemaRegistry | None = None  # the current plan, for recovery
    pii_hash_key: bytes | None = None
    segment: SegmentRecovery | None = None  # maps Segment dead letters again (`[segment]`)
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES  # the collector's limit, as it validates
    dry_run: bool = False


async def run_replay(
    source: Source, output: Output | None, plan: Plan, *, progress_to: TextIO | None = None
) -> Summary:
    """Raises BadInput before reading anything; Unavailable with the summary so far."""
    summary = Summary(dry_run=plan.dry_run)
    if output is not None and not plan.dry_run:
        await output.open()
    try:
        await source.open()
        progress = Progress(progress_to or sys.stderr, source.total)
        deduper = Deduper() if plan.dedup else None
        try:
            async for batch in source.batches():
                items = [i for r in batch if (i := _step(r, plan, summary, deduper)) is not None]
                if items and output is not None and not plan.dry_run:
                    summary.written += await output.write([o for i in items for o in i])
                progress.update(summary.read)
        except Unavailable as exc:
            summary.written += exc.written
            raise ReplayAborted(summary, str(exc)) from exc
        finally:
            progress.finish(summary.read)
    finally:
        try:
            await source.close()
        finally:  # the output is closed (flushed, fsynced) even if the source failed to
            if output is not None and not plan.dry_run:
                await output.close()
                for what, why in output.failed_reasons:
                    summary.fail(what, why)
    return summary


class ReplayAborted(Unavailable):
    """The broker went away: the message carries the count written so far."""

    def __init__(self, summary: Summary, cause: str) -> None:
        super().__init__(f"{cause} after {summary.written} records written", written=0)
        self.summary = summary


def _step(
    item: SourceRecord | Malformed, plan: Plan, summary: Summary, deduper: Deduper | None
) -> list[OutItem] | None:
    selected = select_record(item, plan, summary)
    if selected is None:
        return None
    if deduper is not None and deduper.is_duplicate(selected.event_id):
        summary.deduplicated += 1
        return None
    return transform_record(selected, plan, summary)


@dataclass(frozen=True, slots=True)
class Selected:
    """A record that decoded and passed the filter; its dead letter when it is one."""

    item: SourceRecord
    doc: Any
    letter: DeadLetter | None

    @property
    def event_id(self) -> object:
        """What dedup keys on: the event's event_id (a non-string never deduplicates)."""
        return self.doc.get("event_id") if isinstance(self.doc, dict) else None


def select_record(item: SourceRecord | Malformed, plan: Plan, summary: Summary) -> Selected | None:
    """Decode and filter one record (counts read, malformed, matched). Shared by the engines."""
    summary.read += 1
    if isinstance(item, Malformed):
        summary.bad_record(item.topic, item.partition, item.offset, item.reason)
        return None
    letter = None
    try:
        if item.topic == plan.dead_letter_topic:
            letter = decode_dead_letter(item.value)
            doc: Any = _json_or_none(letter.event)
        else:
            doc = msgspec.json.decode(item.value)
            if not isinstance(doc, dict):
                raise msgspec.DecodeError("not a JSON object")
    except msgspec.DecodeError as exc:
        summary.bad_record(item.topic, item.partition, item.offset, f"undecodable value: {exc}")
        return None
    if not plan.filter.matches(doc):
        return None
    summary.matched += 1
    return Selected(item, doc, letter)


def transform_record(selected: Selected, plan: Plan, summary: Summary) -> list[OutItem] | None:
    """Recover or upgrade a selected record (counts recovered, still_invalid, upgraded, failed):
    what to write for it. Runs after dedup; shared by the engines."""
    item, doc, letter = selected.item, selected.doc, selected.letter
    record = Record(item.topic, item.key, item.value, item.headers, item.timestamp_ms)
    if letter is not None and plan.recover_with is not None:
        assert plan.schemas is not None
        outcome = recover(
            letter,
            plan.schemas,
            plan.recover_with,
            pii_hash_key=plan.pii_hash_key,
            headers=item.headers,
            segment=plan.segment,
            max_event_bytes=plan.max_event_bytes,
        )
        if isinstance(outcome, StillInvalid):
            summary.still_invalid += 1
            return None
        summary.recovered += 1
        return [OutItem(item, routed) for routed in outcome]
    if plan.upgrader is not None and letter is None:
        try:
            upgraded = plan.upgrader.upgrade(doc)
        except UpgradeFailed as exc:
            summary.fail(str(doc.get("event_id")), str(exc))
            return None
        if upgraded is not None:
            summary.upgraded += 1
            record = upgraded_record(record, *upgraded)
    return [OutItem(item, record)]


def _json_or_none(raw: msgspec.Raw) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None  # a dead letter may hold bytes that never were JSON: still a dead letter
