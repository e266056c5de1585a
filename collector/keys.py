"""Typed keys for what the app holds (settings, schemas, sink, metrics, clock, topics)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from aiohttp import web

from collector.backpressure import InFlight
from collector.metrics import Metrics
from collector.routing import RouteTable
from collector.settings import Settings
from collector.sinks.base import Sink
from event_schemas import SchemaRegistry

Clock = Callable[[], dt.datetime]

SETTINGS = web.AppKey("settings", Settings)
SCHEMAS = web.AppKey("schemas", SchemaRegistry)
SINK = web.AppKey("sink", Sink)
METRICS = web.AppKey("metrics", Metrics)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
ROUTES = web.AppKey("routes", RouteTable)
INFLIGHT = web.AppKey("inflight", InFlight)
