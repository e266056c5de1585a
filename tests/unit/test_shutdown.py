"""The SIGTERM budget (collector/shutdown.py): drain and flush share one deadline."""

from __future__ import annotations

import pytest

from collector.shutdown import (
    MAX_FLUSH_RESERVE_S,
    MIN_FLUSH_S,
    ShutdownClock,
    drain_timeout_s,
    flush_reserve_s,
)


@pytest.mark.parametrize("budget_s", [0.3, 3.0, 15.0, 120.0])
def test_drain_and_flush_reserve_add_up_to_the_budget(budget_s: float) -> None:
    assert drain_timeout_s(budget_s) + flush_reserve_s(budget_s) == pytest.approx(budget_s)
    assert 0 < flush_reserve_s(budget_s) <= MAX_FLUSH_RESERVE_S
    assert drain_timeout_s(budget_s) >= budget_s * 2 / 3


def test_the_flush_gets_what_the_drain_left_of_the_deadline() -> None:
    now = [100.0]
    clock = ShutdownClock(15.0, clock=lambda: now[0])
    assert clock.flush_budget_s() == flush_reserve_s(15.0)  # shutdown never started
    clock.start()
    now[0] += 4.0  # the drain finished early
    assert clock.flush_budget_s() == pytest.approx(11.0)
    clock.start()  # a second signal does not move the deadline
    now[0] += 10.0  # the drain used its whole share
    assert clock.flush_budget_s() == pytest.approx(1.0)
    now[0] += 60.0  # past the deadline: still a moment to close files, never a negative wait
    assert clock.flush_budget_s() == MIN_FLUSH_S
