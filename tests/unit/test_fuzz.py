"""Fuzz POST /v1/batch: whatever the body and headers, the answer is never a 5xx but 503, and
its body is the documented JSON (BatchResponse on 200, ErrorBody otherwise).

hypothesis rather than schemathesis: the interesting inputs are *outside* the OpenAPI schema
(bad envelopes, wrong property types, huge numbers, NaN, broken gzip), which a strategy written
here reaches directly; schemathesis would mostly send what the document already allows.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.model import BatchResponse, ErrorBody, WireEvent
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import load_registry
from tests.conftest import HttpClient, start_collector
from tests.factories import page_viewed, track_played

Fixture = tuple[asyncio.AbstractEventLoop, HttpClient, MemorySink]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: past 64 bits too
    | st.floats()  # NaN and Infinity become non-JSON tokens in the body
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# every field name of an event, the server-owned ones included (a client may try to set them)
ENVELOPE_FIELDS = WireEvent.__struct_fields__


@st.composite
def events(draw: st.DrawFn) -> Any:
    """Mostly plausible events with some fields replaced by arbitrary JSON."""
    base = draw(st.sampled_from([track_played, page_viewed]))(
        event_id=str(draw(st.uuids(version=4)))
    )
    if draw(st.booleans()):
        base["event"] = draw(st.sampled_from(["track_played", "page_viewed", ""]) | st.text())
        base["version"] = draw(st.integers(min_value=-2, max_value=10_001))
    if draw(st.booleans()):
        base["properties"] = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=5))
    overrides = draw(st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), json_values, max_size=3))
    base.update(overrides)
    if draw(st.booleans()):
        base.pop(draw(st.sampled_from(ENVELOPE_FIELDS)), None)
    return base if draw(st.integers(0, 9)) else draw(json_values)  # sometimes not an object


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["batch", "batch", "batch", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        document = draw(json_values)
    else:
        document = {"batch": draw(st.lists(events(), max_size=6))}
        if draw(st.booleans()):
            document["sent_at"] = draw(json_values)
    return json.dumps(document).encode()


headers = st.fixed_dictionaries(
    {
        "Content-Type": st.sampled_from(
            ["application/json", "application/json; charset=utf-8", "text/plain", "", "*/*"]
        )
    },
    optional={"Content-Encoding": st.sampled_from(["gzip", "identity", "br", "GZIP", " gzip"])},
)


@pytest.fixture(scope="module")
def running() -> Iterator[Fixture]:
    loop = asyncio.new_event_loop()
    sink = MemorySink()
    # small caps so that 413 and the in-flight 503 are reachable by small bodies too
    config = Settings(sink="memory", max_body_bytes=4096, max_decompressed_bytes=8192)
    client = loop.run_until_complete(start_collector(config, sink, load_registry()))
    yield loop, client, sink
    loop.run_until_complete(client.close())
    loop.close()


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays stable
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=bodies(), request_headers=headers, compress=st.booleans())
def test_no_5xx_but_503_and_always_a_documented_body(
    running: Fixture, body: bytes, request_headers: dict[str, str], compress: bool
) -> None:
    loop, client, sink = running
    if compress and request_headers.get("Content-Encoding", "").strip().lower() == "gzip":
        body = gzip.compress(body)

    async def send() -> tuple[int, bytes]:
        response = await client.post("/v1/batch", data=body, headers=request_headers)
        return response.status, await response.read()

    status, payload = loop.run_until_complete(send())
    sink.records.clear()
    assert status < 500 or status == 503, (status, payload)
    if status == 200:
        answer = msgspec.json.decode(payload, type=BatchResponse)
        assert answer.accepted + len(answer.rejected) >= 0
    else:
        error = msgspec.json.decode(payload, type=ErrorBody)
        assert error.error, payload


def test_the_fuzzer_reaches_acceptance_and_rejection(running: Fixture) -> None:
    """Guard against a strategy that only ever produces garbage: a known-good body is 200."""
    loop, client, _ = running
    good = {"batch": [track_played(event_id=str(uuid.uuid4())), {"event": 1}]}

    async def send() -> tuple[int, Any]:
        response = await client.post("/v1/batch", json=good)
        return response.status, await response.json()

    status, answer = loop.run_until_complete(send())
    assert status == 200
    assert (answer["accepted"], len(answer["rejected"])) == (1, 1)
