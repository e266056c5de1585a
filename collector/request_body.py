"""Stage: read a request body within its size and time limits and un-gzip it once it is
complete. The only ingest module that touches aiohttp's request; decoding is decoding.py's.

gzip: concatenated members (RFC 1952 2.2, what `cat a.gz b.gz` makes) are accepted, up to
`MAX_GZIP_MEMBERS`, all under one running cap on inflated bytes; bytes after the last member
that are not another member (trailing zeros included) are refused as `invalid_gzip`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from collector import headers
from collector.errors import (
    BadRequest,
    IncompleteBody,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

READ_CHUNK_BYTES = 65_536
# wbits for zlib to expect a gzip header and trailer.
GZIP_WBITS = 16 + zlib.MAX_WBITS
GZIP_MAGIC = b"\x1f\x8b"
# Each member costs a fresh inflater; an empty member is 20 bytes, so without a bound a 1 MiB
# body could make the loop build ~50,000 of them. Clients that concatenate need only a few.
MAX_GZIP_MEMBERS = 32


def check_content_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.content_type!r}",
            reason="unsupported_content_type",
        )


async def read_body(
    request: web.Request,
    *,
    max_body_bytes: int,
    max_decompressed_bytes: int,
    body_read_timeout_s: float | None = None,
    on_chunk: Callable[[bytes], None] | None = None,
    on_size: Callable[[int], None] | None = None,
    sniff_gzip: bool = False,
) -> bytes:
    """The body, inflated; the whole read (not each chunk) must end within the timeout.
    `sniff_gzip`: with no Content-Encoding, a body that starts with gzip's magic bytes is gzip
    (a browser's beacon cannot set the header; JSON never starts with byte 0x1f).
    `on_chunk` sees each chunk as sent, before inflating (auth: a signed request's HMAC).
    `on_size` is told how many bytes the request holds so far: after each chunk, what arrived;
    once a gzip body is complete, what arrived plus what it inflated to, as it inflates. It may
    raise to refuse the request.
    """
    encoding = (headers.text(request, "Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported (use gzip or none)",
            reason="unsupported_encoding",
        )
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {max_body_bytes}")
    sink = GzipInflater(max_decompressed_bytes) if encoding == "gzip" else None
    chunks: list[bytes] = []
    received = 0
    try:
        # aiohttp has no body timeout of its own: a client trickling bytes would hold the
        # request (and its in-flight reservation) for as long as it likes.
        async with asyncio.timeout(body_read_timeout_s):
            async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                received += len(chunk)
                if received > max_body_bytes:
                    raise PayloadTooLarge(f"body exceeds the limit of {max_body_bytes} bytes")
                if on_chunk is not None:
                    on_chunk(chunk)
                if sink is not None and not chunks:
                    sink.check_start(chunk)
                # gzip stays compressed until the body is complete: an unfinished request
                # holds only what it sent, however far its bytes would inflate (issue 12).
                chunks.append(chunk)
                if on_size is not None:  # the in-flight budget: bytes held, not declared
                    on_size(received)
    except TimeoutError as exc:
        raise RequestTimeout(
            f"the body was not received within {body_read_timeout_s} s ({received} bytes arrived)"
        ) from exc
    except RequestPayloadError as exc:
        raise BadRequest(f"cannot read the request body: {exc}") from exc
    except OSError as exc:  # after TimeoutError, which is one too
        # The client hung up mid-body (aiohttp hands the read ConnectionResetError, or the
        # transport's own error): its fault, not ours, and nobody is left to read the answer.
        raise IncompleteBody(
            f"the connection closed after {received} bytes of the body ({exc or 'no reason'})"
        ) from exc
    if sink is None and sniff_gzip and b"".join(chunks[:2]).startswith(GZIP_MAGIC):
        sink = GzipInflater(max_decompressed_bytes)
    if sink is not None:  # inflated under the same cap and in-flight budget either way
        return sink.inflate(chunks, on_size)
    body = b"".join(chunks)
    if len(body) > max_decompressed_bytes:
        raise PayloadTooLarge(f"body exceeds the limit of {max_decompressed_bytes} bytes")
    return body


class GzipInflater:
    """Inflates gzip chunk by chunk, refusing at once when the output passes `max_bytes`.

    Each `decompress` call may produce at most the room left plus one byte, so a bomb costs
    at most `max_bytes` of memory and the CPU to inflate that much, whatever its ratio.
    """

    __slots__ = ("_inflater", "_max_bytes", "_members", "_out", "_room", "_started")

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._room = max_bytes
        self._out: list[bytes] = []
        self._inflater: zlib._Decompress | None = None
        self._members = 0
        self._started = False

    @staticmethod
    def check_start(data: bytes) -> None:
        """Refuse, from a body's first bytes, one that cannot be gzip."""
        if not GZIP_MAGIC.startswith(data[:2]):
            # Also what a host that let aiohttp inflate the body (auto_decompress) sends on.
            raise BadRequest(
                "Content-Encoding is gzip but the body is not gzip", reason="invalid_gzip"
            )

    def inflate(self, chunks: list[bytes], on_size: Callable[[int], None] | None) -> bytes:
        """A complete body's chunks, inflated; `on_size` is told compressed + inflated bytes
        after each chunk (both are in memory until the request ends) and may raise."""
        compressed = sum(map(len, chunks))
        for chunk in chunks:
            self.feed(chunk)
            if on_size is not None:
                on_size(compressed + self.inflated_bytes)
        return self.finish()

    def feed(self, data: bytes) -> None:
        if not self._started and data:
            self._started = True
            self.check_start(data)
        while data:
            if self._inflater is None:
                self._members += 1
                if self._members > MAX_GZIP_MEMBERS:
                    raise BadRequest(
                        f"more than {MAX_GZIP_MEMBERS} concatenated gzip members",
                        reason="invalid_gzip",
                    )
                self._inflater = zlib.decompressobj(GZIP_WBITS)
            inflater = self._inflater
            try:
                out = inflater.decompress(data, self._room + 1)
            except zlib.error as exc:
                what = "body" if self._members == 1 else f"gzip member {self._members}"
                raise BadRequest(f"{what} is not valid gzip: {exc}", reason="invalid_gzip") from exc
            if len(out) > self._room:
                raise PayloadTooLarge(
                    f"decompressed body exceeds the limit of {self._max_bytes} bytes"
                )
            self._room -= len(out)
            if out:
                self._out.append(out)
            if inflater.eof:  # a member ended; whatever follows must be another member
                data = inflater.unused_data
                self._inflater = None
            elif not out and inflater.unconsumed_tail == data:
                break  # no progress possible without more input (zlib keeps it buffered)
            else:
                data = inflater.unconsumed_tail

    @property
    def inflated_bytes(self) -> int:
        return self._max_bytes - self._room

    def finish(self) -> bytes:
        if not self._started or self._inflater is not None:
            raise BadRequest("gzip body is empty or truncated", reason="invalid_gzip")
        return b"".join(self._out)
