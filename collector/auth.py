"""Stage: admit a request by its write key (origin, rate limit), its signature and its events.

A `Gate` admits a header or query key before the body is read (a refused request costs no
reading), a body key once it is read; a `SignatureCheck` hashes the body bytes as sent while
they are read; `check_events` runs on the decoded envelopes.
Keys and secrets never reach a log line, an error detail or a metric label: keys are named by
their source and position (`web[0]`). Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math

import msgspec
from aiohttp import web

from collector import browser_forms, headers
from collector.browser_forms import KeyPlace
from collector.decoding import DecodedBatch
from collector.errors import CollectorError, Forbidden, RateLimited, Unauthorized
from collector.metrics import Metrics
from collector.ratelimit import RateLimiter
from collector.sources import KeyEntry, Sources, key_digest

TIMESTAMP_HEADER = "X-Capture-Timestamp"
SIGNATURE_HEADER = "X-Capture-Signature"
SIGNATURE_SCHEME = "v1="
# A sender may sign with both secrets during a rotation; more is not needed and costs HMACs.
MAX_SIGNATURES = 4
# Unix seconds fit in 10 digits until 2286; a longer timestamp is not one.
MAX_TIMESTAMP_DIGITS = 12
# How many refused event names an error detail lists (the body may hold thousands).
MAX_NAMES_IN_DETAIL = 5
NAME_CHARS_IN_DETAIL = 64
# the `source` label of refusals that no known key can be blamed for
NO_SOURCE_LABEL = "_unknown"


class _EventName(msgspec.Struct):
    event: object = None


_name_decoder = msgspec.json.Decoder(_EventName)


def sign(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The X-Capture-Signature value for `body` as sent (compressed bytes if gzip).

    HMAC-SHA256 over `f"{timestamp_s}."` followed by the body, hex, prefixed `v1=`. Pure, so
    that an SDK can carry the same few lines.
    """
    mac = hmac.new(secret, f"{timestamp_s}.".encode(), hashlib.sha256)
    mac.update(body)
    return SIGNATURE_SCHEME + mac.hexdigest()


