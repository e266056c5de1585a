"""The tracking-plan loader: the bundled plan, every supported keyword, and load errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from event_schemas import PLAN_DIR, EventSchema, SchemaLoadError, load_registry

UUID = "6f1c2a52-8a8e-4f43-9d6b-0c7a3e9b1d20"


def t(json_type: str | list[str], **keywords: Any) -> dict[str, Any]:
    """A property schema: `t("string", minLength=1)` is {"type": "string", "minLength": 1}."""
    return {"type": json_type, **keywords}


def event_doc(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An event schema; every property is required unless `required` says otherwise."""
    needed = list(properties) if required is None else required
    return {"type": "object", "properties": properties, "required": needed}


def prop(schema: object) -> dict[str, Any]:
    """An event schema with one required property `x`."""
    return event_doc({"x": schema})


def write_schema(root: Path, document: object, event: str = "ev", name: str = "v1.json") -> Path:
    """Write `<root>/<event>/<name>`; a str is written verbatim, anything else as JSON."""
    path = root / event / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def load_one(root: Path, document: dict[str, Any]) -> EventSchema:
    write_schema(root, document)
    schema = load_registry(root).get("ev", 1)
    assert schema is not None
    return schema


def plan_schema(event: str, version: int) -> EventSchema:
    schema = load_registry().get(event, version)
    assert schema is not None
    return schema


def decode(schema: EventSchema, payload: object) -> Any:
    """Decode through the compiled type, then back to plain JSON values for comparing."""
    return msgspec.to_builtins(schema.decode_properties(msgspec.json.encode(payload)))


