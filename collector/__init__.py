"""The collector: an aiohttp service that validates events and hands them to a sink.

Imports `event_schemas`, never `capture_sdk`. The names below are imported on first use, so
that a tool that needs only part of the package (`capture replay`) does not load the HTTP app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collector.app import create_app
    from collector.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "create_app", "load_settings"]

_HOMES = {
    "create_app": "collector.app",
    "Settings": "collector.settings",
    "SettingsError": "collector.settings",
    "load_settings": "collector.settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups do not come here
    return value
