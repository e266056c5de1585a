"""A one-line progress display on stderr (count, rate, ETA when the total is known).

Drawn only when the stream is a terminal, and at most every REDRAW_S: piped or logged
output stays clean. It never counts anything itself; the runner passes the numbers in.
"""

from __future__ import annotations

import time
from typing import TextIO

REDRAW_S = 0.25


class Progress:
    def __init__(self, stream: TextIO, total: int | None) -> None:
        self._stream = stream
        self._on = stream.isatty()
        self._total = total
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0

    def update(self, done: int, *, force: bool = False) -> None:
        if not self._on:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        elapsed_s = max(now - self._started, 1e-9)
        rate_per_s = done / elapsed_s
        text = f"replay: {done}"
        if self._total:
            text += f"/{self._total} ({100 * done / self._total:.0f}%)"
        text += f"  {rate_per_s:,.0f} rec/s"
        if self._total and rate_per_s > 0:
            text += f"  ETA {max(self._total - done, 0) / rate_per_s:.0f}s"
        self._stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self._stream.flush()

    def finish(self, done: int) -> None:
        if self._on:
            self.update(done, force=True)
            self._stream.write("\n")
            self._stream.flush()
