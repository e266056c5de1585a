"""benchmarks/profile_stages.py: each sample lands in the stage of its innermost known frame,
and each stage's share of the CPU samples (waiting threads left out) becomes CPU µs per
event from the collector CPU the probe measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.profile_stages import (
    OTHER,
    STAGES,
    WAITING,
    markdown,
    per_event_us,
    stage_of,
    stages,
)

HANDLER = "run_app (aiohttp/web.py:502);handle_batch (collector/handlers.py:156)"
DELIVER = HANDLER + ";_ingest (collector/handlers.py:240);deliver (collector/handlers.py:290)"
SOCKET = "StreamWriter.write (asyncio/streams.py:1);_SelectorSocketTransport.write (asyncio/x.py:9)"


@pytest.mark.parametrize(
    ("stack", "stage"),
    [
        # the same socket write is the produce request under aiokafka, the response under aiohttp
        (
            "Sender._send_produce_req (aiokafka/producer/sender.py:288);"
            "AIOKafkaConnection.send (aiokafka/conn.py:420);" + SOCKET,
            "sink: produce request and socket",
        ),
        (
            HANDLER + ";StreamResponse.write_eof (aiohttp/web_response.py:1);"
            "StreamWriter._writelines (aiohttp/http_writer.py:1);" + SOCKET,
            "HTTP response",
        ),
        # compression inside the sender is compression, not the request
        (
            "Sender._send_produce_req (aiokafka/producer/sender.py:288);"
            "zstd_encode (aiokafka/codec.py:3)",
            "sink: compression",
        ),
        (
            DELIVER + ";KafkaSink.publish (collector/sinks/kafka.py:216);"
            "BatchBuilder.append (aiokafka/producer/message_accumulator.py:77)",
            "sink: batching (builders, partitioner)",
        ),
        (
            HANDLER + ";_ingest (collector/handlers.py:235);decode_batch (collector/decoding.py:9)",
            "decode",
        ),
        (DELIVER + ";Histogram.observe (prometheus_client/metrics.py:681)", "metrics"),
        (DELIVER + ";Plan.count_events (collector/reload.py:71)", "metrics"),
        (DELIVER + ";Plan.count_events.<locals>.<genexpr> (collector/reload.py:69)", "metrics"),
        # the loop's own work is not the HTTP stage, though run_app (aiohttp) is outermost
        (
            "run_app (aiohttp/web.py:502);BaseEventLoop._run_once (asyncio/base_events.py:1922);"
            "TimerHandle.__init__ (asyncio/events.py:104)",
            OTHER,
        ),
        # a waiting thread is not CPU
        (
            "run_app (aiohttp/web.py:502);BaseEventLoop._run_once (asyncio/base_events.py:1);"
            "EpollSelector.select (selectors.py:468)",
            WAITING,
        ),
        ("Thread.run (threading.py:975);_worker (concurrent/futures/thread.py:81)", WAITING),
        (DELIVER + ";route (collector/routing.py:120)", "route (record bytes)"),
        # reading the body is the request's stage wherever read_body lives, not decode's
        (
            HANDLER + ";read_body (collector/decoding.py:98)",
            "HTTP request (parse, read body, gunzip)",
        ),
        (
            HANDLER
            + ";read_body (collector/request_body.py:98);GzipInflater.feed (collector/x.py:1)",
            "HTTP request (parse, read body, gunzip)",
        ),
        (DELIVER, "handler (ours)"),
        ("BaseEventLoop._run_once (asyncio/base_events.py:1922)", OTHER),
    ],
)
def test_innermost_known_frame_decides(stack: str, stage: str) -> None:
    assert stage_of(stack.split(";")) == stage


def test_samples_per_stage_and_per_event(tmp_path: Path) -> None:
    collapsed = "\n".join(
        [
            DELIVER + ";route (collector/routing.py:120) 30",
            HANDLER + ";decode_batch (collector/decoding.py:9) 50",
            "<process> 20",
            "Thread.run (threading.py:975);_worker (concurrent/futures/thread.py:81) 400",
            "",
        ]
    )
    assert stages(collapsed) == {
        "route (record bytes)": 30,
        "decode": 50,
        OTHER: 20,
        WAITING: 400,
    }
    (tmp_path / "profile-kafka.txt").write_text(collapsed)
    results = {
        "http_ingest": {
            "kafka": {
                "profile": {"file": "profile-kafka.txt"},
                "probe": {"accepted_events": 1000, "server_cpu_s": 0.5},
            }
        }
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    us = per_event_us(tmp_path, "kafka")
    assert us is not None
    assert set(us) == set(STAGES)
    # 500 µs of CPU per event, shared by the 100 samples that were not waiting
    assert us["decode"] == pytest.approx(250.0)
    assert us["route (record bytes)"] == pytest.approx(150.0)
    assert sum(us.values()) == pytest.approx(500.0)
    assert per_event_us(tmp_path, "file") is None  # no file-sink profile in that run
    table = markdown(tmp_path, tmp_path)
    assert "| decode | 250.00 | 50% | 250.00 | 50% |" in table
    assert "file sink" not in table
