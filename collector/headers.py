"""Edge: the one way the collector reads request headers, as the untrusted bytes they are.

aiohttp hands header values over as str decoded from UTF-8 with `surrogateescape`: bytes that
are not UTF-8 (a Latin-1 `café`) arrive as lone surrogates, which msgspec, hashlib and
`str.encode` refuse. Readers get clean text here (such bytes become U+FFFD) or the bytes as
sent; this module must not interpret a value (auth, cors, client_ip and decoding do).
"""

from __future__ import annotations

from aiohttp import web

REPLACEMENT = "\ufffd"


def clean(value: str) -> str:
    """`value` with every undecodable byte (or any lone surrogate) replaced by U+FFFD."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return as_bytes(value).decode(errors="replace")
    return value  # the common case: already valid text, nothing copied


def as_bytes(value: str) -> bytes:
    """The bytes a client sent for a header value aiohttp decoded."""
    try:
        return value.encode(errors="surrogateescape")
    except UnicodeEncodeError:  # a surrogate aiohttp did not make (\ud800-\udc7f): not a byte
        return value.encode(errors="replace")


def text(request: web.BaseRequest, name: str) -> str | None:
    """The first `name` header as clean text; None when absent."""
    value = request.headers.get(name)
    return None if value is None else clean(value)


def all_text(request: web.BaseRequest, name: str) -> list[str]:
    """Every `name` header (in the order sent) as clean text."""
    return [clean(value) for value in request.headers.getall(name, ())]


def raw(request: web.BaseRequest, name: str) -> bytes | None:
    """The first `name` header as the bytes sent (for values compared byte for byte)."""
    value = request.headers.get(name)
    return None if value is None else as_bytes(value)
