"""Compile the tracking plan's JSON Schema files into msgspec types, once, at start-up.

The plan lives in `<root>/<event>/v<N>.json`. Each file becomes a frozen msgspec Struct type
and a reusable JSON decoder. A keyword this loader does not implement is a load error naming
the file and the keyword: nothing in a schema is silently ignored. No I/O after loading.
`default` is metadata for replay's upgrade of old versions: it never fills a field while
decoding, and it must itself validate against its property.
"""

from __future__ import annotations

import datetime as dt
import keyword
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec

from event_schemas.errors import SchemaLoadError
from event_schemas.metadata import SchemaMetadata, split_metadata

PLAN_DIR = Path(__file__).resolve().parent / "plan"

EVENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
VERSION_FILE_RE = re.compile(r"^v([1-9][0-9]{0,3})\.json$")
# Identifiers, so that each property is a Struct field; a leading "__" would clash with Python.
PROPERTY_NAME_RE = re.compile(r"^(?!__)[A-Za-z_][A-Za-z0-9_]{0,127}$")

# Keywords that only describe and never constrain.
# `default` is one of them: it declares how replay upgrades an event that lacks the property,
# and is checked against the property's own schema at load time.
ANNOTATION_KEYWORDS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default"}
)
# Keywords that constrain, with the JSON types they apply to.
CONSTRAINT_KEYWORDS: Mapping[str, frozenset[str]] = {
    "type": frozenset({"*"}),
    "enum": frozenset({"*"}),
    "properties": frozenset({"object"}),
    "required": frozenset({"object"}),
    "additionalProperties": frozenset({"object"}),
    "items": frozenset({"array"}),
    "minItems": frozenset({"array"}),
    "maxItems": frozenset({"array"}),
    "minimum": frozenset({"integer", "number"}),
    "maximum": frozenset({"integer", "number"}),
    "exclusiveMinimum": frozenset({"integer", "number"}),
    "exclusiveMaximum": frozenset({"integer", "number"}),
    "minLength": frozenset({"string"}),
    "maxLength": frozenset({"string"}),
    "pattern": frozenset({"string"}),
    "format": frozenset({"string"}),
}
SUPPORTED_FORMATS = frozenset({"date-time", "uuid"})
JSON_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
# An integer without a bound of its own is bounded to int64: properties are forwarded as sent,
# and consumers downstream (JVM, Go, most JSON readers) cannot hold a wider integer. Implicit:
# the schema document (and so compat, docs and codegen) does not change.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One compiled event version: the Struct type for its properties and a decoder for it."""

    event: str
    version: int
    file: Path
    document: Mapping[str, Any]
    properties_type: type[msgspec.Struct]
    decoder: msgspec.json.Decoder[Any] = field(repr=False)
    metadata: SchemaMetadata = field(default_factory=SchemaMetadata)

    @property
    def compatibility(self) -> str:
        return self.metadata.compatibility

    @property
    def name(self) -> str:
        return f"{self.event} v{self.version}"

    def decode_properties(self, raw: bytes | msgspec.Raw) -> msgspec.Struct:
        """Decode and validate raw JSON properties; raises msgspec.ValidationError/DecodeError."""
        result: msgspec.Struct = self.decoder.decode(raw)
        return result

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # compiled types and decoders do not pickle; the document does, and compiles the same
        # (how the tracking plan reaches Spark's Python workers)
        return compile_schema, (self.file, self.event, self.version, dict(self.document))


