"""Stage: set the server-owned fields of valid events and apply the schemas' PII rules.

Pure: the receive time and the hashing key are passed in. Whatever a client sent as
`received_at` is replaced here, and PII-tagged properties are dropped or hashed, before
anything is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence

import msgspec

from collector.model import WireEvent
from collector.validation import Annotated

_encoder = msgspec.json.Encoder()


def enrich(
    events: list[WireEvent],
    *,
    received_at: dt.datetime,
    annotated: Sequence[Annotated] = (),
    pii_hash_key: bytes | None = None,
) -> None:
    stamp = msgspec.Raw(_encoder.encode(received_at))  # encoded once, shared by the batch
    for event in events:
        event.received_at = stamp
    for position, schema, properties in annotated:
        if schema.metadata.pii:
            events[position].properties = _protect(properties, schema.metadata.pii, pii_hash_key)


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
