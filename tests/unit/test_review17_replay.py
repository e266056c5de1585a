"""Review of issue 17's chunked file-log reading: the same records, broken lines and line
numbers as reading the log one line (up to a newline byte) at a time, for lines whose bytes
other readers might cut differently: a carriage return alone, two entries on one line. And
replays overlapping in one event loop leave the GC threshold as they found it."""

from __future__ import annotations

import asyncio
import gc
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from collector.replay import sources
from collector.replay.runner import Plan, run_replay
from collector.replay.sources import Item, Malformed, Selection, SourceRecord
from collector.sinks.file import LogLine


def entry(offset: int, sep: str = ",", value: object = None) -> bytes:
    fields = [
        f'"offset":{offset}',
        f'"timestamp_ms":{1000 + offset}',
        '"key":null',
        '"headers":[]',
        '"value":' + json.dumps({"n": offset} if value is None else value),
    ]
    return ("{" + sep.join(fields) + "}").encode()


def by_lines(data: bytes) -> list[Item]:
    """The reading rule: a line ends at a newline byte; each line is one entry or broken."""
    decoder = msgspec.json.Decoder(LogLine)
    found: list[Item] = []
    for number, line in enumerate(data.split(b"\n")[:-1]):
        try:
            e = decoder.decode(line)
        except msgspec.DecodeError:
            found.append(Malformed("t", 0, number, ""))
            continue
        found.append(SourceRecord("t", 0, e.offset, e.timestamp_ms, None, [], bytes(e.value)))
    return found


def without_reasons(items: list[Item]) -> list[Item]:
    return [msgspec.structs.replace(i, reason="") if isinstance(i, Malformed) else i for i in items]


LOGS = {
    # JSON allows a carriage return between tokens: still one entry
    "CR inside a line": [entry(0), entry(1, sep=",\r"), entry(2)],
    # two entries with a lone CR between them: one broken line, not two records
    "CR between two entries": [entry(0), entry(1) + b"\r" + entry(2), entry(3)],
    # two entries run together, and a blank line: two broken lines
    "two on a line, then a blank": [entry(0), entry(1) + entry(2), b"", entry(3)],
    "CRLF endings": [entry(0) + b"\r", entry(1) + b"\r", b"\r", entry(2) + b"\r"],
    # one line over two of the reader's 1 MiB chunks
    "a 2 MiB line": [
        entry(0),
        entry(1, value="x" * (2 << 20)),
        entry(2),
    ],
}


@pytest.mark.parametrize("name", list(LOGS))
def test_chunked_read_keeps_line_by_line_verdicts(tmp_path: Path, name: str) -> None:
    data = b"".join(line + b"\n" for line in LOGS[name])
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    got = [i for batch in sources.read_log("t", path, len(data), Selection()) for i in batch]
    assert without_reasons(got) == by_lines(data)


class Gated(sources.Source):
    """No records; its batches end when `done` is set (so a test orders two replays' ends)."""

    def __init__(self) -> None:
        self.selection = Selection()
        self.started = asyncio.Event()
        self.done = asyncio.Event()

    async def open(self) -> None:
        return None

    async def batches(self) -> AsyncIterator[list[Item]]:
        self.started.set()
        await self.done.wait()
        empty: list[list[Item]] = []
        for batch in empty:
            yield batch


def test_overlapping_replays_restore_the_gc_threshold() -> None:
    async def main() -> None:
        first, second = Gated(), Gated()
        a = asyncio.create_task(run_replay(first, None, Plan(), progress_to=io.StringIO()))
        await first.started.wait()
        b = asyncio.create_task(run_replay(second, None, Plan(), progress_to=io.StringIO()))
        await second.started.wait()
        first.done.set()  # the replay that started first ends first
        await a
        second.done.set()
        await b

    before = gc.get_threshold()
    try:
        asyncio.run(main())
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)


def test_crafted_lines_cannot_line_up_as_records(tmp_path: Path) -> None:
    # an entry cut after `[{}` and finished on the next line, then two entries on one line:
    # three broken lines, which one array decode reads as three entries (the count matches)
    first = entry(1, value="@").replace(b'"@"}', b"[{}")
    lines = [first, b"{}]}", entry(3) + b"," + entry(4)]
    data = b"".join(line + b"\n" for line in lines)
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    got = [i for batch in sources.read_log("t", path, len(data), Selection()) for i in batch]
    assert without_reasons(got) == by_lines(data)
