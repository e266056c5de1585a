"""Drive one replay: source -> decode -> filter -> dedup / upgrade / recover -> output.

The runner owns the counts and the order of the steps; it opens the output before reading
(an unwritable path fails before any work) and always closes both ends. A record that does
not decode is counted as malformed with its position and skipped, never a crash.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from collector.limits import DEFAULT_MAX_EVENT_BYTES
from collector.model import DeadLetter
from collector.replay.errors import Unavailable
from collector.replay.outputs import JsonlOutput, OutItem, Output
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
from collector.sinks.base import Record
from event_schemas import SchemaRegistry

if TYPE_CHECKING:
    from collector.routing import RouteTable


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
    writes = output is not None and not plan.dry_run
    if output is not None and not plan.dry_run:
        await output.open()
    # the per-record objects die young; the dedup set and the plan live long, and a full
    # collection every few thousand records would walk them again and again
    global _gc_replays, _gc_saved
    if not _gc_replays:  # replays can overlap in one event loop: the last one out restores
        _gc_saved = gc.get_threshold()
        gc.set_threshold(max(_gc_saved[0], GC_THRESHOLD), *_gc_saved[1:])
    _gc_replays += 1
    try:
        await source.open()
        progress = Progress(progress_to or sys.stderr, source.total)
        deduper = Deduper() if plan.dedup else None
        # JSON lines of values only: the lines are the values, no OutItem is needed
        lines = isinstance(output, JsonlOutput) and not output.with_metadata and writes
        try:
            async for batch in source.batches():
                if lines and plan.recover_with is None:
                    values = _values(batch, plan, summary, deduper)
                    if values:
                        assert isinstance(output, JsonlOutput)
                        summary.written += await output.write_values(values)
                else:
                    items = [o for r in batch for o in _step(r, plan, summary, deduper) or ()]
                    if items and output is not None and writes:
                        summary.written += await output.write(items)
                progress.update(summary.read)
        except Unavailable as exc:
            summary.written += exc.written
            raise ReplayAborted(summary, str(exc)) from exc
        finally:
            progress.finish(summary.read)
    finally:
        _gc_replays -= 1
        if not _gc_replays:
            gc.set_threshold(*_gc_saved)
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


# Allocations between two young-generation collections while a replay runs (Python's is 700).
GC_THRESHOLD = 50_000
_gc_replays = 0  # run_replay calls running now
_gc_saved: tuple[int, ...] = gc.get_threshold()  # the threshold before the first of them


def _values(
    batch: Sequence[SourceRecord | Malformed],
    plan: Plan,
    summary: Summary,
    deduper: Deduper | None,
) -> list[bytes]:
    """The JSON lines (record values) of a batch, without recovery: what `_step` would have
    the output write, with the same counts, but no Selected, Record or OutItem for a record
    of an event topic that passes an empty filter and stays as it is. Any other record (a
    broken one, a dead letter, one to filter, one to upgrade) takes the shared steps."""
    plain = plan.filter.everything
    dead_letter_topic = plan.dead_letter_topic
    upgrader = plan.upgrader
    decode = msgspec.json.decode
    values: list[bytes] = []
    for item in batch:
        doc: Any = None
        if plain and type(item) is SourceRecord and item.topic != dead_letter_topic:
            try:  # noqa: SIM105 (not contextlib.suppress: a context manager per record)
                doc = decode(item.value)
            except msgspec.DecodeError:
                pass  # `_step` decodes it again, to count it with the reason
        if type(doc) is not dict:
            values += [o.record.value for o in _step(item, plan, summary, deduper) or ()]
            continue
        assert isinstance(item, SourceRecord)
        summary.read += 1
        summary.matched += 1
        if deduper is not None and deduper.is_duplicate(doc.get("event_id")):
            summary.deduplicated += 1
            continue
        if upgrader is None or upgrader.is_newest(doc.get("event"), doc.get("version")):
            values.append(item.value)
            continue
        selected = Selected(item, doc, None)
        values += [o.record.value for o in transform_record(selected, plan, summary) or ()]
    return values


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


class Selected(msgspec.Struct, frozen=True, gc=False):
    """A record that decoded and passed the filter; its dead letter when it is one.
    (gc=False: nothing it holds can refer back to it.)"""

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
