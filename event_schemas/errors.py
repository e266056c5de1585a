"""The tracking plan's errors: a schema file that cannot be loaded, and how a validation
error against a schema reads (shared by the collector and the SDK)."""

from __future__ import annotations

from pathlib import Path

import msgspec


class SchemaLoadError(Exception):
    """A schema file cannot be compiled; the message names the file and the JSON pointer."""

    def __init__(self, file: Path, pointer: str, message: str) -> None:
        self.file = file
        self.pointer = pointer or "/"
        super().__init__(f"{file}: at {self.pointer}: {message}")


def split_validation_error(exc: msgspec.ValidationError, root: str = "$") -> tuple[str, str]:
    """msgspec's "message - at `$.a.b`" as (path under `root`, message); `root` if no path."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return root, text
    return root + where.rstrip("`")[1:], message
