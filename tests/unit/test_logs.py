"""Structured logs: JSON lines, the per-message rate limit, and no payloads or keys in logs."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from collector.logs import JsonFormatter, ParserRefusalFilter, RateLimitFilter, configure_logging
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests import raw_http
from tests.conftest import FIXED_NOW, start_collector
from tests.factories import batch_body, track_played
from tests.unit.test_auth import start_with_config

PAYLOAD_MARK = "prop-value-7f3a9c"


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


KEY_MARK = "wk_live_5e1d0b_0123456789"
SIGNED_KEY_MARK = "sk_signed_9c4e2a_0123456789"
SECRET_MARK = "whsec_3b8f61_0123456789"  # noqa: S105  # a test secret
UNKNOWN_KEY_MARK = "sk_guess_71d0ce_0123456789"
MARKS = (PAYLOAD_MARK, KEY_MARK, SIGNED_KEY_MARK, SECRET_MARK, UNKNOWN_KEY_MARK)
KEYS_TOML = f"""
[[sources]]
name = "server"
kind = "server"
key = "{KEY_MARK}"
events = "*"

[[sources]]
name = "signed"
kind = "server"
key = "{SIGNED_KEY_MARK}"
events = "*"
signing_secrets = ["{SECRET_MARK}"]
"""


async def test_logs_never_hold_payloads_keys_or_secrets(
    tmp_path: Path,
    memory_sink: MemorySink,
    schemas: SchemaRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With keys and a signing secret configured and sent, down every path that logs (the
    503 and 500 warnings, refusals, access lines), nothing secret or sent reaches a record."""
    caplog.set_level(logging.DEBUG)
    client = await start_with_config(tmp_path, KEYS_TOML, memory_sink, schemas)
    rejected = track_played(properties={"track_id": 7, "artist_id": PAYLOAD_MARK})
    body = batch_body(rejected, track_played(properties={"track_id": PAYLOAD_MARK}))
    now_s = int(FIXED_NOW.timestamp())

    def key(value: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {value}"}

    def signed(payload: bytes, secret: str) -> dict[str, str]:
        signature = sign(secret.encode(), now_s, payload)
        return key(SIGNED_KEY_MARK) | {TIMESTAMP_HEADER: str(now_s), SIGNATURE_HEADER: signature}

    async def status(payload: bytes, headers: dict[str, str]) -> int:
        response = await client.post("/v1/batch", data=payload, headers=headers)
        await response.read()
        return response.status

    try:
        assert await status(body, key(KEY_MARK)) == 200
        assert await status(body, signed(body, SECRET_MARK)) == 200
        assert await status(body, signed(body, SECRET_MARK[::-1])) == 401
        assert await status(body, key(UNKNOWN_KEY_MARK)) == 401
        assert await status(b"{" + PAYLOAD_MARK.encode(), key(KEY_MARK)) == 400
        memory_sink.available = False  # the 503 path logs a warning with its detail
        assert await status(body, key(KEY_MARK)) == 503
        assert await status(body, signed(body, SECRET_MARK)) == 503
        memory_sink.available = True
        memory_sink.fatal_topics.add("events._invalid")  # and the 500 path
        assert await status(body, key(KEY_MARK)) == 500
    finally:
        await client.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) >= 3, "the 503s and the 500 must have been logged"
    formatter = JsonFormatter()
    for entry in caplog.records:
        text = formatter.format(entry) + entry.getMessage()
        for mark in MARKS:
            assert mark not in text, (mark, text)


@pytest.fixture
def restore_server_logger() -> Iterator[None]:
    server = logging.getLogger("aiohttp.server")
    filters = list(server.filters)
    yield
    server.filters[:] = filters


PARSER_REFUSED = {
    "control byte": ("/v1/batch", [(b"X-Thing", b"a\x01b")]),
    "long header": ("/v1/batch", [(b"X-Thing", b"x" * 9000)]),
    "two lengths": ("/v1/batch", [(b"Content-Length", b"7")]),  # beside raw_http's own
    "bad url": ("/v1/\x7fbatch", []),
}


@pytest.mark.parametrize("kind", sorted(PARSER_REFUSED))
async def test_a_request_the_parser_refuses_is_one_warning_line_without_traceback(
    kind: str,
    restore_root_logger: None,
    restore_server_logger: None,
    memory_sink: MemorySink,
    schemas: SchemaRegistry,
) -> None:
    """Any client can make aiohttp refuse a request; that must not put a traceback (or the
    request's bytes) in the log, and a flood of them is rate-limited like any message."""
    stream = io.StringIO()
    configure_logging("INFO", "text", stream=stream)
    client = await start_collector(Settings(sink="memory"), memory_sink, schemas)
    path, header_lines = PARSER_REFUSED[kind]
    try:
        assert client.port is not None
        for _ in range(15):
            answer = await raw_http.request(client.port, "POST", path, header_lines, b"{}")
            assert answer.status == 400
    finally:
        await client.close()
    lines = [line for line in stream.getvalue().splitlines() if "aiohttp.server" in line]
    assert len(lines) == 10, lines  # the rate limit's 10 per interval; the rest suppressed
    for line in lines:
        assert " WARNING aiohttp.server: refused a malformed HTTP request from 127.0.0.1" in line
    assert "Traceback" not in stream.getvalue()
    assert "xxxxxxxx" not in stream.getvalue()
    assert "\x01" not in stream.getvalue()


def test_a_bug_aiohttp_logs_keeps_its_level_and_traceback(restore_server_logger: None) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    server = logging.getLogger("aiohttp.server")
    server.addFilter(ParserRefusalFilter())
    server.addHandler(handler)
    try:
        try:
            raise KeyError("a bug")
        except KeyError:
            server.exception("Error handling request from %s", "127.0.0.1")
    finally:
        server.removeHandler(handler)
    assert "Traceback" in stream.getvalue()
    assert "KeyError" in stream.getvalue()
