"""Header bytes that are not ASCII or not UTF-8, in every header the collector reads (issue #12).

Sent over a raw socket (aiohttp's client refuses such bytes). Policy: bytes that are not UTF-8
become U+FFFD wherever a header is read as text; a key is compared as the bytes sent, so one
that cannot be a key is `unknown_key`; an Authorization of no known shape is `missing_key`.
"""

from __future__ import annotations

import ast
import base64
import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from collector import headers
from collector.app import RUNNER_OPTIONS, create_app
from collector.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER
from collector.errors import BadRequest
from collector.settings import Settings
from collector.sinks import MemorySink
from event_schemas import SchemaRegistry
from tests import raw_http
from tests.conftest import FIXED_NOW, HttpClient, start_collector
from tests.factories import batch_body, track_played
from tests.unit.test_auth import start_with_config
from tests.unit.test_fuzz import FUZZED_HEADERS

SERVER_KEY = "sk_server_0123456789abcdef"
UTF8_KEY = "sk_clé_0123456789abcdef"  # a configured key may be any text; it is sent as UTF-8
WEB_KEY = "pk_web_0123456789abcdef"
SIGNED_KEY = "sk_signed_0123456789abcdef"
TOML = f"""
[[sources]]
name = "server"
kind = "server"
keys = ["{SERVER_KEY}", "{UTF8_KEY}"]
events = "*"

[[sources]]
name = "web"
kind = "browser"
key = "{WEB_KEY}"
events = "*"
allowed_origins = ["https://app.example.com"]

[[sources]]
name = "signed"
kind = "server"
key = "{SIGNED_KEY}"
events = "*"
signing_secrets = ["whsec_0123456789abcdef"]
"""
JSON = (b"Content-Type", b"application/json")
DEAD_ONLY = json.dumps({"batch": [{"event": 1}]}).encode()


def bearer(key: str) -> tuple[bytes, bytes]:
    return b"Authorization", b"Bearer " + key.encode()


