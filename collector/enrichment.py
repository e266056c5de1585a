"""Stage: set the server-owned fields of valid events and apply the schemas' PII rules.

Pure: the receive time, the request's context and the hashing key are passed in; this module
must not read the clock, the request or settings itself. Whatever a client sent under a
server-owned name is replaced here, and PII-tagged properties are dropped or hashed, before
anything is written. What is the same for the whole request is computed once per batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Annotated as Constrained

import msgspec

from collector.client_ip import RequestContext
from collector.model import NULL, WireEvent
from collector.validation import Annotated

_encoder = msgspec.json.Encoder()
_NO_CONTEXT = RequestContext()

# How far after its receipt an event's time may lie before it is taken as absurd: as PostHog
# does, 23 h, which a client that labels local time as UTC (offsets reach +14:00) stays within.
MAX_AHEAD = dt.timedelta(hours=23)
# Every timestamp written converts to UTC (what consumers and Parquet do first).
EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)

# RFC 3339 with an offset, as the SDK writes it; anything else means "no usable sent_at".
SentAt = Constrained[dt.datetime, msgspec.Meta(tz=True)]


def enrich(
    events: list[WireEvent],
    *,
    received_at: dt.datetime,
    sent_at: str | None = None,
    request: RequestContext = _NO_CONTEXT,
    annotated: Sequence[Annotated] = (),
    pii_hash_key: bytes | None = None,
) -> None:
    """Set every server-owned field of `events` in place (see WireEvent for their meaning)."""
    encode = _encoder.encode
    # Encoded once, shared by the batch: the per-event cost is one attribute store each.
    received = msgspec.Raw(encode(received_at))
    skew = clock_skew(sent_at, received_at)
    sent = msgspec.Raw(encode(sent_at)) if skew is not None else NULL
    ip = msgspec.Raw(encode(request.ip)) if request.ip is not None else NULL
    agent = msgspec.Raw(encode(request.user_agent)) if request.user_agent is not None else NULL
    latest = _plus(received_at, MAX_AHEAD)
    # The one place a client's time becomes `timestamp`, and no time can make it raise: a
    # correction that leaves Python's datetime range, lands before 0001-01-01Z (an offset such
    # as +23:59 at the start of year 1) or more than MAX_AHEAD after the receipt is absurd
    # (an event cannot happen after it was received), and the receipt is written instead.
    # This is the hot path: the branch is hoisted out of the loop, and the range is checked
    # against bounds on the event's own wall clock. Comparing datetimes of different tzinfo
    # costs CPython a UTC conversion each (~2 us); with the same tzinfo object (msgspec gives
    # one per distinct offset) it is a field compare, and a batch rarely has more than one.
    zone: dt.tzinfo | None = dt.UTC
    low, high = _window(dt.UTC, latest)
    if skew:  # a timedelta is false when zero: then the event time needs no correction
        for event in events:
            try:
                timestamp = event.occurred_at + skew
            except OverflowError:
                timestamp = received_at
            if timestamp.tzinfo is not zone:
                zone = timestamp.tzinfo
                low, high = _window(zone, latest)
            event.timestamp = timestamp if low <= timestamp <= high else received_at
            event.sent_at = sent
            event.received_at = received
            event.ip = ip
            event.user_agent = agent
    else:
        for event in events:
            timestamp = event.occurred_at
            if timestamp.tzinfo is not zone:
                zone = timestamp.tzinfo
                low, high = _window(zone, latest)
            event.timestamp = timestamp if low <= timestamp <= high else received_at
            event.sent_at = sent
            event.received_at = received
            event.ip = ip
            event.user_agent = agent
    for position, schema, properties in annotated:
        if schema.metadata.pii:
            events[position].properties = _protect(properties, schema.metadata.pii, pii_hash_key)


def clock_skew(sent_at: str | None, received_at: dt.datetime) -> dt.timedelta | None:
    """How far the client's clock is behind ours: `received_at - sent_at` (None: unknown).

    As Segment and PostHog do: the SDK stamps `sent_at` with the same clock as each event's
    `occurred_at`, so adding this to `occurred_at` moves the event onto the server's clock.
    The network transit time is counted as skew too (it is small next to a wrong clock).
    """
    if sent_at is None:
        return None
    try:
        sent = msgspec.convert(sent_at, SentAt)
    except msgspec.ValidationError:
        return None
    return received_at - sent


def pii_hash(value: str, key: bytes | None) -> str:
    """HMAC-SHA256 with the collector's key; plain SHA-256 (pseudonymous only) without one."""
    if key is None:
        return hashlib.sha256(value.encode()).hexdigest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _protect(
    properties: msgspec.Struct, rules: Mapping[str, str], key: bytes | None
) -> msgspec.Raw:
    values = msgspec.to_builtins(properties)  # JSON names; absent optional fields left out
    for name, action in rules.items():
        if name not in values:
            continue
        if action == "drop":
            del values[name]
        elif values[name] is not None:
            values[name] = pii_hash(values[name], key)
    return msgspec.Raw(_encoder.encode(values))


def _window(zone: dt.tzinfo | None, latest: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """EARLIEST and `latest` as times on `zone`'s wall clock, the same instants exactly.

    A bound that does not fit there is replaced by that zone's end of the range: every time
    it can hold lies inside it (EARLIEST in -05:00 would be in year 0, so all of year 1 in
    -05:00 is after it). Only a fixed offset makes a wall-clock compare exact; any other
    tzinfo keeps the UTC bounds (then each compare converts).
    """
    if not isinstance(zone, dt.timezone):
        return EARLIEST, latest
    try:
        low = EARLIEST.astimezone(zone)
    except OverflowError:
        low = dt.datetime.min.replace(tzinfo=zone)
    try:
        high = latest.astimezone(zone)
    except OverflowError:
        high = dt.datetime.max.replace(tzinfo=zone)
    return low, high


def _plus(moment: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    try:
        return moment + delta
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
