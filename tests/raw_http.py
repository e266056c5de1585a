"""HTTP/1.1 over a plain socket, for tests that send header bytes aiohttp's client refuses.

aiohttp's client will not put bytes that are not ASCII into a header; real clients do. One
request per connection (`Connection: close`), so reading to EOF is the whole response.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiohttp.http_parser import SINGLETON_HEADERS

# What aiohttp's HTTP parser (llhttp) refuses in a header value before the app sees the
# request: the control characters other than tab (CR and LF end the line; tests never send
# them inside a value).
PARSER_REFUSED_BYTES = frozenset({*range(0x09), *range(0x0A, 0x20), 0x7F})
# Headers aiohttp's parser refuses to see twice (lower-cased): it answers 400 before the app.
PARSER_SINGLETONS = frozenset(SINGLETON_HEADERS)


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx answers before it (100 Continue)


async def request(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    timeout_s: float = 10.0,
) -> RawResponse:
    """Send one request with exactly these header bytes (plus Host, Content-Length and
    Connection) and read the whole response."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    head += [name + b": " + value for name, value in headers]
    head += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return parse_response(data)


async def hang_up(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    sent: int,
) -> None:
    """Declare all of `body` but send only its first `sent` bytes, then close the connection
    (a client that crashed or lost its network mid-request)."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    head += [name + b": " + value for name, value in headers]
    head += [b"Content-Length: " + str(len(body)).encode()]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body[:sent])
        await writer.drain()
        await asyncio.sleep(0.01)  # the collector starts on the request before the hang-up
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the collector may have closed first
            await writer.wait_closed()


def parse_response(data: bytes) -> RawResponse:
    interim = []
    while data.startswith(b"HTTP/1.1 1"):  # an interim answer: no body, the final one follows
        head, _, data = data.partition(b"\r\n\r\n")
        interim.append(int(head.split(b" ", 2)[1]))
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    return RawResponse(status, headers, rest, interim)
