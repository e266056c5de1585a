"""HTTP edge: run the pipeline per request and fold per-event results into one status.

handler -> decode -> validate -> enrich -> route -> Sink.publish -> response. The answer is 200
only when the sink acknowledged every record of the request (accepted and dead-lettered alike);
otherwise 503 + Retry-After and the client retries the whole batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from collector import auth, browser_forms, headers, keys
from collector.client_ip import RequestContext
from collector.decoding import decode_batch
from collector.enrichment import enrich
from collector.errors import (
    CollectorError,
    ExpectationFailed,
    Overloaded,
    SinkRejected,
    SinkUnavailable,
)
from collector.metrics import SCRAPE_CONTENT_TYPE
from collector.model import BatchResponse, ErrorBody, Rejected
from collector.reload import Plan
from collector.request_body import read_body
from collector.routing import route
from collector.sinks.base import Outcome
from collector.sources import KeyEntry
from collector.validation import BatchVerdict, validate_batch

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HTTP_REASONS = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def json_response(payload: msgspec.Struct, *, status: int = 200) -> web.Response:
    return web.Response(
        body=_encoder.encode(payload), status=status, content_type="application/json"
    )


def error_response(
    status: int, reason: str, detail: str, *, retry_after_s: int | None = None
) -> web.Response:
    response = json_response(ErrorBody(error=reason, detail=detail), status=status)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become HTTP responses; also counts every request."""
    metrics = request.app[keys.METRICS]
    resource = request.match_info.route.resource
    route_label = (
        resource.canonical if resource is not None and resource.name != UNMATCHED else UNMATCHED
    )
    started = time.perf_counter()
    try:
        refuse_unknown_expectation(request)
        response = await handler(request)
    except CollectorError as exc:
        retry_after = exc.retry_after_s
        # a detail may quote what the client sent: never let its bytes break the answer (or
        # the log line)
        detail = headers.clean(exc.detail)
        if exc.status >= 500:
            log.warning(
                "%s %s -> %d %s: %s",
                request.method,
                request.path,
                exc.status,
                exc.reason,
                detail,
            )
        response = error_response(exc.status, exc.reason, detail, retry_after_s=retry_after)
        if exc.close_connection:  # aiohttp closes after answering (and draining, if it can)
            response.force_close()
        if exc.status == 401:  # RFC 9110: a 401 names the scheme it wants
            response.headers["WWW-Authenticate"] = 'Bearer realm="capture"'
        metrics.request_errors.labels(exc.reason).inc()
    except web.HTTPException as exc:
        reason = HTTP_REASONS.get(exc.status, "bad_request")
        response = error_response(exc.status, reason, exc.reason)
        metrics.request_errors.labels(reason).inc()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal_error", "unexpected error; see the collector log")
        metrics.request_errors.labels("internal_error").inc()
    metrics.requests.labels(route_label, str(response.status)).inc()
    metrics.request_seconds.labels(route_label).observe(time.perf_counter() - started)
    return response


CONTINUE = "100-continue"
# the catch-all route's name, and the route label of requests no real route matched
UNMATCHED = "unmatched"


async def handle_unmatched(request: web.Request) -> web.StreamResponse:
    """The last route: 404, or 405 naming the methods the path allows, as aiohttp would.

    A route of our own rather than aiohttp's built-in answer, so that a request for no route
    still gets this module's Expect handling (aiohttp's raises on bytes that are not UTF-8).
    """
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name == UNMATCHED:
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def handle_expect(request: web.Request) -> None:
    """Every route's `Expect` handler (app.py installs it), run before the middlewares.

    aiohttp's own answers anything but 100-continue with a plain-text 417 that quotes the
    value, and raises (a 500) when the value holds bytes that are not UTF-8. Here it only
    says "100 Continue" (RFC 9110: the token is case-insensitive); any other expectation is
    left to `error_middleware`, which refuses it like every other error.
    """
    expect = headers.text(request, "Expect")
    if expect is not None and expect.strip().lower() == CONTINUE and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp does: the answer has not started yet


