"""Edge: the browser wire forms of the ingest routes, for browser write keys only (issue 13).

A page that is closing loses any request that needs a CORS preflight, and `sendBeacon` sets no
headers. So a browser key may come in the query string (`?write_key=`) or in the body (native
`write_key`, Segment's `writeKey`), the body may be `text/plain` (JSON inside), and gzip is
recognised by its magic bytes. Server keys stay in `Authorization` only. This module says where
a request's key is and reads it; it never decides who the key is (auth does) nor validates events.
"""

from __future__ import annotations

import enum
import re

import msgspec
from aiohttp import web

from collector import headers
from collector.decoding import decode_envelope, require_utf8
from collector.errors import BadRequest, CollectorError, Unauthorized, UnsupportedMediaType
from collector.request_body import check_content_type
from collector.sources import KeyEntry

QUERY_KEY = "write_key"
# The body's key field: the native envelope's is named like its other fields (and the query
# parameter); Segment's libraries (analytics.js) send `writeKey`.
NATIVE_BODY_KEY = "write_key"
SEGMENT_BODY_KEY = "writeKey"
# what `navigator.sendBeacon(url, string)` and a safelisted fetch send
TEXT_PLAIN = "text/plain"


class KeyPlace(enum.Enum):
    """Where a request's write key is: the first of these the request has is the only one read."""

    HEADER = "header"
    QUERY = "query"
    BODY = "body"


def key_place(request: web.BaseRequest) -> KeyPlace:
    """An Authorization header (even an unusable one, so that a broken header cannot let a
    server key in the query string or body through) wins; then `?write_key=` (even empty);
    else the key can only be in the body, known once the body is read."""
    if headers.raw(request, "Authorization") is not None:
        return KeyPlace.HEADER
    if QUERY_KEY in request.query:
        return KeyPlace.QUERY
    return KeyPlace.BODY


def query_key(request: web.BaseRequest) -> bytes | None:
    """The key of `?write_key=` (None when empty)."""
    value = request.query.get(QUERY_KEY)
    return headers.as_bytes(value) if value else None


class _BodyKeys(msgspec.Struct):
    """The top-level key fields of either envelope (a route reads only its own)."""

    native: object = msgspec.field(default=None, name=NATIVE_BODY_KEY)
    segment: object = msgspec.field(default=None, name=SEGMENT_BODY_KEY)


_body_keys_decoder = msgspec.json.Decoder(_BodyKeys)


def body_key(body: bytes, field: str, *, max_json_depth: int) -> bytes | None:
    """The key in the body's top-level `field` (None when absent, null or empty). A body that
    is not a JSON object is refused as the envelope decoder would refuse it; a key that is
    not a string is a broken envelope, not a missing key."""
    require_utf8(body)
    keys = decode_envelope(body, _body_keys_decoder, shape="a JSON object", depth=max_json_depth)
    found = keys.native if field == NATIVE_BODY_KEY else keys.segment
    if found is None or found == "":
        return None
    if not isinstance(found, str):
        raise BadRequest(
            f"`{field}` must be a string (the write key), not {type(found).__name__}",
            reason="invalid_envelope",
        )
    return found.encode()


def key_form_error(entry: KeyEntry, place: KeyPlace) -> CollectorError | None:
    """A server key anywhere but Authorization is refused: URLs end up in logs and proxies,
    and bodies in dead letters and debug dumps."""
    if entry.source.is_browser or place is KeyPlace.HEADER:
        return None
    if place is KeyPlace.QUERY:
        return Unauthorized(
            "a server key goes in Authorization: Bearer <key>, never in the query string",
            reason="key_in_query",
        )
    return Unauthorized(
        "a server key goes in Authorization: Bearer <key>, never in the body",
        reason="key_in_body",
    )


def check_body_type(request: web.Request, entry: KeyEntry | None, *, key_in_body: bool) -> None:
    """application/json for everyone; text/plain too for browser keys, and for a request
    whose key is in its body (only a browser key is admitted from there). Not in open mode
    (no keys): no origin is granted CORS there, so no browser could use it anyway."""
    if request.content_type == TEXT_PLAIN:
        if key_in_body or (entry is not None and entry.source.is_browser):
            return
        raise UnsupportedMediaType(
            "text/plain bodies are for browser keys; send application/json",
            reason="unsupported_content_type",
        )
    check_content_type(request)


def may_sniff_gzip(request: web.Request) -> bool:
    """A text/plain body sent without Content-Encoding may be gzip, known by its magic bytes
    (read_body inflates it under the usual limits and in-flight budget)."""
    return request.content_type == TEXT_PLAIN and headers.text(request, "Content-Encoding") in (
        None,
        "identity",
    )


# One JSON token at a time: a string (escapes included), or a bracket or comma.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],]', re.DOTALL)


def without_member(raw: bytes, field: str) -> bytes:
    """`raw` (valid JSON) without the top-level `field` members of an object, every other
    byte as sent. For what is stored as sent (a Segment dead letter keeps its message):
    analytics.js puts the write key in every message, and a key must not sit in a topic."""
    if not raw.lstrip().startswith(b"{") or (field.encode() not in raw and b"\\" not in raw):
        return raw  # the common case: no such member, and no escape that could spell one
    members: list[bytes] = []  # the bytes between `{`, the top-level commas and `}`
    depth = 0
    start = open_at = close_at = 0
    unwanted = False
    key_seen = False
    for token in _TOKEN.finditer(raw):
        char = token.group()
        if char in (b"{", b"["):
            depth += 1
            if depth == 1:
                open_at = start = token.end()
        elif char in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                close_at = token.start()
                if not unwanted:
                    members.append(raw[start:close_at])
                break
        elif depth == 1 and char == b",":
            if not unwanted:
                members.append(raw[start : token.start()])
            start, unwanted, key_seen = token.end(), False, False
        elif depth == 1 and not key_seen:  # a member's first string is its name
            key_seen = True
            # decoded, so that an escaped spelling of the name (JSON allows it) is found too
            unwanted = msgspec.json.decode(char) == field
    return raw[:open_at] + b",".join(members) + raw[close_at:]
