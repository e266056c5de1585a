"""Compatibility rules between the versions of one event, in Schema Registry terms.

Each version file may declare `"x-compatibility"` at its top level (default BACKWARD); the mode
declared in version N governs how N is checked against the earlier versions:

    BACKWARD   consumers on the new version read data written with the old one:
               can_read(reader=new, writer=old)
    FORWARD    consumers on the old version read data written with the new one:
               can_read(reader=old, writer=new)
    FULL       both; NONE: no check
    *_TRANSITIVE  against every earlier version, not only the previous one

`can_read(reader, writer)` asks: is every instance valid under `writer` valid under `reader`?
It is decided per keyword of the loader's subset, recursively through `properties` and
`items` (paths read `owner.user_id`, `tracks[].position`). A finding is phrased as what the
new version does, so one rule reads differently in the two directions:

    rule            the reader fails when ...               BACKWARD says     FORWARD says
    --------------  --------------------------------------  ----------------  -----------------
    required-added  it requires a field the writer lacks    adds required     removes required
    made-required   it requires a field that the writer     makes required    makes optional
                    has as optional
    closed-object   it is closed (additionalProperties      removes field     adds field
                    false) and lacks a writer field
    open-object     it has an optional field the open       adds field to an  removes field from
                    writer lacks (any value may be there)   open object       an open object
    closed          it is closed and the writer is open     closes object     opens object
    type            it lacks a writer type (integer is      changes the type  changes the type
                    read as number, not number as integer)
    enum            its enum lacks a writer enum value, or  narrows enum      widens enum
                    it is an enum and the writer is a type
    minimum etc.    its bound is tighter than the writer's  tightens          loosens
                    (minimum/maximum incl. exclusive*, minLength/maxLength, minItems/maxItems)
    pattern         it has a pattern the writer lacks or    adds / changes    removes / changes
                    has differently (only equal patterns    pattern           pattern
                    are provably compatible)
    format          its format differs from the writer's    adds / changes    removes / changes

So adding an optional field to a closed object is BACKWARD-compatible but breaks FORWARD (old
readers reject the unknown field); removing a field breaks BACKWARD when the new object is
closed. A writer `format` is taken as an unbounded string when the reader has a plain string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from event_schemas.loader import EventSchema, SchemaRegistry, _Compiler
from event_schemas.metadata import COMPATIBILITY_MODES

__all__ = [
    "COMPATIBILITY_MODES",
    "Finding",
    "Violation",
    "can_read",
    "check_pair",
    "check_registry",
]

_NUMERIC = frozenset({"integer", "number"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One way a reader schema can fail to read a writer's data, phrased as the new version."""

    path: str  # e.g. "owner.user_id", "tracks[].position"; "" is the event's top level
    rule: str  # e.g. "required-added", "type", "enum", "maximum"
    detail: str  # e.g. "removes required field `position_ms`"


@dataclass(frozen=True, slots=True)
class Violation:
    """A compatibility violation between two versions of one event under a mode."""

    event: str
    old_version: int
    new_version: int
    mode: str
    path: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.event} v{self.new_version} {self.detail} "
            f"({self.mode}; checked against v{self.old_version})"
        )


def can_read(
    reader: Mapping[str, Any], writer: Mapping[str, Any], *, reader_is_new: bool = True
) -> list[Finding]:
    """Why `reader` may reject an instance valid under `writer`; empty when it never does.

    `reader_is_new` only chooses the wording (BACKWARD: True, FORWARD: False).
    """
    findings = _Checker(reader_is_new).node(reader, writer, "")
    unique: dict[Finding, None] = dict.fromkeys(findings)
    return list(unique)


def check_pair(old: EventSchema, new: EventSchema, mode: str | None = None) -> list[Violation]:
    """Check `new` against `old` under `mode` (default: the mode `new` declares)."""
    mode = new.compatibility if mode is None else mode
    if mode not in COMPATIBILITY_MODES:
        raise ValueError(f"unknown compatibility mode {mode!r}")
    base = mode.removesuffix("_TRANSITIVE")
    directions = {"BACKWARD": (True,), "FORWARD": (False,), "FULL": (True, False)}.get(base, ())
    seen: dict[Finding, None] = {}
    for reader_is_new in directions:
        reader, writer = (new, old) if reader_is_new else (old, new)
        for finding in can_read(reader.document, writer.document, reader_is_new=reader_is_new):
            seen.setdefault(finding)
    return [
        Violation(
            event=new.event,
            old_version=old.version,
            new_version=new.version,
            mode=mode,
            path=finding.path,
            rule=finding.rule,
            detail=finding.detail,
        )
        for finding in seen
    ]


