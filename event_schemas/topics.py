"""Kafka's rules for topic names, the one check every topic the project writes must pass.

Schemas' `x-topic`, the collector's topic settings, its fan-out rules, what a topic template
yields, the file sink (a topic is a file name there) and replay's flags all use `topic_error`.
Pure: no I/O. It must not know where a name came from; callers name the setting or file.
"""

from __future__ import annotations

import re

# Kafka's limit (its `Topic.validate`): longer names are refused by the broker.
MAX_TOPIC_CHARS = 249
_LEGAL = re.compile(r"[A-Za-z0-9._-]+")
# Also what makes every topic a safe file name: no separator, never the directory itself.
_RESERVED = (".", "..")


def topic_error(name: str) -> str | None:
    """Why `name` is not a legal Kafka topic name, or None when it is one."""
    if not name:
        return "a topic name cannot be empty"
    if len(name) > MAX_TOPIC_CHARS:
        return f"a topic name has at most {MAX_TOPIC_CHARS} characters, not {len(name)}"
    if name in _RESERVED:
        return f"`{name}` cannot be a topic name"
    if not _LEGAL.fullmatch(name):
        bad = sorted({c for c in name if not _LEGAL.fullmatch(c)})
        shown = name if name.isprintable() else repr(name)  # a message stays one line
        return (
            f"`{shown}` is not a topic name: only ASCII letters, digits, `.`, `_` and `-`"
            f" (found {', '.join(repr(c) for c in bad)})"
        )
    return None


def is_topic(name: str) -> bool:
    return topic_error(name) is None


def topic_prefix_error(prefix: str) -> str | None:
    """Why no topic can start with `prefix` (`<prefix><event>`), or None when topics can."""
    # An event name adds at least one legal character, so the prefix itself may be `.`.
    problem = topic_error(prefix + "e")
    if problem is None:
        return None
    if len(prefix) >= MAX_TOPIC_CHARS:
        return f"a topic name has at most {MAX_TOPIC_CHARS} characters; the prefix leaves none"
    return f"`{prefix}` cannot start a topic name: only ASCII letters, digits, `.`, `_` and `-`"
