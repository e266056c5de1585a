"""Structured logs: JSON lines, the per-message rate limit, and no payloads or keys in logs."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from collector.logs import JsonFormatter, RateLimitFilter, configure_logging
from collector.sinks import MemorySink
from tests.conftest import HttpClient
from tests.factories import batch_body, track_played

PAYLOAD_MARK = "prop-value-7f3a9c"
KEY_MARK = "wk_live_5e1d0b"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def record(msg: str, *args: object, name: str = "collector.test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_json_lines_carry_ts_level_logger_message_and_extras() -> None:
    entry = record("sink %s failed %d times", "kafka", 3)
    entry.sink = "kafka"
    try:
        raise ValueError("boom")
    except ValueError:
        entry.exc_info = sys.exc_info()
    line = JsonFormatter().format(entry)
    assert "\n" not in line  # one record, one line (the traceback is escaped inside)
    parsed = json.loads(line)
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "collector.test"
    assert parsed["message"] == "sink kafka failed 3 times"
    assert parsed["sink"] == "kafka"
    assert parsed["ts"].endswith("+00:00")
    assert "ValueError: boom" in parsed["exc"]
    assert "args" not in parsed  # LogRecord internals stay out
    assert "msg" not in parsed


def test_a_flood_of_one_message_is_cut_and_then_summarised() -> None:
    sink = ListHandler()
    clock = FakeClock()
    limiter = RateLimitFilter(sink, per_interval=3, interval_s=10.0, clock=clock)
    sink.addFilter(limiter)
    for attempt in range(20):
        sink.handle(record("kafka unreachable (attempt %d)", attempt))
    sink.handle(record("another message"))
    assert [r.getMessage() for r in sink.records] == [
        "kafka unreachable (attempt 0)",
        "kafka unreachable (attempt 1)",
        "kafka unreachable (attempt 2)",
        "another message",  # a different template has its own budget
    ]
    clock.now_s += 10.0
    sink.handle(record("kafka unreachable (attempt %d)", 20))
    summary, after = sink.records[-2:]
    assert summary.getMessage() == (
        "suppressed 17 log records like 'kafka unreachable (attempt %d)' in the last interval"
    )
    assert vars(summary)["suppressed"] == 17  # an extra field in JSON output
    assert after.getMessage() == "kafka unreachable (attempt 20)"


def test_configure_logging_writes_json_lines(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("collector.x").info("ready on port %d", 8080, extra={"workers": 2})
    logging.getLogger("collector.x").debug("below the level")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "ready on port 8080"
    assert json.loads(lines[0])["workers"] == 2


def test_configure_logging_text_format(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "text", stream=stream)
    logging.getLogger("collector.y").warning("sink %s down", "kafka")
    assert stream.getvalue().rstrip().endswith("WARNING collector.y: sink kafka down")


async def test_logs_never_hold_payloads_or_keys(
    collector: HttpClient, memory_sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY_MARK}"}
    rejected = track_played(properties={"track_id": 7, "artist_id": PAYLOAD_MARK})
    body = batch_body(rejected, track_played(properties={"track_id": PAYLOAD_MARK}))
    response = await collector.post("/v1/batch", data=body, headers=headers)
    assert response.status < 500
    memory_sink.available = False  # the 503 path logs a warning with its detail
    response = await collector.post("/v1/batch", data=body, headers=headers)
    assert response.status == 503
    memory_sink.available = True
    response = await collector.post("/v1/batch", data=b"{" + PAYLOAD_MARK.encode(), headers=headers)
    assert response.status in (400, 401, 403)
    assert caplog.records, "the 503 must have been logged"
    formatter = JsonFormatter()
    for entry in caplog.records:
        text = formatter.format(entry) + entry.getMessage()
        assert PAYLOAD_MARK not in text
        assert KEY_MARK not in text
