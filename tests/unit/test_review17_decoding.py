"""Review of issue 17's strict decode (since removed; these now guard decode_batch itself):
a body that nests too deep is refused 400 too_deep even when the deep value sits under a key
sent twice (JSON keeps the last one, so the decoded event never holds the deep copy, but the
body as sent still nests too deep)."""

from __future__ import annotations

import pytest

from collector.decoding import decode_batch
from collector.errors import CollectorError

EVENT = (
    '"event":"a","version":1,"event_id":"0190a0a0-0000-7000-8000-000000000000",'
    '"occurred_at":"2026-01-01T00:00:00Z","anonymous_id":"x"'
)
DEEP = "[" * 60 + "]" * 60  # far past the default limit of 32 levels


def body(event_fields: str, after_batch: str = "") -> bytes:
    return ('{"batch":[{' + EVENT + "," + event_fields + "}]" + after_batch + "}").encode()


HIDDEN = {
    "properties twice": body(f'"properties":{DEEP},"properties":{{}}'),
    "context twice": body(f'"properties":{{}},"context":{DEEP},"context":{{}}'),
    "timestamp twice": body(f'"timestamp":{DEEP},"timestamp":null,"properties":{{}}'),
    "batch twice": body(f'"properties":{DEEP}', after_batch=',"batch":[]'),
}


@pytest.mark.parametrize("name", list(HIDDEN))
def test_duplicate_key_cannot_hide_depth(name: str) -> None:
    with pytest.raises(CollectorError) as caught:
        decode_batch(HIDDEN[name])
    assert caught.value.reason == "too_deep"


def test_bracket_in_a_string_is_not_depth() -> None:
    fields = '"properties":{"k":"[[{"},"context":{"a":"]"}'
    decoded = decode_batch(body(fields).replace(b'"anonymous_id":"x"', b'"anonymous_id":"x[{"'))
    assert decoded.events is not None
    assert decoded.events[0].anonymous_id == "x[{"
