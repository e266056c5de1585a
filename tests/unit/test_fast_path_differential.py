"""The ingest fast path against the per-event path: the same records and verdicts (issue #17).

`decode_batch` tries one typed decode of the whole body, then (an envelope off) the raw split.
A strict first try that measured depth over properties and contexts only was here for a while;
once safe against keys sent twice it saved nothing (0.98-1.00x) and was removed, and these
bodies stay as the guard of any shortcut that comes next. Every body runs through decode_batch
and through a reference that always takes the slowest way (raw split, whole body measured,
each event decoded alone); validation, enrichment and routing follow as in handlers._ingest.
Both must refuse the same requests with the same reason, or give the same verdicts and
byte-identical records. Bodies come from the fuzzer's strategies (tests/unit/test_fuzz.py)
and from hand-written hostile inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.client_ip import RequestContext
from collector.decoding import (
    RAW,
    TYPED,
    DecodedBatch,
    _raw_decoder,
    decode_batch,
    decode_envelope,
    require_batch_size,
    require_depth,
    require_utf8,
)
from collector.enrichment import enrich
from collector.errors import CollectorError
from collector.limits import ENVELOPE_DEPTH
from collector.model import WireEvent
from collector.routing import RouteTable, Topics, route
from collector.validation import validate_batch
from event_schemas import SchemaRegistry, load_registry
from tests.conftest import FIXED_NOW
from tests.factories import page_viewed, track_played
from tests.unit.test_fuzz import documents, json_values, native_events

SCHEMAS: SchemaRegistry = load_registry()
TABLE = RouteTable(Topics(), SCHEMAS)
CLIENT = RequestContext(ip="203.0.113.0", user_agent="capture-sdk-python/0.1.0")
MAX_EVENTS = 8  # small, so that the fuzzer's "many" bodies reach the limit
MAX_DEPTH = 6  # small, so that generated JSON reaches it
SERVER_OWNED = ("timestamp", "sent_at", "received_at", "ip", "user_agent")

# ("refused", reason), or (sent_at, accepted count, rejections, records)
Outcome = tuple[Any, ...]


def _pipeline(batch: DecodedBatch) -> Outcome:
    verdict = validate_batch(batch, SCHEMAS)
    enrich(
        verdict.valid,
        received_at=FIXED_NOW,
        sent_at=batch.sent_at,
        request=CLIENT,
        annotated=verdict.annotated,
    )
    records = route(
        verdict.valid,
        verdict.invalid,
        table=TABLE,
        received_at=FIXED_NOW,
        annotated=verdict.annotated,
        sent_at=batch.sent_at,
        request=CLIENT,
    )
    rejected = [(r.index, r.event_id, r.reason, r.errors) for r in verdict.invalid]
    return batch.sent_at, len(verdict.valid), rejected, records


def fast(body: bytes) -> tuple[Outcome, str | None]:
    """What the collector does (and which of decode_batch's tries decoded the body)."""
    try:
        batch = decode_batch(body, max_events=MAX_EVENTS, max_json_depth=MAX_DEPTH)
    except CollectorError as exc:
        return ("refused", exc.reason), None
    return _pipeline(batch), batch.path


def slow(body: bytes) -> Outcome:
    """The reference: the raw split, the whole body measured, every event decoded alone."""
    try:
        require_utf8(body)
        raw = decode_envelope(body, _raw_decoder, shape="a batch envelope", depth=MAX_DEPTH)
        require_depth(body, MAX_DEPTH, ENVELOPE_DEPTH)
        require_batch_size(len(raw.batch), MAX_EVENTS)
    except CollectorError as exc:
        return ("refused", exc.reason)
    return _pipeline(DecodedBatch(body, None, raw.batch, raw.sent_at, RAW))


def envelope_keys(value: bytes) -> list[str]:
    """The record value's top-level keys in order, duplicates kept (json calls the hook for
    the outermost object last)."""
    seen: list[list[str]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen.append([name for name, _ in pairs])
        return dict(pairs)

    json.loads(value, object_pairs_hook=hook)
    return seen[-1]


def check_same(body: bytes) -> str | None:
    """Both paths agree on `body`; every accepted value holds one of each key and the
    server's own values in the server-owned fields. Returns the fast path's decode try."""
    got, path = fast(body)
    assert got == slow(body), body
    if got[0] == "refused":
        return path
    _, accepted, _, records = got
    for record in records[:accepted]:  # the events' records come first, dead letters last
        # one of each envelope key, in WireEvent's order (properties and context are
        # forwarded as sent: a duplicate inside properties was validated at every occurrence)
        assert envelope_keys(record.value) == list(WireEvent.__struct_fields__)
        value = json.loads(record.value)
        assert value["received_at"] == "2026-11-26T12:00:05Z"
        assert value["ip"] == CLIENT.ip
        assert value["user_agent"] == CLIENT.user_agent
        assert value["sent_at"] in (None, got[0])
        assert isinstance(value["timestamp"], str)
        assert dt.datetime.fromisoformat(value["timestamp"]) <= FIXED_NOW + dt.timedelta(hours=23)
    return path


# --- the fuzzer's corpus ----------------------------------------------------------------------

SEARCH = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SEARCH
@given(documents("/v1/batch"))
def test_the_fuzzers_bodies_get_the_same_answer_either_way(document: tuple[bytes, Any]) -> None:
    check_same(document[0])


@st.composite
def plausible_batches(draw: st.DrawFn) -> bytes:
    """Mostly valid events, as an SDK sends them, some with one field changed."""
    events: list[Any] = []
    for _ in range(draw(st.integers(1, MAX_EVENTS))):
        if draw(st.integers(0, 3)):
            make = draw(st.sampled_from([track_played, page_viewed]))
            event: Any = make(event_id=str(uuid.UUID(int=draw(st.integers(0, 2**64)))))
            if draw(st.booleans()):
                event["context"] = draw(json_values)
        else:
            event = draw(native_events())
        events.append(event)
    document: dict[str, Any] = {"batch": events}
    if draw(st.booleans()):
        document["sent_at"] = draw(st.sampled_from(["2026-11-26T12:00:01Z", "nonsense", None]))
    return json.dumps(document).encode()


@SEARCH
@given(plausible_batches())
def test_plausible_batches_get_the_same_answer_either_way(body: bytes) -> None:
    check_same(body)


# --- hostile inputs ---------------------------------------------------------------------------

TRACK = track_played(event_id="0190b6a4-0000-7000-8000-000000000001")
TRACK_BYTES = msgspec.json.encode(TRACK)


def body_of(*events: bytes, sent_at: bytes = b'"2026-11-26T12:00:01Z"') -> bytes:
    return b'{"sent_at":' + sent_at + b',"batch":[' + b",".join(events) + b"]}"


def with_field(name: str, value: bytes, event: bytes = TRACK_BYTES) -> bytes:
    """`event` with one more member, placed last (after any existing one of that name)."""
    return event[:-1] + b',"' + name.encode() + b'":' + value + b"}"


def with_properties(properties: bytes) -> bytes:
    start = TRACK_BYTES.index(b'"properties":') + len(b'"properties":')
    end = TRACK_BYTES.index(b"}", start) + 1
    return TRACK_BYTES[:start] + properties + TRACK_BYTES[end:]


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


PROPS = b'"track_id":"t","artist_id":"a","position_ms":1'
HOSTILE: list[Any] = [
    pytest.param(body_of(TRACK_BYTES), TYPED, id="plain"),
    # duplicate keys: the envelope is re-encoded with one key (the last); properties are
    # forwarded as sent, every occurrence validated
    pytest.param(body_of(with_field("user_id", b'"other"')), TYPED, id="dup-user-id"),
    pytest.param(body_of(with_field("event", b'"page_viewed"')), TYPED, id="dup-event"),
    pytest.param(body_of(with_field("version", b"2")), TYPED, id="dup-version"),
    pytest.param(body_of(with_field("version", b"7")), TYPED, id="dup-version-unknown"),
    pytest.param(body_of(with_field("properties", b'{"path":"/x"}')), TYPED, id="dup-properties"),
    pytest.param(body_of(with_field("context", deep(9))), None, id="dup-context-deep"),
    pytest.param(
        body_of(with_properties(b"{" + PROPS + b',"position_ms":5}')), TYPED, id="dup-prop-ok"
    ),
    pytest.param(
        body_of(with_properties(b"{" + PROPS + b',"position_ms":-1}')), TYPED, id="dup-prop-bad"
    ),
    pytest.param(
        b'{"batch":[' + TRACK_BYTES + b'],"batch":[' + TRACK_BYTES + b"," + TRACK_BYTES + b"]}",
        TYPED,
        id="dup-batch",
    ),
    # server-owned fields sent by the client: decoded loosely, always overwritten
    *[
        pytest.param(body_of(with_field(name, value)), path, id=f"client-{name}-{label}")
        for name in SERVER_OWNED
        for label, value, path in [
            ("string", b'"2020-01-01T00:00:00Z"', TYPED),
            ("object", b'{"ip":"6.6.6.6","user_agent":"evil"}', TYPED),
            ("null", b"null", TYPED),
            ("deep", deep(MAX_DEPTH + 1), None),  # too deep, whatever its name
        ]
    ],
    pytest.param(body_of(with_field("ip", b'"6.6.6.6"'), sent_at=b"null"), TYPED, id="ip-no-sent"),
    # a schema tag: not part of the protocol, so an unknown field like any other (dropped)
    pytest.param(body_of(with_field("schema", b'"page_viewed/1"')), TYPED, id="schema-tag"),
    pytest.param(body_of(with_field("schema", deep(9))), None, id="schema-tag-deep"),
    pytest.param(body_of(with_field("extra", b"[1,2,3]")), TYPED, id="unknown-field"),
    pytest.param(b'{"extra":1,"batch":[' + TRACK_BYTES + b"]}", TYPED, id="unknown-top-field"),
    pytest.param(b'{"extra":' + deep(9) + b',"batch":[]}', None, id="unknown-top-deep"),
    # strings: escapes, non-ASCII, surrogate pairs, "\/"; identities are re-encoded
    pytest.param(body_of(with_field("user_id", b'"\\u00e9\\/x\\ud83d\\ude00"')), TYPED, id="esc"),
    pytest.param(body_of(with_field("user_id", '"é😀 \\"q\\""'.encode())), TYPED, id="utf8"),
    pytest.param(
        body_of(
            with_properties(
                b'{"track_id":"\\u0074\\/\\ud83c\\udfb5","artist_id":"\xc3\xa9","position_ms":1}'
            )
        ),
        TYPED,
        id="esc-properties",
    ),
    # msgspec refuses a lone surrogate as malformed JSON (it could not become UTF-8 again)
    pytest.param(body_of(with_field("user_id", b'"\\ud800"')), None, id="lone-surrogate"),
    pytest.param(body_of(with_field("context", b'{"k":"\\"}]]]\\\\"}')), TYPED, id="esc-brackets"),
    pytest.param(body_of(with_field("event", b'"track\\u005fplayed"')), TYPED, id="esc-event"),
    # numbers
    pytest.param(body_of(with_properties(b"{" + PROPS + b"0" * 30 + b"}")), TYPED, id="huge-int"),
    pytest.param(
        body_of(with_properties(b"{" + PROPS + b',"duration_ms":1e400}')), TYPED, id="1e400"
    ),
    pytest.param(
        body_of(with_properties(b"{" + PROPS + b',"duration_ms":1.0}')), TYPED, id="float-int"
    ),
    pytest.param(body_of(with_field("version", b"1.0")), RAW, id="float-version"),
    pytest.param(body_of(with_field("version", b"1" + b"0" * 40)), RAW, id="huge-version"),
    pytest.param(body_of(with_field("context", b'{"n":1' + b"0" * 400 + b"}")), TYPED, id="big"),
    # depth: properties, context and unknown fields count; exactly at the limit passes
    pytest.param(body_of(with_field("context", deep(MAX_DEPTH))), TYPED, id="context-at-limit"),
    pytest.param(body_of(with_field("context", deep(MAX_DEPTH + 1))), None, id="context-deep"),
    pytest.param(
        body_of(TRACK_BYTES, with_field("context", deep(MAX_DEPTH + 1))), None, id="context-deep-2"
    ),
    pytest.param(body_of(with_properties(deep(MAX_DEPTH + 1))), None, id="properties-deep-invalid"),
    pytest.param(body_of(with_field("extra", deep(MAX_DEPTH + 1))), None, id="unknown-deep"),
    pytest.param(body_of(with_field("occurred_at", b"[" * 7 + b"]" * 7)), None, id="bad-and-deep"),
    pytest.param(body_of(*[TRACK_BYTES] * (MAX_EVENTS + 1)), None, id="too-many"),
    pytest.param(body_of(TRACK_BYTES)[:-1], None, id="truncated"),
    pytest.param(body_of(TRACK_BYTES, b"{}"), RAW, id="one-bad-envelope"),
    pytest.param(b'{"batch":[]}', TYPED, id="empty"),
]


@pytest.mark.parametrize(("body", "expected_path"), HOSTILE)
def test_hostile_bodies_get_the_same_answer_either_way(
    body: bytes, expected_path: str | None
) -> None:
    assert check_same(body) == expected_path


def test_the_same_context_is_measured_once_but_every_different_one_is() -> None:
    """Contexts repeat from event to event: a deep one after a run of equal shallow ones is
    still found, and so is a deep one repeated."""
    shallow = with_field("context", b'{"a":1}')
    deep_one = with_field("context", deep(MAX_DEPTH + 1))
    for events in (
        [shallow, shallow, deep_one],
        [deep_one, deep_one],
        [shallow, deep_one, shallow],
    ):
        assert check_same(body_of(*events)) is None
        assert fast(body_of(*events))[0] == ("refused", "too_deep")


@pytest.mark.parametrize(
    "properties",
    [
        b'{"path":"/x","referrer":"secret@example.com","referrer":null}',
        b'{"path":"/x","referrer":null,"referrer":"secret@example.com"}',
        b'{"referrer":"secret@example.com","path":"/x","referrer":"secret@example.com"}',
    ],
)
def test_a_duplicate_pii_property_never_reaches_the_value_as_sent(properties: bytes) -> None:
    """page_viewed hashes `referrer`: its properties are re-encoded from the decoded value
    (one key each), never forwarded as sent, so no occurrence of a duplicate slips through."""
    event = msgspec.json.encode(page_viewed(event_id="0190b6a4-0000-7000-8000-000000000002"))
    start = event.index(b'"properties":') + len(b'"properties":')
    event = event[:start] + properties + event[event.index(b"}", start) + 1 :]
    assert check_same(body_of(event)) == TYPED
    _, accepted, _, records = fast(body_of(event))[0]
    assert accepted == 1
    assert b"secret" not in records[0].value
    assert envelope_keys(records[0].value) == list(WireEvent.__struct_fields__)
