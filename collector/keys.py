"""Typed keys for what the app holds (settings, plan, sink, metrics, clock, in-flight bytes,
write keys and their rate limits)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from collector.backpressure import InFlight
from collector.client_ip import ClientIdentifier
from collector.dedup import Deduplicator
from collector.hotkeys import HotKeys
from collector.metrics import Metrics
from collector.ratelimit import RateLimiter
from collector.settings import Settings
from collector.shutdown import ShutdownClock
from collector.sinks.base import Sink
from collector.sources import Sources

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
# how to read a request's client IP and user agent (trusted proxies, anonymisation)
CLIENTS = web.AppKey("clients", ClientIdentifier)
# the event ids acknowledged recently, when dedup is on (dedup_window_s > 0), else None
DEDUP: web.AppKey[Deduplicator | None] = web.AppKey("dedup")
# the hot-key detector, when the overflow lane is on (hot_key_rate_per_s > 0), else None
HOT_KEYS: web.AppKey[HotKeys | None] = web.AppKey("hot_keys")
# write keys from the config file (empty: open, development mode) and their token buckets
SOURCES = web.AppKey("sources", Sources)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
# started by on_shutdown (SIGTERM); the sink's stop gets what is left of the budget
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)
