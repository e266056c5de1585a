"""The naive baseline: the collector as a first draft would write it, to measure ours against.

Same wire protocol and plan files, but each event is validated with the `jsonschema` library
and produced with one awaited `send_and_wait` (acks=all) after another. Validators are built
once at start (a draft would do at least that). Must not share code with the collector.

    python -m benchmarks.naive_server --port 8090 --bootstrap-servers 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web
from aiokafka import AIOKafkaProducer

from event_schemas import PLAN_DIR

ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "minLength": 1, "maxLength": 64},
        "version": {"type": "integer", "minimum": 1},
        "event_id": {"type": "string", "format": "uuid"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "user_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
        "anonymous_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
        "properties": {"type": "object"},
        "context": {"type": ["object", "null"]},
    },
    "required": ["event", "version", "event_id", "occurred_at", "properties"],
}
Validator = jsonschema.Draft202012Validator
PRODUCER: web.AppKey[AIOKafkaProducer] = web.AppKey("producer", AIOKafkaProducer)
VALIDATORS: web.AppKey[dict[tuple[str, int], Any]] = web.AppKey("validators", dict)


def load_validators(plan_dir: Path) -> dict[tuple[str, int], Any]:
    validators: dict[tuple[str, int], Any] = {}
    for path in sorted(plan_dir.glob("*/v*.json")):
        schema = json.loads(path.read_text())
        version = int(path.stem.removeprefix("v"))
        validators[path.parent.name, version] = Validator(
            schema, format_checker=Validator.FORMAT_CHECKER
        )
    return validators


_envelope_validator = Validator(ENVELOPE_SCHEMA, format_checker=Validator.FORMAT_CHECKER)


def check(event: Any, validators: dict[tuple[str, int], Any]) -> str | None:
    """The first error message for this event, or None when it is valid."""
    for error in _envelope_validator.iter_errors(event):
        return f"envelope: {error.message}"
    if event.get("user_id") is None and event.get("anonymous_id") is None:
        return "user_id or anonymous_id is required"
    validator = validators.get((event["event"], event["version"]))
    if validator is None:
        return "unknown event or version"
    for error in validator.iter_errors(event["properties"]):
        return f"properties: {error.message}"
    return None


async def handle_batch(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
        batch = body["batch"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "malformed_json", "detail": "bad body"}, status=400)
    producer = request.app[PRODUCER]
    validators = request.app[VALIDATORS]
    received_at = dt.datetime.now(dt.UTC).isoformat()
    accepted = 0
    rejected = []
    try:
        for index, event in enumerate(batch):
            problem = check(event, validators) if isinstance(event, dict) else "not an object"
            key = None
            if isinstance(event, dict):
                identity = event.get("user_id") or event.get("anonymous_id")
                key = str(identity).encode() if identity else None
            if problem is None:
                value = json.dumps({**event, "received_at": received_at}).encode()
                await producer.send_and_wait("events." + event["event"], value, key=key)
                accepted += 1
            else:
                value = json.dumps({"reason": problem, "event": event}).encode()
                await producer.send_and_wait("events._invalid", value, key=key)
                rejected.append({"index": index, "reason": "invalid", "errors": []})
    except Exception as exc:  # noqa: BLE001  # any producer failure is a 503, as in the collector
        return web.json_response({"error": "sink_unavailable", "detail": repr(exc)}, status=503)
    return web.json_response({"accepted": accepted, "rejected": rejected})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(bootstrap_servers: str, plan_dir: Path) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[VALIDATORS] = load_validators(plan_dir)

    async def producer_lifecycle(app: web.Application) -> AsyncIterator[None]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        await producer.start()
        app[PRODUCER] = producer
        yield
        await asyncio.wait_for(producer.stop(), timeout=10)

    app.cleanup_ctx.append(producer_lifecycle)
    app.router.add_post("/v1/batch", handle_batch)
    app.router.add_get("/healthz", handle_healthz)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--plan-dir", type=Path, default=PLAN_DIR)
    args = parser.parse_args(argv)
    web.run_app(
        create_app(args.bootstrap_servers, args.plan_dir),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
