"""Compatibility between versions of one event: every rule, in each mode it matters for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.cli import main
from event_schemas import (
    COMPATIBILITY_MODES,
    SchemaLoadError,
    Violation,
    check_pair,
    check_registry,
    load_registry,
)
from event_schemas.compat import can_read


def t(json_type: str | list[str], **keywords: Any) -> dict[str, Any]:
    return {"type": json_type, **keywords}


def obj(
    properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True
) -> dict[str, Any]:
    """An object schema; every property is required unless `required` says otherwise."""
    node: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    if closed:
        node["additionalProperties"] = False
    return node


def write_plan(root: Path, *documents: dict[str, Any], event: str = "ev") -> None:
    for number, document in enumerate(documents, start=1):
        path = root / event / f"v{number}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))


def with_mode(document: dict[str, Any], mode: str) -> dict[str, Any]:
    return {**document, "x-compatibility": mode}


def violations(root: Path, *documents: dict[str, Any]) -> list[Violation]:
    write_plan(root, *documents)
    return check_registry(load_registry(root))


A = {"a": t("integer")}
AB_OPTIONAL = obj({"a": t("integer"), "b": t("boolean")}, ["a"])
AB_REQUIRED = obj({"a": t("integer"), "b": t("boolean")})

# name: (old document, new document, {mode: expected details, in order})
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]] = {
    "add-optional-to-closed": (
        obj(A),
        AB_OPTIONAL,
        {
            "BACKWARD": [],
            "FORWARD": ["adds field `b` to a closed object"],
            "FULL": ["adds field `b` to a closed object"],
        },
    ),
    "add-optional-to-open": (
        obj(A, closed=False),
        {**AB_OPTIONAL, "additionalProperties": True},
        {
            "BACKWARD": ["adds field `b` to an open object (old data may hold any value)"],
            "FORWARD": [],
        },
    ),
    "add-required-to-closed": (
        obj(A),
        AB_REQUIRED,
        {
            "BACKWARD": ["adds required field `b`"],
            "FORWARD": ["adds required field `b` to a closed object"],
            "FULL": ["adds required field `b`", "adds required field `b` to a closed object"],
        },
    ),
    "add-required-to-open": (
        obj(A, closed=False),
        obj(AB_REQUIRED["properties"], closed=False),
        {"BACKWARD": ["adds required field `b`"], "FORWARD": []},
    ),
    "remove-optional-from-closed": (
        AB_OPTIONAL,
        obj(A),
        {"BACKWARD": ["removes field `b` from a closed object"], "FORWARD": []},
    ),
    "remove-required-from-closed": (
        AB_REQUIRED,
        obj(A),
        {
            "BACKWARD": ["removes required field `b` from a closed object"],
            "FORWARD": ["removes required field `b`"],
        },
    ),
    "remove-optional-into-open": (
        AB_OPTIONAL,
        obj(A, closed=False),
        {
            "BACKWARD": [],
            "FORWARD": [
                "removes field `b` from an open object (new data may hold any value)",
                "opens the top level to unknown fields",
            ],
        },
    ),
    "close-an-open-object": (
        obj(A, closed=False),
        obj(A),
        {"BACKWARD": ["closes the top level to unknown fields"], "FORWARD": []},
    ),
    "make-required": (
        AB_OPTIONAL,
        AB_REQUIRED,
        {"BACKWARD": ["makes field `b` required"], "FORWARD": []},
    ),
    "make-optional": (
        AB_REQUIRED,
        AB_OPTIONAL,
        {"BACKWARD": [], "FORWARD": ["makes field `b` optional"]},
    ),
    "type-change": (
        obj(A),
        obj({"a": t("string")}),
        {
            "BACKWARD": ["changes the type of `a` from integer to string"],
            "FORWARD": ["changes the type of `a` from integer to string"],
            "FULL": ["changes the type of `a` from integer to string"],
        },
    ),
    "integer-to-number-widens": (
        obj(A),
        obj({"a": t("number")}),
        {"BACKWARD": [], "FORWARD": ["changes the type of `a` from integer to number"]},
    ),
    "number-to-integer-narrows": (
        obj({"a": t("number")}),
        obj(A),
        {"BACKWARD": ["changes the type of `a` from number to integer"], "FORWARD": []},
    ),
    "type-list-adds-null": (
        obj({"a": t("string")}),
        obj({"a": t(["string", "null"])}),
        {"BACKWARD": [], "FORWARD": ["changes the type of `a` from string to string or null"]},
    ),
    "enum-narrows": (
        obj({"s": {"enum": ["album", "radio", "other"]}}),
        obj({"s": {"enum": ["album", "other"]}}),
        {"BACKWARD": ["narrows enum `s`: drops 'radio'"], "FORWARD": []},
    ),
    "enum-widens": (
        obj({"s": {"enum": ["album", "other"]}}),
        obj({"s": {"enum": ["album", "other", "radio"]}}),
        {"BACKWARD": [], "FORWARD": ["widens enum `s`: adds 'radio'"]},
    ),
    "enum-to-type": (
        obj({"s": {"enum": ["album", "other"]}}),
        obj({"s": t("string")}),
        {"BACKWARD": [], "FORWARD": ["widens enum `s` to string"]},
    ),
    "type-to-enum": (
        obj({"s": t("string")}),
        obj({"s": {"enum": ["album"]}}),
        {"BACKWARD": ["restricts `s` to enum ['album']"], "FORWARD": []},
    ),
    "enum-to-type-that-rejects-a-value": (
        obj({"s": {"enum": ["a", "bb"]}}),
        obj({"s": t("string", maxLength=1)}),
        {"BACKWARD": ["turns enum `s` into string, which rejects 'bb'"]},
    ),
    "minimum-tightens": (
        obj({"a": t("integer", minimum=0)}),
        obj({"a": t("integer", minimum=1)}),
        {"BACKWARD": ["tightens minimum of `a`"], "FORWARD": []},
    ),
    "minimum-loosens": (
        obj({"a": t("integer", minimum=1)}),
        obj({"a": t("integer", minimum=0)}),
        {"BACKWARD": [], "FORWARD": ["loosens minimum of `a`"]},
    ),
    "maximum-added": (
        obj({"a": t("integer")}),
        obj({"a": t("integer", maximum=10)}),
        {"BACKWARD": ["tightens maximum of `a`"], "FORWARD": []},
    ),
    "maximum-removed": (
        obj({"a": t("integer", maximum=10)}),
        obj({"a": t("integer")}),
        {"BACKWARD": [], "FORWARD": ["loosens maximum of `a`"]},
    ),
    "integer-exclusive-bound-is-the-same-range": (
        obj({"a": t("integer", exclusiveMinimum=0, maximum=9)}),
        obj({"a": t("integer", minimum=1, exclusiveMaximum=10)}),
        {"FULL": []},
    ),
    "number-exclusive-bound-tightens": (
        obj({"a": t("number", minimum=0)}),
        obj({"a": t("number", exclusiveMinimum=0)}),
        {"BACKWARD": ["tightens minimum of `a`"], "FORWARD": []},
    ),
    "maxLength-tightens": (
        obj({"a": t("string", maxLength=10)}),
        obj({"a": t("string", maxLength=5)}),
        {"BACKWARD": ["tightens maxLength of `a`"], "FORWARD": []},
    ),
    "minLength-loosens": (
        obj({"a": t("string", minLength=2)}),
        obj({"a": t("string", minLength=1)}),
        {"BACKWARD": [], "FORWARD": ["loosens minLength of `a`"]},
    ),
    "maxItems-tightens": (
        obj({"a": t("array", items=t("string"), maxItems=10)}),
        obj({"a": t("array", items=t("string"), maxItems=5)}),
        {"BACKWARD": ["tightens maxItems of `a`"], "FORWARD": []},
    ),
    "minItems-loosens": (
        obj({"a": t("array", items=t("string"), minItems=1)}),
        obj({"a": t("array", items=t("string"))}),
        {"BACKWARD": [], "FORWARD": ["loosens minItems of `a`"]},
    ),
    "pattern-added": (
        obj({"a": t("string")}),
        obj({"a": t("string", pattern="^/")}),
        {"BACKWARD": ["adds pattern `^/` to `a`"], "FORWARD": []},
    ),
    "pattern-removed": (
        obj({"a": t("string", pattern="^/")}),
        obj({"a": t("string")}),
        {"BACKWARD": [], "FORWARD": ["removes pattern `^/` from `a`"]},
    ),
    "pattern-changed": (
        obj({"a": t("string", pattern="^/")}),
        obj({"a": t("string", pattern="^/a")}),
        {
            "BACKWARD": ["changes the pattern of `a` from `^/` to `^/a`"],
            "FORWARD": ["changes the pattern of `a` from `^/` to `^/a`"],
        },
    ),
    "pattern-unchanged": (
        obj({"a": t("string", pattern="^/")}),
        obj({"a": t("string", pattern="^/")}),
        {"FULL": []},
    ),
    "format-added": (
        obj({"a": t("string")}),
        obj({"a": t("string", format="uuid")}),
        {"BACKWARD": ["adds format `uuid` to `a`"], "FORWARD": []},
    ),
    "nested-type-change": (
        obj({"owner": obj({"user_id": t("string")})}),
        obj({"owner": obj({"user_id": t("integer")})}),
        {"BACKWARD": ["changes the type of `owner.user_id` from string to integer"]},
    ),
    "nested-add-optional": (
        obj({"owner": obj({"user_id": t("string")})}),
        obj({"owner": obj({"user_id": t("string"), "name": t("string")}, ["user_id"])}),
        {"BACKWARD": [], "FORWARD": ["adds field `owner.name` to a closed object"]},
    ),
    "nested-add-required": (
        obj({"owner": obj({"user_id": t("string")})}),
        obj({"owner": obj({"user_id": t("string"), "name": t("string")})}),
        {"BACKWARD": ["adds required field `owner.name`"]},
    ),
    "array-items-tighten": (
        obj({"tracks": t("array", items=obj({"position": t("integer", minimum=0)}))}),
        obj({"tracks": t("array", items=obj({"position": t("integer", minimum=1)}))}),
        {"BACKWARD": ["tightens minimum of `tracks[].position`"], "FORWARD": []},
    ),
    "array-items-remove-field": (
        obj({"tracks": t("array", items=obj({"id": t("string"), "position": t("integer")}))}),
        obj({"tracks": t("array", items=obj({"id": t("string")}))}),
        {
            "BACKWARD": ["removes required field `tracks[].position` from a closed object"],
            "FORWARD": ["removes required field `tracks[].position`"],
        },
    ),
    "array-items-enum-narrows": (
        obj({"tags": t("array", items={"enum": ["a", "b"]})}),
        obj({"tags": t("array", items={"enum": ["a"]})}),
        {"BACKWARD": ["narrows enum `tags[]`: drops 'b'"], "FORWARD": []},
    ),
    "none-never-fails": (
        AB_REQUIRED,
        obj({"a": t("string")}, closed=False),
        {"NONE": []},
    ),
}

PARAMS = [
    pytest.param(old, new, mode, expected, id=f"{name}-{mode}")
    for name, (old, new, by_mode) in CASES.items()
    for mode, expected in by_mode.items()
]


@pytest.mark.parametrize(("old", "new", "mode", "expected"), PARAMS)
def test_rule(
    tmp_path: Path, old: dict[str, Any], new: dict[str, Any], mode: str, expected: list[str]
) -> None:
    found = violations(tmp_path, old, with_mode(new, mode))
    assert [v.detail for v in found] == expected
    for violation in found:
        assert (violation.event, violation.old_version, violation.new_version) == ("ev", 1, 2)
        assert violation.mode == mode
        assert str(violation) == f"ev v2 {violation.detail} ({mode}; checked against v1)"


@pytest.mark.parametrize("mode", ["BACKWARD", "FORWARD", "FULL"])
def test_violation_carries_path_and_rule(tmp_path: Path, mode: str) -> None:
    old = obj({"tracks": t("array", items=obj({"position": t("integer")}))})
    new = obj({"tracks": t("array", items=obj({"position": t("string")}))})
    (found,) = violations(tmp_path, old, with_mode(new, mode))
    assert (found.path, found.rule) == ("tracks[].position", "type")


def test_the_bundled_plan_is_compatible() -> None:
    registry = load_registry()
    assert check_registry(registry) == []
    v1, v2 = registry.get("track_played", 1), registry.get("track_played", 2)
    assert v1 is not None
    assert v2 is not None
    assert v2.compatibility == "BACKWARD"
    # v2 adds the optional `shuffle` to the closed v1: fine for BACKWARD, not for FORWARD
    assert check_pair(v1, v2) == []
    assert [str(v) for v in check_pair(v1, v2, "FORWARD")] == [
        "track_played v2 adds field `shuffle` to a closed object (FORWARD; checked against v1)"
    ]


def test_can_read_is_symmetric_in_wording() -> None:
    old, new = obj(A), AB_REQUIRED
    assert [f.detail for f in can_read(new, old)] == ["adds required field `b`"]
    assert [f.detail for f in can_read(old, new, reader_is_new=False)] == [
        "adds required field `b` to a closed object"
    ]
    assert can_read(old, old) == []


# v1 -> v2 and v2 -> v3 each pass under their own modes, v1 -> v3 does not.
ENUM_V1 = obj({"s": {"enum": ["a", "b", "c"]}})
ENUM_V2_NARROWED = with_mode(obj({"s": {"enum": ["a", "b"]}}), "FORWARD")
ENUM_V2_WIDENED = with_mode(obj({"s": {"enum": ["a", "b", "c", "d"]}}), "BACKWARD")
ENUM_V3 = obj({"s": {"enum": ["a", "b", "d"]}})


@pytest.mark.parametrize(
    ("v2", "v3_mode", "expected"),
    [
        (ENUM_V2_NARROWED, "BACKWARD", []),
        (
            ENUM_V2_NARROWED,
            "BACKWARD_TRANSITIVE",
            ["ev v3 narrows enum `s`: drops 'c' (BACKWARD_TRANSITIVE; checked against v1)"],
        ),
        (ENUM_V2_WIDENED, "FORWARD", []),
        (
            ENUM_V2_WIDENED,
            "FORWARD_TRANSITIVE",
            ["ev v3 widens enum `s`: adds 'd' (FORWARD_TRANSITIVE; checked against v1)"],
        ),
    ],
)
def test_transitive_modes_check_every_earlier_version(
    tmp_path: Path, v2: dict[str, Any], v3_mode: str, expected: list[str]
) -> None:
    found = violations(tmp_path, ENUM_V1, v2, with_mode(ENUM_V3, v3_mode))
    assert [str(v) for v in found] == expected


def test_full_transitive_checks_both_directions_against_every_version(tmp_path: Path) -> None:
    v1 = obj({"a": t("integer", maximum=10)})
    v2 = with_mode(obj({"a": t("integer", maximum=10)}), "FULL")
    v3 = with_mode(obj({"a": t("integer", maximum=5)}), "FULL_TRANSITIVE")
    found = violations(tmp_path, v1, v2, v3)
    assert [str(v) for v in found] == [
        "ev v3 tightens maximum of `a` (FULL_TRANSITIVE; checked against v1)",
        "ev v3 tightens maximum of `a` (FULL_TRANSITIVE; checked against v2)",
    ]


def test_the_mode_of_the_newer_version_applies(tmp_path: Path) -> None:
    # v1 declares NONE, which says nothing about how v2 is checked
    old = with_mode(obj({"a": t("integer")}), "NONE")
    found = violations(tmp_path, old, obj({"a": t("string")}))
    assert [str(v) for v in found] == [
        "ev v2 changes the type of `a` from integer to string (BACKWARD; checked against v1)"
    ]


# --- the loader and the keyword ----------------------------------------------------------------


@pytest.mark.parametrize("mode", COMPATIBILITY_MODES)
def test_every_mode_loads(tmp_path: Path, mode: str) -> None:
    write_plan(tmp_path, with_mode(obj(A), mode))
    schema = load_registry(tmp_path).get("ev", 1)
    assert schema is not None
    assert schema.compatibility == mode


def test_the_default_mode_is_backward(tmp_path: Path) -> None:
    write_plan(tmp_path, obj(A))
    schema = load_registry(tmp_path).get("ev", 1)
    assert schema is not None
    assert schema.compatibility == "BACKWARD"


@pytest.mark.parametrize("value", ["backward", "SIDEWAYS", 1, None, ["BACKWARD"]])
def test_an_invalid_mode_is_a_load_error_naming_the_file(tmp_path: Path, value: object) -> None:
    write_plan(tmp_path, {**obj(A), "x-compatibility": value})
    with pytest.raises(SchemaLoadError, match="x-compatibility") as info:
        load_registry(tmp_path)
    assert info.value.file == tmp_path / "ev" / "v1.json"
    assert str(tmp_path / "ev" / "v1.json") in str(info.value)


def test_the_keyword_is_unsupported_below_the_top_level(tmp_path: Path) -> None:
    write_plan(tmp_path, obj({"a": t("integer", **{"x-compatibility": "BACKWARD"})}))
    with pytest.raises(SchemaLoadError, match="unsupported keyword `x-compatibility`") as info:
        load_registry(tmp_path)
    assert info.value.pointer == "/properties/a"


def test_check_pair_rejects_an_unknown_mode(tmp_path: Path) -> None:
    write_plan(tmp_path, obj(A))
    schema = load_registry(tmp_path).get("ev", 1)
    assert schema is not None
    with pytest.raises(ValueError, match="unknown compatibility mode"):
        check_pair(schema, schema, "SIDEWAYS")


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_fails_on_an_incompatible_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = obj({"position_ms": t("integer"), "track_id": t("string")})
    write_plan(tmp_path, old, obj({"track_id": t("string")}), event="track_played")
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "capture schemas check: track_played v2 removes required field `position_ms` "
        "from a closed object (BACKWARD; checked against v1)"
    ]
    assert "ok " not in captured.out


def test_cli_passes_a_compatible_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_plan(tmp_path, obj(A), AB_OPTIONAL, event="track_played")
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines() == [
        "ok  track_played v1  (v1.json)",
        "ok  track_played v2  (v2.json)",
    ]


def test_cli_passes_the_bundled_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "check"]) == 0
    assert capsys.readouterr().err == ""
