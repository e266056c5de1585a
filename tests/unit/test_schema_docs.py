"""The tracking plan rendered as one page: events, versions, fields, owners, changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.cli import main
from event_schemas import load_registry
from event_schemas.docs import changes, fields, render_markdown


def test_bundled_plan_page_lists_every_event_version_and_field() -> None:
    registry = load_registry()
    page = render_markdown(registry)
    for schema in registry:
        assert f"### {schema.event} v{schema.version}" in page
        for field in fields(schema):
            assert f"| `{field.path}` |" in page
    assert "| `referrer` | string or null | no | length <= 2048 | hash |" in page
    assert "Owner: artist-insights." in page
    assert "| [artist_profile_viewed](#artist_profile_viewed) | v1 | artist-insights" in page
    assert "Changes from v1:\n- adds optional `shuffle`" in page
    assert "| `tracks[].position` | integer | yes | >= 0 |" in page
    assert "Whether shuffle was on." in page


def write(root: Path, version: int, properties: dict[str, Any], required: list[str]) -> None:
    path = root / "ev" / f"v{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"type": "object", "properties": properties, "required": required}
    path.write_text(json.dumps(document))


def test_changes_name_each_field_difference(tmp_path: Path) -> None:
    write(
        tmp_path,
        1,
        {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "string"}},
        ["a"],
    )
    write(
        tmp_path,
        2,
        {
            "a": {"type": "string", "maxLength": 5},
            "b": {"type": "number"},
            "d": {"type": "boolean"},
        },
        ["a", "d"],
    )
    registry = load_registry(tmp_path)
    v1, v2 = registry.get("ev", 1), registry.get("ev", 2)
    assert v1 is not None
    assert v2 is not None
    assert changes(v1, v2) == [
        "changes constraints of `a`: none -> length <= 5",
        "changes type of `b`: integer -> number",
        "adds required `d`",
        "removes `c`",
    ]


def test_cli_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.md"
    assert main(["schemas", "docs", "--out", str(out)]) == 0
    assert out.read_text() == render_markdown(load_registry())
    assert main(["schemas", "docs", "--dir", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_checked_in_plan_page_is_current() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "tracking-plan.md"
    assert page.read_text() == render_markdown(load_registry()), (
        "docs/tracking-plan.md is stale: run `capture schemas docs --out docs/tracking-plan.md`"
    )
