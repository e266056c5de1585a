"""Schema metadata (x-owner, x-partition-key, x-topic, x-pii): loading, and what the
collector does with it (record key, topic, PII dropped or hashed before anything is written)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaLoadError, load_registry
from tests.conftest import start_collector
from tests.factories import batch_body

HASH_KEY = "test-pii-key"


def schema(**top: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": "object",
        "properties": {
            "listener_id": {"type": "string"},
            "email": {"type": ["string", "null"], "x-pii": "hash"},
            "ip": {"type": "string", "x-pii": "drop"},
            "plays": {"type": "integer"},
        },
        "required": ["listener_id", "plays"],
        "additionalProperties": False,
    }
    document.update(top)
    return document


def write_plan(root: Path, document: dict[str, Any]) -> Path:
    path = root / "signup" / "v1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_metadata_is_loaded(tmp_path: Path) -> None:
    write_plan(
        tmp_path,
        schema(
            **{"x-owner": "growth", "x-partition-key": "listener_id", "x-topic": "growth.signups"}
        ),
    )
    meta = load_registry(tmp_path).get("signup", 1)
    assert meta is not None
    assert (meta.metadata.owner, meta.metadata.partition_key, meta.metadata.topic) == (
        "growth",
        "listener_id",
        "growth.signups",
    )
    assert dict(meta.metadata.pii) == {"email": "hash", "ip": "drop"}


BAD = {
    "owner-empty": ({"x-owner": ""}, "/x-owner"),
    "topic-bad": ({"x-topic": "a topic"}, "/x-topic"),
    "key-not-required": ({"x-partition-key": "email"}, "/x-partition-key"),
    "key-missing": ({"x-partition-key": "nope"}, "/x-partition-key"),
    "compat-bad": ({"x-compatibility": "SIDEWAYS"}, "/x-compatibility"),
}


@pytest.mark.parametrize(("top", "pointer"), BAD.values(), ids=BAD)
def test_bad_metadata_names_the_file_and_key(
    tmp_path: Path, top: dict[str, Any], pointer: str
) -> None:
    path = write_plan(tmp_path, schema(**top))
    with pytest.raises(SchemaLoadError) as info:
        load_registry(tmp_path)
    assert (info.value.file, info.value.pointer) == (path, pointer)


def test_pii_rules_are_checked(tmp_path: Path) -> None:
    document = schema()
    document["properties"]["plays"]["x-pii"] = "hash"  # only strings can be hashed
    write_plan(tmp_path, document)
    with pytest.raises(SchemaLoadError, match="only string properties can be hashed"):
        load_registry(tmp_path)
    document["properties"]["plays"]["x-pii"] = "encrypt"
    write_plan(tmp_path, document)
    with pytest.raises(SchemaLoadError, match="x-pii"):
        load_registry(tmp_path)


def test_metadata_keys_are_refused_where_they_do_not_belong(tmp_path: Path) -> None:
    document = schema()
    document["properties"]["nested"] = {
        "type": "object",
        "properties": {"secret": {"type": "string", "x-pii": "drop"}},
    }
    write_plan(tmp_path, document)
    with pytest.raises(SchemaLoadError, match="unsupported keyword `x-pii`"):
        load_registry(tmp_path)


def event(**properties: Any) -> dict[str, Any]:
    return {
        "event": "signup",
        "version": 1,
        "event_id": "0193a5b2-7c00-7000-8000-000000000001",
        "occurred_at": "2026-11-26T12:00:00Z",
        "user_id": "u-1",
        "properties": properties,
    }


async def test_collector_keys_routes_and_protects_by_metadata(tmp_path: Path) -> None:
    write_plan(tmp_path, schema(**{"x-partition-key": "listener_id", "x-topic": "growth.signups"}))
    sink = MemorySink()
    settings = Settings(sink="memory", pii_hash_key=HASH_KEY)
    client = await start_collector(settings, sink, load_registry(tmp_path))
    try:
        body = batch_body(
            event(listener_id="L-9", email="a@example.com", ip="10.1.2.3", plays=3),
            event(listener_id="L-7", email=None, plays=1),
        )
        response = await client.post(
            "/v1/batch", data=body, headers={"Content-Type": "application/json"}
        )
        assert (await response.json())["accepted"] == 2
    finally:
        await client.close()
    first, second = sink.records
    assert first.topic == second.topic == "growth.signups"
    assert (first.key, second.key) == (b"L-9", b"L-7")  # the declared key, not user_id
    properties = msgspec.json.decode(first.value)["properties"]
    expected = hmac.new(HASH_KEY.encode(), b"a@example.com", hashlib.sha256).hexdigest()
    assert properties == {"listener_id": "L-9", "email": expected, "plays": 3}  # ip dropped
    assert b"a@example.com" not in first.value
    assert b"10.1.2.3" not in first.value
    assert msgspec.json.decode(second.value)["properties"] == {
        "listener_id": "L-7",
        "email": None,
        "plays": 1,
    }


async def test_bundled_plan_hashes_the_referrer(tmp_path: Path) -> None:
    sink = MemorySink()
    client = await start_collector(Settings(sink="memory"), sink, load_registry())
    try:
        page = {**event(path="/a", referrer="https://mail.example/?u=me"), "event": "page_viewed"}
        apv = {**event(artist_id="a-77", section="audience"), "event": "artist_profile_viewed"}
        response = await client.post(
            "/v1/batch", data=batch_body(page, apv), headers={"Content-Type": "application/json"}
        )
        assert (await response.json())["accepted"] == 2
    finally:
        await client.close()
    page_record, apv_record = sink.records
    referrer = msgspec.json.decode(page_record.value)["properties"]["referrer"]
    assert referrer == hashlib.sha256(b"https://mail.example/?u=me").hexdigest()
    assert apv_record.key == b"a-77"
