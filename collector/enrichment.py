"""Stage: add server-owned fields to a valid event. Pure: the receive time is passed in.

Client values never reach server-owned fields: the envelope type has no slot for them.
"""

from __future__ import annotations

import datetime as dt

from collector.model import EnrichedEvent
from collector.validation import ValidEvent


def enrich(event: ValidEvent, *, received_at: dt.datetime) -> EnrichedEvent:
    envelope = event.envelope
    return EnrichedEvent(
        event=envelope.event,
        version=envelope.version,
        event_id=envelope.event_id,
        occurred_at=envelope.occurred_at,
        received_at=received_at,
        user_id=envelope.user_id,
        anonymous_id=envelope.anonymous_id,
        properties=envelope.properties,
        context=envelope.context,
    )
