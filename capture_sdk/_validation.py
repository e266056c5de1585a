"""Local validation against the tracking plan, before anything is sent.

"strict" (development, tests): track() raises InvalidEventError naming the field. "drop"
(production): the worker counts the event as dropped with reason `invalid` instead of sending
it, so track() stays cheap. "off" (the default): the collector alone validates.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from capture_sdk._errors import ConfigurationError
from capture_sdk._events import QueuedEvent
from event_schemas import SchemaRegistry, load_registry
from event_schemas.errors import split_validation_error

ValidationMode = Literal["off", "strict", "drop"]
VALIDATION_MODES: tuple[str, ...] = ValidationMode.__args__  # type: ignore[attr-defined]


class LocalValidator:
    def __init__(self, mode: ValidationMode, schemas: SchemaRegistry | None) -> None:
        if mode not in VALIDATION_MODES:
            raise ConfigurationError(f"validation is one of {VALIDATION_MODES}, not {mode!r}")
        self.mode = mode
        self.strict = mode == "strict"
        self.drops = mode == "drop"
        self._schemas = schemas if schemas is not None or mode == "off" else load_registry()
        self._encoder = msgspec.json.Encoder()

    def problem(self, event: QueuedEvent) -> str | None:
        """Why the event breaks its schema (with the JSON path), or None when it is valid."""
        if self._schemas is None:
            return None
        schema = self._schemas.get(event.event, event.version)
        if schema is None:
            versions = self._schemas.versions(event.event)
            if not versions:
                return f"unknown event `{event.event}` (not in the tracking plan)"
            return f"`{event.event}` has no version {event.version} (known: {versions})"
        try:
            schema.decoder.decode(self._encoder.encode(event.properties))
        except msgspec.ValidationError as exc:
            path, message = split_validation_error(exc, "$.properties")
            return f"{event.event} v{event.version}: {message} at `{path}`"
        except (TypeError, ValueError, msgspec.EncodeError):
            return None  # not JSON at all: the worker drops it as `unserializable`
        return None
