"""The runtime reports to the Observer it is built with: batches, MongoDB writes and commit
script calls, from every lane (real servers), and `observed` reports failures but not
cancellation (pure)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from pomocore.consumers.app import run_until_stopped, runtime
from pomocore.core.observer import BatchOutcome, Fanout, Observer, observed
from pomocore.core.settings import Settings
from tests.support.streams import group_state, now_fields, publish


class Recorder(Observer):
    def __init__(self) -> None:
        self.outcomes: list[BatchOutcome] = []
        self.entry_ids: list[str] = []
        self.done: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str, str]] = []

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        assert elapsed_s >= 0
        self.outcomes.append(outcome)
        self.entry_ids.extend(entry_id for entry_id, _ in entries)

    def operation_done(self, backend: str, operation: str, elapsed_s: float) -> None:
        self.done.append((backend, operation))

    def operation_failed(self, backend: str, operation: str, error: BaseException) -> None:
        self.failed.append((backend, operation, type(error).__name__))


async def test_runtime_reports_every_batch_and_backend_call(settings: Settings) -> None:
    good = [now_fields(f"u{i % 5}", "Code", 10.0 + i) for i in range(300)]
    bad: list[dict[str, str | bytes]] = [{"userId": "x", "app": "Code", "duration": "nan"}]
    ids = publish(settings.redis_url, settings.keys.stream_key, good + bad)
    recorder = Recorder()
    stop = asyncio.Event()
    async with runtime(settings, recorder) as rt:
        assert len(rt.lanes) > 1  # every lane reports to the same observer
        task = asyncio.create_task(run_until_stopped(rt, stop))
        deadline = time.monotonic() + 30
        while group_state(settings) != (0, 0):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stop.set()
        await task
        stats = rt.consumer.stats
    total = BatchOutcome()
    for outcome in recorder.outcomes:
        total.add(outcome)
    assert sorted(recorder.entry_ids) == sorted(ids)
    assert (total.read, total.accepted, total.committed) == (301, 300, 301)
    assert sum(total.rejected_by_reason.values()) == 1
    assert (stats.read, stats.accepted, stats.batches) == (301, 300, len(recorder.outcomes))
    assert ("mongo", "bulk_write") in recorder.done
    assert recorder.done.count(("redis", "commit_script")) == len(recorder.outcomes)
    assert recorder.failed == []


async def test_observed_reports_duration_and_failure_but_not_cancellation() -> None:
    recorder = Recorder()

    async def ok() -> int:
        return 7

    async def fails() -> None:
        raise ValueError("no")

    async def cancelled() -> None:
        raise asyncio.CancelledError

    assert await observed(recorder, "redis", "x", ok()) == 7
    with pytest.raises(ValueError):
        await observed(recorder, "mongo", "y", fails())
    with pytest.raises(asyncio.CancelledError):
        await observed(recorder, "mongo", "z", cancelled())
    assert recorder.done == [("redis", "x")]
    assert recorder.failed == [("mongo", "y", "ValueError")]


def test_batch_outcome_add_sums_counters_and_maps() -> None:
    a = BatchOutcome(read=2, accepted=1, committed=2, rejected_by_reason={"r": 1}, sources={"s": 1})
    b = BatchOutcome(read=3, accepted=3, committed=3, trimmed=1, sources={"s": 2, "t": 1})
    a.add(b)
    assert (a.read, a.accepted, a.committed, a.trimmed) == (5, 4, 5, 1)
    assert a.rejected_by_reason == {"r": 1} and a.sources == {"s": 3, "t": 1}


def test_fanout_forwards_every_hook_to_each_observer() -> None:
    hooks = [n for n in vars(Observer) if not n.startswith("_") and callable(vars(Observer)[n])]
    assert hooks and all(n in vars(Fanout) for n in hooks), "a hook Fanout does not forward"
    a, b = Recorder(), Recorder()
    fan = Fanout(a, b)
    fan.batch_committed(BatchOutcome(read=2), 0.1, [("1-1", None), ("1-2", None)])
    fan.operation_done("redis", "commit_script", 0.01)
    fan.operation_failed("mongo", "bulk_write", ValueError("x"))
    for r in (a, b):
        assert r.entry_ids == ["1-1", "1-2"] and r.outcomes[0].read == 2
        assert r.done == [("redis", "commit_script")]
        assert r.failed == [("mongo", "bulk_write", "ValueError")]
