"""The collector's error tree; each class carries its HTTP policy as class attributes.

    CollectorError                 500 internal_error (also any other exception: a bug)
    ├── BadRequest                 400 (bad_request, malformed_json, invalid_envelope,
    │   │                               invalid_gzip, too_deep)
    │   └── IncompleteBody         400 incomplete_body: the client hung up mid-body
    ├── Unauthorized               401 (missing_key, unknown_key, invalid_signature)
    ├── Forbidden                  403 (event_not_allowed, origin_not_allowed,
    │                                   method_not_allowed: a CORS preflight for not-POST)
    ├── RateLimited                429 rate_limited, with Retry-After
    ├── ExpectationFailed          417 expectation_failed: an Expect other than 100-continue
    ├── RequestTimeout             408 body_timeout: the body did not arrive in time
    ├── PayloadTooLarge            413 (body_too_large, too_many_events)
    ├── UnsupportedMediaType       415 (unsupported_encoding, unsupported_content_type)
    ├── SinkUnavailable            503 sink_unavailable, with Retry-After
    │   └── Overloaded             503 overloaded: too many bytes in flight, refused at once
    └── SinkRejected               500 sink_rejected (the sink refused a record for good)

`handlers.error_middleware` is the one place that turns these into JSON responses (aiohttp's
own 404/405/413 included). The `reason` values form a bounded set because they are used as
metric labels. No client input may reach a 500 other than `sink_rejected`; README's error
table lists every answer.
"""

from __future__ import annotations

from typing import ClassVar


class CollectorError(Exception):
    status: ClassVar[int] = 500
    reason: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = True
    # seconds for the Retry-After header; only errors the client should retry later set it
    retry_after_s: int | None = None
    # answer with `Connection: close`: the connection is in a state not worth keeping
    close_connection: ClassVar[bool] = False

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason  # type: ignore[misc]  # per-instance reason from a fixed set


class BadRequest(CollectorError):
    status = 400
    reason = "bad_request"
    retriable = False


class IncompleteBody(BadRequest):
    """The client closed the connection before its body was complete (it cannot read the
    answer; the status is what the request is counted and logged as)."""

    reason = "incomplete_body"
    close_connection = True


class ExpectationFailed(CollectorError):
    """An `Expect` header other than `100-continue` (RFC 9110 10.1.1)."""

    status = 417
    reason = "expectation_failed"
    retriable = False
    close_connection = True  # the body, if the client sent it anyway, was never read


class RequestTimeout(CollectorError):
    """The body was still arriving when `body_read_timeout_s` ran out (a slow or stuck client)."""

    status = 408
    reason = "body_timeout"
    retriable = True
    close_connection = True  # the rest of the body may still be on its way


class Unauthorized(CollectorError):
    """No usable write key, or a signed request whose signature does not verify."""

    status = 401
    reason = "missing_key"
    retriable = False


class Forbidden(CollectorError):
    """A known key asked for something its source may not do (an event, an origin)."""

    status = 403
    reason = "event_not_allowed"
    retriable = False


class RateLimited(CollectorError):
    """The key's token bucket is empty; refused before the body is read."""

    status = 429
    reason = "rate_limited"
    retriable = True

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


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
    """Refused at once: the bytes this request holds do not fit in max_inflight_bytes."""

    reason = "overloaded"


class SinkRejected(CollectorError):
    """The sink answered FATAL for a record (e.g. too large for the broker); not acknowledged."""

    status = 500
    reason = "sink_rejected"
    retriable = False
