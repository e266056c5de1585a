"""Hot reload of the tracking plan: swap on a good plan, keep the old one on a bad plan."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from collector import keys
from collector.app import RUNNER_OPTIONS, create_app
from collector.reload import reload_plan
from collector.settings import Settings
from collector.sinks import MemorySink
from collector.sinks.base import Outcome, Record
from event_schemas import PLAN_DIR, load_registry
from tests.conftest import HttpClient, LoopBlockGuard, start_collector
from tests.factories import batch_body, track_played
from tests.waiting import eventually

JSON = {"Content-Type": "application/json"}


def foo_schema(*, required: list[str] | None = None, extra: dict[str, Any] | None = None) -> bytes:
    properties: dict[str, Any] = {"bar": {"type": "string", "maxLength": 32}}
    properties.update(extra or {})
    document: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required or ["bar"],
        "additionalProperties": False,
    }
    return msgspec.json.encode(document)


def foo(version: int = 1, **properties: Any) -> dict[str, Any]:
    return track_played(event="foo", version=version, properties={"bar": "x", **properties})


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    target = tmp_path / "plan"
    shutil.copytree(PLAN_DIR, target)
    return target


@pytest.fixture
async def reloadable(plan_dir: Path, memory_sink: MemorySink) -> Any:
    """The collector on a plan in tmp_path; the test fails if a reload blocked the loop."""
    guard = LoopBlockGuard()
    guard.start()
    settings = Settings(sink="memory", sink_timeout_s=0.5, schemas_dir=str(plan_dir))
    client = await start_collector(settings, memory_sink, load_registry(plan_dir))
    yield client
    await client.close()
    await guard.stop()
    assert guard.max_lag_s < guard.MAX_LAG_S, f"event loop blocked for {guard.max_lag_s:.3f}s"


async def post(client: HttpClient, *events: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post("/v1/batch", data=batch_body(*events), headers=JSON)
    return response.status, msgspec.json.decode(await response.read())


def reloads(client: HttpClient, outcome: str) -> float:
    assert client.app is not None
    value = client.app[keys.METRICS].registry.get_sample_value(
        "capture_schema_reloads_total", {"outcome": outcome}
    )
    return value or 0.0


def event_versions(client: HttpClient) -> float | None:
    assert client.app is not None
    return client.app[keys.METRICS].registry.get_sample_value("capture_schema_event_versions")


async def test_reload_adds_new_event_and_refuses_broken_or_incompatible_plans(
    reloadable: HttpClient,
    plan_dir: Path,
    memory_sink: MemorySink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = reloadable.app
    assert app is not None
    versions_before = len(load_registry(plan_dir))
    assert event_versions(reloadable) == versions_before

    status, body = await post(reloadable, foo())
    assert status == 200
    assert [r["reason"] for r in body["rejected"]] == ["unknown_event"]

    (plan_dir / "foo").mkdir()
    (plan_dir / "foo" / "v1.json").write_bytes(foo_schema())
    assert await reload_plan(app) is True
    assert (reloads(reloadable, "ok"), reloads(reloadable, "failed")) == (1.0, 0.0)
    assert event_versions(reloadable) == versions_before + 1

    status, body = await post(reloadable, foo())
    assert (status, body) == (200, {"accepted": 1, "rejected": []})
    assert len(memory_sink.topic("events.foo")) == 1
    plan_with_foo = app[keys.PLAN].current

    # a keyword the loader does not implement: the load fails, the plan with foo serves on
    (plan_dir / "foo" / "v2.json").write_bytes(foo_schema(extra={"baz": {"oneOf": []}}))
    caplog.clear()
    assert await reload_plan(app) is False
    assert app[keys.PLAN].current is plan_with_foo
    assert (reloads(reloadable, "ok"), reloads(reloadable, "failed")) == (1.0, 1.0)
    assert event_versions(reloadable) == versions_before + 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "collector.reload"]
    assert "v2.json" in line
    assert "oneOf" in line
    status, body = await post(reloadable, foo())
    assert (status, body["accepted"]) == (200, 1)
    status, body = await post(reloadable, foo(version=2))
    assert [r["reason"] for r in body["rejected"]] == ["unknown_event"]

    # loads, but v2 adds a required field (BACKWARD): refused as well
    (plan_dir / "foo" / "v2.json").write_bytes(
        foo_schema(required=["bar", "baz"], extra={"baz": {"type": "integer"}})
    )
    caplog.clear()
    assert await reload_plan(app) is False
    assert app[keys.PLAN].current is plan_with_foo
    assert (reloads(reloadable, "ok"), reloads(reloadable, "failed")) == (1.0, 2.0)
    [line] = [r.getMessage() for r in caplog.records if r.name == "collector.reload"]
    assert "foo v2" in line
    assert "baz" in line
    status, body = await post(reloadable, foo(version=2, baz=1))
    assert [r["reason"] for r in body["rejected"]] == ["unknown_event"]

    # fixed: v2 with an optional field is compatible and swaps in
    (plan_dir / "foo" / "v2.json").write_bytes(foo_schema(extra={"baz": {"type": "integer"}}))
    assert await reload_plan(app) is True
    assert (reloads(reloadable, "ok"), reloads(reloadable, "failed")) == (2.0, 2.0)
    status, body = await post(reloadable, foo(version=2, baz=1), foo())
    assert (status, body) == (200, {"accepted": 2, "rejected": []})


async def test_accepted_events_of_a_new_event_are_labelled_by_name(
    reloadable: HttpClient, plan_dir: Path
) -> None:
    assert reloadable.app is not None
    registry = reloadable.app[keys.METRICS].registry
    (plan_dir / "foo").mkdir()
    (plan_dir / "foo" / "v1.json").write_bytes(foo_schema())
    assert await reload_plan(reloadable.app)
    status, _ = await post(reloadable, foo())
    assert status == 200
    labels = {"event": "foo", "version": "1", "outcome": "accepted"}
    assert registry.get_sample_value("capture_events_total", labels) == 1.0


class GatedSink(MemorySink):
    """Holds every publish until `gate` is set, after the request was validated and routed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def publish(self, records: Sequence[Record], *, timeout_s: float) -> list[Outcome]:
        self.waiting += 1
        await self.gate.wait()
        return await super().publish(records, timeout_s=timeout_s)


