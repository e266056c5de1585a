"""The decoding stage without HTTP: the streaming gzip inflater, the depth and UTF-8 checks."""

from __future__ import annotations

import gzip
import json
import random
import zlib

import pytest

from collector.decoding import decode_batch
from collector.errors import BadRequest, PayloadTooLarge
from collector.limits import exceeds_depth, is_utf8
from collector.request_body import MAX_GZIP_MEMBERS, GzipInflater
from tests.factories import batch_body, track_played


def inflate(data: bytes, max_bytes: int, chunk_bytes: int = 7) -> bytes:
    inflater = GzipInflater(max_bytes)
    for start in range(0, len(data), chunk_bytes):
        inflater.feed(data[start : start + chunk_bytes])
    return inflater.finish()


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_inflates_across_any_chunking(chunk_bytes: int) -> None:
    payload = batch_body(*[track_played() for _ in range(50)])
    assert inflate(gzip.compress(payload), len(payload), chunk_bytes) == payload


def test_a_bomb_is_refused_once_the_cap_is_crossed_not_after_inflating_it() -> None:
    cap = 100_000
    bomb = gzip.compress(b" " * 50_000_000)  # ~50 KB on the wire
    inflater = GzipInflater(cap)
    fed = 0

    def feed_all() -> None:
        nonlocal fed
        for start in range(0, len(bomb), 1024):
            fed += 1024
            inflater.feed(bomb[start : start + 1024])

    with pytest.raises(PayloadTooLarge, match="decompressed"):
        feed_all()
    # refused within the first chunks: the rest of the bomb was never read
    assert fed < len(bomb) // 10


def test_exactly_the_cap_is_accepted() -> None:
    payload = b"x" * 5000
    assert inflate(gzip.compress(payload), 5000) == payload
    with pytest.raises(PayloadTooLarge):
        inflate(gzip.compress(payload), 4999)


def test_concatenated_members_are_inflated_in_order_under_one_cap() -> None:
    first, second = b'{"batch": [', b"]}"
    body = gzip.compress(first) + gzip.compress(second)  # what `cat a.gz b.gz` makes
    assert inflate(body, 100) == first + second
    assert gzip.decompress(body) == first + second  # the same reading as Python's gzip
    # the cap counts all members together
    with pytest.raises(PayloadTooLarge):
        inflate(gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60), 100)


def test_too_many_members_are_refused() -> None:
    member = gzip.compress(b" ")
    assert inflate(member * MAX_GZIP_MEMBERS, 1000) == b" " * MAX_GZIP_MEMBERS
    with pytest.raises(BadRequest, match="members") as caught:
        inflate(member * (MAX_GZIP_MEMBERS + 1), 1000)
    assert caught.value.reason == "invalid_gzip"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(b'{"batch": []}', "not gzip", id="plain-json"),
        pytest.param(b"", "empty or truncated", id="empty"),
        pytest.param(gzip.compress(b"{}")[:-3], "empty or truncated", id="truncated"),
        pytest.param(gzip.compress(b"{}") + b"\0\0\0\0", "member 2", id="trailing-zeros"),
        pytest.param(gzip.compress(b"{}") + b"junk", "member 2", id="trailing-junk"),
        pytest.param(
            zlib.compress(b"{}"), "not gzip", id="zlib-not-gzip"
        ),  # deflate with a zlib header, as some clients mislabel it
    ],
)
def test_broken_gzip_is_invalid_gzip(body: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match) as caught:
        inflate(body, 1000)
    assert caught.value.reason == "invalid_gzip"


def reference_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


def random_json(rng: random.Random, depth: int) -> object:
    strings = ["", "a", "[", "]", "{}", '"', "\\", "][", 'q"[', "\\]", "é{"]
    if depth == 0 or rng.random() < 0.25:
        return rng.choice([1, None, True, rng.choice(strings)])
    if rng.random() < 0.5:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {rng.choice(strings) + str(i): random_json(rng, depth - 1) for i in range(3)}


def test_depth_scan_agrees_with_a_parser_even_with_brackets_and_escapes_in_strings() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        value = random_json(rng, rng.randrange(1, 9))
        body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        depth = reference_depth(value)
        assert not exceeds_depth(body, depth), body
        if depth > 0:
            assert exceeds_depth(body, depth - 1), body


def test_strings_of_brackets_cannot_hide_depth() -> None:
    # `"]["` between levels would, if strings were ignored, close each level right away
    body = ('["][", ' * 40 + "1" + "]" * 40).encode()
    assert exceeds_depth(body, 39)
    assert not exceeds_depth(body, 40)


def test_is_utf8() -> None:
    assert is_utf8(b'{"a": "plain"}')
    assert is_utf8('{"a": "été ✓"}'.encode())
    assert not is_utf8(b'{"a": "\xff"}')
    assert not is_utf8(b'{"a": "\xed\xa0\x80"}')  # an encoded surrogate is not UTF-8


def test_decode_batch_applies_the_request_limits() -> None:
    events = [track_played() for _ in range(3)]
    assert len(decode_batch(batch_body(*events), max_events=3)) == 3
    with pytest.raises(PayloadTooLarge) as caught:
        decode_batch(batch_body(*events), max_events=2)
    assert caught.value.reason == "too_many_events"
    deep = track_played(context={"a": [[{"b": []}]]})  # context 5 levels deep
    assert decode_batch(batch_body(deep), max_json_depth=5).events is not None
    with pytest.raises(BadRequest) as deep_error:
        decode_batch(batch_body(deep), max_json_depth=4)
    assert deep_error.value.reason == "too_deep"


@pytest.mark.parametrize(
    "body", [b'{"batch": [null, Infinity]}', b'{"batch": [{"version": 1}, NaN]}']
)
def test_malformed_json_after_a_bad_envelope_is_malformed_json_not_500(body: bytes) -> None:
    # found by tests/unit/test_fuzz.py: the typed pass stops at the bad envelope with a
    # ValidationError, and only the raw pass then meets the malformed literal
    with pytest.raises(BadRequest) as caught:
        decode_batch(body)
    assert caught.value.reason == "malformed_json"
