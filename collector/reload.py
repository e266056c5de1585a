"""Hot reload of the tracking plan: on SIGHUP (or `reload_plan(app)`), load, check, swap.

Everything derived from the schema set (the registry, the route table, the event names the
metrics label by) lives in one immutable `Plan`. The app holds a `PlanHolder` whose `current`
plan is replaced by one assignment between two requests; a handler reads `current` once and
uses that snapshot for the whole request, so no request ever mixes two plans.

A reload loads the schema directory and the config file's `[routing]` table (topics are part
of the plan) off the event loop, runs the compatibility check and the topic-name check
(`check_topics`, also run at start-up), and swaps only when all pass; otherwise the old plan
keeps serving and the reason is logged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.fanout import (
    RoutingConfig,
    check_topic_template,
    load_routing_config,
    render_topic,
)
from collector.hotkeys import overflow_topic
from collector.model import WireEvent
from collector.routing import RouteTable, Topics
from collector.settings import Settings, SettingsError, env_var
from event_schemas import SchemaLoadError, SchemaRegistry, check_registry, load_registry
from event_schemas.topics import topic_error

if TYPE_CHECKING:
    from aiohttp import web

    from collector.metrics import Metrics

log = logging.getLogger(__name__)

# The metrics label of an event name or version the plan does not have: a bounded label set
# whatever clients send.
UNKNOWN_EVENT_LABEL = "_unknown"


@dataclass(frozen=True, slots=True)
class Plan:
    """One loaded tracking plan and everything the request path derives from it."""

    schemas: SchemaRegistry
    routes: RouteTable
    known_events: frozenset[str]
    # count_events' labelled counters, per Metrics (one in a collector; tests build several)
    _event_counters: dict[Metrics, dict[tuple[str, int, str], Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def event_versions(self) -> int:
        return len(self.schemas)

    def event_label(self, event: str | None) -> str:
        """The metrics label of an event name: itself when the plan has it, else `_unknown`."""
        return event if event is not None and event in self.known_events else UNKNOWN_EVENT_LABEL

    def version_label(self, event: str | None, version: int | None) -> str:
        """The metrics label of a version: itself when the plan has (event, version)."""
        known = self.schemas.decoders.get(event) if event is not None else None
        return str(version) if known is not None and version in known else UNKNOWN_EVENT_LABEL

    def count_events(self, metrics: Metrics, events: Iterable[WireEvent], outcome: str) -> None:
        """One counter update per (name, version), not per event, labelled by this plan.

        Counted by name, then version (no tuple per event); each (name, version, outcome)'s
        counter is looked up once per plan and metrics, and kept only for names and versions
        the plan has, so what clients send cannot grow the cache.
        """
        counts: dict[str, dict[int, int]] = {}
        for event in events:
            by_version = counts.get(event.event)
            if by_version is None:
                by_version = counts[event.event] = {}
            by_version[event.version] = by_version.get(event.version, 0) + 1
        cache = self._event_counters.get(metrics)
        if cache is None:
            cache = self._event_counters[metrics] = {}
        for name, by_version in counts.items():
            for version, count in by_version.items():
                key = (name, version, outcome)
                counter = cache.get(key)
                if counter is None:
                    event_label = self.event_label(name)
                    version_label = self.version_label(name, version)
                    counter = metrics.events.labels(event_label, version_label, outcome)
                    if version_label != UNKNOWN_EVENT_LABEL:  # so the name is known too
                        cache[key] = counter
                counter.inc(count)


def build_plan(
    schemas: SchemaRegistry, settings: Settings, routing: RoutingConfig | None = None
) -> Plan:
    """The plan for `schemas`; `routing` defaults to the config file's `[routing]` table.

    Raises SettingsError for a bad topic template or routing table, or when some topic the
    plan can write is not a legal Kafka topic name (see `check_topics`).
    """
    if settings.topic_template is not None:
        try:
            check_topic_template(settings.topic_template)
        except ValueError as exc:
            raise SettingsError(f"invalid setting {env_var('topic_template')}: {exc}") from exc
        template = settings.topic_template
        if render_topic(template, "a", 1) == render_topic(template, "b", 1):
            # no {event}: every event in one topic, refused even before a schema names two
            raise SettingsError(
                f"invalid setting {env_var('topic_template')}: `{settings.topic_template}`"
                " must contain {event}, or every event goes to one topic"
            )
    if routing is None:
        routing = load_routing_config(settings.config_file)
    topics = Topics(
        prefix=settings.topic_prefix,
        dead_letter=settings.dead_letter_topic,
        template=settings.topic_template,
    )
    plan = Plan(
        schemas=schemas,
        routes=RouteTable(topics, schemas, routing),
        known_events=frozenset(schemas.events()),
    )
    check_topics(plan, settings, routing)
    return plan


def check_topics(plan: Plan, settings: Settings, routing: RoutingConfig) -> None:
    """Every topic `plan` can write is a legal Kafka topic name, none but the dead-letter
    topic receives dead letters, and the template (or prefix) gives each event its own topic;
    else SettingsError naming the setting or rule that yields it. A schema's `x-topic` and a
    fan-out rule may deliberately share a topic between events (never the dead-letter one).

    Only events of the plan are ever routed to their own topics (the rest are dead letters),
    so checking each (event, version) of the plan covers every record the collector makes.
    A bad name found only when a request is published would fail that request after the
    other records were written (a 500, the SDK retries, duplicates).
    """
    dead_letter = plan.routes.topics.dead_letter
    problem = topic_error(dead_letter)
    if problem is not None:
        raise SettingsError(f"invalid setting {env_var('dead_letter_topic')}: {problem}")
    field = "topic_template" if settings.topic_template is not None else "topic_prefix"
    made_by: dict[str, str] = {}  # topic the template (or prefix) makes -> its one event
    written: dict[str, str] = {}  # every topic an event record can go to -> one such event
    for schema in plan.schemas:
        event, version = schema.event, schema.version
        topic = plan.routes.route_for(event, version)[0]
        problem = topic_error(topic)
        if problem is not None:  # x-topic was checked when the schema file loaded
            raise SettingsError(
                f"invalid setting {env_var(field)}: for {event} v{version} it makes {problem}"
            )
        if topic == dead_letter:  # consumers of either topic would read the other's records
            raise SettingsError(
                f"invalid setting {env_var('dead_letter_topic')}: `{dead_letter}` is also"
                f" the topic of {event} v{version}"
            )
        written.setdefault(topic, f"{event} v{version}")
        if schema.metadata.topic is None:
            # x-topic is the schema owner's explicit choice and may share a topic; what the
            # template makes must keep events apart, or consumers cannot tell them by topic.
            other = made_by.setdefault(topic, event)
            if other != event:
                raise SettingsError(
                    f"invalid setting {env_var(field)}: it sends both {other} and {event}"
                    f" to `{topic}` (use {{event}} so that each event gets its own topic)"
                )
        for index, rule in enumerate(routing.fanout):
            if rule.matches(event, version):
                where = f"config file {settings.config_file}: [routing].fanout[{index}].topic"
                copy = render_topic(rule.topic, event, version)
                problem = topic_error(copy)
                if problem is not None:
                    raise SettingsError(f"{where}: for {event} v{version} it makes {problem}")
                if copy == dead_letter:
                    raise SettingsError(
                        f"{where}: for {event} v{version} it makes the dead-letter topic"
                        f" `{dead_letter}` ({env_var('dead_letter_topic')})"
                    )
                written.setdefault(copy, f"{event} v{version}")
    if settings.hot_key_rate_per_s > 0:
        _check_overflow_topics(written, dead_letter)


def _check_overflow_topics(written: dict[str, str], dead_letter: str) -> None:
    """Each topic's overflow lane is a legal name of its own: a hot key's records must not
    land in another event's topic (or the dead letters), where consumers would misread them."""
    for topic, made_for in written.items():
        lane = overflow_topic(topic)
        problem = topic_error(lane)
        if problem is None and (lane in written or lane == dead_letter):
            problem = f"`{lane}` is also the topic of {written.get(lane, 'the dead letters')}"
        if problem is not None:
            raise SettingsError(
                f"invalid setting {env_var('hot_key_rate_per_s')}: the overflow topic of"
                f" `{topic}` ({made_for}) cannot be used: {problem}"
            )