def assert_rejected(schema: EventSchema, payload: object, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        schema.decode_properties(msgspec.json.encode(payload))


# --- the bundled plan -------------------------------------------------------------------------

TRACK = {"track_id": "t", "artist_id": "a", "position_ms": 0}
PLAYLIST = {
    "playlist_id": "pl-1",
    "snapshot_id": UUID,
    "updated_at": "2026-11-26T12:00:05Z",
    "owner": {"user_id": "u-1", "display_name": "Curator", "verified": True},
    "tracks": [
        {"track_id": "t-1", "position": 0, "added": True},
        {"track_id": "t-2", "position": 1},
    ],
    "follower_count": 12.5,
}
PLAN_VALID = [
    ("track_played", 1, TRACK),
    ("track_played", 2, {**TRACK, "duration_ms": 1000, "source": "radio", "shuffle": True}),
    ("page_viewed", 1, {"path": "/home", "title": "Home", "referrer": None}),
    ("artist_profile_viewed", 1, {"artist_id": "a", "section": "music", "range_days": 28}),
    ("playlist_updated", 1, PLAYLIST),
]
BAD_TRACKS = [{"track_id": "t", "position": 0}, {"track_id": "t", "position": -1}]
PLAN_INVALID = [
    ("track_played", 1, {**TRACK, "shuffle": True}, "unknown field `shuffle`"),
    ("track_played", 2, {**TRACK, "source": "tv"}, "Invalid enum value 'tv' - at `$.source`"),
    ("page_viewed", 1, {"path": "home"}, "matching regex '^/' - at `$.path`"),
    ("artist_profile_viewed", 1, {"artist_id": "a", "section": "music", "range_days": 30}, "30"),
    ("playlist_updated", 1, {**PLAYLIST, "tracks": BAD_TRACKS}, "at `$.tracks[1].position`"),
    ("playlist_updated", 1, {**PLAYLIST, "owner": {}}, "field `user_id` - at `$.owner`"),
    ("playlist_updated", 1, {**PLAYLIST, "snapshot_id": "x"}, "Invalid UUID - at `$.snapshot_id`"),
]


def test_bundled_plan_has_every_event_and_version() -> None:
    registry = load_registry()
    events = ["artist_profile_viewed", "page_viewed", "playlist_updated", "track_played"]
    # the built-in schemas of Segment-compatible calls (issue #8)
    built_in = ["alias", "group", "identify", "page", "screen"]
    assert registry.events() == sorted(events + built_in)
    assert [(s.event, s.version) for s in registry if s.event not in built_in] == [
        (e, 1) for e in events
    ] + [(events[3], 2)]
    assert [(s.event, s.version) for s in registry if s.event in built_in] == [
        (e, 1) for e in built_in
    ]
    assert registry.versions("track_played") == [1, 2]
    assert ("track_played", 3) not in registry
    assert plan_schema("playlist_updated", 1).file == PLAN_DIR / "playlist_updated" / "v1.json"


@pytest.mark.parametrize(("event", "version", "payload"), PLAN_VALID)
def test_bundled_plan_accepts(event: str, version: int, payload: dict[str, Any]) -> None:
    assert decode(plan_schema(event, version), payload) == payload


@pytest.mark.parametrize(("event", "version", "payload", "message"), PLAN_INVALID)
def test_bundled_plan_rejects(event: str, version: int, payload: object, message: str) -> None:
    assert_rejected(plan_schema(event, version), payload, message)


# --- one case per keyword: (property schema, a value it accepts, one it rejects, the error) ----

POSITIONS = t("array", items=t("object", properties={"p": t("integer", minimum=0)}))
STRICT_OBJECT = t("object", properties={"n": t("integer")}, additionalProperties=False)
KEYWORDS = {
    "string": (t("string"), "a", 1, "Expected `str`, got `int` - at `$.x`"),
    "integer": (t("integer"), 3, 1.5, "Expected `int`, got `float`"),
    "number": (t("number"), 1.5, "1", "Expected `float`, got `str`"),
    "boolean": (t("boolean"), False, 0, "Expected `bool`, got `int`"),
    "string-or-null": (t(["string", "null"]), None, 3, "Expected `str | null`, got `int`"),
    "integer-or-null": (t(["integer", "null"]), 4, "4", "Expected `int | null`, got `str`"),
    "enum-strings": ({"enum": ["a", "b"]}, "b", "c", "Invalid enum value 'c' - at `$.x`"),
    "enum-ints": (t("integer", enum=[7, 28]), 28, 8, "Invalid enum value 8 - at `$.x`"),
    "enum-with-null": ({"enum": ["a", None]}, None, "b", "Invalid enum value 'b'"),
    "minimum": (t("integer", minimum=0), 0, -1, "Expected `int` >= 0 - at `$.x`"),
    "maximum": (t("integer", maximum=10), 10, 11, "Expected `int` <= 10 - at `$.x`"),
    # msgspec words `> 0` on an int as `>= 1`
    "exclusiveMinimum": (t("integer", exclusiveMinimum=0), 1, 0, "Expected `int` >= 1"),
    "exclusiveMaximum": (t("number", exclusiveMaximum=1), 0.99, 1, "Expected `float` < 1.0"),
    "minLength": (t("string", minLength=2), "ab", "a", "`str` of length >= 2 - at `$.x`"),
    "maxLength-counts-characters": (t("string", maxLength=3), "ééé", "abcd", "length <= 3"),
    "pattern": (t("string", pattern="^[a-z]+$"), "abc", "aBc", "matching regex '^[a-z]+$'"),
    "nested-object": (
        t("object", properties={"n": t("integer")}),
        {"n": 1},
        {"n": "1"},
        "Expected `int`, got `str` - at `$.x.n`",
    ),
    "nested-no-additional": (STRICT_OBJECT, {"n": 1}, {"n": 1, "z": 2}, "field `z` - at `$.x`"),
    "items": (t("array", items=t("integer")), [1, 2], [1, "2"], "got `str` - at `$.x[1]`"),
    "array-of-objects": (POSITIONS, [{"p": 0}], [{"p": 0}, {"p": -1}], "0 - at `$.x[1].p`"),
    "minItems": (t("array", items=t("string"), minItems=1), ["a"], [], "length >= 1 - at `$.x`"),
    "maxItems": (t("array", items=t("string"), maxItems=1), [], ["a", "b"], "length <= 1"),
    "date-time-needs-timezone": (
        t("string", format="date-time"),
        "2026-11-26T12:00:05+02:00",
        "2026-11-26T12:00:05",
        "Expected `datetime` with a timezone component - at `$.x`",
    ),
    "date-time": (
        t("string", format="date-time"),
        "2026-11-26T12:00:05Z",
        "2026-11-26",
        "Invalid RFC3339 encoded datetime - at `$.x`",
    ),
    "uuid": (t("string", format="uuid"), UUID, "not-a-uuid", "Invalid UUID - at `$.x`"),
}


@pytest.mark.parametrize(("schema", "good", "bad", "message"), KEYWORDS.values(), ids=KEYWORDS)
def test_keyword(
    tmp_path: Path, schema: dict[str, Any], good: object, bad: object, message: str
) -> None:
    compiled = load_one(tmp_path, prop(schema))
    assert decode(compiled, {"x": good}) == {"x": good}
    assert_rejected(compiled, {"x": bad}, message)


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    "node",
    [t("integer"), t(["integer", "null"]), t("array", items=t("integer"))],
    ids=["integer", "integer-or-null", "array-items"],
)
def test_an_unbounded_integer_is_bounded_to_int64(tmp_path: Path, node: dict[str, Any]) -> None:
    """Consumers downstream cannot read a wider integer (properties are forwarded as sent)."""
    compiled = load_one(tmp_path, prop(node))

    def value(n: int) -> object:
        return [n] if node["type"] == "array" else n

    for edge in (INT64_MAX, -INT64_MAX - 1):
        assert decode(compiled, {"x": value(edge)}) == {"x": value(edge)}
    assert_rejected(compiled, {"x": value(INT64_MAX + 1)}, f"<= {INT64_MAX}")
    assert_rejected(compiled, {"x": value(-INT64_MAX - 2)}, f">= {-INT64_MAX - 1}")
    with pytest.raises(msgspec.ValidationError, match=re.escape(f"<= {INT64_MAX}")):
        compiled.decode_properties(
            b'{"x":' + (b"[1%s]" if node["type"] == "array" else b"1%s") % (b"0" * 400) + b"}"
        )


