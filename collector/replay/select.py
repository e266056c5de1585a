"""Which decoded events a replay keeps: event name, version, user/anonymous id, `--where`.

`--where` is deliberately small: `<dotted.path><op><value>` with op one of `=`, `!=`, `<`,
`>`, or `<dotted.path> exists`. The value is read as JSON when it parses (`5`, `true`,
`"x"`), else as a plain string. `<` and `>` compare numbers with numbers and strings with
strings; any other pairing does not match. No expression language, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from collector.replay.errors import BadInput

_WHERE_RE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(!=|=|<|>)\s*(.*)$")
_EXISTS_RE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s+exists\s*$")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Predicate:
    path: tuple[str, ...]
    op: str  # "=", "!=", "<", ">", "exists"
    value: Any = None

    def matches(self, doc: Any) -> bool:
        found = _lookup(doc, self.path)
        if self.op == "exists":
            return found is not _MISSING
        if self.op == "=":
            return found is not _MISSING and _same(found, self.value)
        if self.op == "!=":
            return found is _MISSING or not _same(found, self.value)
        if not _comparable(found, self.value):
            return False
        return bool(found < self.value) if self.op == "<" else bool(found > self.value)


def parse_where(text: str) -> Predicate:
    exists = _EXISTS_RE.match(text)
    if exists:
        return Predicate(tuple(exists.group(1).split(".")), "exists")
    match = _WHERE_RE.match(text)
    if match is None:
        raise BadInput(f"bad --where `{text}`: use path=value, !=, <, > or `path exists`")
    path, op, raw = match.groups()
    try:
        value: Any = msgspec.json.decode(raw.strip())
    except msgspec.DecodeError:
        value = raw.strip()
    return Predicate(tuple(path.split(".")), op, value)


def _lookup(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _same(found: Any, wanted: Any) -> bool:
    # `true` must not equal 1, as JSON keeps booleans and numbers apart
    same_kind = type(found) is type(wanted) or (_number(found) and _number(wanted))
    return same_kind and bool(found == wanted)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(a: Any, b: Any) -> bool:
    return (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))


@dataclass(frozen=True, slots=True)
class Filter:
    events: frozenset[str] = frozenset()
    versions: frozenset[int] = frozenset()
    user_ids: frozenset[str] = frozenset()
    anonymous_ids: frozenset[str] = frozenset()
    where: Sequence[Predicate] = field(default_factory=tuple)

    @property
    def everything(self) -> bool:
        return not (self.events or self.versions or self.user_ids or self.anonymous_ids) and (
            not self.where
        )

    def matches(self, doc: Any) -> bool:
        """`doc` is the event as a JSON value; a non-object only passes an empty filter."""
        if self.everything:
            return True
        if not isinstance(doc, dict):
            return False
        return (
            (not self.events or doc.get("event") in self.events)
            and (not self.versions or doc.get("version") in self.versions)
            and (not self.user_ids or doc.get("user_id") in self.user_ids)
            and (not self.anonymous_ids or doc.get("anonymous_id") in self.anonymous_ids)
            and all(p.matches(doc) for p in self.where)
        )
