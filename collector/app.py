"""The app factory: wires settings, tracking plan, sink, metrics and clock into an aiohttp app.

Nothing global: everything the handlers use is passed in here or built from `settings`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from collector import handlers, keys
from collector.backpressure import InFlight
from collector.metrics import Metrics
from collector.reload import PlanHolder, build_plan, sighup_reload
from collector.settings import Settings
from collector.sinks import Sink, build_sink
from event_schemas import SchemaRegistry, load_registry

# How every server of this app must be run: the collector inflates gzip bodies itself, under
# its size cap, so aiohttp's own unbounded request decompression must stay off.
RUNNER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


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
) -> web.Application:
    """The collector app. `schemas` is the first plan (default: loaded from settings); a
    reload (SIGHUP, or `collector.reload.reload_plan`) always reads `settings.schemas_dir`.
    """
    schemas = schemas if schemas is not None else load_registry(settings.schemas_dir)
    plan = build_plan(schemas, settings)
    app = web.Application(middlewares=[handlers.error_middleware])
    app[keys.SETTINGS] = settings
    app[keys.PLAN] = PlanHolder(plan)
    app[keys.SINK] = sink if sink is not None else build_sink(settings)
    metrics = app[keys.METRICS] = Metrics(registry or CollectorRegistry())
    metrics.schema_event_versions.set(plan.event_versions)
    app[keys.CLOCK] = clock or utc_now
    inflight = app[keys.INFLIGHT] = InFlight(settings.max_inflight_bytes)
    app[keys.METRICS].inflight_bytes.set_function(lambda: inflight.bytes)
    app.cleanup_ctx.append(_sink_lifecycle)
    if reload_on_sighup:
        app.cleanup_ctx.append(sighup_reload)
    app.router.add_post("/v1/batch", handlers.handle_batch)
    app.router.add_get("/healthz", handlers.handle_healthz)
    app.router.add_get("/readyz", handlers.handle_readyz)
    app.router.add_get("/metrics", handlers.handle_metrics)
    return app


async def _sink_lifecycle(app: web.Application) -> AsyncIterator[None]:
    sink = app[keys.SINK]
    await sink.start()
    yield
    await sink.stop()