def test_a_schema_bound_replaces_only_its_own_side_of_the_int64_bound(tmp_path: Path) -> None:
    compiled = load_one(tmp_path, prop(t("integer", minimum=0)))
    assert_rejected(compiled, {"x": -1}, ">= 0")
    assert_rejected(compiled, {"x": INT64_MAX + 1}, f"<= {INT64_MAX}")
    compiled = load_one(tmp_path, prop(t("integer", exclusiveMaximum=10)))
    assert_rejected(compiled, {"x": 10}, "<= 9")  # msgspec words `< 10` on an int so
    assert_rejected(compiled, {"x": -INT64_MAX - 2}, f">= {-INT64_MAX - 1}")
    assert compiled.document["properties"]["x"] == t("integer", exclusiveMaximum=10)


def test_required_property_must_be_present(tmp_path: Path) -> None:
    schema = load_one(tmp_path, event_doc({"x": t("string"), "y": t("string")}))
    assert_rejected(schema, {"x": "a"}, "Object missing required field `y`")


@pytest.mark.parametrize("additional", [None, True])
def test_unknown_fields_are_ignored_unless_forbidden(tmp_path: Path, additional: object) -> None:
    document = prop(t("string"))
    if additional is not None:
        document["additionalProperties"] = additional
    schema = load_one(tmp_path, document)
    assert decode(schema, {"x": "a", "other": 1}) == {"x": "a"}


def test_additional_properties_false_rejects_unknown_fields(tmp_path: Path) -> None:
    schema = load_one(tmp_path, {**prop(t("string")), "additionalProperties": False})
    assert_rejected(schema, {"x": "a", "other": 1}, "Object contains unknown field `other`")


def test_optional_fields_may_be_absent_but_null_only_when_typed(tmp_path: Path) -> None:
    schema = load_one(tmp_path, event_doc({"s": t("string"), "n": t(["string", "null"])}, []))
    assert getattr(schema.decode_properties(b"{}"), "s") is msgspec.UNSET  # noqa: B009
    assert decode(schema, {}) == {}
    assert decode(schema, {"n": None}) == {"n": None}
    assert_rejected(schema, {"s": None}, "Expected `str`, got `null` - at `$.s`")


