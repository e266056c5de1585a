"""The SDK's exceptions; raised only for programmer errors, never for delivery problems.

    CaptureError
    ├── ConfigurationError (also ValueError)   bad Client arguments
    └── InvalidEventError  (also ValueError)   track() called with an event that can't be sent
    TransportError                             network failure inside a transport (retried)

Delivery problems after `track()` returns are counted and reported through `on_error`.
"""

from __future__ import annotations


class CaptureError(Exception):
    """Base class of the SDK's programmer-facing errors."""


class ConfigurationError(CaptureError, ValueError):
    pass


class InvalidEventError(CaptureError, ValueError):
    pass


class TransportError(Exception):
    """A request did not get an HTTP response (connection refused, reset, timed out)."""
