"""Render the tracking plan as one Markdown page: every event and version, each field with
its type, constraints, PII tag and description, the owner, and what changed between versions.

Pure: takes a loaded SchemaRegistry, returns text. Writing the file is the CLI's job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from event_schemas.loader import EventSchema, SchemaRegistry

CONSTRAINTS = (
    ("minimum", ">= {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length >= {}"),
    ("maxLength", "length <= {}"),
    ("pattern", "matches `{}`"),
    ("format", "format {}"),
    ("minItems", "items >= {}"),
    ("maxItems", "items <= {}"),
)


@dataclass(frozen=True, slots=True)
class Field:
    path: str
    type: str
    required: bool
    constraints: str
    pii: str
    description: str


def fields(schema: EventSchema) -> list[Field]:
    """Every field of a version, nested objects and array items included, in file order."""
    return list(_walk(schema.document, "", schema.metadata.pii))


def _walk(node: Mapping[str, Any], prefix: str, pii: Mapping[str, str]) -> Iterator[Field]:
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        yield Field(
            path=path,
            type=_type(child),
            required=name in required,
            constraints=_constraints(child),
            pii=pii.get(name, "") if not prefix else "",
            description=str(child.get("description", "")),
        )
        yield from _children(child, path)


def _children(node: Mapping[str, Any], path: str) -> Iterator[Field]:
    if "properties" in node:
        yield from _walk(node, path + ".", {})
    items = node.get("items")
    if isinstance(items, dict):
        if "properties" in items:
            yield from _walk(items, path + "[].", {})
        else:
            yield from _children(items, path + "[]")


def _type(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    declared = node.get("type", "any")
    types = declared if isinstance(declared, list) else [declared]
    rendered = []
    for json_type in types:
        if json_type == "array":
            items = node.get("items", {})
            inner = "object" if "properties" in items else _type(items)
            rendered.append(f"array of {inner}")
        else:
            rendered.append(str(json_type))
    return " or ".join(rendered)


def _constraints(node: Mapping[str, Any]) -> str:
    parts = [template.format(node[key]) for key, template in CONSTRAINTS if key in node]
    if node.get("additionalProperties") is False:
        parts.append("no other fields")
    return ", ".join(parts)


def changes(previous: EventSchema, current: EventSchema) -> list[str]:
    """What a version changed, field by field, against the one before it."""
    before = {f.path: f for f in fields(previous)}
    after = {f.path: f for f in fields(current)}
    notes = []
    for path, field in after.items():
        old = before.get(path)
        if old is None:
            notes.append(f"adds {'required' if field.required else 'optional'} `{path}`")
            continue
        for label, was, now in (
            ("type", old.type, field.type),
            ("constraints", old.constraints or "none", field.constraints or "none"),
            ("PII", old.pii or "none", field.pii or "none"),
        ):
            if was != now:
                notes.append(f"changes {label} of `{path}`: {was} -> {now}")
        if old.required != field.required:
            notes.append(f"makes `{path}` {'required' if field.required else 'optional'}")
    notes.extend(f"removes `{path}`" for path in before if path not in after)
    return notes


def render_markdown(registry: SchemaRegistry) -> str:
    lines = ["# Tracking plan", ""]
    lines.append("| event | versions | owner | topic | partition key | compatibility |")
    lines.append("|---|---|---|---|---|---|")
    for event in registry.events():
        versions = [s for s in registry if s.event == event]
        latest = versions[-1].metadata
        lines.append(
            f"| [{event}](#{event}) | {', '.join(f'v{s.version}' for s in versions)}"
            f" | {latest.owner or ''} | {latest.topic or f'events.{event}'}"
            f" | {latest.partition_key or 'user_id, else anonymous_id'} | {latest.compatibility} |"
        )
    for event in registry.events():
        versions = [s for s in registry if s.event == event]
        lines += ["", f"## {event}", ""]
        for index, schema in enumerate(versions):
            lines += [f"### {event} v{schema.version}", ""]
            description = schema.document.get("description")
            if description:
                lines += [str(description), ""]
            if schema.metadata.owner:
                lines += [f"Owner: {schema.metadata.owner}.", ""]
            if index:
                lines.append(f"Changes from v{versions[index - 1].version}:")
                lines += [f"- {note}" for note in changes(versions[index - 1], schema)] or [
                    "- no field changes"
                ]
                lines.append("")
            lines.append("| field | type | required | constraints | PII | description |")
            lines.append("|---|---|---|---|---|---|")
            for field in fields(schema):
                lines.append(
                    f"| `{field.path}` | {field.type} | {'yes' if field.required else 'no'}"
                    f" | {_cell(field.constraints)} | {field.pii} | {_cell(field.description)} |"
                )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
