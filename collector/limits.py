"""Whole-body checks a batch must pass before its events are decoded: UTF-8 and nesting depth.

Both run once per request at C speed (bytes methods), never per event; both assume nothing
about the schema. This module must not parse JSON into values nor raise HTTP errors itself.
"""

from __future__ import annotations

import re

# Defaults of the request limits (settings.py holds the knobs). Segment caps an event at 32 KiB.
DEFAULT_MAX_EVENT_BYTES = 32_768
# Ten times the SDK's default batch_size: room to tune, and one request stays a bounded unit
# of work (records to publish, a response listing every rejection).
DEFAULT_MAX_BATCH_EVENTS = 1_000
# Analytics properties are shallow; 32 levels leave room for free-form objects while keeping
# every consumer's parser far from its recursion limit.
DEFAULT_MAX_JSON_DEPTH = 32

# Envelope levels above an event's `properties`/`context`: the body object, the `batch` array
# and the event object. A body `ENVELOPE_DEPTH + n` deep can hold a `properties` n deep.
ENVELOPE_DEPTH = 3

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
# After translation only quotes and brackets remain, `{}` folded into `[]`: JSON that msgspec
# already parsed has matching brackets, so only the nesting shape is left to measure.
_FOLD = bytes.maketrans(b"{}", b"[]")
_DROP = bytes(b for b in range(256) if b not in b'"[]{}')


def is_utf8(body: bytes) -> bool:
    """msgspec skips `Raw` fields (properties, context) without checking their encoding."""
    if body.isascii():  # no allocation: the common case
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def exceeds_depth(body: bytes, max_depth: int) -> bool:
    """True if valid JSON `body` nests arrays/objects deeper than `max_depth` (root = 1).

    Strips escapes and strings, folds `{}` into `[]`, then removes innermost `[]` pairs one
    layer per round: `bytes.replace` does not rescan what it just joined, so a round removes
    exactly the current leaves. Cost: a few passes over the bracket skeleton per request.
    """
    # Other escapes vanish with the backslash; `\"` would end a string early. (The one-byte
    # test first: memchr, where a search for the two bytes crawls over every quote.)
    if b"\\" in body and b'\\"' in body:
        body = _ESCAPE.sub(b"", body)
    skeleton = body.translate(_FOLD, _DROP)
    # A string without brackets is `""` here. One holding a bracket leaves an odd run of quotes
    # before that bracket, which pairwise counting cannot cover; only then match real strings.
    if skeleton.count(b'""') * 2 == skeleton.count(b'"'):
        skeleton = skeleton.translate(None, b'"')
    else:
        skeleton = _STRING.sub(b"", skeleton)
    for _ in range(max_depth):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    return bool(skeleton)
