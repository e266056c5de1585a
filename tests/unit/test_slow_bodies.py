"""The in-flight budget counts bytes that arrived, not bytes declared (issue 12).

A crowd of slow senders on raw loopback sockets, each declaring a large Content-Length and
trickling a byte (or a gzip prefix that would inflate far), must not lock a normal client out;
real bytes that do not fit are still refused at once, and no path leaves a reservation behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from collector import keys
from collector.backpressure import InFlight
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests.conftest import HttpClient, start_collector
from tests.factories import batch_body, track_played
from tests.waiting import eventually

JSON = {"Content-Type": "application/json"}
MAX_BODY_BYTES = 16_384
# Room for two declared bodies: eight slow senders would fill it four times over.
MAX_INFLIGHT_BYTES = 2 * MAX_BODY_BYTES
SLOW_SENDERS = 8


@pytest.fixture
async def small_budget(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    settings = Settings(
        sink="memory",
        sink_timeout_s=2.0,
        max_body_bytes=MAX_BODY_BYTES,
        max_inflight_bytes=MAX_INFLIGHT_BYTES,
        # longer than the test: the slow senders stay in while the normal client posts
        body_read_timeout_s=60.0,
    )
    client = await start_collector(settings, memory_sink, schemas)
    yield client
    await client.close()


class SlowSender:
    """A raw connection that sends headers declaring `declared` bytes, then `sent` of them."""

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        self.writer = writer
        self.reader = reader

    @classmethod
    async def start(
        cls, client: HttpClient, *, declared: int, sent: bytes, extra: str = ""
    ) -> SlowSender:
        assert client.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        head = (
            "POST /v1/batch HTTP/1.1\r\nHost: collector\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n{extra}\r\n"
        )
        writer.write(head.encode() + sent)
        await writer.drain()
        return cls(writer, reader)

    async def answered(self) -> bool:
        """Whether the collector already answered (or closed) this request: an answer given
        at admission is long in the socket buffer, so a short look suffices."""
        try:
            await asyncio.wait_for(self.reader.read(1), timeout=0.05)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def crowd(
    client: HttpClient, count: int, *, declared: int, sent: bytes, extra: str = ""
) -> list[SlowSender]:
    return [
        await SlowSender.start(client, declared=declared, sent=sent, extra=extra)
        for _ in range(count)
    ]


def gzip_prefix(data: bytes) -> bytes:
    """The start of a gzip stream holding `data`, flushed so that it inflates in full, but
    unfinished: the body a slow gzip sender sends before going quiet."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)


async def test_slow_senders_declaring_large_bodies_do_not_lock_out_a_normal_client(
    small_budget: HttpClient, memory_sink: MemorySink
) -> None:
    assert small_budget.app is not None
    inflight = small_budget.app[keys.INFLIGHT]
    senders = await crowd(small_budget, SLOW_SENDERS, declared=MAX_BODY_BYTES, sent=b"{")
    try:
        # every sender is inside read_body, holding at least the byte it sent
        await eventually(lambda: inflight.bytes >= SLOW_SENDERS)
        response = await small_budget.post(
            "/v1/batch", data=batch_body(track_played()), headers=JSON
        )
        assert response.status == 200, await response.text()
        assert len(memory_sink.records) == 1
        assert inflight.bytes == SLOW_SENDERS  # one byte each: what arrived, not what was declared
        for sender in senders:
            assert not await sender.answered()  # none was refused either
    finally:
        for sender in senders:
            await sender.close()
    await eventually(lambda: inflight.bytes == 0)  # a sender that vanishes gives its bytes back


async def test_slow_gzip_senders_hold_what_they_sent_not_what_it_inflates_to(
    small_budget: HttpClient, memory_sink: MemorySink
) -> None:
    assert small_budget.app is not None
    inflight = small_budget.app[keys.INFLIGHT]
    # ~1 KB on the wire that inflates to 1 MiB: 32 times the whole budget, per sender
    prefix = gzip_prefix(b'{"batch":[' + b" " * (1 << 20))
    assert len(prefix) * SLOW_SENDERS < MAX_INFLIGHT_BYTES
    senders = await crowd(
        small_budget,
        SLOW_SENDERS,
        declared=len(prefix) + 1000,
        sent=prefix,
        extra="Content-Encoding: gzip\r\n",
    )
    try:
        await eventually(lambda: inflight.bytes == SLOW_SENDERS * len(prefix))
        body = gzip.compress(batch_body(*[track_played() for _ in range(20)]))
        headers = {**JSON, "Content-Encoding": "gzip"}
        response = await small_budget.post("/v1/batch", data=body, headers=headers)
        assert response.status == 200, await response.text()
        assert len(memory_sink.records) == 20
        assert inflight.bytes == SLOW_SENDERS * len(prefix)
        for sender in senders:
            assert not await sender.answered()
    finally:
        for sender in senders:
            await sender.close()
    await eventually(lambda: inflight.bytes == 0)