@dataclass(slots=True)
class PlanHolder:
    """The app's plan; `current` is swapped whole, never changed in place."""

    current: Plan
    # Reloads run one at a time: a SIGHUP during a reload loads again after it.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class PlanRefused(Exception):
    """The schema directory loaded but breaks compatibility; the message is the first one."""


def _load_all(settings: Settings) -> Plan:
    """The checked schemas and routing table as a plan (blocking: runs in a worker thread)."""
    schemas = _load_checked(settings.schemas_dir)
    return build_plan(schemas, settings, load_routing_config(settings.config_file))


def _load_checked(directory: str | None) -> SchemaRegistry:
    """Load and check the plan (blocking: runs in a worker thread)."""
    schemas = load_registry(Path(directory) if directory is not None else None)
    violations = check_registry(schemas)
    if violations:
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise PlanRefused(f"{violations[0]}{more}")
    return schemas


async def reload_plan(app: web.Application) -> bool:
    """Load the schema directory again and swap it in if it loads and is compatible.

    Returns True when the new plan serves; on False the old one keeps serving.
    """
    # imported here: the app's keys bring in aiohttp, which `capture replay` (importing
    # build_plan through the Spark engine) does not need
    from collector import keys

    holder = app[keys.PLAN]
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    where = settings.schemas_dir or "the bundled plan"
    async with holder.lock:
        try:
            plan = await asyncio.to_thread(_load_all, settings)
        except (SchemaLoadError, PlanRefused, SettingsError) as exc:
            if isinstance(exc, SettingsError):
                kind = "bad routing config or topic"
            else:
                kind = "cannot load" if isinstance(exc, SchemaLoadError) else "incompatible"
            log.error(
                "tracking plan reload refused (%s), still serving the old plan: %s", kind, exc
            )
            metrics.schema_reloads.labels("failed").inc()
            metrics.schema_event_versions.set(holder.current.event_versions)
            return False
        previous = holder.current
        holder.current = plan  # the swap: the next request reads the new plan
        metrics.schema_reloads.labels("ok").inc()
        metrics.schema_event_versions.set(plan.event_versions)
    log.info(
        "tracking plan reloaded from %s: %d event versions (was %d)",
        where,
        plan.event_versions,
        previous.event_versions,
    )
    return True


async def sighup_reload(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: reload the plan on SIGHUP while the app runs.

    Installed only from the main thread and only when nobody else handles SIGHUP yet, so
    several apps in one process (tests) leave each other's handler alone.
    """
    installed = False
    tasks: set[asyncio.Task[bool]] = set()
    loop = asyncio.get_running_loop()
    sighup = getattr(signal, "SIGHUP", None)

    def on_sighup() -> None:
        log.info("SIGHUP: reloading the tracking plan")
        task = loop.create_task(reload_plan(app))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if (
        sighup is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(sighup) in (signal.SIG_DFL, signal.SIG_IGN)
    ):
        loop.add_signal_handler(sighup, on_sighup)
        installed = True
    else:
        log.debug("SIGHUP reload not installed: not the main thread, or SIGHUP is taken")
    try:
        yield
    finally:
        if installed and sighup is not None:
            loop.remove_signal_handler(sighup)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
