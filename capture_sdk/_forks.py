"""Fork safety for both clients: after `os.fork()`, each live client resets itself in the child.

gunicorn, Celery and multiprocessing fork a process that may already hold a client. This
module only keeps the registry and calls the hook; it must not know what a client resets.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def reset_after_fork(client: ForkAware) -> None:
    """Call `client._after_fork_in_child()` in every child forked while `client` lives."""
    _live.add(client)


def _reset_all() -> None:
    for client in list(_live):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_all)