def refuse_unknown_expectation(request: web.Request) -> None:
    expect = headers.text(request, "Expect")
    if expect and expect.strip().lower() != CONTINUE:
        raise ExpectationFailed(f"cannot meet the expectation {expect[:100]!r}; send no Expect")


# what a route does with a body that passed auth and the size limits (native or compat API)
Ingest = Callable[
    [web.Application, bytes, RequestContext, KeyEntry | None], Awaitable[web.Response]
]


async def handle_batch(request: web.Request) -> web.Response:
    return await receive(request, _ingest)


async def receive(
    request: web.Request, ingest: Ingest, *, body_key: str = browser_forms.NATIVE_BODY_KEY
) -> web.Response:
    """Admit the request, read its body within the limits and in-flight budget, then `ingest`.
    `body_key`: the body field a browser key may come in (the route's envelope names it)."""
    app = request.app
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    gate = auth.Gate(
        request, app[keys.SOURCES], app[keys.RATE_LIMITER], metrics, body_field=body_key
    )
    # key, origin, rate limit and signature headers: refused before a byte of body is read
    # (unless the key is in the body: then once it is read, below)
    entry = gate.before_body()
    signature = auth.start_signature_check(
        entry,
        request,
        now_s=app[keys.CLOCK]().timestamp(),
        tolerance_s=settings.signature_tolerance_s,
        metrics=metrics,
    )
    browser_forms.check_body_type(request, entry, key_in_body=gate.key_in_body)
    inflight = app[keys.INFLIGHT]
    if inflight.full:
        raise Overloaded(
            f"{inflight.bytes} bytes already in flight (limit {inflight.limit_bytes}); retry later",
            retry_after_s=settings.retry_after_s,
        )
    # Held as the body arrives, not as declared: a Content-Length costs nothing until its
    # bytes come, so clients that announce large bodies and trickle them cannot fill the
    # budget (issue 12). Released once, in `finally`, whatever the request's fate.
    reservation = inflight.reserve()

    def hold(size: int) -> None:
        if not reservation.hold(size):
            raise Overloaded(
                f"the body does not fit in {inflight.limit_bytes} bytes in flight; retry later",
                retry_after_s=settings.retry_after_s,
            )
        # set, not a callback: in multiprocess mode only written values reach the shared files
        metrics.inflight_bytes.set(inflight.bytes)

    try:
        body = await read_body(
            request,
            max_body_bytes=settings.max_body_bytes,
            max_decompressed_bytes=settings.max_decompressed_bytes,
            body_read_timeout_s=settings.body_read_timeout_s,
            on_chunk=signature.update if signature is not None else None,
            on_size=hold,
            sniff_gzip=browser_forms.may_sniff_gzip(request),
        )
        if signature is not None:
            signature.verify()
        if gate.key_in_body:
            entry = gate.after_body(body, max_json_depth=settings.max_json_depth)
        # bytes as they came off the wire (still gzip), and what the pipeline decodes
        metrics.body_sent_bytes.observe(request.content.total_bytes)
        metrics.body_inflated_bytes.observe(len(body))
        client = app[keys.CLIENTS].context(
            request.remote,
            headers.all_text(request, "X-Forwarded-For"),
            headers.text(request, "User-Agent"),
        )
        return await ingest(app, body, client, entry)
    finally:
        reservation.release()
        metrics.inflight_bytes.set(inflight.bytes)


async def _ingest(
    app: web.Application, body: bytes, client: RequestContext, entry: KeyEntry | None
) -> web.Response:
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    plan = app[keys.PLAN].current  # one snapshot for the whole request, even across a reload
    batch = decode_batch(
        body, max_events=settings.max_batch_events, max_json_depth=settings.max_json_depth
    )
    auth.check_events(entry, batch, metrics)  # refuses the whole request before any publish
    verdict = validate_batch(batch, plan.schemas, max_event_bytes=settings.max_event_bytes)
    rejected = await deliver(app, plan, verdict, sent_at=batch.sent_at, client=client)
    return json_response(BatchResponse(accepted=len(verdict.valid), rejected=rejected))


