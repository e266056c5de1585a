"""How a batch reaches the collector: one small interface and the HTTP implementation.

A transport sends one request and returns the response, or raises TransportError when no
response came. It never retries and never decides what a status means (that is `_retry`).
"""

from __future__ import annotations

import abc
import contextlib
import http.client
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from capture_sdk._errors import ConfigurationError, TransportError

BATCH_PATH = "/v1/batch"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport(abc.ABC):
    @abc.abstractmethod
    def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST one batch body; raise TransportError when there is no HTTP response."""

    def close(self) -> None:  # noqa: B027  # optional hook
        """Release connections."""

    def after_fork(self) -> None:  # noqa: B027  # optional hook
        """In a forked child: forget connections and locks inherited from the parent."""


class HttpTransport(Transport):
    """POSTs to `<endpoint>/v1/batch` over one kept-alive connection (stdlib http.client)."""

    def __init__(self, endpoint: str, *, timeout_s: float = 10.0) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigurationError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        self._scheme = url.scheme
        self._host = url.hostname
        self._port = url.port
        self._path = url.path.rstrip("/") + BATCH_PATH
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        port = f":{self._port}" if self._port else ""
        return f"{self._scheme}://{self._host}{port}{self._path}"

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = cls(self._host, self._port, timeout=self._timeout_s)
        return self._connection

    def send(self, body: bytes, headers: Mapping[str, str]) -> Response:
        with self._lock:
            connection = self._connect()
            try:
                connection.request("POST", self._path, body=body, headers=dict(headers))
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                self._connection = None
                raise TransportError(f"POST {self.url} failed: {exc!r}") from exc
            if response.will_close:
                connection.close()
                self._connection = None
            return Response(response.status, data, {k.lower(): v for k, v in response.getheaders()})

    def close(self) -> None:
        if not self._lock.acquire(blocking=False):
            # A send is in flight (a hung collector, at shutdown): do not wait for it. Shutting
            # its socket down makes the blocked read fail now; the sender then cleans up.
            connection = self._connection
            sock = connection.sock if connection is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
        try:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        finally:
            self._lock.release()

    def after_fork(self) -> None:
        # The socket belongs to the parent (closing it here would be harmless, but a lock held
        # by a parent thread at fork time would never be released in the child).
        self._connection = None
        self._lock = threading.Lock()
