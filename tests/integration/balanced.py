"""Collectors behind a real HAProxy (deploy/haproxy/haproxy.cfg): the fleet's start and the two
faults that both the file-sink tests (test_haproxy.py) and the cluster's catalogue
(faults/test_balanced_collectors.py) inject under load (issue 15). These steps start, stop and
wait; they never judge (that is the oracle's) and never retry a request themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator, Sequence

from devtools.haproxy import HAProxy
from devtools.load import Ledger
from tests.integration.faults.harness import Collector, print_log_tail, until

# How long a step waits for what it needs (a request in flight, a health state).
STEP_TIMEOUT_S = 60.0


def server_name(number: int) -> str:
    """HAProxy's name for the collector at 1-based position `number` (devtools/haproxy.py)."""
    return f"c{number}"


def print_logs(collectors: Sequence[Collector], balancer: HAProxy) -> None:
    for collector in collectors:
        print_log_tail(collector.log_path)
    if balancer.log_file.exists():
        print(balancer.log_file.read_text()[-4000:])


@contextlib.contextmanager
def balanced(collectors: Sequence[Collector]) -> Iterator[HAProxy]:
    """`collectors` started, HAProxy in front of them, every one UP in its health checks; on
    the way out (the logs printed first when the body failed) all of it stopped."""
    balancer = HAProxy([f"127.0.0.1:{c.port}" for c in collectors])
    try:
        for collector in collectors:
            collector.start()
        balancer.start()
        for number in range(1, len(collectors) + 1):
            balancer.wait_state(server_name(number), "UP")
        yield balancer
    except BaseException:
        # before stop(), which removes HAProxy's directory and its log with it
        print_logs(collectors, balancer)
        raise
    finally:
        balancer.stop()
        for collector in collectors:
            collector.close()


async def kill_one(
    balancer: HAProxy,
    collectors: Sequence[Collector],
    number: int,
    ledger: Ledger,
    *,
    after_kill_s: float,
) -> None:
    """Marks `fault`, freezes collector `number` (1-based) until a request is in flight on it,
    SIGKILLs it, waits for HAProxy to mark it DOWN and `after_kill_s` more on the others, then
    marks `heal`. The victim stays dead; a caller may start it again."""
    victim = collectors[number - 1]
    frozen = victim.process
    assert frozen is not None
    name = server_name(number)
    ledger.mark("fault")
    # frozen first, so the kill surely catches a request in flight on it: HAProxy has sent it
    # and got no byte back
    frozen.send_signal(signal.SIGSTOP)
    await until(
        lambda: int(balancer.stats()[name]["scur"]) > 0,
        timeout_s=STEP_TIMEOUT_S,
        what="a request in flight on the frozen collector",
    )
    await asyncio.to_thread(victim.kill)
    await asyncio.to_thread(balancer.wait_state, name, "DOWN")
    await asyncio.sleep(after_kill_s)
    ledger.mark("heal")


async def rolling_restart(
    balancer: HAProxy, collectors: Sequence[Collector], ledger: Ledger
) -> None:
    """Marks `fault`; for each collector in turn: SIGTERM (it must drain and exit 0), DOWN in
    HAProxy, started again on the same port, UP; then marks `heal`."""
    ledger.mark("fault")
    for number, collector in enumerate(collectors, 1):
        assert await asyncio.to_thread(collector.terminate) == 0  # drained, flushed
        await asyncio.to_thread(balancer.wait_state, server_name(number), "DOWN")
        await asyncio.to_thread(collector.start)  # the same port
        await asyncio.to_thread(balancer.wait_state, server_name(number), "UP")
    ledger.mark("heal")
