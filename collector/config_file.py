"""The collector's structured configuration file (TOML): write keys and routing rules.

Scalar knobs stay in `settings` (env and flags); what does not fit one variable lives here, one
top-level table per subsystem. This module only reads the file and checks the section names;
each subsystem converts and validates its own section and names the file in its errors.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from collector.settings import SettingsError, env_var

# top-level tables and the module that owns each
SECTIONS = {
    "sources": "collector.sources",  # write keys: source name, allowed events, browser/server
    "routing": "collector.routing",  # topic template and fan-out rules
    "segment": "collector.segment",  # Segment event name -> schema map of /compat/segment
}


def load_config_file(path: str | None) -> dict[str, Any]:
    """The file's top-level tables (empty without a file); an unknown table is an error."""
    if path is None:
        return {}
    setting = env_var("config_file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(
            f"cannot read the config file {path} ({setting}): {exc.strerror}"
        ) from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise SettingsError(
            f"config file {path} ({setting}) is not UTF-8 text: {exc.reason}"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} ({setting}) is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        known = ", ".join(SECTIONS)
        raise SettingsError(
            f"config file {path}: unknown section(s) {', '.join(unknown)} (known: {known})"
        )
    return data
