"""The tracking plan: versioned JSON Schema files per event, compiled into msgspec types.

This package is the leaf of the project: it imports msgspec only, never the SDK or collector.
"""

from event_schemas.codegen import python_source, typescript_source
from event_schemas.compat import Violation, check_pair, check_registry
from event_schemas.errors import SchemaLoadError
from event_schemas.loader import (
    PLAN_DIR,
    EventSchema,
    SchemaRegistry,
    load_registry,
    load_schema_file,
)
from event_schemas.metadata import COMPATIBILITY_MODES, SchemaMetadata

__all__ = [
    "COMPATIBILITY_MODES",
    "PLAN_DIR",
    "EventSchema",
    "SchemaLoadError",
    "SchemaMetadata",
    "SchemaRegistry",
    "Violation",
    "check_pair",
    "check_registry",
    "load_registry",
    "load_schema_file",
    "python_source",
    "typescript_source",
]
