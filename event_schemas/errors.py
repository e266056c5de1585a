"""The tracking plan's one error: a schema file that cannot be loaded, named with its pointer."""

from __future__ import annotations

from pathlib import Path


class SchemaLoadError(Exception):
    """A schema file cannot be compiled; the message names the file and the JSON pointer."""

    def __init__(self, file: Path, pointer: str, message: str) -> None:
        self.file = file
        self.pointer = pointer or "/"
        super().__init__(f"{file}: at {self.pointer}: {message}")