async def deliver(
    app: web.Application,
    plan: Plan,
    verdict: BatchVerdict,
    *,
    sent_at: str | None,
    client: RequestContext,
) -> list[Rejected]:
    """The pipeline after validation, shared by every ingest route: dedup, enrich, route,
    publish and count. Returns the rejections once the sink acknowledged every record;
    raises SinkUnavailable / SinkRejected otherwise.
    """
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    sink = app[keys.SINK]
    metrics.batch_events.observe(len(verdict.valid) + len(verdict.invalid))
    received_at = app[keys.CLOCK]()
    dedup = app[keys.DEDUP]
    # `fresh`: the verdict without events already acknowledged (SDK retries); those are
    # answered as accepted but not published again.
    fresh, duplicates = (
        (verdict, 0) if dedup is None else dedup.drop_seen(verdict, received_at.timestamp())
    )
    enrich(
        fresh.valid,
        received_at=received_at,
        sent_at=sent_at,
        request=client,
        annotated=fresh.annotated,
        pii_hash_key=settings.pii_hash_key.encode() if settings.pii_hash_key else None,
    )
    records = route(
        fresh.valid,
        fresh.invalid,
        table=plan.routes,
        received_at=received_at,
        annotated=fresh.annotated,
        sent_at=sent_at,  # kept in dead letters, so replay can recover them whole
        request=client,
    )
    hot_keys = app[keys.HOT_KEYS]
    overflowed: Counter[str] = Counter()
    if hot_keys is not None:  # after routing: the key and topic of every record are final
        records, overflowed = hot_keys.divert(records, received_at.timestamp())

    started = time.perf_counter()
    outcomes = await sink.publish(records, timeout_s=settings.sink_timeout_s)
    metrics.sink_publish_seconds.labels(sink.name).observe(time.perf_counter() - started)
    if any(outcome is not Outcome.OK for outcome in outcomes):
        plan.count_events(metrics, verdict.valid, "failed")
        counts = Counter(outcomes)
        for outcome in (Outcome.RETRIABLE, Outcome.FATAL):  # once per outcome, not per record
            if counts[outcome]:
                metrics.sink_errors.labels(sink.name, outcome.value).inc(counts[outcome])
        failed = len(outcomes) - counts[Outcome.OK]
        detail = (
            f"the {sink.name} sink did not acknowledge {failed} of {len(records)} records;"
            " nothing in this request was accepted"
        )
        if counts[Outcome.RETRIABLE]:
            raise SinkUnavailable(detail + ", retry it", retry_after_s=settings.retry_after_s)
        raise SinkRejected(detail + " and the sink refused it for good")

    if dedup is not None:  # only now: a batch that got a 503 must be published when retried
        dedup.remember(fresh.valid, received_at.timestamp())
        if duplicates:
            metrics.dedup_hits.inc(duplicates)
    for topic, count in overflowed.items():  # counted once written, like accepted events
        metrics.hot_key_overflow.labels(topic).inc(count)
    plan.count_events(metrics, verdict.valid, "accepted")
    rejected = []
    for invalid in verdict.invalid:
        name, version = (
            (invalid.event.event, invalid.event.version)
            if invalid.event is not None
            else (None, None)
        )
        metrics.events.labels(
            plan.event_label(name), plan.version_label(name, version), "rejected"
        ).inc()
        metrics.rejections.labels(invalid.reason).inc()
        rejected.append(
            Rejected(
                index=invalid.index,
                event_id=invalid.event_id,
                reason=invalid.reason,
                errors=invalid.errors,
            )
        )
    return rejected


async def handle_healthz(request: web.Request) -> web.Response:
    # the pid tells which worker answered when several share the port
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def handle_readyz(request: web.Request) -> web.Response:
    sink = request.app[keys.SINK]
    ready = await sink.ready()
    request.app[keys.METRICS].sink_ready.labels(sink.name).set(1 if ready else 0)
    if not ready:
        raise SinkUnavailable(
            f"the {sink.name} sink cannot accept events now",
            retry_after_s=request.app[keys.SETTINGS].retry_after_s,
        )
    return web.json_response({"status": "ready", "sink": sink.name})


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[keys.METRICS].scrape()
    return web.Response(body=body, headers={"Content-Type": SCRAPE_CONTENT_TYPE})
