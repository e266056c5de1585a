"""Dead-letter recovery (issue #7) gives what the collector would have written.

A dead letter keeps what the collector knew of the request (sent_at, client address, agent),
and `capture replay --recover` routes with the collector's own settings and `[routing]`
fan-out rules, so the same event sent under a fixed schema and recovered after the fix
produce the same records: topic, key, value, headers and timestamp.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from collector.model import DeadLetter
from collector.replay.transform import decode_dead_letter
from collector.settings import Settings
from collector.sinks.base import Record
from collector.sinks.memory import MemorySink
from event_schemas import load_registry
from tests.conftest import start_collector
from tests.factories import batch_body, track_played
from tests.unit.test_replay_file import FileBackend, run, write_plan

STRICT = [{"position_ms": {"type": "integer", "maximum": 10}}]
FIXED = [{"position_ms": {"type": "integer", "maximum": 100}}]
AGENT = "capture-sdk-python/0.1 (replay test)"


async def collect(settings: Settings, plan: Path, events: list[dict[str, Any]]) -> list[Record]:
    """The records the real collector writes for one batch of `events` under `plan`."""
    sink = MemorySink()
    http = await start_collector(settings, sink, load_registry(plan))
    try:
        response = await http.post(
            "/v1/batch",
            data=batch_body(*events),  # sent_at 12:00:01Z, received 12:00:05Z: 4 s skew
            headers={"Content-Type": "application/json", "User-Agent": AGENT},
        )
        assert response.status == 200, await response.text()
    finally:
        await http.close()
    return sink.records


def shape(records: list[Record]) -> list[tuple[str, bytes | None, Any, Any, int]]:
    """Records comparable as a whole: the value decoded, headers as a sorted list."""
    return sorted(
        (r.topic, r.key, json.loads(r.value), sorted(r.headers), r.timestamp_ms) for r in records
    )


async def recover_through_cli(
    tmp_path: Path, settings: Settings, dead: list[Record], *flags: str
) -> list[Record]:
    """Write the dead letters to a file log, run `capture replay --recover`, read back."""
    backend = FileBackend(tmp_path / "data")
    await backend.write(dead)
    code, counts, err = await run(
        *backend.source_args(),
        "--dead-letters",
        "--recover",
        "--schemas-dir",
        str(tmp_path / "fixed"),
        *flags,
    )
    assert code == 0, err
    assert counts["recovered"] == 1, err
    topics = {p.stem for p in backend.data_dir.glob("*.jsonl")} - {settings.dead_letter_topic}
    return [record for topic in sorted(topics) for record in await backend.read(topic, 0)]


async def test_recovered_event_equals_what_the_collector_writes(tmp_path: Path) -> None:
    strict = write_plan(tmp_path / "strict", STRICT)
    fixed = write_plan(tmp_path / "fixed", FIXED)
    event = track_played(properties={"track_id": "t", "position_ms": 50})
    settings = Settings(sink="memory")

    dead = await collect(settings, strict, [event])
    assert [r.topic for r in dead] == ["events._invalid"]
    letter = decode_dead_letter(dead[0].value)
    # what the collector knew of the request travels with the dead letter
    assert letter.sent_at == "2026-11-26T12:00:01Z"
    assert letter.user_agent == AGENT
    assert letter.ip == "127.0.0.0"  # anonymised exactly as enrichment stores it

    recovered = await recover_through_cli(tmp_path, settings, dead)
    written = await collect(settings, fixed, [event])
    assert shape(recovered) == shape(written)
    value = json.loads(recovered[0].value)
    # the server fields are the request's, not nulls (the skew-corrected time included)
    assert value["timestamp"] == "2026-11-26T12:00:04.123000Z"
    assert (value["ip"], value["user_agent"]) == ("127.0.0.0", AGENT)


async def test_recovery_follows_the_collector_topic_template_and_fanout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = write_plan(tmp_path / "strict", STRICT)
    fixed = write_plan(tmp_path / "fixed", FIXED)
    config = tmp_path / "capture.toml"
    config.write_text('[[routing.fanout]]\nevents = ["track_played"]\ntopic = "t.all"\n')
    template = "t.{event}.v{version}"
    settings = Settings(sink="memory", topic_template=template, config_file=str(config))
    event = track_played(properties={"track_id": "t", "position_ms": 50})
    dead = await collect(settings, strict, [event])

    # the template from the environment, as `capture serve` takes it; the file from the flag
    monkeypatch.setenv("CAPTURE_TOPIC_TEMPLATE", template)
    recovered = await recover_through_cli(tmp_path, settings, dead, "--config-file", str(config))
    assert sorted(r.topic for r in recovered) == ["t.all", "t.track_played.v1"]
    assert shape(recovered) == shape(await collect(settings, fixed, [event]))


async def test_recovery_reads_the_config_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = write_plan(tmp_path / "strict", STRICT)
    write_plan(tmp_path / "fixed", FIXED)
    config = tmp_path / "capture.toml"
    config.write_text('[[routing.fanout]]\nevents = ["*"]\ntopic = "copy.{event}"\n')
    settings = Settings(sink="memory")
    event = track_played(properties={"track_id": "t", "position_ms": 50})
    dead = await collect(settings, strict, [event])
    monkeypatch.setenv("CAPTURE_CONFIG_FILE", str(config))
    recovered = await recover_through_cli(tmp_path, settings, dead)
    assert sorted(r.topic for r in recovered) == ["copy.track_played", "events.track_played"]
    assert recovered[0].value == recovered[1].value


async def test_bad_routing_config_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "capture.toml"
    config.write_text('[[routing.fanout]]\nevents = ["*"]\ntopic = "x.{user}"\n')
    write_plan(tmp_path / "fixed", FIXED)
    code, counts, err = await run(
        "--data-dir",
        str(tmp_path / "data"),
        "--dead-letters",
        "--recover",
        "--schemas-dir",
        str(tmp_path / "fixed"),
        "--config-file",
        str(config),
    )
    assert code == 2
    assert "[routing].fanout[0].topic" in err
    assert counts == {}


def test_dead_letters_written_before_the_request_fields_still_decode() -> None:
    received_at = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    old = {
        "reason": "schema_violation",
        "errors": [],
        "received_at": received_at.isoformat(),
        "index": 0,
        "event": track_played(),
    }
    letter = decode_dead_letter(msgspec.json.encode(old))
    assert letter == DeadLetter(
        reason="schema_violation",
        errors=[],
        received_at=received_at,
        index=0,
        event=letter.event,
    )
    assert (letter.sent_at, letter.ip, letter.user_agent) == (None, None, None)
