"""HTTP edge of the Segment-compatible API: `/compat/segment/v1/batch` and the single-call routes.

Auth (the body's `writeKey` included), CORS, body limits, validation, dedup, enrichment,
routing and publishing are the native pipeline's (`collector.handlers.receive` and `deliver`);
this module only decodes Segment's envelope and hands the translated events over. It must not
publish or count on its own.
"""

from __future__ import annotations

import functools

import msgspec
from aiohttp import web

from collector import auth, cors, handlers, keys
from collector.browser_forms import SEGMENT_BODY_KEY, without_member
from collector.client_ip import RequestContext
from collector.decoding import (
    DecodedBatch,
    decode_envelope,
    require_batch_size,
    require_depth,
    require_utf8,
)
from collector.limits import ENVELOPE_DEPTH
from collector.model import Rejected
from collector.segment.config import SegmentConfig
from collector.segment.mapping import TYPES, Mapper, SegmentBatch, api_headers, marked
from collector.sources import KeyEntry
from collector.validation import BatchVerdict, validate_batch

# An SDK configured with host `http://<collector>/compat/segment` posts to PREFIX + /v1/batch.
PREFIX = "/compat/segment"
SEGMENT_CONFIG = web.AppKey("segment_config", SegmentConfig)
# A single-call body is the message itself: the body object and batch array are not there.
SINGLE_ENVELOPE_DEPTH = ENVELOPE_DEPTH - 2
# analytics.js posts to `<apiHost>/<first letter of the type>` (`/v1/t`, batches to `/v1/b`),
# as Segment's own API accepts; the other libraries use the full names.
SHORT_PATHS = {kind[0]: kind for kind in TYPES}
BATCH_SHORT_PATH = "b"


class SegmentResponse(msgspec.Struct, frozen=True):
    """Segment answers `{"success": true}`; its clients read only the status. The counts and
    rejections are for people debugging with curl (rejections are also dead-lettered)."""

    success: bool
    accepted: int
    rejected: list[Rejected]


class _Single(msgspec.Struct, rename="camel"):
    sent_at: object = None


_batch_decoder = msgspec.json.Decoder(SegmentBatch)
_single_decoder = msgspec.json.Decoder(_Single)


def route_paths() -> dict[str, str | None]:
    """Every Segment route: its path -> the call type it implies (None: the batch route)."""
    paths: dict[str, str | None] = {f"{PREFIX}/v1/{name}": None for name in ("batch", "b")}
    paths.update({f"{PREFIX}/v1/{kind}": kind for kind in TYPES})
    paths.update({f"{PREFIX}/v1/{short}": kind for short, kind in SHORT_PATHS.items()})
    return paths


def add_routes(app: web.Application, config: SegmentConfig) -> None:
    app[SEGMENT_CONFIG] = config
    for path, kind in route_paths().items():
        if kind is None:
            app.router.add_post(path, handle_batch)
        else:
            app.router.add_post(path, functools.partial(handle_single, kind=kind))
        cors.add_preflight(app, path)  # analytics.js in a page, from an allowed origin


async def handle_batch(request: web.Request) -> web.Response:
    return await handlers.receive(request, _ingest_batch, body_key=SEGMENT_BODY_KEY)


async def handle_single(request: web.Request, *, kind: str) -> web.Response:
    return await handlers.receive(
        request, functools.partial(_ingest_single, kind=kind), body_key=SEGMENT_BODY_KEY
    )


async def _ingest_batch(
    app: web.Application, body: bytes, client: RequestContext, entry: KeyEntry | None
) -> web.Response:
    settings = app[keys.SETTINGS]
    depth = settings.max_json_depth
    require_utf8(body)
    shape = 'a Segment batch {"batch": [...]}'
    envelope = decode_envelope(body, _batch_decoder, shape=shape, depth=depth)
    require_depth(body, depth, ENVELOPE_DEPTH)
    require_batch_size(len(envelope.batch), settings.max_batch_events)
    sent_at = envelope.sent_at if isinstance(envelope.sent_at, str) else None
    return await _translate(app, body, envelope.batch, sent_at, client, entry, kind=None)


async def _ingest_single(
    app: web.Application,
    body: bytes,
    client: RequestContext,
    entry: KeyEntry | None,
    *,
    kind: str,
) -> web.Response:
    depth = app[keys.SETTINGS].max_json_depth
    require_utf8(body)
    shape = "a Segment message (a JSON object)"
    single = decode_envelope(body, _single_decoder, shape=shape, depth=depth)
    require_depth(body, depth, SINGLE_ENVELOPE_DEPTH)
    sent_at = single.sent_at if isinstance(single.sent_at, str) else None
    return await _translate(app, body, [msgspec.Raw(body)], sent_at, client, entry, kind=kind)


async def _translate(
    app: web.Application,
    body: bytes,
    messages: list[msgspec.Raw],
    sent_at: str | None,
    client: RequestContext,
    entry: KeyEntry | None,
    *,
    kind: str | None,
) -> web.Response:
    settings = app[keys.SETTINGS]
    plan = app[keys.PLAN].current  # one snapshot for the whole request, even across a reload
    mapper = Mapper(app[SEGMENT_CONFIG], plan.schemas)
    mapped = mapper.map_batch(messages, received_at=app[keys.CLOCK](), forced_type=kind)
    # the translated events, each with its message's bytes as sent (what a dead letter keeps)
    batch = DecodedBatch(body, mapped.events, mapped.raws, sent_at)
    auth.check_events(entry, batch, app[keys.METRICS])  # by schema name, as on /v1/batch
    verdict = validate_batch(batch, plan.schemas, max_event_bytes=settings.max_event_bytes)
    if verdict.invalid or mapped.invalid:
        # marked as Segment's (replay maps them again), at their position in the Segment batch
        headers = api_headers(kind)
        invalid = [marked(r, mapped.positions[r.index], headers) for r in verdict.invalid]
        invalid += [marked(r, r.index, headers) for r in mapped.invalid]
        invalid.sort(key=lambda rejected: rejected.index)
        for rejected in invalid:  # kept as sent, but without the write key analytics.js adds
            if rejected.raw is not None:
                rejected.raw = msgspec.Raw(without_member(bytes(rejected.raw), SEGMENT_BODY_KEY))
        verdict = BatchVerdict(verdict.valid, invalid, verdict.annotated)
    rejections = await handlers.deliver(app, plan, verdict, sent_at=sent_at, client=client)
    return handlers.json_response(
        SegmentResponse(success=True, accepted=len(verdict.valid), rejected=rejections)
    )
