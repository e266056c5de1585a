"""Helpers for applications' own tests: a transport that records batches instead of sending.

transport = RecordingTransport()
client = Client(transport=transport)
... code under test calls client.track(...) ...
client.flush()
assert [e["event"] for e in transport.events] == ["track_played"]

For `AsyncClient`, `AsyncRecordingTransport` does the same (and `await client.flush()`).
"""

from __future__ import annotations

import gzip
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from capture_sdk._async_transport import AsyncTransport
from capture_sdk._errors import TransportError
from capture_sdk._transport import Response, Transport

__all__ = ["AsyncRecordingTransport", "RecordingTransport", "Response"]


class RecordingTransport(Transport):
    """Records every batch it is given; answers 200 unless scripted responses are queued.

    `script` takes Response objects (or TransportError instances, raised as network errors)
    that are used, in order, before falling back to 200 with everything accepted.
    """

    def __init__(self, script: Iterable[Response | TransportError] = ()) -> None:
        self._lock = threading.Lock()
        self._script: deque[Response | TransportError] = deque(script)
        self.requests: list[tuple[Mapping[str, str], dict[str, Any]]] = []
        self.attempts = 0

    def queue(self, *responses: Response | TransportError) -> None:
        with self._lock:
            self._script.extend(responses)

    def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        decoded = msgspec.json.decode(body)
        with self._lock:
            self.attempts += 1
            scripted = self._script.popleft() if self._script else None
            if isinstance(scripted, TransportError):
                raise scripted
            if scripted is not None and scripted.status != 200:
                return scripted
            self.requests.append((dict(headers), decoded))
        if scripted is not None:
            return scripted
        return Response(
            200, msgspec.json.encode({"accepted": len(decoded["batch"]), "rejected": []})
        )

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        with self._lock:
            return [body["batch"] for _, body in self.requests]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]


class AsyncRecordingTransport(AsyncTransport):
    """`RecordingTransport` for `AsyncClient`: same script, same recorded batches."""

    def __init__(self, script: Iterable[Response | TransportError] = ()) -> None:
        self._recorder = RecordingTransport(script)
        self.closed = False

    def queue(self, *responses: Response | TransportError) -> None:
        self._recorder.queue(*responses)

    async def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        return self._recorder.send(body, headers)

    async def close(self) -> None:
        self.closed = True

    @property
    def attempts(self) -> int:
        return self._recorder.attempts

    @property
    def requests(self) -> list[tuple[Mapping[str, str], dict[str, Any]]]:
        return self._recorder.requests

    @property
    def batches(self) -> list[list[dict[str, Any]]]:
        return self._recorder.batches

    @property
    def events(self) -> list[dict[str, Any]]:
        return self._recorder.events
