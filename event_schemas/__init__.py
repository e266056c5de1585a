"""The tracking plan: versioned JSON Schema files per event, compiled into msgspec types.

This package is the leaf of the project: it imports msgspec only, never the SDK or collector.
"""

from event_schemas.loader import (
    PLAN_DIR,
    EventSchema,
    SchemaLoadError,
    SchemaRegistry,
    load_registry,
    load_schema_file,
)

__all__ = [
    "PLAN_DIR",
    "EventSchema",
    "SchemaLoadError",
    "SchemaRegistry",
    "load_registry",
    "load_schema_file",
]
