"""Log setup for `capture serve`: text or JSON lines on stderr, with a per-message rate limit.

Records carry only what the code put in them: log calls in the collector name counts, reasons
and ids, never event payloads or keys, and this module must not add request data either.
A flood of one message (a dead broker, a bad client) is cut to a few lines per interval.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

# LogRecord's own attributes; anything else on a record came from `extra=` and is emitted.
_STANDARD_ATTRS = frozenset(
    {*vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)), "message", "asctime"}
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The limiter forgets keys idle this many intervals once it holds MAX_KEYS (f-string messages
# would make every record a new key; the cap keeps memory bounded regardless).
MAX_KEYS = 1024


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _Window:
    __slots__ = ("passed", "started", "suppressed")

    def __init__(self, started: float) -> None:
        self.started = started
        self.passed = 0
        self.suppressed = 0


class RateLimitFilter(logging.Filter):
    """At most `per_interval` records per (logger, message template) per `interval_s`.

    The rest are dropped and counted; the first record of that kind after the interval is
    preceded by one "suppressed N" record. Attach it to a handler: the summary goes to it.
    """

    def __init__(
        self,
        handler: logging.Handler,
        *,
        per_interval: int = 10,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._handler = handler
        self._per_interval = per_interval
        self._interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "suppressed", None) is not None:
            return True  # our own summary
        now = self._clock()
        key = (record.name, str(record.msg))  # the template, not the formatted message
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= MAX_KEYS:
                self._forget_idle(now)
            window = self._windows[key] = _Window(now)
        elif now - window.started >= self._interval_s:
            if window.suppressed:
                self._report(record, window.suppressed)
            window.started, window.passed, window.suppressed = now, 0, 0
        if window.passed < self._per_interval:
            window.passed += 1
            return True
        window.suppressed += 1
        return False

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, w in self._windows.items() if now - w.started >= self._interval_s]
        for key in idle or list(self._windows):
            del self._windows[key]

    def _report(self, like: logging.LogRecord, count: int) -> None:
        summary = logging.LogRecord(
            like.name,
            logging.WARNING,
            like.pathname,
            like.lineno,
            "suppressed %d log records like %r in the last interval",
            (count, str(like.msg)),
            None,
        )
        summary.suppressed = count
        self._handler.handle(summary)


def configure_logging(
    level: str, log_format: str, *, stream: IO[str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one rate-limited handler in `log_format`."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(RateLimitFilter(handler))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
