"""The OpenAPI 3.1 document of the collector's HTTP API, served at GET /openapi.json.

Body schemas come from the msgspec Structs the handlers encode and decode, so they cannot
drift from the code; the paths, statuses and headers are written here by hand. This module
describes the API; it must not validate requests (decoding.py and validation.py do).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from aiohttp import web

from collector.browser_forms import NATIVE_BODY_KEY, QUERY_KEY, SEGMENT_BODY_KEY
from collector.model import BatchResponse, ErrorBody, WireEvent
from collector.segment.handlers import route_paths

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{name}"
# The envelope fields a client sends; the rest of WireEvent is set by the collector, and
# anything a client sends under those names (or any other unknown name) is ignored.
CLIENT_FIELDS = (
    "event",
    "version",
    "event_id",
    "occurred_at",
    "user_id",
    "anonymous_id",
    "properties",
    "context",
)
FIELD_DOCS = {
    "event": "Event name from the tracking plan.",
    "version": "Schema version of the event.",
    "event_id": "Client-generated id; retries reuse it.",
    "occurred_at": "When it happened, RFC 3339 with an offset.",
    "properties": "Validated against the schema of (event, version).",
    "context": "Passed through as sent.",
}
# Statuses of POST /v1/batch that refuse the whole request, with what they mean.
BATCH_ERRORS = {
    "400": "Not JSON, not UTF-8, not a batch envelope, bad gzip or nested too deep"
    " (malformed_json, invalid_envelope, invalid_gzip, too_deep, bad_request); a body write key"
    " that is not a string (invalid_envelope); the client closed the connection before the body"
    " was complete (incomplete_body).",
    "401": "No usable write key, or a bad signature (missing_key, unknown_key, invalid_signature);"
    " a server key in the write_key query parameter (key_in_query) or in the body"
    " (key_in_body): server keys go in Authorization only.",
    "403": "The key may not send this event or from this origin (event_not_allowed,"
    " origin_not_allowed).",
    "408": "The body did not arrive in time (body_timeout).",
    "413": "Body larger than max_body_bytes, or inflated past max_decompressed_bytes"
    " (body_too_large); more events than max_batch_events (too_many_events).",
    "415": "Content-Type is not application/json (text/plain also, from browser keys), or"
    " Content-Encoding is not gzip/identity (unsupported_content_type, unsupported_encoding).",
    "429": "The key's rate limit is spent (rate_limited); retry after Retry-After.",
    "500": "The sink refused a record for good (sink_rejected), or a bug in the collector"
    " (internal_error; no request should cause one). Nothing was accepted.",
    "503": "The sink did not acknowledge every record, or too many bytes are in flight"
    " (sink_unavailable, overloaded). Nothing was accepted; retry the whole batch after"
    " Retry-After.",
}
RETRY_AFTER_STATUSES = frozenset({"429", "503"})
# How a browser sends without a preflight (issue 13): the key outside Authorization.
BROWSER_FORMS = (
    " Browser keys only: the key may instead be in the `write_key` query parameter or in the"
    " body's `{field}` (Authorization wins over the query string, which wins over the body; a"
    " key in the body is checked once the body is read), and the body may be `text/plain`"
    " (JSON inside, gzip recognised by its magic bytes when Content-Encoding is not set)."
)
# Every route's answer to an `Expect` header other than 100-continue (handlers.handle_expect).
EXPECTATION_FAILED = (
    "An Expect header other than 100-continue (expectation_failed); send the request without it."
)


def _event_schema() -> dict[str, Any]:
    fields = {field.name: field for field in msgspec.structs.fields(WireEvent)}
    properties: dict[str, Any] = {}
    for name in CLIENT_FIELDS:
        schema = dict(msgspec.json.schema(fields[name].type))  # Raw fields: {} (any JSON)
        if name in FIELD_DOCS:
            schema["description"] = FIELD_DOCS[name]
        properties[name] = schema
    properties["properties"]["type"] = "object"
    return {
        "title": "Event",
        "type": "object",
        "properties": properties,
        "required": [name for name in CLIENT_FIELDS if fields[name].required],
        "description": "One event. An event that fails its schema is dead-lettered and reported"
        " in `rejected`; it does not fail the request.",
    }


def _components() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components([BatchResponse, ErrorBody], ref_template=_REF)
    schemas["Event"] = _event_schema()
    schemas["Batch"] = {
        "title": "Batch",
        "type": "object",
        "properties": {
            "batch": {"type": "array", "items": {"$ref": _REF.format(name="Event")}},
            "sent_at": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            NATIVE_BODY_KEY: _body_key_schema(),
        },
        "required": ["batch"],
    }
    return schemas


def _body_key_schema() -> dict[str, Any]:
    return {
        "type": "string",
        "description": "A browser key, when the request has no Authorization header and no"
        " write_key query parameter; never stored with the events. A server key here is"
        " refused (401 key_in_body).",
    }


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}


def _bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """A request body as JSON, or (browser keys only) the same JSON sent as text/plain."""
    return {"application/json": {"schema": schema}, "text/plain": {"schema": schema}}


def _ingest_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["gzip", "identity"]},
        },
        {
            "name": QUERY_KEY,
            "in": "query",
            "required": False,
            "description": "A browser key, when the request has no Authorization header (a"
            " server key here is refused: 401 key_in_query).",
            "schema": {"type": "string"},
        },
    ]


# anonymous: only when the collector has no write keys configured (development mode)
SECURITY: list[dict[str, list[str]]] = [{"writeKey": []}, {"writeKeyQuery": []}, {}]


def _error(status: str, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json("ErrorBody")}
    if status in RETRY_AFTER_STATUSES:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


def _batch_operation() -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Every record (accepted events and dead letters) is acknowledged"
            " by the sink.",
            "content": _json("BatchResponse"),
        }
    }
    responses.update({status: _error(status, text) for status, text in BATCH_ERRORS.items()})
    return {
        "operationId": "postBatch",
        "summary": "Send a batch of events",
        "description": "Send with Authorization: Bearer <key>."
        + BROWSER_FORMS.format(field=NATIVE_BODY_KEY),
        "security": SECURITY,
        "parameters": _ingest_parameters(),
        "requestBody": {
            "required": True,
            "content": _bodies({"$ref": _REF.format(name="Batch")}),
        },
        "responses": responses,
    }


def _preflight_operation(name: str) -> dict[str, Any]:
    cors = (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Access-Control-Max-Age",
        "Vary",
    )
    return {
        "operationId": f"preflight{name}",
        "summary": "CORS preflight for browser write keys (no key needed)",
        "responses": {
            "204": {
                "description": "The origin is listed by a browser source: POST may follow.",
                "headers": {name: {"schema": {"type": "string"}} for name in cors},
            },
            "403": _error(
                "403",
                "No browser source lists the origin (origin_not_allowed; the answer carries no"
                " Access-Control-Allow-Origin), or the method is not POST (method_not_allowed).",
            ),
        },
    }


# Segment's HTTP tracking API under /compat/segment (docs/segment-migration.md): the messages
# are Segment's, so their shape is described there and in Segment's spec, not here.


def _segment_operation(path: str, call: str | None) -> dict[str, Any]:
    key = {SEGMENT_BODY_KEY: _body_key_schema()}
    message = {
        "type": "object",
        "properties": key,
        "description": "A Segment message (Segment's spec). A `writeKey` inside a message is"
        " never stored (dead letters keep the message without it).",
    }
    body = (
        {
            "type": "object",
            "properties": {"batch": {"type": "array", "items": message}, "sentAt": {}, **key},
            "required": ["batch"],
        }
        if call is None
        else message
    )
    name = path.rsplit("/", 1)[-1]
    summary = f"Segment-compatible `{call or 'batch'}` (migration path for Segment SDKs)"
    if len(name) == 1:
        summary += "; the short path analytics.js uses"
    ok = {
        "type": "object",
        "properties": {
            "success": {"const": True},
            "accepted": {"type": "integer"},
            "rejected": {"type": "array"},
        },
        "required": ["success"],
    }
    responses: dict[str, Any] = {
        "200": _plain("Every record (events and dead letters) is acknowledged by the sink.", ok)
    }
    responses.update({status: _error(status, text) for status, text in BATCH_ERRORS.items()})
    return {
        "operationId": f"postSegment{_title(name)}",
        "summary": summary,
        "description": "Send with Authorization: Basic base64(<key>:) or Bearer <key>."
        + BROWSER_FORMS.format(field=SEGMENT_BODY_KEY),
        "security": SECURITY,
        "parameters": _ingest_parameters(),
        "requestBody": {"required": True, "content": _bodies(body)},
        "responses": responses,
    }


def _title(name: str) -> str:
    return name[0].upper() + name[1:]


def _plain(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once; callers must not change it)."""
    health = {
        "type": "object",
        "properties": {"status": {"const": "ok"}, "pid": {"type": "integer"}},
        "required": ["status", "pid"],
    }
    ready = {
        "type": "object",
        "properties": {"status": {"const": "ready"}, "sink": {"type": "string"}},
        "required": ["status", "sink"],
    }
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "event-capture collector", "version": "1"},
        "paths": {
            "/v1/batch": {"post": _batch_operation(), "options": _preflight_operation("Batch")},
            **{
                path: {
                    "post": _segment_operation(path, call),
                    "options": _preflight_operation("Segment" + _title(path.rsplit("/", 1)[-1])),
                }
                for path, call in route_paths().items()
            },
            "/healthz": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Liveness: the process serves HTTP",
                    "responses": {"200": _plain("Alive; `pid` is the answering worker.", health)},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "getReady",
                    "summary": "Readiness: the sink can take events now",
                    "responses": {
                        "200": _plain("Ready.", ready),
                        "503": _error("503", "The sink cannot accept events now."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics (summed over workers)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "responses": {"200": _plain("OpenAPI 3.1.", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": _components(),
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying the same batch.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
            "securitySchemes": {
                "writeKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A source's write key (HTTP Basic with the key as user name"
                    " also works). Required when the collector has write keys configured.",
                },
                "writeKeyQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": QUERY_KEY,
                    "description": "A browser source's key, for requests that cannot set"
                    " headers (sendBeacon, a fetch without preflight). Browser keys may also"
                    " be sent in the body (`write_key`; Segment routes: `writeKey`).",
                },
            },
        },
    }
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"]["417"] = _error("417", EXPECTATION_FAILED)
    return document


@functools.cache
def _encoded() -> bytes:
    return msgspec.json.encode(openapi_document())


async def handle_openapi(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type="application/json")
