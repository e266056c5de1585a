"""Where event-capture keeps what it downloads: the Kafka broker's jars (devtools/kafka.py) and
the Spark engine's Ivy cache (collector/spark/session.py). Fetched once, reused offline after.

EVENT_CAPTURE_CACHE names the directory; else `$XDG_CACHE_HOME/event-capture`, else
`~/.cache/event-capture`. Nothing here creates or downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """event-capture's download cache (EVENT_CAPTURE_CACHE, else the XDG cache directory)."""
    base = os.environ.get("EVENT_CAPTURE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "event-capture"
    )
    return Path(base)
