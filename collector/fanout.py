"""Routing configuration: topic templates and the `[routing]` fan-out rules of the config file.

Converted and checked once, when a plan is built; errors name the file or the setting. This
module must not route records itself: `collector.routing` asks it which topics an event
version goes to, once per (event, version).
"""

from __future__ import annotations

import string
from typing import Annotated

import msgspec

from collector.config_file import load_config_file
from collector.model import EventName, Version
from collector.settings import SettingsError
from event_schemas.errors import split_validation_error
from event_schemas.topics import MAX_TOPIC_CHARS, topic_error

TEMPLATE_FIELDS = frozenset({"event", "version"})
ALL_EVENTS = "*"

TopicTemplate = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_CHARS)]


class FanoutRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[[routing.fanout]]`: events (or "*") whose records are also written to `topic`."""

    events: Annotated[list[EventName], msgspec.Meta(min_length=1)]
    topic: TopicTemplate
    versions: list[Version] | None = None  # None: every version

    def matches(self, event: str, version: int) -> bool:
        named = ALL_EVENTS in self.events or event in self.events
        return named and (self.versions is None or version in self.versions)


class RoutingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[routing]` table of the config file."""

    fanout: list[FanoutRule] = msgspec.field(default_factory=list)

    def fanout_topics(self, event: str, version: int) -> tuple[str, ...]:
        """The extra topics of one event version, each once, in rule order."""
        topics = (
            render_topic(rule.topic, event, version)
            for rule in self.fanout
            if rule.matches(event, version)
        )
        return tuple(dict.fromkeys(topics))


def check_topic_template(template: str) -> None:
    """Raise ValueError unless `template` uses only `{event}` and `{version}` placeholders
    and its own text is legal in a topic name (what it yields per event is checked with the
    plan, see `collector.reload.check_topics`)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"`{template}` is not a valid template: {exc}") from exc
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"`{template}` uses `{{{field}}}`; a topic template may only use"
                " {event} and {version}"
            )
    # Any event name and version are legal text themselves: what fails here is the template's.
    problem = topic_error(render_topic(template, "e", 1))
    if problem is not None:
        raise ValueError(f"`{template}` does not make topic names: {problem}")


def render_topic(template: str, event: str, version: int) -> str:
    return template.format(event=event, version=version)


def load_routing_config(path: str | None) -> RoutingConfig:
    """The `[routing]` table of the config file at `path` (no file or no table: no rules)."""
    section = load_config_file(path).get("routing", {})
    try:
        config = msgspec.convert(section, RoutingConfig)
    except msgspec.ValidationError as exc:
        where, message = split_validation_error(exc)
        raise SettingsError(
            f"config file {path}: [routing]{where.removeprefix('$')}: {message}"
        ) from exc
    for index, rule in enumerate(config.fanout):
        try:
            check_topic_template(rule.topic)
        except ValueError as exc:
            raise SettingsError(
                f"config file {path}: [routing].fanout[{index}].topic: {exc}"
            ) from exc
    return config
