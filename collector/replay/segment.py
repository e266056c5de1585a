"""Recovery of Segment dead letters: map the Segment message again, then validate it.

A dead letter from `/compat/segment` holds the Segment message as sent and says so in its
headers (collector.segment.mapping.API_HEADER). This module runs the collector's own mapping
and validation stages on it, as the Segment handler does; it must not enrich, route or write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from collector.model import DeadLetter, WireEvent
from event_schemas import SchemaRegistry

if TYPE_CHECKING:
    from collector.segment.config import SegmentConfig
    from collector.validation import Annotated, InvalidEvent

Headers = Sequence[tuple[str, bytes]]


def is_segment(headers: Headers) -> bool:
    """Whether the dead letter came through the Segment API (marked, never guessed)."""
    # imported here: collector.segment brings in the HTTP side, which replay does not need
    from collector.segment.mapping import API_HEADER, SEGMENT_API

    return (API_HEADER, SEGMENT_API) in headers


class SegmentRecovery:
    """Maps Segment dead letters with the `[segment]` config against one tracking plan.

    One Mapper for the whole replay: it caches name resolution, and the plan is fixed.
    """

    def __init__(self, config: SegmentConfig, schemas: SchemaRegistry, max_event_bytes: int):
        from collector.segment.mapping import Mapper

        self._mapper = Mapper(config, schemas)
        self._schemas = schemas
        self._max_event_bytes = max_event_bytes

    def validate(
        self, letter: DeadLetter, headers: Headers
    ) -> tuple[WireEvent, list[Annotated]] | InvalidEvent:
        """The event the collector would accept for this message now, or why not."""
        from collector.decoding import DecodedBatch
        from collector.segment.mapping import TYPE_HEADER
        from collector.validation import InvalidEvent, validate_batch

        forced = next((v.decode("utf-8", "replace") for k, v in headers if k == TYPE_HEADER), None)
        # the collector's receive time also stands in for a message without a timestamp
        mapped = self._mapper.map_message(
            letter.index, letter.event, received_at=letter.received_at, forced_type=forced
        )
        if isinstance(mapped, InvalidEvent):
            return mapped
        # the same stage and limit as the Segment handler, on a batch of this one event
        batch = DecodedBatch(bytes(letter.event), [mapped], [letter.event], letter.sent_at)
        verdict = validate_batch(batch, self._schemas, max_event_bytes=self._max_event_bytes)
        if verdict.invalid:
            return verdict.invalid[0]
        return verdict.valid[0], verdict.annotated