class SchemaRegistry:
    """The loaded tracking plan: (event, version) -> EventSchema. Immutable after load."""

    def __init__(self, schemas: list[EventSchema]) -> None:
        self._by_key = {(s.event, s.version): s for s in schemas}
        self._events = sorted({s.event for s in schemas})
        # event -> version -> decoder: the hot path's lookup, two dict hits and no tuple
        self.decoders: dict[str, dict[int, msgspec.json.Decoder[Any]]] = {}
        # event -> version -> schema, only for schemas whose property values the collector
        # reads (partition key, PII): the hot path skips the rest with one dict miss
        self.annotated: dict[str, dict[int, EventSchema]] = {}
        for schema in schemas:
            self.decoders.setdefault(schema.event, {})[schema.version] = schema.decoder
            if schema.metadata.needs_properties:
                self.annotated.setdefault(schema.event, {})[schema.version] = schema

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return SchemaRegistry, (list(self._by_key.values()),)

    def get(self, event: str, version: int) -> EventSchema | None:
        return self._by_key.get((event, version))

    def events(self) -> list[str]:
        return list(self._events)

    def versions(self, event: str) -> list[int]:
        return sorted(v for (e, v) in self._by_key if e == event)

    def __iter__(self) -> Iterator[EventSchema]:
        return iter(sorted(self._by_key.values(), key=lambda s: (s.event, s.version)))

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key


def load_registry(root: Path | str | None = None) -> SchemaRegistry:
    """Load every `<event>/v<N>.json` below `root` (the bundled plan by default)."""
    base = Path(root) if root is not None else PLAN_DIR
    if not base.is_dir():
        raise SchemaLoadError(base, "", "schema directory does not exist")
    schemas: list[EventSchema] = []
    for event_dir in sorted(p for p in base.iterdir() if not p.name.startswith(".")):
        if not event_dir.is_dir():
            raise SchemaLoadError(event_dir, "", "expected only <event>/ directories here")
        if not EVENT_NAME_RE.match(event_dir.name):
            raise SchemaLoadError(event_dir, "", "event names are lower snake_case, <= 64 chars")
        files = sorted(p for p in event_dir.iterdir() if not p.name.startswith("."))
        if not files:
            raise SchemaLoadError(event_dir, "", "an event directory holds at least v1.json")
        versions: dict[int, Path] = {}
        for file in files:
            match = VERSION_FILE_RE.match(file.name)
            if match is None:
                raise SchemaLoadError(file, "", "schema files are named v<N>.json, N >= 1")
            versions[int(match.group(1))] = file
        missing = sorted(set(range(1, max(versions) + 1)) - set(versions))
        if missing:
            # compatibility is checked version to version, so a gap would hide a step
            names = ", ".join(f"v{v}.json" for v in missing)
            raise SchemaLoadError(event_dir, "", f"versions have a gap: {names} missing")
        for version, file in sorted(versions.items()):
            schemas.append(load_schema_file(file, event_dir.name, version))
    if not schemas:
        raise SchemaLoadError(base, "", "no schema files found")
    return SchemaRegistry(schemas)


