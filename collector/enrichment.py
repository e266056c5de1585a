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
    # One pass per batch, the branch hoisted out of it (this is the hot path).
    if skew:  # a timedelta is false when zero: then the event time needs no correction
        for event in events:
            event.timestamp = event.occurred_at + skew
            event.sent_at = sent
            event.received_at = received
            event.ip = ip
            event.user_agent = agent
    else:
        for event in events:
            event.timestamp = event.occurred_at
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