def check_registry(registry: SchemaRegistry) -> list[Violation]:
    """Check every event's versions in order, each under the mode its own file declares."""
    violations: list[Violation] = []
    for event in registry.events():
        versions = registry.versions(event)
        for index in range(1, len(versions)):
            new = registry.get(event, versions[index])
            assert new is not None
            if new.compatibility == "NONE":
                continue
            transitive = new.compatibility.endswith("_TRANSITIVE")
            for old_version in versions[:index] if transitive else versions[index - 1 : index]:
                old = registry.get(event, old_version)
                assert old is not None
                violations.extend(check_pair(old, new))
    return violations


def _types(node: Mapping[str, Any]) -> list[str]:
    declared = node.get("type")
    if declared is None:
        return []
    return list(declared) if isinstance(declared, list) else [declared]


def _where(path: str) -> str:
    return f"`{path}`" if path else "the top level"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _values(values: Sequence[object]) -> str:
    return ", ".join(repr(v) for v in values)


def _type_names(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return f"enum [{_values(node['enum'])}]"
    return " or ".join(_types(node))


def _accepts(node: Mapping[str, Any], value: object) -> bool:
    """Whether `value` (an enum value: str, int or None) is valid under the schema `node`."""
    compiled = _Compiler(Path("<compat>"), "Compat").compile(node, "")
    try:
        msgspec.json.decode(msgspec.json.encode(value), type=compiled)
    except msgspec.ValidationError:
        return False
    return True


Bound = tuple[float, bool]  # (value, exclusive)


def _lower(node: Mapping[str, Any]) -> Bound | None:
    bounds: list[Bound] = []
    if "minimum" in node:
        bounds.append((node["minimum"], False))
    if "exclusiveMinimum" in node:
        bounds.append((node["exclusiveMinimum"], True))
    # the tightest: the greatest value; at equal values the exclusive one
    return max(bounds, key=lambda b: (b[0], b[1])) if bounds else None


def _upper(node: Mapping[str, Any]) -> Bound | None:
    bounds: list[Bound] = []
    if "maximum" in node:
        bounds.append((node["maximum"], False))
    if "exclusiveMaximum" in node:
        bounds.append((node["exclusiveMaximum"], True))
    return min(bounds, key=lambda b: (b[0], not b[1])) if bounds else None


class _Checker:
    """Collects findings for one direction; `reader_is_new` picks the wording."""

    def __init__(self, reader_is_new: bool) -> None:
        self.reader_is_new = reader_is_new

    def finding(self, path: str, rule: str, if_new: str, if_old: str) -> Finding:
        return Finding(path, rule, if_new if self.reader_is_new else if_old)

    def bound(self, path: str, keyword: str) -> Finding:
        where = _where(path)
        return self.finding(
            path, keyword, f"tightens {keyword} of {where}", f"loosens {keyword} of {where}"
        )

    def node(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str
    ) -> list[Finding]:
        if "enum" in writer:
            return self.writer_enum(reader, writer, path)
        if "enum" in reader:
            enum = reader["enum"]
            if any(t != "null" for t in _types(writer)) or None not in enum:
                return [
                    self.finding(
                        path,
                        "enum",
                        f"restricts {_where(path)} to enum [{_values(enum)}]",
                        f"widens enum {_where(path)} to {_type_names(writer)}",
                    )
                ]
            return []
        reader_types = _types(reader)
        findings: list[Finding] = []
        changed = False
        for json_type in _types(writer):
            if json_type in reader_types or (json_type == "integer" and "number" in reader_types):
                findings.extend(self.constraints(reader, writer, json_type, path))
            else:
                changed = True
        if changed:
            old, new = (writer, reader) if self.reader_is_new else (reader, writer)
            detail = (
                f"changes the type of {_where(path)} from {_type_names(old)} to {_type_names(new)}"
            )
            findings.insert(0, Finding(path, "type", detail))
        return findings

    def writer_enum(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str
    ) -> list[Finding]:
        values: list[object] = writer["enum"]
        if "enum" in reader:
            missing = [v for v in values if v not in reader["enum"]]
            if not missing:
                return []
            return [
                self.finding(
                    path,
                    "enum",
                    f"narrows enum {_where(path)}: drops {_values(missing)}",
                    f"widens enum {_where(path)}: adds {_values(missing)}",
                )
            ]
        rejected = [v for v in values if not _accepts(reader, v)]
        if not rejected:
            return []
        return [
            self.finding(
                path,
                "enum",
                f"turns enum {_where(path)} into {_type_names(reader)}, "
                f"which rejects {_values(rejected)}",
                f"turns {_where(path)} into an enum with {_values(rejected)}, "
                f"which {_type_names(reader)} rejects",
            )
        ]

    def constraints(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], json_type: str, path: str
    ) -> list[Finding]:
        if json_type in _NUMERIC:
            return self.numeric(reader, writer, integers=json_type == "integer", path=path)
        if json_type == "string":
            return self.string(reader, writer, path)
        if json_type == "array":
            findings = self.node(reader["items"], writer["items"], path + "[]")
            return findings + self.counts(reader, writer, "minItems", "maxItems", path)
        if json_type == "object":
            return self.object(reader, writer, path)
        return []  # boolean, null: nothing more to compare

    def numeric(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], *, integers: bool, path: str
    ) -> list[Finding]:
        findings: list[Finding] = []
        r_low, w_low = _lower(reader), _lower(writer)
        r_high, w_high = _upper(reader), _upper(writer)
        if integers:
            # only integers are written: compare as inclusive integer bounds (x > 0 is x >= 1)
            def low(b: Bound | None) -> float | None:
                return None if b is None else (math.floor(b[0]) + 1 if b[1] else math.ceil(b[0]))

            def high(b: Bound | None) -> float | None:
                return None if b is None else (math.ceil(b[0]) - 1 if b[1] else math.floor(b[0]))

            rl, wl, rh, wh = low(r_low), low(w_low), high(r_high), high(w_high)
            if rl is not None and (wl is None or wl < rl):
                findings.append(self.bound(path, "minimum"))
            if rh is not None and (wh is None or wh > rh):
                findings.append(self.bound(path, "maximum"))
            return findings
        if r_low is not None and (
            w_low is None
            or w_low[0] < r_low[0]
            or (w_low[0] == r_low[0] and r_low[1] and not w_low[1])
        ):
            findings.append(self.bound(path, "minimum"))
        if r_high is not None and (
            w_high is None
            or w_high[0] > r_high[0]
            or (w_high[0] == r_high[0] and r_high[1] and not w_high[1])
        ):
            findings.append(self.bound(path, "maximum"))
        return findings

    def counts(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], low: str, high: str, path: str
    ) -> list[Finding]:
        findings: list[Finding] = []
        if reader.get(low, 0) > writer.get(low, 0):
            findings.append(self.bound(path, low))
        r_high, w_high = reader.get(high), writer.get(high)
        if r_high is not None and (w_high is None or w_high > r_high):
            findings.append(self.bound(path, high))
        return findings

    def string(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str
    ) -> list[Finding]:
        findings: list[Finding] = []
        where = _where(path)
        r_format, w_format = reader.get("format"), writer.get("format")
        if r_format is not None and r_format != w_format:
            if w_format is None:
                findings.append(
                    self.finding(
                        path,
                        "format",
                        f"adds format `{r_format}` to {where}",
                        f"removes format `{r_format}` from {where}",
                    )
                )
            else:
                old, new = (w_format, r_format) if self.reader_is_new else (r_format, w_format)
                detail = f"changes the format of {where} from `{old}` to `{new}`"
                findings.append(Finding(path, "format", detail))
        findings.extend(self.counts(reader, writer, "minLength", "maxLength", path))
        r_pattern, w_pattern = reader.get("pattern"), writer.get("pattern")
        if r_pattern is not None and r_pattern != w_pattern:
            if w_pattern is None:
                findings.append(
                    self.finding(
                        path,
                        "pattern",
                        f"adds pattern `{r_pattern}` to {where}",
                        f"removes pattern `{r_pattern}` from {where}",
                    )
                )
            else:
                old, new = (w_pattern, r_pattern) if self.reader_is_new else (r_pattern, w_pattern)
                detail = f"changes the pattern of {where} from `{old}` to `{new}`"
                findings.append(Finding(path, "pattern", detail))
        return findings

    def object(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str
    ) -> list[Finding]:
        findings: list[Finding] = []
        r_props: Mapping[str, Any] = reader.get("properties") or {}
        w_props: Mapping[str, Any] = writer.get("properties") or {}
        r_required = set(reader.get("required", []))
        w_required = set(writer.get("required", []))
        r_open = reader.get("additionalProperties", True) is not False
        w_open = writer.get("additionalProperties", True) is not False
        for name, r_child in r_props.items():
            child = _join(path, name)
            if name in w_props:
                findings.extend(self.node(r_child, w_props[name], child))
                if name in r_required and name not in w_required:
                    findings.append(
                        self.finding(
                            child,
                            "made-required",
                            f"makes field `{child}` required",
                            f"makes field `{child}` optional",
                        )
                    )
            elif name in r_required:
                findings.append(
                    self.finding(
                        child,
                        "required-added",
                        f"adds required field `{child}`",
                        f"removes required field `{child}`",
                    )
                )
            elif w_open:
                findings.append(
                    self.finding(
                        child,
                        "open-object",
                        f"adds field `{child}` to an open object (old data may hold any value)",
                        f"removes field `{child}` from an open object "
                        "(new data may hold any value)",
                    )
                )
        if not r_open:
            for name in w_props:
                if name not in r_props:
                    child = _join(path, name)
                    kind = "required field" if name in w_required else "field"
                    findings.append(
                        self.finding(
                            child,
                            "closed-object",
                            f"removes {kind} `{child}` from a closed object",
                            f"adds {kind} `{child}` to a closed object",
                        )
                    )
            if w_open:
                findings.append(
                    self.finding(
                        path,
                        "closed",
                        f"closes {_where(path)} to unknown fields",
                        f"opens {_where(path)} to unknown fields",
                    )
                )
        return findings
