"""Build hook of event-capture-sdk: put ../capture_sdk and ../event_schemas into the wheel.

Only the standard wheel gets them. The editable one (the dev install) must not: copies in
site-packages would shadow the live package dirs that its .pth file puts on sys.path (a plain
`force-include` would ship them in both, and hatchling has no per-version setting for it).
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGES = ("capture_sdk", "event_schemas")


class SdkPackages(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "standard":
            return
        for package in PACKAGES:
            # relative to this directory; the packages stay where the rest of the repo uses them
            build_data["force_include"][f"../{package}"] = package
