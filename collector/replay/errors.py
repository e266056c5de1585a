"""Replay's errors: each carries the exit code `capture replay` ends with.

    ReplayError          exit 1
    +-- BadInput         exit 2: unknown topic, empty range, unwritable output, bad flag value
    +-- Unavailable      exit 1: the broker (or the sink) stopped answering mid-replay
Nothing here formats a summary or prints; the CLI does.
"""

from __future__ import annotations


class ReplayError(Exception):
    exit_code = 1


class BadInput(ReplayError):
    exit_code = 2


class Unavailable(ReplayError):
    exit_code = 1

    def __init__(self, message: str, *, written: int = 0) -> None:
        super().__init__(message)
        self.written = written  # records of the failing step written before it failed
