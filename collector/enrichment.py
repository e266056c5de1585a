"""Stage: set the server-owned fields of valid events. Pure: the receive time is passed in.

Whatever a client sent as `received_at` is replaced here, before anything is written.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from collector.model import WireEvent

_encoder = msgspec.json.Encoder()


def enrich(events: list[WireEvent], *, received_at: dt.datetime) -> None:
    stamp = msgspec.Raw(_encoder.encode(received_at))  # encoded once, shared by the batch
    for event in events:
        event.received_at = stamp
