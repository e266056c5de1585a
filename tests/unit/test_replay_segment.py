"""Recovery of Segment dead letters (issues #7 and #8) gives what the collector would write.

Segment messages go through the real collector under a plan and config that reject some of
them; after the fix (a `[segment.events]` entry, a looser schema), `capture replay
--dead-letters --recover` republishes exactly the fixed ones, equal to what a second collector
run with the fix writes for the same messages, and counts the rest as still invalid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from collector.replay.transform import decode_dead_letter
from collector.segment import PREFIX
from collector.segment.mapping import event_id_for
from collector.settings import Settings
from collector.sinks.base import Record
from collector.sinks.memory import MemorySink
from event_schemas import load_registry
from tests.conftest import start_collector
from tests.factories import track_played
from tests.unit.test_replay_file import Backend, FileBackend, run, write_plan
from tests.unit.test_replay_recovery import FIXED, STRICT, collect

AGENT = "analytics-node/6.2 (replay test)"
DEAD = "events._invalid"  # the default, outside the shared scenario
MAPPING_TOML = '[segment.events]\n"Song Started" = "track_played"\n'


def message(event: str, message_id: str | None, position_ms: int, **fields: Any) -> dict[str, Any]:
    sent: dict[str, Any] = {
        "type": "track",
        "event": event,
        "userId": "u-7",
        "timestamp": "2026-11-26T12:00:00.250Z",
        "properties": {"track_id": "t-1", "position_ms": position_ms},
        "context": {"library": {"name": "analytics-node", "version": "6.2.0"}},
        **fields,
    }
    if message_id is not None:
        sent["messageId"] = message_id
    return sent


# (a) unmapped until `[segment.events]` names it; (b) properties invalid under the strict
# schema, and without messageId (its event_id comes from its bytes); (c) never mappable; and
# one that is valid from the start (never dead-lettered).
UNMAPPED = message("Song Started", "m-unmapped", 5)
INVALID = message("Track Played", None, 50)
HOPELESS = message("Song Skipped", "m-hopeless", 5)
VALID = message("Track Played", "m-valid", 1)
# (a) again, through the single-call route: the body has no `type`, the route implies it
SINGLE = {**message("Song Started", "m-single", 7), "sentAt": "2026-11-26T12:00:01Z"}
del SINGLE["type"]


def by_event_id(records: list[Record]) -> dict[str, tuple[str, bytes | None, Any, Any, int]]:
    """Records comparable as a whole (value decoded, headers sorted), by their event_id."""
    shaped = {}
    for r in records:
        value = json.loads(r.value)
        shaped[value["event_id"]] = (r.topic, r.key, value, sorted(r.headers), r.timestamp_ms)
    assert len(shaped) == len(records)  # one record per event: no fan-out configured here
    return shaped


async def send_segment(settings: Settings, plan: Path) -> list[Record]:
    """What the real collector writes for the batch and the single call under `plan`."""
    sink = MemorySink()
    http = await start_collector(settings, sink, load_registry(plan))
    headers = {"Content-Type": "application/json", "User-Agent": AGENT}
    try:
        body = {"batch": [UNMAPPED, INVALID, HOPELESS, VALID], "sentAt": "2026-11-26T12:00:01Z"}
        for path, sent in (("/v1/batch", body), ("/v1/track", SINGLE)):
            response = await http.post(
                PREFIX + path, data=msgspec.json.encode(sent), headers=headers
            )
            assert response.status == 200, await response.text()
    finally:
        await http.close()
    return sink.records


async def replay_dead_letters(
    tmp_path: Path, dead: list[Record], *flags: str
) -> tuple[dict[str, int], list[Record]]:
    """Write `dead` to a file log, run `capture replay --dead-letters --recover` on it with
    the fixed plan and config; the counts and every record written outside the dead letters."""
    backend = FileBackend(tmp_path / "data")
    backend.prefix = "events."  # the collector's default topics, as `dead` was written
    await backend.write(dead)
    counts = await recover_from(backend, tmp_path, *flags)
    topics = {p.stem for p in backend.data_dir.glob("*.jsonl")} - {DEAD}
    return counts, [record for topic in sorted(topics) for record in await backend.read(topic, 0)]


async def recover_from(backend: Backend, tmp_path: Path, *flags: str) -> dict[str, int]:
    code, counts, err = await run(
        *backend.source_args(),
        "--topic-prefix",
        backend.prefix,
        "--dead-letter-topic",
        backend.prefix + "_invalid",
        "--dead-letters",
        "--recover",
        "--schemas-dir",
        str(tmp_path / "fixed"),
        "--config-file",
        str(tmp_path / "fixed.toml"),
        *flags,
    )
    assert code == 0, err
    return counts


def fixture_files(tmp_path: Path, prefix: str = "events.") -> tuple[Path, Path, Settings, Settings]:
    """The strict plan and fixed plan; settings without and with the `[segment]` mapping."""
    strict = write_plan(tmp_path / "strict", STRICT)
    fixed = write_plan(tmp_path / "fixed", FIXED)
    config = tmp_path / "fixed.toml"
    config.write_text(MAPPING_TOML)
    before = Settings(sink="memory", topic_prefix=prefix, dead_letter_topic=prefix + "_invalid")
    after = msgspec.structs.replace(before, config_file=str(config))
    return strict, fixed, before, after


async def check_segment_recovery(backend: Backend, tmp_path: Path) -> None:
    """Shared with tests/integration/test_replay_kafka.py: the same on the real broker."""
    prefix = backend.prefix
    strict, fixed, before, after = fixture_files(tmp_path, prefix)
    first = await send_segment(before, strict)
    dead = [r for r in first if r.topic == prefix + "_invalid"]
    reasons = [decode_dead_letter(r.value).reason for r in dead]
    assert reasons == ["unmapped_event", "invalid_properties", "unmapped_event", "unmapped_event"]
    # every Segment dead letter is marked; the single call also names the type its route implied
    assert all(("api", b"segment") in r.headers for r in dead)
    assert [h for h in dead[-1].headers if h[0] == "segment_type"] == [("segment_type", b"track")]
    assert not any(h[0] == "segment_type" for r in dead[:-1] for h in r.headers)
    await backend.write(dead)

    counts = await recover_from(backend, tmp_path, "--dry-run")
    assert (counts["recovered"], counts["still_invalid"], counts["written"]) == (3, 1, 0)
    assert await backend.read(prefix + "track_played", expected=0) == []

    counts = await recover_from(backend, tmp_path)
    assert (counts["recovered"], counts["still_invalid"], counts["written"]) == (3, 1, 3)
    recovered = await backend.read(prefix + "track_played", expected=3)
    # the second run, with the mapping and the looser schema live from the start
    written = [r for r in await send_segment(after, fixed) if r.topic == prefix + "track_played"]
    valid_id = str(event_id_for("m-valid"))
    fixed_ones = [r for r in written if json.loads(r.value)["event_id"] != valid_id]
    assert len(fixed_ones) == 3
    assert by_event_id(recovered) == by_event_id(fixed_ones)
    ids = set(by_event_id(recovered))
    assert str(event_id_for("m-unmapped")) in ids
    assert str(event_id_for("m-single")) in ids
    for record in recovered:  # enriched from what the dead letter kept of the request
        value = json.loads(record.value)
        assert (value["user_agent"], value["sent_at"]) == (AGENT, "2026-11-26T12:00:01Z")
        assert record.key == b"u-7"


async def test_fixed_segment_dead_letters_are_recovered_as_the_collector_writes_them(
    tmp_path: Path,
) -> None:
    await check_segment_recovery(FileBackend(tmp_path / "data"), tmp_path)


async def test_without_the_mapping_they_stay_dead_letters(tmp_path: Path) -> None:
    strict, _, before, _ = fixture_files(tmp_path)
    dead = [r for r in await send_segment(before, strict) if r.topic == DEAD]
    (tmp_path / "fixed.toml").write_text("")  # the schema is fixed, the mapping is not added
    counts, recovered = await replay_dead_letters(tmp_path, dead)
    assert (counts["recovered"], counts["still_invalid"]) == (1, 3)
    assert [json.loads(r.value)["properties"]["position_ms"] for r in recovered] == [50]


async def test_an_unmarked_letter_is_not_guessed_to_be_segment(tmp_path: Path) -> None:
    strict, _, before, _ = fixture_files(tmp_path)
    dead = [r for r in await send_segment(before, strict) if r.topic == DEAD]
    unmarked = [
        msgspec.structs.replace(r, headers=[h for h in r.headers if h[0] != "api"]) for r in dead
    ]
    # read as native events, Segment messages fail the native envelope: none is recovered
    counts, recovered = await replay_dead_letters(tmp_path, unmarked)
    assert (counts["recovered"], counts["still_invalid"]) == (0, 4)
    assert recovered == []


async def test_native_dead_letters_beside_segment_ones_still_recover(tmp_path: Path) -> None:
    strict, fixed, before, after = fixture_files(tmp_path)
    native = track_played(properties={"track_id": "t", "position_ms": 50})
    native_dead = await collect(before, strict, [native])
    assert not any(h[0] == "api" for r in native_dead for h in r.headers)
    dead = native_dead + [r for r in await send_segment(before, strict) if r.topic == DEAD]
    counts, recovered = await replay_dead_letters(tmp_path, dead)
    assert (counts["recovered"], counts["still_invalid"]) == (4, 1)
    expected = await collect(after, fixed, [native])
    assert by_event_id(recovered)[native["event_id"]] == by_event_id(expected)[native["event_id"]]
