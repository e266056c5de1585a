"""The app factory: wires settings, tracking plan, sink, metrics and clock into an aiohttp app.

Nothing global: everything the handlers use is passed in here or built from `settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import http_parser, web, web_protocol
from prometheus_client import CollectorRegistry

from collector import cors, demo, handlers, keys, segment
from collector.backpressure import InFlight
from collector.client_ip import ClientIdentifier, parse_networks
from collector.config_file import load_config_file
from collector.dedup import Deduplicator
from collector.hotkeys import HotKeys
from collector.metrics import Metrics
from collector.openapi import handle_openapi
from collector.ratelimit import RateLimiter
from collector.reload import PlanHolder, build_plan, sighup_reload
from collector.settings import Settings
from collector.shutdown import ShutdownClock
from collector.sinks import FileSink, Sink, build_sink
from collector.sources import Sources, build_sources
from event_schemas import SchemaRegistry, load_registry

# How every server of this app must be run: the collector inflates gzip bodies itself, under
# its size cap, so aiohttp's own unbounded request decompression must stay off. The keep-alive
# timer also starts when a connection opens, so it is what closes a client whose headers never
# complete (aiohttp has no header timeout); 75 s is run_app's value, set here so that test
# servers (whose RequestHandler default is an hour) behave the same. Header size limits stay
# at aiohttp's defaults (max_line_size / max_field_size 8190 bytes).
RUNNER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "keepalive_timeout": 75.0}

log = logging.getLogger(__name__)


class ServerSetupError(RuntimeError):
    """The runtime cannot serve safely (e.g. aiohttp without its C HTTP parser)."""


def require_c_http_parser() -> None:
    """Refuse to serve on aiohttp's pure-Python HTTP parser.

    The C parser (llhttp) is the one hardened and fast enough for an internet-facing ingest
    endpoint; the Python one is a fallback when the extension did not build or
    AIOHTTP_NO_EXTENSIONS is set. No escape hatch: aiohttp wheels ship the extension.
    """
    # web_protocol's own reference: the class every server connection really instantiates
    c_parser = getattr(http_parser, "HttpRequestParserC", None)
    in_use = getattr(web_protocol, "HttpRequestParser", None)
    if c_parser is None or in_use is not c_parser:
        raise ServerSetupError(
            "aiohttp is running without its C HTTP parser (AIOHTTP_NO_EXTENSIONS is set, or "
            "the extension did not build for this platform); the collector needs it: unset "
            "AIOHTTP_NO_EXTENSIONS or install an aiohttp wheel with its extensions"
        )


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_app(
    settings: Settings,
    *,
    sink: Sink | None = None,
    clock: keys.Clock | None = None,
    registry: CollectorRegistry | None = None,
    schemas: SchemaRegistry | None = None,
    reload_on_sighup: bool = True,
    environ: Mapping[str, str] | None = None,
    worker: int = 0,
) -> web.Application:
    """The collector app. `schemas` is the first plan (default: loaded from settings); a
    reload (SIGHUP, or `collector.reload.reload_plan`) always reads `settings.schemas_dir`.
    `environ` (default: the process's) holds the write keys a source names in `key_env`.
    `worker`: this process's index under `capture serve --workers` (the file sink's logs).
    """
    schemas = schemas if schemas is not None else load_registry(settings.schemas_dir)
    plan = build_plan(schemas, settings)
    config = load_config_file(settings.config_file)
    sources = build_sources(
        config, path=settings.config_file, environ=os.environ if environ is None else environ
    )
    segment_config = segment.build_segment_config(config, path=settings.config_file)
    if settings.demo:  # the page of `make run` has a browser key of its own
        sources = demo.with_demo_source(sources, settings)
    # outermost first: CORS headers go on error responses too
    app = web.Application(middlewares=[cors.cors_middleware, handlers.error_middleware])
    app[keys.SETTINGS] = settings
    app[keys.PLAN] = PlanHolder(plan)
    metrics = app[keys.METRICS] = Metrics(registry or CollectorRegistry())
    if sink is None and settings.sink_kind == "file":
        # each worker appends to logs of its own: partition `worker` of every topic
        sink = FileSink(settings.data_dir, writer=worker)
    app[keys.SINK] = (
        sink
        if sink is not None
        else build_sink(
            settings,
            on_producer_restart=lambda reason: metrics.producer_restarts.labels(reason).inc(),
        )
    )
    metrics.count_sink_from_zero(app[keys.SINK].name)
    metrics.schema_event_versions.set(plan.event_versions)
    app[keys.CLOCK] = clock or utc_now
    app[keys.CLIENTS] = ClientIdentifier(
        parse_networks(settings.trusted_proxies), anonymize=settings.ip_anonymize
    )
    app[keys.DEDUP] = (
        Deduplicator(window_s=settings.dedup_window_s, max_ids=settings.dedup_max_ids)
        if settings.dedup_window_s > 0
        else None
    )
    app[keys.HOT_KEYS] = (
        HotKeys(
            rate_per_s=settings.hot_key_rate_per_s,
            burst=settings.hot_key_burst,
            max_keys=settings.hot_key_max_keys,
            dead_letter_topic=settings.dead_letter_topic,
        )
        if settings.hot_key_rate_per_s > 0
        else None
    )
    app[keys.SOURCES] = sources
    # token buckets want a monotonic clock; an injected (test) clock drives them too
    bucket_clock_s = time.monotonic if clock is None else (lambda: clock().timestamp())
    app[keys.RATE_LIMITER] = RateLimiter(sources, bucket_clock_s)
    app.on_startup.append(_warn_when_open)
    app[keys.INFLIGHT] = InFlight(settings.max_inflight_bytes)  # the handler sets the gauge
    app[keys.SHUTDOWN] = ShutdownClock(settings.shutdown_timeout_s)
    app.on_shutdown.append(_start_shutdown_clock)
    app.cleanup_ctx.append(_sink_lifecycle)
    if reload_on_sighup:
        app.cleanup_ctx.append(sighup_reload)
    app.router.add_post("/v1/batch", handlers.handle_batch)
    cors.add_preflight(app, "/v1/batch")
    app.router.add_get("/healthz", handlers.handle_healthz)
    app.router.add_get("/readyz", handlers.handle_readyz)
    app.router.add_get("/metrics", handlers.handle_metrics)
    app.router.add_get("/openapi.json", handle_openapi)
    segment.add_routes(app, segment_config)  # /compat/segment: Segment's tracking API
    if settings.demo:
        demo.add_routes(app)  # /demo: the browser SDK demo page
    # last: what no route above matched (404/405) also gets the Expect handler below
    app.router.add_route("*", "/{path:.*}", handlers.handle_unmatched, name=handlers.UNMATCHED)
    for resource_route in app.router.routes():
        # One place for every route: aiohttp's default Expect handler runs before the
        # middlewares and answers a non-UTF-8 value with a plain-text 500 (see handle_expect).
        # aiohttp has no public setter; the route keeps the handler in this attribute.
        resource_route._expect_handler = handlers.handle_expect
    return app


async def _warn_when_open(app: web.Application) -> None:
    sources: Sources = app[keys.SOURCES]
    if sources.open:
        log.warning(
            "no write keys configured ([[sources]] in the CAPTURE_CONFIG_FILE file):"
            " every request is accepted without a key (development mode)"
        )


# How often each process refreshes capture_sink_ready on its own, so the gauge (and the
# CaptureSinkNotReady alert) holds without a load balancer polling /readyz.
READINESS_PROBE_S = 5.0


async def _sink_lifecycle(app: web.Application) -> AsyncIterator[None]:
    sink = app[keys.SINK]
    await sink.start()
    probe = asyncio.create_task(_probe_readiness(app), name="sink-readiness-probe")
    yield
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    await sink.stop(timeout_s=app[keys.SHUTDOWN].flush_budget_s())


async def _probe_readiness(app: web.Application) -> None:
    sink = app[keys.SINK]
    gauge = app[keys.METRICS].sink_ready.labels(sink.name)
    while True:
        try:
            ready = await sink.ready()
        except Exception:  # a probe that raised must not end the probing: count it not ready
            log.exception("the %s sink's readiness check failed", sink.name)
            ready = False
        gauge.set(1 if ready else 0)
        await asyncio.sleep(READINESS_PROBE_S)


async def _start_shutdown_clock(app: web.Application) -> None:
    # on_shutdown runs once the listener is closed, before aiohttp waits for the handlers
    app[keys.SHUTDOWN].start()