def load_schema_file(file: Path, event: str, version: int) -> EventSchema:
    try:
        document = msgspec.json.decode(file.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise SchemaLoadError(file, "", f"cannot read JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise SchemaLoadError(file, "", "a schema file holds one JSON object")
    if document.get("type") != "object" or "properties" not in document:
        raise SchemaLoadError(file, "", 'an event schema is `"type": "object"` with properties')
    return compile_schema(file, event, version, document)


def compile_schema(file: Path, event: str, version: int, document: dict[str, Any]) -> EventSchema:
    """Compile one schema document; `file` names it in errors. Also how a schema unpickles."""
    metadata, body = split_metadata(file, document)
    compiler = _Compiler(file, _struct_name(event, version))
    try:
        properties_type = compiler.compile(body, "")
        decoder = msgspec.json.Decoder(properties_type)
    except (TypeError, ValueError, NotImplementedError) as exc:
        # msgspec refuses some values the JSON checks above let through (e.g. a fractional
        # minimum on an integer, bounds beyond 64 bits); say so with the file name.
        raise SchemaLoadError(file, "", f"cannot compile: {exc}") from exc
    assert isinstance(properties_type, type)
    assert issubclass(properties_type, msgspec.Struct)
    return EventSchema(
        event=event,
        version=version,
        file=file,
        document=document,
        properties_type=properties_type,
        decoder=decoder,
        metadata=metadata,
    )


def _struct_name(event: str, version: int) -> str:
    return "".join(part.capitalize() for part in event.split("_")) + f"V{version}"


class _Compiler:
    """Turns one schema document into Python types msgspec can validate against."""

    def __init__(self, file: Path, root_name: str) -> None:
        self.file = file
        self.root_name = root_name

    def error(self, pointer: str, message: str) -> SchemaLoadError:
        return SchemaLoadError(self.file, pointer, message)

    def compile(self, node: object, pointer: str) -> Any:
        if not isinstance(node, dict):
            raise self.error(pointer, "a schema is a JSON object")
        for key in node:
            if key not in ANNOTATION_KEYWORDS and key not in CONSTRAINT_KEYWORDS:
                raise self.error(pointer, f"unsupported keyword `{key}`")
        types = self._types(node, pointer)
        self._check_keywords(node, pointer, types)
        if "enum" in node:
            extra = set(node) - ANNOTATION_KEYWORDS - {"enum", "type"}
            if extra:
                raise self.error(pointer, f"`enum` does not combine with {sorted(extra)}")
            compiled = self._enum(node, pointer, types)
            if "default" in node:
                self._check_default(node["default"], compiled, pointer)
            return compiled
        options = [self._compile_type(t, node, pointer) for t in types]
        compiled = options[0] if len(options) == 1 else Union[tuple(options)]  # noqa: UP007
        if "default" in node:
            self._check_default(node["default"], compiled, pointer)
        return compiled

    def _check_default(self, value: object, compiled: Any, pointer: str) -> None:
        """A default that its own property would reject could never upgrade an event."""
        try:
            msgspec.json.Decoder(compiled).decode(msgspec.json.encode(value))
        except msgspec.ValidationError as exc:
            raise self.error(pointer + "/default", f"the default is not valid: {exc}") from exc

    def _types(self, node: Mapping[str, Any], pointer: str) -> list[str]:
        declared = node.get("type")
        if declared is None:
            if "enum" in node:
                return []
            raise self.error(pointer, "`type` (or `enum`) is required")
        types = declared if isinstance(declared, list) else [declared]
        if not types or any(t not in JSON_TYPES for t in types) or len(set(types)) != len(types):
            raise self.error(pointer + "/type", f"unsupported type {declared!r}")
        return list(types)

    def _check_keywords(self, node: Mapping[str, Any], pointer: str, types: list[str]) -> None:
        for key in node:
            if key in ANNOTATION_KEYWORDS:
                continue
            applies_to = CONSTRAINT_KEYWORDS[key]
            if "*" not in applies_to and not applies_to.intersection(types):
                raise self.error(pointer, f"keyword `{key}` does not apply to type {types}")

    def _enum(self, node: Mapping[str, Any], pointer: str, types: list[str]) -> Any:
        values = node["enum"]
        if not isinstance(values, list) or not values:
            raise self.error(pointer + "/enum", "`enum` is a non-empty array")
        allowed_kinds = {"string": str, "integer": int, "null": type(None)}
        for value in values:
            if isinstance(value, bool) or not isinstance(value, str | int | None):
                raise self.error(
                    pointer + "/enum", f"enum values are strings or integers: {value!r}"
                )
            if types and not any(isinstance(value, allowed_kinds.get(t, ())) for t in types):
                raise self.error(pointer + "/enum", f"enum value {value!r} is not of type {types}")
        return Literal[tuple(values)]

    def _compile_type(self, json_type: str, node: Mapping[str, Any], pointer: str) -> Any:
        if json_type == "null":
            return None
        if json_type == "boolean":
            return bool
        if json_type in ("integer", "number"):
            return self._number(int if json_type == "integer" else float, node, pointer)
        if json_type == "string":
            return self._string(node, pointer)
        if json_type == "array":
            return self._array(node, pointer)
        return self._object(node, pointer)

    def _number(self, base: type, node: Mapping[str, Any], pointer: str) -> Any:
        meta: dict[str, Any] = {}
        for key, name in (
            ("minimum", "ge"),
            ("maximum", "le"),
            ("exclusiveMinimum", "gt"),
            ("exclusiveMaximum", "lt"),
        ):
            if key in node:
                value = node[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise self.error(f"{pointer}/{key}", f"`{key}` is a number")
                meta[name] = value
        if base is int:
            if "ge" not in meta and "gt" not in meta:
                meta["ge"] = INT64_MIN
            if "le" not in meta and "lt" not in meta:
                meta["le"] = INT64_MAX
        return Annotated[base, msgspec.Meta(**meta)] if meta else base

    def _string(self, node: Mapping[str, Any], pointer: str) -> Any:
        fmt = node.get("format")
        if fmt is not None:
            if fmt not in SUPPORTED_FORMATS:
                raise self.error(pointer + "/format", f"unsupported format `{fmt}`")
            if {"minLength", "maxLength", "pattern"}.intersection(node):
                raise self.error(pointer, f"length and pattern do not combine with format `{fmt}`")
            if fmt == "uuid":
                return uuid.UUID
            return Annotated[dt.datetime, msgspec.Meta(tz=True)]
        meta: dict[str, Any] = {}
        for key, name in (("minLength", "min_length"), ("maxLength", "max_length")):
            if key in node:
                meta[name] = self._count(node[key], f"{pointer}/{key}", key)
        if "pattern" in node:
            pattern = node["pattern"]
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise self.error(pointer + "/pattern", f"invalid pattern: {exc}") from exc
            meta["pattern"] = pattern
        return Annotated[str, msgspec.Meta(**meta)] if meta else str

    def _array(self, node: Mapping[str, Any], pointer: str) -> Any:
        if "items" not in node:
            raise self.error(pointer, "arrays declare their `items`")
        item_type = self.compile(node["items"], pointer + "/items")
        meta: dict[str, Any] = {}
        for key, name in (("minItems", "min_length"), ("maxItems", "max_length")):
            if key in node:
                meta[name] = self._count(node[key], f"{pointer}/{key}", key)
        array_type = list[item_type]  # type: ignore[valid-type]
        return Annotated[array_type, msgspec.Meta(**meta)] if meta else array_type

    def _count(self, value: object, pointer: str, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(pointer, f"`{key}` is a non-negative integer")
        return value

    def _object(self, node: Mapping[str, Any], pointer: str) -> Any:
        additional = node.get("additionalProperties", True)
        if not isinstance(additional, bool):
            raise self.error(pointer + "/additionalProperties", "only true or false is supported")
        properties = node.get("properties")
        if properties is None:
            if "required" in node or additional is False:
                raise self.error(pointer, "an object with `required` declares its `properties`")
            return dict[str, Any]
        if not isinstance(properties, dict):
            raise self.error(pointer + "/properties", "`properties` is an object")
        required = node.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.error(pointer + "/required", "`required` is an array of property names")
        missing = [r for r in required if r not in properties]
        if missing:
            raise self.error(pointer + "/required", f"required but not declared: {missing}")
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        renames: dict[str, str] = {}
        for name, child in properties.items():
            if not PROPERTY_NAME_RE.match(name):
                raise self.error(f"{pointer}/properties/{name}", "property names are identifiers")
            child_type = self.compile(child, f"{pointer}/properties/{name}")
            if name in required and isinstance(child, dict) and "default" in child:
                # a required property is never absent, so its default could never apply
                raise self.error(
                    f"{pointer}/properties/{name}/default", "only optional properties have defaults"
                )
            attr = f"{name}_" if keyword.iskeyword(name) else name
            if attr != name:
                if attr in properties:
                    raise self.error(f"{pointer}/properties/{name}", f"clashes with `{attr}`")
                renames[attr] = name
            if name in required:
                fields.append((attr, child_type))
            else:
                fields.append((attr, Union[child_type, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
        struct_name = self.root_name + "".join(
            "_" + part for part in pointer.split("/") if part and part != "properties"
        )
        return msgspec.defstruct(
            struct_name,
            fields,
            kw_only=True,
            frozen=True,
            gc=False,  # decoded values cannot form cycles; untracked structs are cheaper
            forbid_unknown_fields=not additional,
            rename=renames or None,
            module="event_schemas.compiled",
        )
