"""Schema metadata: the `x-` keys of a schema file, checked and split off before compiling.

Top level: `x-compatibility` (see compat.py), `x-owner`, `x-partition-key` (a required string
or integer property whose value keys the Kafka record), `x-topic` (a topic override). On a
top-level property: `x-pii`, `"drop"` or `"hash"`. An `x-` key anywhere else stays an
unsupported keyword for the loader. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from event_schemas.errors import SchemaLoadError
from event_schemas.topics import topic_error

COMPATIBILITY_KEYWORD = "x-compatibility"
COMPATIBILITY_MODES = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)
DEFAULT_COMPATIBILITY = "BACKWARD"
TOP_LEVEL_KEYS = (COMPATIBILITY_KEYWORD, "x-owner", "x-partition-key", "x-topic")
PII_KEYWORD = "x-pii"
PII_ACTIONS = ("drop", "hash")


@dataclass(frozen=True, slots=True)
class SchemaMetadata:
    compatibility: str = DEFAULT_COMPATIBILITY
    owner: str | None = None
    partition_key: str | None = None
    topic: str | None = None
    pii: Mapping[str, str] = field(default_factory=dict)  # property -> "drop" | "hash"

    @property
    def needs_properties(self) -> bool:
        """Whether the collector must look at decoded property values (key or PII)."""
        return self.partition_key is not None or bool(self.pii)


def split_metadata(file: Path, document: dict[str, Any]) -> tuple[SchemaMetadata, dict[str, Any]]:
    """The metadata, and the document without it (what the compiler sees)."""

    def error(pointer: str, message: str) -> SchemaLoadError:
        return SchemaLoadError(file, pointer, message)

    compatibility = document.get(COMPATIBILITY_KEYWORD, DEFAULT_COMPATIBILITY)
    if compatibility not in COMPATIBILITY_MODES:
        raise error(
            "/" + COMPATIBILITY_KEYWORD,
            f"`{COMPATIBILITY_KEYWORD}` is one of {', '.join(COMPATIBILITY_MODES)}: "
            f"got {compatibility!r}",
        )
    owner = document.get("x-owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise error("/x-owner", "`x-owner` is a non-empty string (a team or person)")
    topic = document.get("x-topic")
    if topic is not None:
        problem = topic_error(topic) if isinstance(topic, str) else "it is not a string"
        if problem is not None:
            raise error("/x-topic", f"`x-topic` must be a Kafka topic name: {problem}")
    properties = document.get("properties")
    required = document.get("required", [])
    body = {key: value for key, value in document.items() if key not in TOP_LEVEL_KEYS}
    pii: dict[str, str] = {}
    if isinstance(properties, dict):
        body["properties"] = dict(properties)
        for name, schema in properties.items():
            if isinstance(schema, dict) and PII_KEYWORD in schema:
                action = schema[PII_KEYWORD]
                pointer = f"/properties/{name}/{PII_KEYWORD}"
                if action not in PII_ACTIONS:
                    raise error(pointer, f"`{PII_KEYWORD}` is one of {PII_ACTIONS}: {action!r}")
                if action == "hash" and schema.get("type") not in ("string", ["string", "null"]):
                    raise error(pointer, "only string properties can be hashed")
                pii[name] = action
                body["properties"][name] = {k: v for k, v in schema.items() if k != PII_KEYWORD}
    partition_key = document.get("x-partition-key")
    if partition_key is not None:
        pointer = "/x-partition-key"
        field_schema = properties.get(partition_key) if isinstance(properties, dict) else None
        if not isinstance(field_schema, dict) or partition_key not in required:
            raise error(pointer, f"`{partition_key}` must be a required top-level property")
        if field_schema.get("type") not in ("string", "integer"):
            raise error(pointer, f"`{partition_key}` must be of type string or integer")
        if partition_key in pii:
            raise error(pointer, f"`{partition_key}` is PII; it cannot be the partition key")
    metadata = SchemaMetadata(
        compatibility=compatibility,
        owner=owner,
        partition_key=partition_key,
        topic=topic,
        pii=pii,
    )
    return metadata, body
