"""Edge: the browser wire forms of the batch routes, for browser write keys only (issue 13).

A page that is closing loses any request that needs a CORS preflight, and `sendBeacon` sets no
headers. So a browser key may come in the query string (`?write_key=`), the body may be
`text/plain` (JSON inside), and gzip is recognised by its magic bytes when no Content-Encoding
could be set. Server keys stay in `Authorization` only. This module reads requests and bodies;
it never decides who the key is (auth does) nor validates events.
"""

from __future__ import annotations

from aiohttp import web

from collector import headers
from collector.decoding import check_content_type
from collector.errors import CollectorError, Unauthorized, UnsupportedMediaType
from collector.sources import KeyEntry

QUERY_KEY = "write_key"
# what `navigator.sendBeacon(url, string)` and a safelisted fetch send
TEXT_PLAIN = "text/plain"


def query_key(request: web.BaseRequest) -> bytes | None:
    """The key of `?write_key=`, only when the request has no Authorization header (one that
    is there but unusable must not let a server key in the query string through)."""
    if not _key_from_query(request):
        return None
    value = request.query.get(QUERY_KEY)
    return headers.as_bytes(value) if value else None


def _key_from_query(request: web.BaseRequest) -> bool:
    return headers.raw(request, "Authorization") is None and QUERY_KEY in request.query


def key_form_error(request: web.BaseRequest, entry: KeyEntry) -> CollectorError | None:
    """A server key sent in the query string is refused: URLs end up in logs and proxies."""
    if entry.source.is_browser or not _key_from_query(request):
        return None
    return Unauthorized(
        "a server key goes in Authorization: Bearer <key>, never in the query string",
        reason="key_in_query",
    )


def check_body_type(request: web.Request, entry: KeyEntry | None) -> None:
    """application/json for everyone; text/plain too for browser keys. Not in open mode
    (no keys): no origin is granted CORS there, so no browser could use it anyway."""
    if request.content_type == TEXT_PLAIN:
        if entry is not None and entry.source.is_browser:
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