def test_python_keyword_property_names_keep_their_json_name(tmp_path: Path) -> None:
    schema = load_one(tmp_path, event_doc({"class": t("string")}))
    assert decode(schema, {"class": "a"}) == {"class": "a"}
    assert_rejected(schema, {}, "missing required field `class`")


# --- schema files the loader refuses: (document, JSON pointer, words in the message) -----------

X = "/properties/x"
LOAD_ERRORS = {
    "oneOf": (prop(t("string", oneOf=[{}])), X, "unsupported keyword `oneOf`"),
    "oneOf-without-type": (prop({"oneOf": [t("string")]}), X, "unsupported keyword `oneOf`"),
    "no-type": (prop({"description": "x"}), X, "`type` (or `enum`) is required"),
    "enum-with-minLength": (prop(t("string", enum=["a"], minLength=5)), X, "does not combine"),
    "keyword-rename-clash": (
        event_doc({"class": t("string"), "class_": t("integer")}),
        "/properties/class",
        "clashes with `class_`",
    ),
    "dunder-name": (
        event_doc({"__init__": t("string")}, []),
        "/properties/__init__",
        "identifiers",
    ),
    "fractional-minimum-on-integer": (prop(t("integer", minimum=0.5)), "/", "cannot compile"),
    "maximum-beyond-64-bits": (prop(t("integer", maximum=2**63)), "/", "cannot compile"),
    "maxLength-beyond-64-bits": (prop(t("string", maxLength=2**63)), "/", "cannot compile"),
    "ref": (prop(t("string", **{"$ref": "#/$defs/a"})), X, "unsupported keyword `$ref`"),
    "defs": ({**prop(t("string")), "$defs": {}}, "/", "unsupported keyword `$defs`"),
    "const": (prop(t("string", const="a")), X, "unsupported keyword `const`"),
    # `default` is supported (replay's upgrades), but only where it could ever apply
    "default-on-required": (prop(t("string", default="a")), X + "/default", "only optional"),
    "uniqueItems": (prop(t("array", items=t("string"), uniqueItems=True)), X, "`uniqueItems`"),
    "additionalProperties-schema": (
        {**prop(t("string")), "additionalProperties": t("string")},
        "/additionalProperties",
        "only true or false",
    ),
    "format-email": (prop(t("string", format="email")), X + "/format", "format `email`"),
    "format-with-length": (prop(t("string", format="uuid", maxLength=36)), X, "format `uuid`"),
    "minLength-on-integer": (prop(t("integer", minLength=1)), X, "`minLength` does not apply"),
    "maximum-on-string": (prop(t("string", maximum=1)), X, "`maximum` does not apply"),
    "required-undeclared": (event_doc({"x": t("string")}, ["x", "y"]), "/required", "['y']"),
    "nested-required": (prop(t("object", properties={}, required=["n"])), X + "/required", "'n'"),
    "array-without-items": (prop(t("array")), X, "arrays declare their `items`"),
    "enum-float": (prop({"enum": ["a", 1.5]}), X + "/enum", "strings or integers: 1.5"),
    "enum-bool": (prop({"enum": ["a", True]}), X + "/enum", "strings or integers: True"),
    "enum-empty": (prop({"enum": []}), X + "/enum", "non-empty"),
    "enum-wrong-type": (prop(t("string", enum=["a", 1])), X + "/enum", "1 is not of type"),
    "unknown-type": (prop(t("float")), X + "/type", "unsupported type 'float'"),
    "bad-pattern": (prop(t("string", pattern="(")), X + "/pattern", "invalid pattern"),
    "negative-length": (prop(t("string", minLength=-1)), X + "/minLength", "non-negative"),
    "minimum-not-number": (prop(t("integer", minimum="0")), X + "/minimum", "is a number"),
    "boolean-schema": (prop(True), X, "a schema is a JSON object"),
    "deep-pointer": (
        prop(t("array", items=t("object", properties={"p": t("int")}))),
        X + "/items/properties/p/type",
        "'int'",
    ),
    "property-name": (event_doc({"track-id": t("string")}), "/properties/track-id", "identifiers"),
    "invalid-json": ('{"type": "object",', "/", "cannot read JSON"),
    "top-level-array": ("[1, 2]", "/", "one JSON object"),
    "top-level-string": (t("string"), "/", '"type": "object"'),
    "top-level-no-properties": (t("object"), "/", "with properties"),
}


