"""HTTP edge: run the pipeline per request and fold per-event results into one status.

handler -> decode -> validate -> enrich -> route -> Sink.publish -> response. The answer is 200
only when the sink acknowledged every record of the request (accepted and dead-lettered alike);
otherwise 503 + Retry-After and the client retries the whole batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector import keys
from collector.decoding import check_content_type, decode_batch, read_body
from collector.enrichment import enrich
from collector.errors import CollectorError, Overloaded, SinkRejected, SinkUnavailable
from collector.model import BatchResponse, ErrorBody, Rejected
from collector.routing import route
from collector.sinks.base import Outcome
from collector.validation import validate_batch

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
    route_label = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    try:
        response = await handler(request)
    except CollectorError as exc:
        retry_after = exc.retry_after_s if isinstance(exc, SinkUnavailable) else None
        if exc.status >= 500:
            log.warning(
                "%s %s -> %d %s: %s",
                request.method,
                request.path,
                exc.status,
                exc.reason,
                exc.detail,
            )
        response = error_response(exc.status, exc.reason, exc.detail, retry_after_s=retry_after)
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


async def handle_batch(request: web.Request) -> web.Response:
    app = request.app
    settings = app[keys.SETTINGS]
    check_content_type(request)
    inflight = app[keys.INFLIGHT]
    reserved = request.content_length or settings.max_body_bytes
    if not inflight.try_acquire(reserved):
        raise Overloaded(
            f"{inflight.bytes} bytes already in flight (limit {inflight.limit_bytes}); retry later",
            retry_after_s=settings.retry_after_s,
        )
    try:
        body = await read_body(
            request,
            max_body_bytes=settings.max_body_bytes,
            max_decompressed_bytes=settings.max_decompressed_bytes,
        )
        if len(body) > reserved:  # inflated: hold what it really takes
            if not inflight.try_acquire(len(body) - reserved):
                raise Overloaded(
                    f"the inflated body does not fit in {inflight.limit_bytes} bytes in flight",
                    retry_after_s=settings.retry_after_s,
                )
            reserved = len(body)
        return await _ingest(app, body)
    finally:
        inflight.release(reserved)


async def _ingest(app: web.Application, body: bytes) -> web.Response:
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    sink = app[keys.SINK]
    plan = app[keys.PLAN].current  # one snapshot for the whole request, even across a reload
    batch = decode_batch(body)
    verdict = validate_batch(batch, plan.schemas)
    received_at = app[keys.CLOCK]()
    enrich(
        verdict.valid,
        received_at=received_at,
        annotated=verdict.annotated,
        pii_hash_key=settings.pii_hash_key.encode() if settings.pii_hash_key else None,
    )
    records = route(
        verdict.valid,
        verdict.invalid,
        table=plan.routes,
        received_at=received_at,
        annotated=verdict.annotated,
    )

    started = time.perf_counter()
    outcomes = await sink.publish(records, timeout_s=settings.sink_timeout_s)
    metrics.sink_publish_seconds.labels(sink.name).observe(time.perf_counter() - started)
    if any(outcome is not Outcome.OK for outcome in outcomes):
        plan.count_events(metrics, verdict.valid, "failed")
        failed = sum(outcome is not Outcome.OK for outcome in outcomes)
        detail = (
            f"the {sink.name} sink did not acknowledge {failed} of {len(records)} records;"
            " nothing in this request was accepted"
        )
        if any(outcome is Outcome.RETRIABLE for outcome in outcomes):
            raise SinkUnavailable(detail + ", retry it", retry_after_s=settings.retry_after_s)
        raise SinkRejected(detail + " and the sink refused it for good")

    plan.count_events(metrics, verdict.valid, "accepted")
    rejected = []
    for invalid in verdict.invalid:
        name = invalid.event.event if invalid.event is not None else None
        metrics.events.labels(plan.event_label(name), "rejected").inc()
        metrics.rejections.labels(invalid.reason).inc()
        rejected.append(
            Rejected(
                index=invalid.index,
                event_id=invalid.event_id,
                reason=invalid.reason,
                errors=invalid.errors,
            )
        )
    return json_response(BatchResponse(accepted=len(verdict.valid), rejected=rejected))


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
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
