"""The collector's error tree; each class carries its HTTP policy as class attributes.

    CollectorError                 500 internal_error
    ├── BadRequest                 400 (malformed_json, invalid_envelope, invalid_gzip)
    ├── PayloadTooLarge            413 body_too_large
    ├── UnsupportedMediaType       415 (unsupported_encoding, unsupported_content_type)
    ├── SinkUnavailable            503 sink_unavailable, with Retry-After
    │   └── Overloaded             503 overloaded: too many bytes in flight, refused at once
    └── SinkRejected               500 sink_rejected (the sink refused a record for good)

`handlers.error_middleware` is the one place that turns these into JSON responses. The
`reason` values form a bounded set because they are used as metric labels.
"""

from __future__ import annotations

from typing import ClassVar


class CollectorError(Exception):
    status: ClassVar[int] = 500
    reason: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = True

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason  # type: ignore[misc]  # per-instance reason from a fixed set


class BadRequest(CollectorError):
    status = 400
    reason = "bad_request"
    retriable = False


class PayloadTooLarge(CollectorError):
    status = 413
    reason = "body_too_large"
    retriable = False


class UnsupportedMediaType(CollectorError):
    status = 415
    reason = "unsupported_encoding"
    retriable = False


class SinkUnavailable(CollectorError):
    """Nothing from the request was acknowledged; the client retries the whole batch."""

    status = 503
    reason = "sink_unavailable"
    retriable = True

    def __init__(self, detail: str, *, retry_after_s: int, reason: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.retry_after_s = retry_after_s


class Overloaded(SinkUnavailable):
    """Refused before reading the body: this process already holds max_inflight_bytes."""

    reason = "overloaded"


class SinkRejected(CollectorError):
    """The sink answered FATAL for a record (e.g. too large for the broker); not acknowledged."""

    status = 500
    reason = "sink_rejected"
    retriable = False