@pytest.fixture
async def keyed(
    tmp_path: Path, memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    client = await start_with_config(tmp_path, TOML, memory_sink, schemas)
    yield client
    await client.close()


@pytest.fixture
async def behind_proxy(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> AsyncIterator[HttpClient]:
    settings = Settings(sink="memory", trusted_proxies="127.0.0.1", ip_anonymize=False)
    client = await start_collector(settings, memory_sink, schemas)
    yield client
    await client.close()


async def send(
    client: HttpClient,
    header_lines: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    method: str = "POST",
    path: str = "/v1/batch",
) -> tuple[int, Any]:
    assert client.port is not None
    answer = await raw_http.request(client.port, method, path, header_lines, body)
    return answer.status, json.loads(answer.body) if answer.body else None


def written(sink: MemorySink) -> list[Any]:
    return [msgspec.json.decode(record.value) for record in sink.records]


async def test_latin1_user_agent_on_a_batch_of_dead_letters_only(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    status, body = await send(collector, [JSON, (b"User-Agent", b"caf\xe9")], DEAD_ONLY)
    assert (status, body["accepted"], len(body["rejected"])) == (200, 0, 1)
    (letter,) = written(memory_sink)
    assert letter["user_agent"] == "caf\ufffd"


async def test_latin1_user_agent_on_an_accepted_event(
    collector: HttpClient, memory_sink: MemorySink
) -> None:
    status, _ = await send(
        collector, [JSON, (b"User-Agent", b"caf\xe9")], batch_body(track_played())
    )
    assert status == 200
    assert written(memory_sink)[0]["user_agent"] == "caf\ufffd"
    memory_sink.records.clear()
    utf8 = "café ☕".encode()  # valid UTF-8 is kept as it is
    status, _ = await send(collector, [JSON, (b"User-Agent", utf8)], batch_body(track_played()))
    assert written(memory_sink)[0]["user_agent"] == "café ☕"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        # not base64 at all: no key was presented
        ("Basic é".encode(), "missing_key"),
        (b"Basic \xe9", "missing_key"),
        (b"Basic \xff\xfe", "missing_key"),
        # base64 of bytes that are not UTF-8: a key, but one no source can have
        (b"Basic " + base64.b64encode(b"\xe9\xe9:x"), "unknown_key"),
    ],
)
async def test_basic_that_is_not_base64_of_a_key_is_a_documented_401(
    keyed: HttpClient, memory_sink: MemorySink, authorization: bytes, reason: str
) -> None:
    status, body = await send(
        keyed, [JSON, (b"Authorization", authorization)], batch_body(track_played())
    )
    assert (status, body["error"]) == (401, reason)
    assert memory_sink.records == []


@pytest.mark.parametrize(
    "credentials",
    [b"sk_server_\xe9\xe9\xe9456789abcdef", "sk_server_éé456789abcdef".encode(), b"\xff" * 20],
)
async def test_bearer_key_with_bytes_no_key_has_is_unknown_key(
    keyed: HttpClient, memory_sink: MemorySink, credentials: bytes
) -> None:
    status, body = await send(
        keyed, [JSON, (b"Authorization", b"Bearer " + credentials)], batch_body(track_played())
    )
    assert (status, body["error"]) == (401, "unknown_key")
    assert memory_sink.records == []


async def test_a_configured_key_that_is_not_ascii_matches_its_utf8_bytes(
    keyed: HttpClient, memory_sink: MemorySink
) -> None:
    status, body = await send(keyed, [JSON, bearer(UTF8_KEY)], batch_body(track_played()))
    assert (status, body["accepted"]) == (200, 1)
    latin1 = b"Bearer " + UTF8_KEY.encode("latin-1")  # the same text, other bytes: not the key
    status, body = await send(keyed, [JSON, (b"Authorization", latin1)], batch_body(track_played()))
    assert (status, body["error"]) == (401, "unknown_key")


async def test_latin1_origin_is_not_allowed_and_its_bytes_are_replaced_in_the_detail(
    keyed: HttpClient,
) -> None:
    lines = [JSON, bearer(WEB_KEY), (b"Origin", b"https://caf\xe9.example")]
    status, body = await send(keyed, lines, batch_body(track_played()))
    assert (status, body["error"]) == (403, "origin_not_allowed")
    assert "caf\ufffd" in body["detail"]
    lines = [(b"Origin", b"https://caf\xe9.example"), (b"Access-Control-Request-Method", b"POST")]
    status, body = await send(keyed, lines, method="OPTIONS")
    assert (status, body["error"]) == (403, "origin_not_allowed")


async def test_latin1_preflight_method_is_refused(keyed: HttpClient) -> None:
    lines = [
        (b"Origin", b"https://app.example.com"),
        (b"Access-Control-Request-Method", b"P\xd6ST"),
    ]
    status, body = await send(keyed, lines, method="OPTIONS")
    assert (status, body["error"]) == (403, "method_not_allowed")


@pytest.mark.parametrize(
    ("stamp", "signature"),
    [(b"17\xe9", b"v1=00"), (b"1795694405", b"v1=\xe9\xe9"), (b"\xd9\xa1\xd9\xa2", b"v1=00")],
    ids=["latin1-stamp", "latin1-signature", "arabic-indic-digits"],
)
async def test_signature_headers_with_any_bytes_are_invalid_signature(
    keyed: HttpClient, memory_sink: MemorySink, stamp: bytes, signature: bytes
) -> None:
    lines = [
        JSON,
        bearer(SIGNED_KEY),
        (TIMESTAMP_HEADER.encode(), stamp),
        (SIGNATURE_HEADER.encode(), signature),
    ]
    status, body = await send(keyed, lines, batch_body(track_played()))
    assert (status, body["error"]) == (401, "invalid_signature")
    assert memory_sink.records == []


async def test_latin1_content_encoding_is_unsupported(collector: HttpClient) -> None:
    lines = [JSON, (b"Content-Encoding", b"gz\xefp")]
    status, body = await send(collector, lines, batch_body(track_played()))
    assert (status, body["error"]) == (415, "unsupported_encoding")
    assert "gz\ufffdp" in body["detail"]


@pytest.mark.parametrize(
    ("forwarded_for", "ip"),
    [
        (b"198.51.100.\xe9", "127.0.0.1"),  # a hop we cannot parse: the proxy itself
        (b"198.51.100.9, caf\xe9", "127.0.0.1"),
        (b"fe80::1%eth\xe9", "fe80::1"),  # a zone id is the sender's business
        (b"2001:db8::7%25", "2001:db8::7"),
    ],
)
async def test_forwarded_for_with_any_bytes_from_a_trusted_proxy(
    behind_proxy: HttpClient, memory_sink: MemorySink, forwarded_for: bytes, ip: str
) -> None:
    lines = [JSON, (b"X-Forwarded-For", forwarded_for)]
    status, _ = await send(behind_proxy, lines, batch_body(track_played()))
    assert status == 200
    assert written(memory_sink)[0]["ip"] == ip


async def test_an_error_detail_quoting_undecodable_bytes_is_still_a_json_answer(
    memory_sink: MemorySink, schemas: SchemaRegistry
) -> None:
    """error_middleware cleans every detail, whatever a stage put in it."""
    app = create_app(
        Settings(sink="memory"), sink=memory_sink, clock=lambda: FIXED_NOW, schemas=schemas
    )

    async def quoting(request: web.Request) -> web.Response:
        raise BadRequest(f"cannot use {request.headers['X-Thing']}")

    app.router.add_post("/quoting", quoting)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        assert server.port is not None
        answer = await raw_http.request(server.port, "POST", "/quoting", [(b"X-Thing", b"\xe9")])
    finally:
        await server.close()
    assert answer.status == 400
    assert json.loads(answer.body) == {"error": "bad_request", "detail": "cannot use \ufffd"}


def test_clean_replaces_only_what_is_not_text() -> None:
    assert headers.clean("café") == "café"
    assert headers.clean("caf\udce9") == "caf\ufffd"  # how aiohttp hands over the byte 0xE9
    assert headers.clean("a\ud800b") == "a?b"  # a surrogate no byte makes: still no error
    assert headers.as_bytes("caf\udce9") == b"caf\xe9"


COLLECTOR = Path(__file__).resolve().parents[2] / "collector"


def test_no_module_reads_request_headers_but_the_accessor() -> None:
    """Every header read goes through collector.headers: a direct `request.headers` read (or
    a headers mapping passed around) would hand over text that may not be text."""
    offenders = []
    for path in sorted(COLLECTOR.rglob("*.py")):
        if path == COLLECTOR / "headers.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "headers":
                target = node.value
                name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
                if name in ("request", "req", "message"):
                    offenders.append(f"{path.relative_to(COLLECTOR)}:{node.lineno}")
            if isinstance(node, ast.Name) and node.id in ("CIMultiDictProxy", "CIMultiDict"):
                offenders.append(f"{path.relative_to(COLLECTOR)}:{node.lineno} {node.id}")
    assert not offenders, f"read headers through collector.headers: {offenders}"


def headers_read() -> set[str]:
    """Every header name the collector passes to a collector.headers accessor (lower-cased);
    a name given as a module constant is looked up in that module."""
    names = set()
    for path in sorted(COLLECTOR.rglob("*.py")):
        module = importlib.import_module(
            ".".join(path.relative_to(COLLECTOR.parent).with_suffix("").parts)
        )
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "headers"
                and node.func.attr in ("text", "raw", "all_text")
            ):
                continue
            arg = node.args[1]
            name = arg.value if isinstance(arg, ast.Constant) else getattr(module, ast.unparse(arg))
            names.add(str(name).lower())
    return names


def test_the_fuzzer_sends_every_header_the_collector_reads() -> None:
    read = headers_read()
    assert {"expect", "user-agent", "authorization", "content-encoding"} <= read  # the scan works
    assert read <= FUZZED_HEADERS, f"not fuzzed: {sorted(read - FUZZED_HEADERS)}"
