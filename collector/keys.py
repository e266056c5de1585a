"""Typed keys for what the app holds (settings, plan, sink, metrics, clock, in-flight bytes)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from collector.backpressure import InFlight
from collector.metrics import Metrics
from collector.settings import Settings
from collector.sinks.base import Sink

if TYPE_CHECKING:  # collector.reload uses these keys
    from collector.reload import PlanHolder

Clock = Callable[[], dt.datetime]

SETTINGS = web.AppKey("settings", Settings)
# The tracking plan (schemas, route table, known event names), swapped whole on reload:
# read `app[PLAN].current` once per request and use that snapshot throughout.
PLAN: web.AppKey[PlanHolder] = web.AppKey("plan")
SINK = web.AppKey("sink", Sink)
METRICS = web.AppKey("metrics", Metrics)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
INFLIGHT = web.AppKey("inflight", InFlight)
