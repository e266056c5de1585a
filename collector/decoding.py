"""Stage: read a request body within its size limits, un-gzip it, and decode the batch envelope.

Refuses the whole request (400/413/415) only when it cannot be split into events at all;
problems inside single events are the validation stage's business, not this one's.
"""

from __future__ import annotations

import zlib

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from collector.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from collector.model import RawBatch, TypedBatch, WireEvent

READ_CHUNK_BYTES = 65_536
# wbits for zlib to expect a gzip header and trailer.
GZIP_WBITS = 16 + zlib.MAX_WBITS
GZIP_MAGIC = b"\x1f\x8b"

_typed_decoder = msgspec.json.Decoder(TypedBatch)
_raw_decoder = msgspec.json.Decoder(RawBatch)


def check_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.content_type!r}",
            reason="unsupported_content_type",
        )


async def read_body(
    request: web.Request, *, max_body_bytes: int, max_decompressed_bytes: int
) -> bytes:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported (use gzip or none)",
            reason="unsupported_encoding",
        )
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {max_body_bytes}")
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
            received += len(chunk)
            if received > max_body_bytes:
                raise PayloadTooLarge(f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
    except RequestPayloadError as exc:
        raise BadRequest(f"cannot read the request body: {exc}") from exc
    body = b"".join(chunks)
    if encoding == "gzip":
        return gunzip(body, max_decompressed_bytes)
    if len(body) > max_decompressed_bytes:
        raise PayloadTooLarge(f"body exceeds the limit of {max_decompressed_bytes} bytes")
    return body


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """Inflate at most `max_bytes`; a larger (or bomb) payload is refused before it is inflated."""
    if not body.startswith(GZIP_MAGIC):
        # Also what a host that let aiohttp inflate the body (auto_decompress) would see here.
        raise BadRequest("Content-Encoding is gzip but the body is not gzip", reason="invalid_gzip")
    inflater = zlib.decompressobj(GZIP_WBITS)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}", reason="invalid_gzip") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise BadRequest("gzip body is truncated", reason="invalid_gzip")
    if inflater.unused_data:
        raise BadRequest("unexpected bytes after the gzip stream", reason="invalid_gzip")
    return data


class DecodedBatch:
    """A request body split into events: typed envelopes when all decoded, else raw events."""

    __slots__ = ("_raw", "body", "events")

    def __init__(self, body: bytes, events: list[WireEvent] | None, raw: list[msgspec.Raw] | None):
        self.body = body
        self.events = events
        self._raw = raw

    def raw_events(self) -> list[msgspec.Raw]:
        """Each event's bytes as sent (decoded on demand: only dead letters need them)."""
        if self._raw is None:
            self._raw = _raw_decoder.decode(self.body).batch
        return self._raw

    def __len__(self) -> int:
        return len(self.events) if self.events is not None else len(self.raw_events())


def decode_batch(body: bytes) -> DecodedBatch:
    """One typed pass over the whole body; only if an envelope is bad, split it raw instead."""
    try:
        return DecodedBatch(body, _typed_decoder.decode(body).batch, None)
    except msgspec.ValidationError:
        pass  # some event (or the envelope) is off: find out which below
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", reason="malformed_json") from exc
    try:
        raw = _raw_decoder.decode(body).batch
    except msgspec.ValidationError as exc:
        raise BadRequest(
            f'body is not a batch envelope {{"batch": [...]}}: {exc}', reason="invalid_envelope"
        ) from exc
    return DecodedBatch(body, None, raw)
