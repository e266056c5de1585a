"""Pools of pre-encoded `POST /v1/batch` bodies for the load generator, from `events`' mix.

Every event in a pool has its own event_id; bodies are encoded (and optionally gzipped) once,
so that sending one costs the generator nothing but the write. Must not do I/O.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import msgspec

from benchmarks.events import batch_body, mixed_batch
from capture_sdk._delivery import GZIP_LEVEL  # compress bodies as the SDK does


@dataclass(frozen=True, slots=True)
class BodyPool:
    bodies: tuple[bytes, ...]
    events_per_body: int
    gzip: bool

    @property
    def mean_body_bytes(self) -> float:
        return sum(map(len, self.bodies)) / len(self.bodies)


def build_pool(*, bodies: int, events_per_body: int, seed: int, use_gzip: bool = False) -> BodyPool:
    """`bodies` distinct batch bodies of the shared event mix, each event with a fresh id."""
    encoded = []
    for n in range(bodies):
        body = batch_body(mixed_batch(events_per_body, seed=seed * 100_003 + n))
        encoded.append(gzip.compress(body, GZIP_LEVEL, mtime=0) if use_gzip else body)
    return BodyPool(tuple(encoded), events_per_body, use_gzip)


def mean_event_bytes(seed: int = 0, sample: int = 2_000) -> float:
    """Mean size of one event as sent (compact JSON), over a sample of the same mix."""
    events = mixed_batch(sample, seed=seed)
    return sum(len(msgspec.json.encode(event)) for event in events) / sample
