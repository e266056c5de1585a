"""Typed events: the generated Structs and TypeScript declarations, and the SDK accepting them."""

from __future__ import annotations

import datetime as dt
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from capture_sdk import Client, InvalidEventError
from capture_sdk.testing import RecordingTransport
from collector.cli import main
from devtools.node import SDK_JS, ensure_installed
from event_schemas import SchemaRegistry, load_registry
from event_schemas.codegen import PYTHON_OUT, TYPESCRIPT_OUT, python_source, typescript_source
from event_schemas.typed import (
    PlaylistUpdatedV1,
    PlaylistUpdatedV1Owner,
    PlaylistUpdatedV1TracksItem,
    TrackPlayedV1,
    TrackPlayedV2,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REGENERATE = "run `capture schemas codegen` to regenerate it"


def test_checked_in_python_module_is_up_to_date(schemas: SchemaRegistry) -> None:
    assert PYTHON_OUT.read_text(encoding="utf-8") == python_source(schemas), (
        f"{PYTHON_OUT} is stale: {REGENERATE}"
    )


def test_checked_in_typescript_declarations_are_up_to_date(schemas: SchemaRegistry) -> None:
    assert TYPESCRIPT_OUT.read_text(encoding="utf-8") == typescript_source(schemas), (
        f"{TYPESCRIPT_OUT} is stale: {REGENERATE}"
    )


def test_every_event_version_has_a_struct_matching_its_schema(schemas: SchemaRegistry) -> None:
    import event_schemas.typed as typed

    for schema in schemas:
        cls = getattr(typed, schema.properties_type.__name__)
        assert cls.__event_name__ == schema.event
        assert cls.__event_version__ == schema.version
        assert cls.__doc__ == schema.document["description"]
        fields = {f.encode_name: f.required for f in msgspec.structs.fields(cls)}
        expected = {
            name: name in schema.document["required"] for name in schema.document["properties"]
        }
        assert fields == expected, schema.name
        kinds = {p.kind for p in inspect.signature(cls).parameters.values()}
        assert kinds == {inspect.Parameter.KEYWORD_ONLY}
        assert cls.__struct_config__.forbid_unknown_fields


def test_typed_events_round_trip_through_the_loaders_decoder(schemas: SchemaRegistry) -> None:
    played = TrackPlayedV2(
        track_id="t-1", artist_id="a-1", position_ms=1200, source="radio", shuffle=True
    )
    raw = msgspec.json.encode(played)
    assert json.loads(raw) == {
        "track_id": "t-1",
        "artist_id": "a-1",
        "position_ms": 1200,
        "source": "radio",
        "shuffle": True,
    }  # unset optional fields are left out, not sent as null
    schema = schemas.get("track_played", 2)
    assert schema is not None
    schema.decode_properties(raw)
    assert msgspec.json.decode(raw, type=TrackPlayedV2) == played

    updated = PlaylistUpdatedV1(
        playlist_id="p-1",
        snapshot_id=uuid.UUID("01937f1e-0000-7000-8000-000000000000"),
        updated_at=dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC),
        owner=PlaylistUpdatedV1Owner(user_id="u-1", verified=True),
        tracks=[PlaylistUpdatedV1TracksItem(track_id="t-1", position=0, added=True)],
        follower_count=3.0,
    )
    raw = msgspec.json.encode(updated)
    schema = schemas.get("playlist_updated", 1)
    assert schema is not None
    decoded = schema.decode_properties(raw)
    assert msgspec.json.encode(decoded) == raw
    assert msgspec.json.decode(raw, type=PlaylistUpdatedV1) == updated


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"track_id": "t", "artist_id": "a", "position_ms": -1}', "Expected `int` >= 0"),
        (b'{"track_id": "", "artist_id": "a", "position_ms": 1}', "length >= 1"),
        (b'{"track_id": "t", "artist_id": "a", "position_ms": 1, "shuffle": null}', "bool"),
        (b'{"track_id": "t", "artist_id": "a", "position_ms": 1, "x": 1}', "unknown field"),
        (b'{"track_id": "t", "artist_id": "a"}', "missing required field `position_ms`"),
        # the loader's implicit int64 bound where the schema sets no maximum
        (b'{"track_id": "t", "artist_id": "a", "position_ms": 9223372036854775808}', "<= 9223"),
    ],
)
def test_generated_structs_reject_what_the_schema_forbids(
    schemas: SchemaRegistry, body: bytes, message: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(body, type=TrackPlayedV2)
    schema = schemas.get("track_played", 2)
    assert schema is not None
    with pytest.raises(msgspec.ValidationError):
        schema.decode_properties(body)


# a plan with what the bundled one lacks: keywords, shadowing names, long lines, null, nesting
ODD_SCHEMA = {
    "description": "An odd event whose description is long enough to be wrapped over more "
    'than one line of the docstring, with "quotes" and a backslash \\ in it.',
    "x-compatibility": "NONE",
    "type": "object",
    "properties": {
        "class": {"type": "string", "description": "A Python keyword."},
        "msgspec": {"type": "integer", "minimum": 0},
        "at": {"type": ["string", "null"], "format": "date-time"},
        "long_nullable_pattern_field_name": {
            "type": ["string", "null"],
            "pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*\\.example\\.com/some/long/path/[A-Z]{3,5}$",
            "maxLength": 300,
        },
        "multi": {"type": ["null", "string", "integer"]},
        "free": {"type": "object"},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "level": {"enum": [1, 2, None]},
        "very_long_enum_field_name_here": {
            "enum": ["alpha_value_number_one", "beta_value_number_two", "gamma_value", "d"]
        },
    },
    "required": ["class", "msgspec"],
    "additionalProperties": False,
}


@pytest.fixture
def odd_plan(tmp_path: Path) -> Path:
    plan = tmp_path / "plan"
    (plan / "odd_event").mkdir(parents=True)
    (plan / "odd_event" / "v1.json").write_text(json.dumps(ODD_SCHEMA))
    return plan


def test_generated_code_is_formatted_lint_clean_and_keeps_json_names(
    odd_plan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = load_registry(odd_plan)
    module = tmp_path / "odd_typed.py"
    module.write_text(python_source(registry), encoding="utf-8")
    for args in (["format", "--check", "--diff"], ["check", "--no-cache"]):
        result = subprocess.run(
            [str(BIN / "ruff"), *args, "--config", str(ROOT / "pyproject.toml"), str(module)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    spec = importlib.util.spec_from_file_location("odd_typed", module)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    # msgspec resolves annotations in the class's module
    monkeypatch.setitem(sys.modules, "odd_typed", loaded)
    spec.loader.exec_module(loaded)
    cls = loaded.OddEventV1
    assert isinstance(cls, type)
    raw = b'{"class": "c", "msgspec": 1, "at": null, "multi": 2, "matrix": [[1.5]], "level": null}'
    event: Any = msgspec.json.decode(raw, type=cls)
    assert event.class_ == "c"
    assert json.loads(msgspec.json.encode(event)) == json.loads(raw)
    schema = registry.get("odd_event", 1)
    assert schema is not None
    schema.decode_properties(msgspec.json.encode(event))
    with pytest.raises(msgspec.ValidationError, match="Expected `int` >= 0"):
        msgspec.json.decode(b'{"class": "c", "msgspec": -1}', type=cls)


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(code, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "test_codegen"),
            str(app),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


APP = """\
from capture_sdk import Client
from event_schemas.typed import TrackPlayedV2


def report(client: Client) -> str:
    return client.track(TrackPlayedV2(track_id="t", artist_id="a", {field}=1), user_id="u")
"""


def test_mypy_catches_a_misspelt_field(tmp_path: Path) -> None:
    good = _mypy(tmp_path, APP.format(field="position_ms"))
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _mypy(tmp_path, APP.format(field="postion_ms"))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'Unexpected keyword argument "postion_ms" for "TrackPlayedV2"' in bad.stdout


@pytest.fixture
def client_and_transport() -> Iterator[tuple[Client, RecordingTransport]]:
    transport = RecordingTransport()
    client = Client(transport=transport, flush_interval_s=0.05)
    yield client, transport
    client.shutdown(5)


def test_track_takes_a_typed_event(client_and_transport: tuple[Client, RecordingTransport]) -> None:
    client, transport = client_and_transport
    event_id = client.track(
        TrackPlayedV2(track_id="t-1", artist_id="a-1", position_ms=5, shuffle=False),
        user_id="u-1",
    )
    client.track(TrackPlayedV1(track_id="t-2", artist_id="a-1", position_ms=6), user_id="u-1")
    client.track(
        TrackPlayedV2(track_id="t-3", artist_id="a-1", position_ms=7), version=2, user_id="u"
    )
    assert client.flush(5)
    first, second, third = transport.events
    assert (first["event"], first["version"], first["event_id"]) == ("track_played", 2, event_id)
    assert first["properties"] == {
        "track_id": "t-1",
        "artist_id": "a-1",
        "position_ms": 5,
        "shuffle": False,
    }
    assert (second["event"], second["version"]) == ("track_played", 1)
    assert (third["version"], third["properties"]["track_id"]) == (2, "t-3")


def test_track_refuses_a_typed_event_with_properties_or_another_version(
    client_and_transport: tuple[Client, RecordingTransport],
) -> None:
    client, transport = client_and_transport
    played = TrackPlayedV2(track_id="t", artist_id="a", position_ms=1)
    with pytest.raises(InvalidEventError, match="properties"):
        client.track(played, {"track_id": "t"}, user_id="u")
    with pytest.raises(InvalidEventError, match="version"):
        client.track(played, version=1, user_id="u")

    class Untyped(msgspec.Struct):
        x: int

    with pytest.raises(InvalidEventError, match="__event_name__"):
        client.track(Untyped(x=1), user_id="u")
    assert client.flush(5)
    assert transport.events == []


def test_the_sdk_does_not_import_the_generated_module() -> None:
    code = "import sys, capture_sdk; print('event_schemas.typed' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout.strip() == "False", result.stderr


# --- TypeScript: npm and node are part of the checked behaviour, so their absence fails ---


def _tsc(*args: str) -> subprocess.CompletedProcess[str]:
    """The browser SDK's pinned tsc (sdk-js/package-lock.json), run in sdk-js/."""
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("npx not found: Node.js is needed to check the TypeScript types")
    ensure_installed()
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [npx, "--no-install", "tsc", *args],
        cwd=SDK_JS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


# An app of the browser SDK: track() takes the generated events of the plan.
TS_APP = """\
import {{ createClient }} from {sdk};

const client = createClient({{ endpoint: "http://127.0.0.1:1", writeKey: "k" }});
client.track({{
  event: "track_played",
  version: 2,
  properties: {{ track_id: "t", artist_id: "a", {field}, shuffle: true }},
}});
"""


def test_the_sdk_and_the_generated_module_compile_strict() -> None:
    result = _tsc("--noEmit", "-p", "tsconfig.json")  # strict: true in sdk-js/tsconfig.json
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("postion_ms: 1", "'postion_ms' does not exist in type 'TrackPlayedV2'"),
        ('position_ms: "1"', "Type 'string' is not assignable to type 'number'"),
    ],
)
def test_typescript_refuses_a_misspelt_field_or_a_wrong_type(
    tmp_path: Path, field: str, message: str
) -> None:
    app = tmp_path / "app.ts"
    flags = ["--noEmit", "--strict", "--target", "ES2020", "--module", "ESNext"]
    flags += ["--moduleResolution", "Bundler", "--lib", "ES2020,DOM"]
    sdk = json.dumps(str(TYPESCRIPT_OUT.parent / "index"))
    app.write_text(TS_APP.format(sdk=sdk, field="position_ms: 1"), encoding="utf-8")
    good = _tsc(*flags, str(app))
    assert good.returncode == 0, good.stdout + good.stderr
    app.write_text(TS_APP.format(sdk=sdk, field=field), encoding="utf-8")
    bad = _tsc(*flags, str(app))
    assert bad.returncode != 0
    assert message in bad.stdout, bad.stdout


# --- the command line ---


def test_codegen_check_passes_on_the_bundled_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "codegen", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_codegen_check_fails_on_a_stale_file_and_codegen_rewrites_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "typed.py"
    stale.write_text("# stale\n")
    ts_out = tmp_path / "plan.ts"
    ts_out.write_text(TYPESCRIPT_OUT.read_text())
    args = ["schemas", "codegen", "--python", str(stale), "--typescript", str(ts_out)]
    assert main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{stale} is out of date" in err
    assert str(ts_out) not in err
    assert "capture schemas codegen" in err
    assert stale.read_text() == "# stale\n"  # --check writes nothing
    assert main(args) == 0
    assert stale.read_text() == PYTHON_OUT.read_text()
    assert main([*args, "--check"]) == 0


def test_codegen_reports_a_bad_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "codegen", "--dir", str(tmp_path), "--check"]) == 1
    assert "capture schemas codegen" in capsys.readouterr().err


def test_codegen_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["schemas", "codegen", "--help"])
    assert exit_info.value.code == 0
    assert "--check" in capsys.readouterr().out
