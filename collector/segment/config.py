"""The `[segment]` table of the collector's config file: which schema a Segment event name maps to.

This module only reads and checks the table; applying the map to messages is mapping.py's job.
It must not look at the tracking plan (the plan can be reloaded; names resolve per request).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.settings import SettingsError

# `track_played` (newest version in the plan) or `track_played@2` (that version)
TARGET_RE = re.compile(r"^(?P<event>[a-z][a-z0-9_]{0,63})(?:@(?P<version>[1-9][0-9]{0,3}))?$")
KNOWN_KEYS = frozenset({"events"})


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """Segment event name -> (schema name, version or None for the newest in the plan)."""

    events: Mapping[str, tuple[str, int | None]] = field(default_factory=dict)


def build_segment_config(config: Mapping[str, Any], *, path: str | None) -> SegmentConfig:
    """The `[segment]` table of a loaded config file (absent: no explicit names)."""
    section = config.get("segment")
    if section is None:
        return SegmentConfig()
    where = f"config file {path}: [segment]"
    if not isinstance(section, dict):
        raise SettingsError(f"{where} must be a table")
    unknown = sorted(set(section) - KNOWN_KEYS)
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(unknown)} (known: events)")
    table = section.get("events", {})
    if not isinstance(table, dict):
        raise SettingsError(f'{where}.events must be a table of "Segment name" = "schema[@v]"')
    events: dict[str, tuple[str, int | None]] = {}
    for name, target in table.items():
        match = TARGET_RE.match(target) if isinstance(target, str) else None
        if match is None:
            raise SettingsError(
                f"{where}.events: {name!r} maps to {target!r}; expected a schema name,"
                ' optionally with a version: "track_played" or "track_played@2"'
            )
        version = match.group("version")
        events[name] = (match.group("event"), int(version) if version else None)
    return SegmentConfig(events=events)
