"""A stand-in collector that accepts every batch at once, to measure the SDK's own delivery rate.

Inflates the body and counts the events so that the reply is truthful; validates nothing and
stores nothing. Must not be used for anything but measuring a client.

    python -m benchmarks.ack_server --port 8091
"""

from __future__ import annotations

import argparse
import zlib

import msgspec
from aiohttp import web

GZIP_WBITS = 16 + zlib.MAX_WBITS


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]


_decoder = msgspec.json.Decoder(_Batch)


async def handle_batch(request: web.Request) -> web.Response:
    body = await request.read()
    if request.headers.get("Content-Encoding") == "gzip":
        body = zlib.decompress(body, GZIP_WBITS)
    events = len(_decoder.decode(body).batch)
    return web.Response(
        body=b'{"accepted":%d,"rejected":[]}' % events, content_type="application/json"
    )


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="accept every batch at once")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/batch", handle_batch)
    app.router.add_get("/healthz", handle_healthz)
    # The SDK gzips; aiohttp must hand the body over as sent.
    web.run_app(
        app, host="127.0.0.1", port=args.port, print=None, access_log=None, auto_decompress=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
