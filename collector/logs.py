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

from aiohttp.http_exceptions import HttpProcessingError

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


class ParserRefusalFilter(logging.Filter):
    """aiohttp.server's record of a request its HTTP parser refused, as one WARNING line.

    Any client can send a control byte in a header, an 8 KiB header line or two
    Content-Lengths; aiohttp answers 400 and logs ERROR with a full traceback, which lets a
    client write tracebacks into the log at will. Only such refusals (a 4xx
    HttpProcessingError) are rewritten; anything else aiohttp logs (a 500: a bug) stays as is.
    The template is fixed, so the rate limit still folds a flood into one summary.
    """

    MESSAGE = "refused a malformed HTTP request from %s: %s (%s)"

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            # what went wrong, not what was sent: aiohttp quotes the offending bytes after a
            # colon (or on the lines below, llhttp's caret view)
            what = str(exc.message).split(":", 1)[0].split("\n", 1)[0].strip()[:120]
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = self.MESSAGE, (remote, type(exc).__name__, ascii(what))
            record.exc_info = record.exc_text = None
        return True


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
    server = logging.getLogger("aiohttp.server")  # its records of parser refusals, see above
    if not any(isinstance(f, ParserRefusalFilter) for f in server.filters):
        server.addFilter(ParserRefusalFilter())
    return handler