@pytest.mark.parametrize(("document", "pointer", "words"), LOAD_ERRORS.values(), ids=LOAD_ERRORS)
def test_load_error_names_file_and_pointer(
    tmp_path: Path, document: object, pointer: str, words: str
) -> None:
    path = write_schema(tmp_path, document)
    with pytest.raises(SchemaLoadError) as info:
        load_registry(tmp_path)
    assert (info.value.file, info.value.pointer) == (path, pointer)
    assert str(info.value).startswith(f"{path}: at {pointer}: ")
    assert words in str(info.value)


def _bad_file_name(root: Path) -> Path:
    write_schema(root, prop(t("string")), event="track_played")
    return write_schema(root, prop(t("string")), event="track_played", name="track.json")


def _stray_file(root: Path) -> Path:
    write_schema(root, prop(t("string")))
    (root / "README.md").write_text("the plan")
    return root / "README.md"


def _version_gap(root: Path) -> Path:
    write_schema(root, prop(t("string")), name="v1.json")
    return write_schema(root, prop(t("string")), name="v3.json").parent


def _empty_event_dir(root: Path) -> Path:
    write_schema(root, prop(t("string")))
    (root / "other").mkdir()
    return root / "other"


# Each arranges a bad plan below the root and returns the path the error must name.
LAYOUT_ERRORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "file-name": (_bad_file_name, "named v<N>.json"),
    "version-zero": (lambda root: write_schema(root, prop(t("string")), name="v0.json"), "v<N>"),
    "event-dir": (lambda root: write_schema(root, "{}", event="TrackPlayed").parent, "snake_case"),
    "stray-file": (_stray_file, "only <event>/ directories"),
    "empty-dir": (lambda root: root, "no schema files found"),
    "empty-event-dir": (_empty_event_dir, "at least v1.json"),
    "version-gap": (_version_gap, "versions have a gap: v2.json missing"),
}


@pytest.mark.parametrize(("arrange", "words"), LAYOUT_ERRORS.values(), ids=LAYOUT_ERRORS)
def test_plan_layout_error_names_the_path(
    tmp_path: Path, arrange: Callable[[Path], Path], words: str
) -> None:
    culprit = arrange(tmp_path)
    with pytest.raises(SchemaLoadError, match=re.escape(words)) as info:
        load_registry(tmp_path)
    assert info.value.file == culprit
    assert str(info.value).startswith(f"{culprit}: ")


def test_missing_plan_directory(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="does not exist") as info:
        load_registry(tmp_path / "missing")
    assert info.value.file == tmp_path / "missing"


def test_hidden_files_are_skipped(tmp_path: Path) -> None:
    write_schema(tmp_path, prop(t("string")))
    write_schema(tmp_path, "not json", name=".v2.json.swp")
    (tmp_path / ".git").mkdir()
    assert [(s.event, s.version) for s in load_registry(tmp_path)] == [("ev", 1)]


def test_default_is_accepted_on_an_optional_property(tmp_path: Path) -> None:
    # `default` declares how replay upgrades old versions (issue #7); decoding ignores it
    schema = load_one(
        tmp_path, event_doc({"a": t("string"), "b": t("boolean", default=False)}, ["a"])
    )
    assert schema.document["properties"]["b"]["default"] is False
    assert decode(schema, {"a": "x"}) == {"a": "x"}


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (t("integer", minimum=0, default=-1), "the default is not valid"),
        ({"enum": ["a", "b"], "default": "c"}, "the default is not valid"),
        (t("string", default=3), "the default is not valid"),
    ],
)
def test_a_default_must_validate(tmp_path: Path, node: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaLoadError, match=message):
        load_one(tmp_path, event_doc({"a": t("string"), "b": node}, ["a"]))


def test_a_required_property_has_no_default(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match="only optional properties have defaults"):
        load_one(tmp_path, event_doc({"a": t("string", default="x")}))
