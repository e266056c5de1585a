"""Writing test records into the file sink's logs the way a collector does: through the real
FileSink of a given worker (so its partition), every record acknowledged or the test fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from collector.sinks.base import Outcome, Record
from collector.sinks.file import FileSink


async def write_as(
    data_dir: Path, writer: int, records: Sequence[Record], *, timeout_s: float = 30
) -> None:
    """Through the sink of collector worker `writer` (partition `writer` of each topic)."""
    sink = FileSink(data_dir, writer=writer)
    await sink.start()
    try:
        assert await sink.publish(records, timeout_s=timeout_s) == [Outcome.OK] * len(records)
    finally:
        await sink.stop()
