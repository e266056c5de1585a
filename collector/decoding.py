"""Stage: decode a request body (read and inflated by collector/request_body.py) into the
batch envelope and its events.

Refuses the whole request (400/413) only when it cannot be split into events at all, or breaks
a whole-request limit; problems inside single events are the validation stage's business.
Knows nothing of HTTP: replay and the Spark jobs import it without the web server.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from collector.errors import BadRequest, PayloadTooLarge
from collector.limits import (
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_MAX_JSON_DEPTH,
    ENVELOPE_DEPTH,
    exceeds_depth,
    is_utf8,
)
from collector.model import RawBatch, TypedBatch, WireEvent

T = TypeVar("T")

# decode_batch's two tries (DecodedBatch.path names the one that decoded)
TYPED, RAW = "typed", "raw"
_typed_decoder = msgspec.json.Decoder(TypedBatch)
_raw_decoder = msgspec.json.Decoder(RawBatch)


class DecodedBatch:
    """A request body split into events: typed envelopes when all decoded, else raw events."""

    __slots__ = ("_raw", "body", "events", "path", "sent_at")

    def __init__(
        self,
        body: bytes,
        events: list[WireEvent] | None,
        raw: list[msgspec.Raw] | None,
        sent_at: str | None = None,  # the client's send time as sent; enrichment checks it
        path: str = "",  # which of decode_batch's tries decoded it: typed or raw
    ):
        self.body = body
        self.events = events
        self._raw = raw
        self.sent_at = sent_at
        self.path = path

    def raw_events(self) -> list[msgspec.Raw]:
        """Each event's bytes as sent (decoded on demand: only dead letters need them)."""
        if self._raw is None:
            self._raw = _raw_decoder.decode(self.body).batch
        return self._raw

    def __len__(self) -> int:
        return len(self.events) if self.events is not None else len(self.raw_events())


def decode_batch(
    body: bytes,
    *,
    max_events: int = DEFAULT_MAX_BATCH_EVENTS,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> DecodedBatch:
    """One typed pass over the whole body; only if an envelope is bad, split it raw instead.

    `max_json_depth` bounds every event's properties and context (they are passed on as
    bytes, so nothing else would bound what consumers downstream must parse).
    """
    require_utf8(body)
    try:
        typed = _typed_decoder.decode(body)
        batch = DecodedBatch(body, typed.batch, None, typed.sent_at, TYPED)
    except msgspec.ValidationError:
        # some event (or the envelope) is off: find out which
        raw = decode_envelope(
            body, _raw_decoder, shape='a batch envelope {"batch": [...]}', depth=max_json_depth
        )
        batch = DecodedBatch(body, None, raw.batch, raw.sent_at, RAW)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", reason="malformed_json") from exc
    except RecursionError as exc:
        raise too_deep(max_json_depth) from exc
    require_depth(body, max_json_depth, ENVELOPE_DEPTH)
    require_batch_size(len(batch), max_events)
    return batch


# The whole-request checks, shared by every envelope the collector accepts (native, Segment).


def require_utf8(body: bytes) -> None:
    if not is_utf8(body):
        # msgspec does not check the encoding of `Raw` fields, and a schema's str field would
        # raise UnicodeDecodeError later: refuse here, once per request.
        raise BadRequest("body is not valid UTF-8", reason="malformed_json")


def decode_envelope(body: bytes, decoder: msgspec.json.Decoder[T], *, shape: str, depth: int) -> T:
    """Decode a request's envelope; every way it can fail is a 400 naming what was expected."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"body is not {shape}: {exc}", reason="invalid_envelope") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", reason="malformed_json") from exc
    except RecursionError as exc:
        raise too_deep(depth) from exc


def require_depth(body: bytes, max_json_depth: int, envelope_depth: int) -> None:
    """Every event's content within `max_json_depth`, below `envelope_depth` wrapping levels."""
    if exceeds_depth(body, max_json_depth + envelope_depth):
        raise too_deep(max_json_depth)


def require_batch_size(events: int, max_events: int) -> None:
    if events > max_events:
        raise PayloadTooLarge(
            f"batch of {events} events exceeds the limit of {max_events}; send smaller batches",
            reason="too_many_events",
        )


def too_deep(max_json_depth: int) -> BadRequest:
    # msgspec itself stops at Python's recursion limit with RecursionError (msgspec#1033).
    return BadRequest(
        f"JSON nests deeper than {max_json_depth} levels inside an event", reason="too_deep"
    )