async def test_a_request_keeps_the_plan_it_started_with(plan_dir: Path) -> None:
    sink = GatedSink()
    settings = Settings(sink="memory", sink_timeout_s=5.0, schemas_dir=str(plan_dir))
    client = await start_collector(settings, sink, load_registry(plan_dir))
    try:
        assert client.app is not None
        first = asyncio.create_task(post(client, foo()))
        await eventually(lambda: sink.waiting == 1)
        (plan_dir / "foo").mkdir()
        (plan_dir / "foo" / "v1.json").write_bytes(foo_schema())
        assert await reload_plan(client.app)
        sink.gate.set()
        # judged, routed and labelled by the plan it started with, which had no foo
        status, body = await first
        assert status == 200
        assert [r["reason"] for r in body["rejected"]] == ["unknown_event"]
        assert [r.topic for r in sink.records] == ["events._invalid"]
        registry = client.app[keys.METRICS].registry
        labels = {"event": "_unknown", "version": "_unknown", "outcome": "rejected"}
        assert registry.get_sample_value("capture_events_total", labels) == 1.0
        status, body = await post(client, foo())
        assert (status, body) == (200, {"accepted": 1, "rejected": []})
        assert [r.topic for r in sink.records] == ["events._invalid", "events.foo"]
    finally:
        await client.close()


async def test_sighup_reloads_the_plan_and_one_app_owns_the_handler(
    reloadable: HttpClient, plan_dir: Path, memory_sink: MemorySink
) -> None:
    # the fixture's app runs on the main thread and installed the handler; a second app in
    # the same process leaves it alone
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
    other = await start_collector(
        Settings(sink="memory", schemas_dir=str(plan_dir)), MemorySink(), load_registry(plan_dir)
    )
    await other.close()
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)

    (plan_dir / "foo").mkdir()
    (plan_dir / "foo" / "v1.json").write_bytes(foo_schema())
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: reloads(reloadable, "ok") == 1.0)
    status, body = await post(reloadable, foo())
    assert (status, body["accepted"]) == (200, 1)
    assert reloads(other, "ok") == 0.0


async def test_the_handler_is_removed_on_cleanup_and_is_optional(
    plan_dir: Path, memory_sink: MemorySink
) -> None:
    settings = Settings(sink="memory", schemas_dir=str(plan_dir))
    client = await start_collector(settings, memory_sink, load_registry(plan_dir))
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
    await client.close()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL

    app = create_app(settings, sink=memory_sink, reload_on_sighup=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
        assert await reload_plan(app)  # the programmatic reload works without the handler
    finally:
        await server.close()