def presented_key(request: web.BaseRequest) -> bytes | None:
    """The key as sent, from `Authorization: Bearer <key>` or HTTP Basic with the key as
    username. Bytes, not text: a key whose bytes are not UTF-8 cannot equal a configured key,
    so its digest finds nothing and it is `unknown_key`, with no decoding step that can fail.
    A header of another shape (unknown scheme, Basic that is not base64) is no key at all.
    """
    value = headers.raw(request, "Authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(b" ")
    credentials = credentials.strip()
    if scheme.lower() == b"bearer":
        return credentials or None
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except binascii.Error:  # bytes input: any non-alphabet byte is binascii.Error
            return None
        username = decoded.partition(b":")[0]
        return username or None
    return None


class Gate:
    """Who sent a request, decided one way for every ingest route (native and Segment).

    Where the key is comes from `browser_forms.key_place`: Authorization, else `?write_key=`,
    else the body. A header or query key is admitted before the body is read (`before_body`),
    so a refused request costs no reading or inflating; a body key can only be admitted once
    the body is read (`after_body`), within the same size, time and in-flight limits.
    """

    __slots__ = ("_body_field", "_limiter", "_metrics", "_place", "_request", "_sources")

    def __init__(
        self,
        request: web.BaseRequest,
        sources: Sources,
        limiter: RateLimiter,
        metrics: Metrics,
        *,
        body_field: str,
    ) -> None:
        self._request = request
        self._sources = sources
        self._limiter = limiter
        self._metrics = metrics
        self._body_field = body_field
        # None in open mode (no keys configured): every request is let in, keys are ignored,
        # except a header or query key the collector knows all the same (the demo page's,
        # collector/demo.py), which is checked as usual so that its browser forms apply
        place = browser_forms.key_place(request)
        self._place = None if sources.open and not self._known(place) else place

    def _known(self, place: KeyPlace) -> bool:
        if place is KeyPlace.HEADER:
            key = presented_key(self._request)
        elif place is KeyPlace.QUERY:
            key = browser_forms.query_key(self._request)
        else:
            return False
        return key is not None and key_digest(key) in self._sources.by_digest

    @property
    def key_in_body(self) -> bool:
        """The request's key can only be in its body (admit it with `after_body`)."""
        return self._place is KeyPlace.BODY

    def before_body(self) -> KeyEntry | None:
        """The key of the Authorization header or query string, admitted; None in open mode
        and when the key is in the body (once refused, unread, if no body key could pass)."""
        if self._place is None:
            return None
        if self._place is KeyPlace.BODY:
            self._refuse_unreadable_body_key()
            return None
        if self._place is KeyPlace.HEADER:
            return self._admit(presented_key(self._request), self._place)
        return self._admit(browser_forms.query_key(self._request), self._place)

    def _refuse_unreadable_body_key(self) -> None:
        """Only a browser key is admitted from a body, and only from an origin its source
        lists (or none). When no browser source exists, or the Origin is one no browser
        source lists, no body key could pass: refuse now, so that keyless clients cannot
        make the collector read and inflate bodies and hold the in-flight budget with them."""
        origins = self._sources.browser_origins  # empty: there is no browser source
        if not origins:
            raise _refused(
                self._metrics, None, Unauthorized(_NO_KEY_NO_BROWSER, reason="missing_key")
            )
        origin = headers.text(self._request, "Origin")
        if origin is not None and origin.lower() not in origins:
            raise _refused(
                self._metrics,
                None,
                Forbidden(
                    f"origin {origin[:200]!r} is not allowed for any browser source",
                    reason="origin_not_allowed",
                ),
            )

    def after_body(self, body: bytes, *, max_json_depth: int) -> KeyEntry | None:
        """The body's key, admitted (only a browser key can be, so no signature applies:
        browser sources have no signing secrets); what `before_body` said otherwise."""
        if self._place is not KeyPlace.BODY:
            return None
        key = browser_forms.body_key(body, self._body_field, max_json_depth=max_json_depth)
        return self._admit(key, self._place)

    def _admit(self, key: bytes | None, place: KeyPlace) -> KeyEntry:
        """Refuses a missing or unknown key, an origin the key's source does not allow, a
        server key out of Authorization and a key whose bucket is empty."""
        metrics = self._metrics
        if key is None:
            raise _refused(metrics, None, Unauthorized(_MISSING[place], reason="missing_key"))
        digest = key_digest(key)
        entry = self._sources.by_digest.get(digest)
        if entry is None:
            raise _refused(
                metrics, None, Unauthorized("the write key is not known", reason="unknown_key")
            )
        _check_origin(entry, headers.text(self._request, "Origin"), metrics)
        if (form_error := browser_forms.key_form_error(entry, place)) is not None:
            raise _refused(metrics, entry, form_error)
        wait_s = self._limiter.wait_s(digest)
        if wait_s > 0.0:
            source = entry.source
            raise _refused(
                metrics,
                entry,
                RateLimited(
                    f"key {entry.label} may send {source.rate_limit_per_s:g} requests per second"
                    f" (burst {source.burst}); retry later",
                    retry_after_s=max(1, math.ceil(wait_s)),
                ),
            )
        return entry


# no browser source: the only place left for a key is the one every key may use
_NO_KEY_NO_BROWSER = "a write key is required: Authorization: Bearer <key>"
_MISSING = {
    KeyPlace.HEADER: "the Authorization header holds no usable key:"
    " send Authorization: Bearer <key>",
    KeyPlace.QUERY: "?write_key= is empty",
    KeyPlace.BODY: "a write key is required: Authorization: Bearer <key> (browser keys may also"
    " send it as ?write_key= or in the body)",
}


def _check_origin(entry: KeyEntry, origin: str | None, metrics: Metrics) -> None:
    if origin is None:
        # not a browser (or a same-origin GET, which this route is not): Origin can be forged
        # outside browsers anyway, so its absence proves nothing either way
        return
    source = entry.source
    if not source.is_browser:
        raise _refused(
            metrics,
            entry,
            Forbidden(
                f"key {entry.label} is a secret server key; it must not be used from a browser",
                reason="origin_not_allowed",
            ),
        )
    if origin.lower() not in source.allowed_origins:
        raise _refused(
            metrics,
            entry,
            Forbidden(
                f"origin {origin[:200]!r} is not allowed for source {source.name}",
                reason="origin_not_allowed",
            ),
        )


class SignatureCheck:
    """HMACs of the body as it arrives, one per secret, checked once the body is read."""

    __slots__ = ("_entry", "_macs", "_metrics", "_provided")

    def __init__(
        self, entry: KeyEntry, stamp: str, provided: list[bytes], metrics: Metrics
    ) -> None:
        self._entry = entry
        self._metrics = metrics
        self._provided = provided
        prefix = f"{stamp}.".encode()
        self._macs = [
            hmac.new(secret, prefix, hashlib.sha256) for secret in entry.source.signing_secrets
        ]

    def update(self, chunk: bytes) -> None:
        """Feed the body as sent (still compressed when gzip), chunk by chunk."""
        for mac in self._macs:
            mac.update(chunk)

    def verify(self) -> None:
        expected = [(SIGNATURE_SCHEME + mac.hexdigest()).encode() for mac in self._macs]
        matched = False
        for candidate in self._provided:
            for want in expected:
                # no early exit: each comparison costs the same whichever one matched
                matched |= hmac.compare_digest(candidate, want)
        if not matched:
            raise _refused(
                self._metrics,
                self._entry,
                Unauthorized(
                    f"{SIGNATURE_HEADER} does not match the body for key {self._entry.label}",
                    reason="invalid_signature",
                ),
            )


def start_signature_check(
    entry: KeyEntry | None,
    request: web.BaseRequest,
    *,
    now_s: float,
    tolerance_s: int,
    metrics: Metrics,
) -> SignatureCheck | None:
    """For a key whose source has signing secrets, check the signature headers and the
    timestamp window before the body is read; the body itself is checked as it streams in.
    """
    if entry is None or not entry.source.signing_secrets:
        return None
    stamp = (headers.text(request, TIMESTAMP_HEADER) or "").strip()
    # bytes as sent: compare_digest refuses non-ASCII str, and bytes compare whatever came
    scheme = SIGNATURE_SCHEME.encode()
    provided = [
        part.strip()
        for part in (headers.raw(request, SIGNATURE_HEADER) or b"").split(b",")
        if part.strip().startswith(scheme)
    ][:MAX_SIGNATURES]
    problem = None
    if not stamp or not provided:
        problem = f"key {entry.label} must sign requests: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"
    elif not (stamp.isascii() and stamp.isdigit() and len(stamp) <= MAX_TIMESTAMP_DIGITS):
        problem = f"{TIMESTAMP_HEADER} must be Unix seconds"
    elif abs(now_s - int(stamp)) > tolerance_s:
        problem = (
            f"{TIMESTAMP_HEADER} is {now_s - int(stamp):+.0f} s from the collector's clock"
            f" (tolerance {tolerance_s} s); check the sender's clock"
        )
    if problem is not None:
        raise _refused(metrics, entry, Unauthorized(problem, reason="invalid_signature"))
    return SignatureCheck(entry, stamp, provided, metrics)


def check_events(entry: KeyEntry | None, batch: DecodedBatch, metrics: Metrics) -> None:
    """Refuse the whole request if any event is one the key's source may not send."""
    if entry is None or entry.source.events is None:
        return
    if batch.events is not None:
        names = {event.event for event in batch.events}
    else:  # some envelope is broken: take the names that can be read; validation does the rest
        names = set()
        for raw in batch.raw_events():
            try:
                name = _name_decoder.decode(raw).event
            except msgspec.DecodeError:
                continue
            if isinstance(name, str):
                names.add(name)
    refused = names - entry.source.events
    if refused:
        listed = ", ".join(
            name[:NAME_CHARS_IN_DETAIL] for name in sorted(refused)[:MAX_NAMES_IN_DETAIL]
        )
        more = len(refused) - MAX_NAMES_IN_DETAIL
        raise _refused(
            metrics,
            entry,
            Forbidden(
                f"source {entry.source.name} may not send {listed}"
                + (f" (and {more} more)" if more > 0 else "")
                + "; nothing in this request was accepted",
                reason="event_not_allowed",
            ),
        )


def _refused(metrics: Metrics, entry: KeyEntry | None, error: CollectorError) -> CollectorError:
    source = entry.source.name if entry is not None else NO_SOURCE_LABEL
    metrics.source_refusals.labels(source, error.reason).inc()
    return error
