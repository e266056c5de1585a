"""CORS for browser write keys on every ingest route (native and Segment-compatible):
preflights and the headers on actual responses.

Only origins that some browser source lists are ever echoed, and credentials are never allowed
(the write key travels in Authorization, the query string or the body, never in cookies).
Whether a given key may be used from an origin is `auth.Gate`'s business, not this module's;
this one never looks at keys.
"""

from __future__ import annotations

from aiohttp import web

from collector import headers, keys
from collector.errors import Forbidden
from collector.handlers import Handler

ALLOWED_METHODS = "POST"
ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization"
# browsers cap this themselves (Chromium at 2 h); 10 min keeps allowlist changes quick to apply
PREFLIGHT_MAX_AGE_S = 600
# the routes browsers may call cross-origin (`add_preflight` fills it as routes are added)
CORS_PATHS: web.AppKey[set[str]] = web.AppKey("cors_paths")


def add_preflight(app: web.Application, path: str) -> None:
    """Open the POST route `path` to browsers: answer its preflights, and put the CORS
    headers on its answers to allowed origins."""
    app.setdefault(CORS_PATHS, set()).add(path)
    app.router.add_route("OPTIONS", path, handle_preflight)


def _allowed_origin(request: web.Request) -> str | None:
    origin = headers.text(request, "Origin")
    if origin is None or request.path not in request.app.get(CORS_PATHS, ()):
        return None
    if origin.lower() not in request.app[keys.SOURCES].browser_origins:
        return None
    return origin


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Put the CORS headers on every answer to an allowed origin, error answers included
    (so that browser code can read why it was refused). Runs outside `error_middleware`.
    """
    response = await handler(request)
    origin = _allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        # not a safelisted response header: without this the browser SDK cannot honour it
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response


async def handle_preflight(request: web.Request) -> web.Response:
    """`OPTIONS` on an ingest route: a preflight carries no key, so any browser source's
    origin passes (the actual request's key is checked against its own source's origins)."""
    origin = _allowed_origin(request)
    if origin is None:
        raise Forbidden(
            "this origin is not allowed to send events (no browser source lists it)",
            reason="origin_not_allowed",
        )
    method = headers.text(request, "Access-Control-Request-Method") or ""
    if method.upper() != ALLOWED_METHODS:
        raise Forbidden(
            f"only {ALLOWED_METHODS} is allowed cross-origin, not {method[:20]!r}",
            reason="method_not_allowed",
        )
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        },
    )
