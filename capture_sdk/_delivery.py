"""What Client and AsyncClient share: the event track() queues and the wire body (encoding,
size limits, chunking). The accounting of outcomes is
`_outcomes` and `_ledger`.

No I/O and no threads here: the clients own sending and waiting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import platform
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from capture_sdk._errors import ConfigurationError, InvalidEventError
from capture_sdk._events import QueuedEvent, WireEvent
from capture_sdk._ids import uuid7
from capture_sdk._validation import LocalValidator
from capture_sdk._version import __version__

log = logging.getLogger("capture_sdk")

LIBRARY = {"name": "capture-sdk-python", "version": __version__}
RUNTIME = {"name": platform.python_implementation().lower(), "version": platform.python_version()}
HOST = {"name": socket.gethostname()}

# gzip level 6 costs several times level 1 for a few percent less on JSON batches.
GZIP_LEVEL = 1
# The collector's defaults: 1 MiB per request body, 32 KiB per event. A batch stays well under
# the body cap (its `sent_at` wrapper adds under 100 bytes); a larger event would be refused.
DEFAULT_MAX_BATCH_BYTES = 512 * 1024
DEFAULT_MAX_EVENT_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """`max_batch_bytes` and `max_event_bytes`, checked once when a client is made."""

    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        # an event over max_batch_bytes (but within max_event_bytes) goes in a request alone
        check_positive(max_batch_bytes=self.max_batch_bytes, max_event_bytes=self.max_event_bytes)

    def too_large(self, size_bytes: int) -> str:
        return f"event JSON is {size_bytes} bytes, over max_event_bytes={self.max_event_bytes}"


def check_positive(**values: float) -> None:
    """Client options that must be > 0 (sizes, intervals, timeouts)."""
    for name, value in values.items():
        if value <= 0:
            raise ConfigurationError(f"{name} must be > 0, got {value!r}")


# Request signing for server keys that require it: the collector's `v1` scheme
# (collector/auth.py), HMAC-SHA256 over "<unix seconds>." and the body as sent.
TIMESTAMP_HEADER = "X-Capture-Timestamp"
SIGNATURE_HEADER = "X-Capture-Signature"


class RequestHeaders:
    """The headers of every POST; with a signing secret, each attempt is signed afresh (a
    retry minutes later must carry a timestamp inside the collector's tolerance window)."""

    __slots__ = ("_secret", "base")

    def __init__(
        self, write_key: str | None, *, use_gzip: bool, signing_secret: str | None = None
    ) -> None:
        self.base = {
            "Content-Type": "application/json",
            "User-Agent": f"capture-sdk-python/{__version__}",
        }
        if write_key:
            self.base["Authorization"] = f"Bearer {write_key}"
        if use_gzip:
            self.base["Content-Encoding"] = "gzip"
        if signing_secret is not None and not signing_secret:
            raise ConfigurationError("signing_secret must not be empty")
        self._secret = signing_secret.encode() if signing_secret else None

    def for_body(self, body: bytes) -> Mapping[str, str]:
        """The headers to send `body` (the bytes on the wire, gzipped when gzip is on) with."""
        if self._secret is None:
            return self.base
        stamp = str(int(time.time()))
        mac = hmac.new(self._secret, stamp.encode() + b".", hashlib.sha256)
        mac.update(body)
        return {**self.base, TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "v1=" + mac.hexdigest()}


def queue_event(
    event: str | msgspec.Struct,
    properties: Mapping[str, Any] | msgspec.Struct | None,
    version: int | None,
    user_id: str | None,
    anonymous_id: str | None,
    occurred_at: dt.datetime | None,
    context: Mapping[str, Any] | None,
) -> QueuedEvent:
    """Check track()'s arguments (InvalidEventError for programmer errors) and build the event.

    `event` is an event name (with `version`, default 1) or a typed event: a msgspec Struct
    whose class names its event and version in `__event_name__` and `__event_version__` (see
    event_schemas.typed), sent as the properties. Only cheap work: the sender formats times,
    adds the library context and encodes. The usual call (a str name, an int version, a dict)
    is checked by exact type first; anything else takes the full checks.
    """
    if type(event) is not str:
        event, properties, version = _typed_event(event, properties, version)
    elif not event:
        raise InvalidEventError(f"event must be a non-empty string, got {event!r}")
    if version is None:
        version = 1
    elif (
        type(version) is not int and (isinstance(version, bool) or not isinstance(version, int))
    ) or version < 1:
        raise InvalidEventError(f"version must be an int >= 1, got {version!r}")
    if user_id is None and anonymous_id is None:
        raise InvalidEventError(f"{event}: give user_id or anonymous_id (or both)")
    if properties is None:
        properties = {}
    elif type(properties) is not dict and not isinstance(properties, Mapping | msgspec.Struct):
        raise InvalidEventError(f"{event}: properties must be a mapping or a msgspec Struct")
    occurred: int | dt.datetime
    if occurred_at is None:
        occurred = time.time_ns()
        event_id = uuid7(occurred)
    elif occurred_at.tzinfo is None:
        raise InvalidEventError(f"{event}: occurred_at must be timezone-aware")
    else:
        occurred = occurred_at
        event_id = uuid7(time.time_ns())
    return QueuedEvent(
        event, version, event_id, occurred, properties, user_id, anonymous_id, context
    )


def _typed_event(
    event: object,
    properties: Mapping[str, Any] | msgspec.Struct | None,
    version: int | None,
) -> tuple[str, Mapping[str, Any] | msgspec.Struct | None, int | None]:
    """A typed event as (name, properties, version); a str subclass passes through."""
    if isinstance(event, msgspec.Struct):
        typed = event
        name = getattr(type(typed), "__event_name__", None)
        typed_version = getattr(type(typed), "__event_version__", None)
        if not isinstance(name, str) or not name:
            raise InvalidEventError(
                f"{type(typed).__name__} is not a typed event: its class has no "
                "`__event_name__` and `__event_version__`"
            )
        if isinstance(typed_version, bool) or not isinstance(typed_version, int):
            raise InvalidEventError(f"{type(typed).__name__}.__event_version__ is not an int")
        if properties is not None:
            raise InvalidEventError(
                f"{name}: a typed event is its own properties; drop properties="
            )
        if version is not None and version != typed_version:
            raise InvalidEventError(
                f"{name}: version={version!r} conflicts with {type(typed).__name__}, "
                f"which is version {typed_version}"
            )
        return name, typed, typed_version
    if not isinstance(event, str) or not event:
        raise InvalidEventError(f"event must be a non-empty string, got {event!r}")
    return event, properties, version


# The context of events whose caller gave none; shared, never mutated (only encoded).
_DEFAULT_CONTEXT = {"library": LIBRARY, "runtime": RUNTIME, "host": HOST}
# ...and its JSON, encoded once: most events carry it, and re-encoding three nested dicts per
# event was a tenth of the sender's time.
_DEFAULT_CONTEXT_RAW = msgspec.Raw(msgspec.json.encode(_DEFAULT_CONTEXT))
# One-entry caches (unix second, its ISO text) and (unix ms, full text): events come in
# bursts, hundreds per millisecond, and formatting a time costs more than the rest of
# wire_event. A tuple is swapped atomically (threads).
_second_text: tuple[int, str] = (-1, "")
_ms_text: tuple[int, str] = (-1, "")


def iso_utc_ms(unix_ns: int) -> str:
    """`2026-11-26T12:00:00.123+00:00`, as datetime.isoformat(timespec="milliseconds")."""
    global _second_text, _ms_text
    unix_ms = unix_ns // 1_000_000
    cached_ms, cached = _ms_text
    if unix_ms == cached_ms:
        return cached
    second, text = _second_text
    unix_s = unix_ms // 1000
    if unix_s != second:
        text = dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_text = (unix_s, text)
    full = f"{text}.{unix_ms % 1000:03d}+00:00"
    _ms_text = (unix_ms, full)
    return full


def wire_event(queued: QueuedEvent) -> WireEvent:
    """Turn what track() queued into the wire format: ISO time, library context added."""
    occurred = queued.occurred
    if type(occurred) is int:
        # the millisecond cache checked here, to save a call for most events of a burst
        cached_ms, occurred_at = _ms_text
        if occurred // 1_000_000 != cached_ms:
            occurred_at = iso_utc_ms(occurred)
    elif isinstance(occurred, int):
        occurred_at = iso_utc_ms(occurred)
    else:
        occurred_at = occurred.isoformat(timespec="milliseconds")
    context: Any = _DEFAULT_CONTEXT_RAW
    if queued.context:
        context = {**_DEFAULT_CONTEXT, **queued.context}
    return WireEvent(
        event=queued.event,
        version=queued.version,
        event_id=queued.event_id,
        occurred_at=occurred_at,
        properties=queued.properties,
        user_id=queued.user_id,
        anonymous_id=queued.anonymous_id,
        context=context,
    )


Chunk = tuple[list[QueuedEvent], bytes]  # events, and their JSON joined by commas


Drop = Callable[[list[QueuedEvent], str, str], None]  # events, reason, detail


# Events encoded by one msgspec call: a list of WireEvents costs the encoder about half what
# one call per event does. Halved (down to single events) when groups keep falling back.
ENCODE_GROUP = 64
GroupResult = Literal["added", "boundary", "single"]


class _Chunker:
    """Writes events' JSON into one growing buffer, cutting chunks at max_batch_bytes.

    `buffer` holds a placeholder byte, then each event's JSON followed by a comma; the
    chunk's payload is what lies between the two. Encoding in place, a group of events at a
    time, costs much less than a bytes object per event joined at the end.
    """

    __slots__ = ("buffer", "chunks", "drops", "encode_into", "events", "limits")

    def __init__(self, encoder: msgspec.json.Encoder, limits: SizeLimits) -> None:
        self.buffer = bytearray(b",")
        self.chunks: list[Chunk] = []
        self.events: list[QueuedEvent] = []
        self.encode_into = encoder.encode_into
        self.limits = limits
        self.drops: dict[str, tuple[list[QueuedEvent], str]] = {}

    def add_group(self, group: list[QueuedEvent]) -> GroupResult:
        """Append a group with one encode if it is certain that each event would have been
        appended alone, in the same chunk ("added"). Otherwise nothing is appended: at
        "boundary" the chunk would pass max_batch_bytes; at "single" an event is spooled,
        not JSON, or maybe too large."""
        try:
            wires = [wire_event(e) for e in group if e.encoded is None]
        except (TypeError, ValueError):
            return "single"  # e.g. a context that is not a mapping: add() drops that one
        if len(wires) != len(group):
            return "single"  # spooled events are appended as encoded at track()
        buffer = self.buffer
        mark = len(buffer)
        try:
            # written over the last comma (or the placeholder): `[e1,...,en]`
            self.encode_into(wires, buffer, mark - 1)
        except (TypeError, ValueError, msgspec.EncodeError):
            result: GroupResult = "single"  # each is tried alone, and the bad one dropped
        else:
            # each event is shorter than the group's JSON; and if the chunk with all of them
            # is within max_batch_bytes, so was it with each prefix of them
            if len(buffer) - mark - 1 > self.limits.max_event_bytes:
                result = "single"
            elif len(buffer) - 2 > self.limits.max_batch_bytes:
                result = "boundary"
            else:
                buffer[mark - 1] = 44  # `[` back to a comma
                buffer[-1] = 44  # and `]` to this group's trailing comma
                self.events += group
                return "added"
        del buffer[mark:]
        buffer[mark - 1] = 44  # the comma (or placeholder) back
        return result

    def add(self, event: QueuedEvent) -> None:
        buffer = self.buffer
        mark = len(buffer)  # where this event starts
        payload = event.encoded  # spooled: encoded (and written to disk) by track()
        try:
            if payload is None:
                self.encode_into(wire_event(event), buffer, -1)
            else:
                buffer += payload
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            del buffer[mark:]  # a failed encode may leave part of the event behind
            self.drop("unserializable", event, f"cannot encode as JSON: {exc}")
            return
        size_bytes = len(buffer) - mark
        if size_bytes > self.limits.max_event_bytes:
            del buffer[mark:]
            self.drop("too_large", event, self.limits.too_large(size_bytes))
            return
        if self.events and len(buffer) - 1 > self.limits.max_batch_bytes:
            # the chunk so far goes alone (less its last comma); this event opens the next
            self.chunks.append((self.events, bytes(buffer[1 : mark - 1])))
            del buffer[1:mark]
            self.events = []
        buffer += b","
        self.events.append(event)

    def drop(self, reason: str, event: QueuedEvent, detail: str) -> None:
        self.drops.setdefault(reason, ([], detail))[0].append(event)

    def finish(self) -> list[Chunk]:
        if self.events:
            self.chunks.append((self.events, bytes(self.buffer[1:-1])))
        return self.chunks


def encode_batch(
    batch: list[QueuedEvent],
    encoder: msgspec.json.Encoder,
    drop: Drop,
    validator: LocalValidator,
    limits: SizeLimits,
) -> list[Chunk]:
    """The events to send, cut into request-sized chunks; the others go to `drop`, counted.

    A chunk closes early when its JSON would pass `limits.max_batch_bytes`; an event whose
    JSON is over `limits.max_event_bytes` is dropped as `too_large` (the collector would
    refuse it, and with it the whole request). The chunks are the same as encoding each
    event alone and joining them would give; most events are encoded a group at a time.
    """
    chunker = _Chunker(encoder, limits)
    group_size = ENCODE_GROUP
    at = 0
    while at < len(batch):
        group = batch[at : at + group_size]
        at += len(group)
        if validator.drops:
            group = _valid(group, validator, chunker)
            if not group:
                continue
        if group_size > 1:
            result = chunker.add_group(group)
            if result == "added":
                continue
            if result == "single":
                # spooled, large or unserializable events: smaller groups, down to one
                group_size //= 2
        for event in group:
            chunker.add(event)
    for reason, (dropped, detail) in chunker.drops.items():
        drop(dropped, reason, detail)  # one log line per reason and batch
    return chunker.finish()


def _valid(
    group: list[QueuedEvent], validator: LocalValidator, chunker: _Chunker
) -> list[QueuedEvent]:
    """validation="drop": the events of `group` that pass the local check (the others are
    dropped as `invalid`). Replayed events carry no properties and are not checked."""
    kept = []
    for event in group:
        problem = None if event.properties is None else validator.problem(event)
        if problem is None:
            kept.append(event)
        else:
            chunker.drop("invalid", event, problem)
    return kept


def batch_body(payload: bytes) -> bytes:
    """`{"sent_at": now, "batch": [payload]}`; payload is the events' JSON joined by commas."""
    sent_at = iso_utc_ms(time.time_ns()).encode()
    return b"".join((b'{"sent_at":"', sent_at, b'","batch":[', payload, b"]}"))  # one copy
