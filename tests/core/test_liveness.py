"""Hearts and their verdict (core/liveness.py), on a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from pomocore.core.liveness import LOOP, Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_heart_silent_longer_than_the_limit_is_overdue() -> None:
    clock = Clock()
    live = Liveness(10.0, clock)
    lane = live.heart("lane a")
    clock.now += 10.0
    assert live.alive()  # exactly the limit: still alive
    live.loop.beat()
    clock.now += 2.5
    assert live.overdue() == {"lane a": 2.5}
    lane.beat()
    assert live.alive()


def test_a_declared_bound_extends_the_allowance_only_while_it_holds() -> None:
    clock = Clock()
    live = Liveness(10.0, clock)
    lane = live.heart("lane a")
    with lane.waiting(30.0):  # e.g. an XREADGROUP that may block 30 s
        clock.now += 39.0
        live.loop.beat()
        assert live.alive()
        clock.now += 2.0  # 41 s: past the bound plus the limit
        live.loop.beat()
        assert live.overdue() == {"lane a": 1.0}
    assert live.alive()  # the wait ended: that is a beat
    clock.now += 10.5
    live.loop.beat()
    assert live.overdue() == {"lane a": 0.5}


def test_a_nested_shorter_bound_does_not_shorten_the_outer_one() -> None:
    clock = Clock()
    live = Liveness(10.0, clock)
    lane = live.heart("lane a")
    with lane.waiting(30.0), lane.waiting(1.0):
        clock.now += 35.0
        live.loop.beat()
        assert live.alive()


def test_a_stopped_heart_is_never_overdue() -> None:
    clock = Clock()
    live = Liveness(1.0, clock)
    lane = live.heart("lane a")
    lane.stop()
    clock.now += 100
    assert set(live.overdue()) == {LOOP}


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Liveness(0.0)


async def test_the_loop_heart_beats_while_the_loop_turns_and_stops_when_it_does() -> None:
    live = Liveness(0.4)  # beats every 0.1 s
    task = asyncio.create_task(live.beat_loop(asyncio.Event()))
    await asyncio.sleep(0.6)
    assert live.alive()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.6)
    assert LOOP in live.overdue()
