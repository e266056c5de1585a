"""Integration: the answers HAProxy writes itself keep the collector's error contract.

What the shipped deploy/haproxy/haproxy.cfg answers without a collector (a client too slow to
send its request, no collector up) is JSON `{"error", "detail"}` with a right Content-Length,
never HAProxy's built-in HTML page (HAProxy 2.6's one exception is in haproxy.cfg). Needs the
real haproxy (scripts/ops-deps.sh): without it these fail, they are never skipped.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.haproxy import DEPLOY, HAProxy
from devtools.ports import free_port

# longer than the config's `timeout http-request` (10s), so HAProxy gives up on the client
SLOW_CLIENT_WAIT_S = 15.0
READ_TIMEOUT_S = 30.0


@pytest.fixture
def balancer() -> Iterator[HAProxy]:
    # a backend nobody listens on: these answers are HAProxy's own, before or without a server
    proxy = HAProxy([f"127.0.0.1:{free_port()}"])
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def exchange(proxy: HAProxy, data: bytes, *, wait_s: float = 0.0) -> bytes:
    """Sends `data` raw, waits `wait_s` with the request unfinished, reads until closed."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=READ_TIMEOUT_S) as sock:
        sock.sendall(data)
        time.sleep(wait_s)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parsed(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    assert fields.get("content-type") == "application/json", answer
    assert int(fields["content-length"]) == len(body), answer
    document = json.loads(body)
    assert isinstance(document, dict), answer
    assert set(document) == {"error", "detail"}, answer
    return int(status_line.split()[1]), fields, document


def test_a_client_too_slow_to_send_its_request_gets_a_json_408(balancer: HAProxy) -> None:
    start = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    status, _, document = parsed(exchange(balancer, start, wait_s=SLOW_CLIENT_WAIT_S))
    # 408: the SDKs retry it (capture_sdk/_retry.py, sdk-js), as they do the collector's
    assert status == 408
    assert document["error"] == "body_timeout"


def test_no_collector_up_gets_a_json_503_with_retry_after(balancer: HAProxy) -> None:
    request = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    status, fields, document = parsed(exchange(balancer, request))
    assert status == 503
    assert fields["retry-after"] == "1"
    assert document["error"] == "upstream_unavailable"


def test_every_errorfile_is_a_whole_json_answer() -> None:
    files = sorted((DEPLOY / "errors").glob("*.http"))
    assert {path.stem for path in files} >= {"400", "408", "502", "503", "504"}
    config = (DEPLOY / "haproxy.cfg").read_text()
    for path in files:
        assert f"errorfile {path.stem} errors/{path.name}" in config, path.name
        answer = Path(path).read_bytes()
        assert answer.startswith(b"HTTP/1.1 "), path.name
        parsed(answer)