async def test_a_complete_gzip_body_that_inflates_past_the_room_left_is_refused(
    small_budget: HttpClient, memory_sink: MemorySink
) -> None:
    # the budget still bounds what inflating takes, once the body is complete
    assert small_budget.app is not None
    inflight = small_budget.app[keys.INFLIGHT]
    part = b"[" * (MAX_BODY_BYTES - 1)
    senders = await crowd(small_budget, 1, declared=MAX_BODY_BYTES, sent=part)
    try:
        await eventually(lambda: inflight.bytes == len(part))
        raw = batch_body(*[track_played() for _ in range(100)])
        body = gzip.compress(raw)
        assert len(part) + len(body) < MAX_INFLIGHT_BYTES  # the wire bytes alone would fit
        assert len(part) + len(body) + len(raw) > MAX_INFLIGHT_BYTES  # inflated, they do not
        headers = {**JSON, "Content-Encoding": "gzip"}
        response = await small_budget.post("/v1/batch", data=body, headers=headers)
        assert response.status == 503
        assert (await response.json())["error"] == "overloaded"
        assert memory_sink.records == []
        assert inflight.bytes == len(part)
    finally:
        for sender in senders:
            await sender.close()
    await eventually(lambda: inflight.bytes == 0)


async def test_real_bytes_that_do_not_fit_are_refused_at_once(
    small_budget: HttpClient, memory_sink: MemorySink
) -> None:
    assert small_budget.app is not None
    inflight = small_budget.app[keys.INFLIGHT]
    part = b"[" * (MAX_BODY_BYTES - 1)  # all of its body but the last byte
    senders = await crowd(small_budget, 2, declared=MAX_BODY_BYTES, sent=part)
    try:
        await eventually(lambda: inflight.bytes == 2 * len(part))
        body = batch_body(*[track_played() for _ in range(5)])
        response = await small_budget.post("/v1/batch", data=body, headers=JSON)
        assert response.status == 503
        assert (await response.json())["error"] == "overloaded"
        assert response.headers["Retry-After"] == "2"
        assert memory_sink.records == []
        assert inflight.bytes == 2 * len(part)  # the refused request left nothing behind
    finally:
        for sender in senders:
            await sender.close()
    await eventually(lambda: inflight.bytes == 0)
    response = await small_budget.post("/v1/batch", data=batch_body(track_played()), headers=JSON)
    assert response.status == 200


async def test_a_full_budget_refuses_before_reading_a_byte(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    settings = Settings(sink="memory", max_inflight_bytes=20_000, body_read_timeout_s=60.0)
    client = await start_collector(settings, memory_sink, schemas)
    try:
        assert client.app is not None
        inflight = client.app[keys.INFLIGHT]
        holders = await crowd(client, 2, declared=20_000, sent=b"[" * 10_000)
        await eventually(lambda: inflight.full)
        # headers only: the answer must not wait for a body that may never come
        late = await SlowSender.start(client, declared=100, sent=b"")
        head = await asyncio.wait_for(late.reader.readline(), timeout=10)
        assert b" 503 " in head
        for sender in [*holders, late]:
            await sender.close()
        await eventually(lambda: inflight.bytes == 0)
    finally:
        await client.close()


async def test_a_lone_request_larger_than_the_budget_still_passes(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    # the budget bounds requests beside each other; a lone one is bounded by the body limits
    body = batch_body(*[track_played() for _ in range(800)])
    assert len(body) > 2 * 65_536  # several read chunks, each growing the reservation
    settings = Settings(sink="memory", max_inflight_bytes=1_000)
    client = await start_collector(settings, memory_sink, schemas)
    try:
        response = await client.post("/v1/batch", data=body, headers=JSON)
        assert response.status == 200, await response.text()
        assert len(memory_sink.records) == 800
    finally:
        await client.close()


async def test_a_body_timeout_gives_back_what_it_held(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    settings = Settings(sink="memory", body_read_timeout_s=0.2, max_inflight_bytes=1_000)
    client = await start_collector(settings, memory_sink, schemas)
    try:
        assert client.app is not None
        inflight = client.app[keys.INFLIGHT]
        sender = await SlowSender.start(client, declared=500, sent=b"{" * 100)
        head = await asyncio.wait_for(sender.reader.readline(), timeout=10)
        assert b" 408 " in head
        assert inflight.bytes == 0
        await sender.close()
    finally:
        await client.close()


async def test_a_complete_gzip_body_holds_its_compressed_and_inflated_size(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    assert collector.app is not None
    inflight = collector.app[keys.INFLIGHT]
    raw = batch_body(*[track_played() for _ in range(50)])
    body = gzip.compress(raw)
    assert len(body) < len(raw) // 4
    memory_sink.stall = True  # the request holds its bytes until the 0.5 s sink deadline
    headers = {**JSON, "Content-Encoding": "gzip"}
    pending = asyncio.create_task(collector.post("/v1/batch", data=body, headers=headers))
    await eventually(lambda: inflight.bytes > 0)
    assert inflight.bytes == len(body) + len(raw)  # both are in memory until it ends
    assert (await pending).status == 503
    assert inflight.bytes == 0


def test_a_reservation_grows_never_shrinks_and_releases_once() -> None:
    inflight = InFlight(100)
    first = inflight.reserve()
    assert first.hold(50)
    assert first.hold(150)  # a lone request may grow past the cap: the body limits bound it
    assert first.hold(120)  # never less than already held
    assert (inflight.bytes, inflight.full) == (150, True)
    second = inflight.reserve()
    assert not second.hold(1)  # beside another, it must fit
    first.release()
    first.release()
    assert inflight.bytes == 0
    assert second.hold(60)
    third = inflight.reserve()
    assert third.hold(40)
    assert not third.hold(41)  # growing past the cap beside `second`: refused, 40 kept
    assert inflight.bytes == 100
    second.release()
    third.release()
    assert inflight.bytes == 0
