"""Edge: the demo page of `make run` (issue 13), mounted only when CAPTURE_DEMO is on.

Serves /demo (buttons that track events through the browser SDK) and /demo/capture.js (the
SDK's script-tag build, read from CAPTURE_DEMO_BUNDLE), and provisions the page's public
browser key for the collector's own origins. It must not turn on by itself, nor let that key
send more than the page's events; it never reads or answers a batch (the batch route does).
"""

from __future__ import annotations

import asyncio
import importlib.resources
from pathlib import Path

from aiohttp import web

from collector import keys
from collector.settings import Settings
from collector.sources import KeyEntry, Source, Sources, key_digest

# Public by design, like every browser key: it is in the page. What limits it is its origins
# (the collector's own) and its events (the page's).
DEMO_WRITE_KEY = "pk_demo_event_capture_page"
DEMO_SOURCE = "demo"
DEMO_EVENTS = frozenset(
    {"track_played", "artist_profile_viewed", "playlist_updated", "page_viewed"}
)
PAGE_PATH = "/demo"
BUNDLE_PATH = "/demo/capture.js"
# where the page's template sits in the package, and the marker its key replaces
PAGE_FILE = "demo.html"
KEY_MARKER = "__DEMO_WRITE_KEY__"
# RFC 9239 names text/javascript as the one JavaScript media type
JS_CONTENT_TYPE = "text/javascript"
# how a browser on this machine names a loopback or wildcard listener
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# (compared with the setting, never bound: S104 is about binding)
LOCAL_LISTENERS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""})  # noqa: S104
# a rebuilt bundle or page shows on the next reload, never a stale cached one
NO_STORE = {"Cache-Control": "no-store"}

PAGE_HTML = web.AppKey("demo_page_html", str)


def demo_origins(settings: Settings) -> frozenset[str]:
    """The origins of this collector's own pages: `http://<host>:<port>`, or the loopback
    names when it listens on a loopback or wildcard address. From settings, never from the
    request's Host header, which a DNS-rebinding page chooses."""
    host = settings.host.lower()
    if host in LOCAL_LISTENERS:
        names: tuple[str, ...] = LOCAL_HOSTS
    else:
        names = (f"[{host}]" if ":" in host else host,)
    return frozenset(f"http://{name}:{settings.port}" for name in names)


def with_demo_source(sources: Sources, settings: Settings) -> Sources:
    """`sources` plus the demo page's browser key. An open collector (no keys configured)
    stays open: the Python demo and curl need no key, and the page's key is still checked."""
    source = Source(
        name=DEMO_SOURCE,
        kind="browser",
        events=DEMO_EVENTS,
        allowed_origins=demo_origins(settings),
        signing_secrets=(),
        rate_limit_per_s=None,
        burst=1,
    )
    by_digest = dict(sources.by_digest)
    # a configured source with the same key wins: the demo must not change what it may do
    entry = by_digest.setdefault(key_digest(DEMO_WRITE_KEY), KeyEntry(source, 0))
    if entry.source is not source:
        return sources
    return Sources((*sources.sources, source), by_digest, open_mode=sources.open)


def add_routes(app: web.Application) -> None:
    """GET /demo and /demo/capture.js; the page template is read once, here."""
    template = importlib.resources.files("collector").joinpath(PAGE_FILE).read_text("utf-8")
    app[PAGE_HTML] = template.replace(KEY_MARKER, DEMO_WRITE_KEY)
    app.router.add_get(PAGE_PATH, handle_page)
    app.router.add_get(BUNDLE_PATH, handle_bundle)


async def handle_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[PAGE_HTML], content_type="text/html", headers=NO_STORE)


async def handle_bundle(request: web.Request) -> web.Response:
    """The bundle as built now (start-up checked it is there; a rebuild needs no restart)."""
    path = Path(request.app[keys.SETTINGS].demo_bundle)
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        # removed or unreadable since start-up: the page says the SDK did not load
        raise web.HTTPNotFound() from exc
    return web.Response(body=body, content_type=JS_CONTENT_TYPE, charset="utf-8", headers=NO_STORE)
