"""capture_sdk: track typed events from Python; batched, retried and sent in the background.

Imports `event_schemas` at most, never the collector. Public names are re-exported here.
"""

from capture_sdk._async_client import AsyncClient
from capture_sdk._async_transport import AiohttpTransport, AsyncTransport
from capture_sdk._client import Client
from capture_sdk._errors import CaptureError, ConfigurationError, InvalidEventError, TransportError
from capture_sdk._events import ClientStats, DroppedEvent, FieldError
from capture_sdk._retry import RetryPolicy
from capture_sdk._transport import HttpTransport, Response, Transport
from capture_sdk._version import __version__

__all__ = [
    "AiohttpTransport",
    "AsyncClient",
    "AsyncTransport",
    "CaptureError",
    "Client",
    "ClientStats",
    "ConfigurationError",
    "DroppedEvent",
    "FieldError",
    "HttpTransport",
    "InvalidEventError",
    "Response",
    "RetryPolicy",
    "Transport",
    "TransportError",
    "__version__",
]
