"""Events the patterns decide never wait behind the LLM (issue #15 §6).

A batch with undecided keys commits in two stages: the events the patterns decided (with
the batch's dead letters) at once, the others when the LLM answers. The scripted server
holds its answer behind a gate, so the first stage must be visible while the LLM is still
thinking; both stages together stay exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pomocore.core.settings import Settings
from pomocore.sinks.commit import Committer
from pomocore.sinks.plan import CommitPlan
from tests.support.consumer import drain, running_consumer
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    rebuild_check,
    reference_leaderboards,
)
from tests.support.fake_llm import Behaviour, FakeLLM, Request
from tests.support.streams import now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

GATE_S = 60.0  # the scripted model answers when the test opens the gate, or after this


@pytest.fixture
def gated() -> Iterator[tuple[FakeLLM, threading.Event, threading.Event]]:
    """The scripted server, `asked` (set by its first request) and the gate it waits on.
    (Its own counters take the lock `choose` runs under: not readable while it holds.)"""
    gate, asked = threading.Event(), threading.Event()

    def hold(_request: Request) -> Behaviour:  # runs in the server's request thread
        asked.set()
        gate.wait(GATE_S)
        return FakeLLM.ok()

    with FakeLLM(rule=lambda item: "Game") as llm:
        llm.choose = hold
        yield llm, asked, gate
        gate.set()


def one_lane(settings: Settings, llm: FakeLLM, **extra: Any) -> Settings:
    """One lane, one batch per read, the scripted LLM with a timeout beyond the gate's."""
    return dataclasses.replace(
        settings, llm_base_url=llm.url, llm_api_key="t", llm_timeout_s=GATE_S + 10,
        llm_calls_per_min=100, batch_size=500, lanes=1, **extra,
    )  # fmt: skip


def mixed_batch() -> list[dict[str, str | bytes]]:
    """20 events the shipped patterns decide (Code → Development), 5 they do not, and one
    the contract rejects, interleaved."""
    events: list[dict[str, str | bytes]] = []
    for i in range(20):
        events.append(now_fields(f"nw{i % 5}", "Code", 10.0, title=f"main{i}.py"))
        if i % 4 == 0:
            events.append(now_fields(f"nw{i % 5}", f"NoWaitQuest{i}", 7.0, title="level"))
    events.append({**now_fields("nw1", "Code", 1.0), "duration": "-3"})  # invalid_number
    return events


def _counted(s: Settings, user: str) -> float:
    """`user`'s seconds on the daily `work` leaderboard (0 while none)."""
    boards = actual_leaderboards(s.redis_url)
    return sum(
        board.get(user, 0.0)
        for key, board in boards.items()
        if key.startswith("leaderboard:work:") and key.count("-") == 2
    )


def pending(s: Settings) -> int:
    client = redis.Redis.from_url(s.redis_url)
    return int(client.xpending(s.keys.stream_key, s.group)["pending"])


async def test_decided_events_commit_while_the_llm_is_still_asked(
    settings: Settings, gated: tuple[FakeLLM, threading.Event, threading.Event]
) -> None:
    llm, asked, gate = gated
    s = one_lane(settings, llm)
    events = mixed_batch()
    publish(s.redis_url, s.keys.stream_key, events)
    decided = [e for e in events if e["app"] == "Code" and e["duration"] != "-3"]
    async with running_consumer(s):
        # The LLM holds its answer; the decided events and the dead letter are committed.
        await wait_until(lambda: asked.is_set() and pending(s) == 5, 30)
        assert not gate.is_set()
        assert_scores_equal(
            actual_leaderboards(s.redis_url),
            reference_leaderboards(((e, "Development") for e in decided), s.timezone),
        )
        client = redis.Redis.from_url(s.redis_url)
        assert client.xlen(s.keys.dead_letter_key) == 1
        # The one lane reads on: later decided events commit while the LLM still thinks.
        more = [now_fields("nw7", "Code", 3.0, title=f"later{i}.py") for i in range(10)]
        publish(s.redis_url, s.keys.stream_key, more)
        await wait_until(lambda: client.xlen(s.keys.stream_key) == len(events) + 10, 10)
        await wait_until(lambda: pending(s) == 5 and _counted(s, "nw7") == 30.0, 30)
        assert not gate.is_set()
        gate.set()
        await wait_until(lambda: pending(s) == 0, 30)
    await drain(s)
    events += more
    expected = ["Game" if str(e["app"]).startswith("NoWaitQuest") else "Development"
                for e in events if e["duration"] != "-3"]  # fmt: skip
    valid = [e for e in events if e["duration"] != "-3"]
    assert_scores_equal(
        actual_leaderboards(s.redis_url),
        reference_leaderboards(zip(valid, expected, strict=True), s.timezone),
    )
    assert client.xlen(s.keys.dead_letter_key) == 1


class FailsSecondCommit(Committer):
    """The lane's real committer, except that its second commit raises a connection error
    (the injected fault: Redis lost between the two stages of a batch)."""

    def __init__(self, inner: Committer) -> None:  # delegates; holds no client of its own
        self.inner = inner
        self.calls = 0

    async def commit_once(self, plan: CommitPlan) -> tuple[bool, list[str]]:
        self.calls += 1
        if self.calls == 2:
            raise redis.ConnectionError("injected: the connection broke before the commit")
        return await self.inner.commit_once(plan)


async def test_a_failed_second_stage_is_retried_without_counting_the_first_twice(
    settings: Settings, gated: tuple[FakeLLM, threading.Event, threading.Event]
) -> None:
    """The first stage commits; the second stage's commit fails once; the retry of the
    whole batch finds the first stage acknowledged and commits only the rest. Every event
    counted once, in its usage log's category."""
    llm, asked, gate = gated
    s = one_lane(settings, llm)
    events = mixed_batch()
    publish(s.redis_url, s.keys.stream_key, events)
    async with running_consumer(s) as rt:
        processor = rt.consumer.processor
        committer = processor.committer = FailsSecondCommit(processor.committer)
        await wait_until(lambda: asked.is_set() and pending(s) == 5, 30)
        gate.set()
        await wait_until(lambda: pending(s) == 0, 60)
        stats = rt.consumer.stats
        # The first stage once; the second failed once and was retried alone.
        assert stats.sink_failures == 1 and committer.calls == 3
        assert stats.skipped_already_acked == 0 and stats.read == len(events)
    valid = [e for e in events if e["duration"] != "-3"]
    expected = ["Game" if str(e["app"]).startswith("NoWaitQuest") else "Development"
                for e in valid]  # fmt: skip
    assert_scores_equal(
        actual_leaderboards(s.redis_url),
        reference_leaderboards(zip(valid, expected, strict=True), s.timezone),
    )
    assert rebuild_check(s, valid) == []
    assert redis.Redis.from_url(s.redis_url).xlen(s.keys.dead_letter_key) == 1


async def test_the_batches_held_for_the_llm_are_bounded(
    settings: Settings, gated: tuple[FakeLLM, threading.Event, threading.Event]
) -> None:
    """With POMOCORE_LLM_WAITING_BATCHES=1, a second batch with undecided keys commits its
    decided events and then holds the lane until the first batch's LLM answer frees the
    slot: nothing after it is read meanwhile (backpressure, not an unbounded pile)."""
    llm, asked, gate = gated
    s = one_lane(settings, llm, llm_waiting_batches=1, linger_ms=0)
    first = mixed_batch()
    second = [now_fields("nb1", "Code", 2.0, title="b.py"), now_fields("nb1", "NoWaitOther", 4.0)]
    third = [now_fields("nb3", "Code", 6.0, title=f"c{i}.py") for i in range(5)]
    publish(s.redis_url, s.keys.stream_key, first)
    async with running_consumer(s):
        await wait_until(lambda: asked.is_set() and pending(s) == 5, 30)
        publish(s.redis_url, s.keys.stream_key, second)
        await wait_until(lambda: _counted(s, "nb1") == 2.0, 30)  # its decided event
        publish(s.redis_url, s.keys.stream_key, third)
        await asyncio.sleep(1.5)  # the lane waits for the one held slot: `third` is unread
        assert _counted(s, "nb3") == 0.0 and pending(s) == 6
        gate.set()
        await wait_until(lambda: _counted(s, "nb3") == 30.0 and pending(s) == 0, 30)


async def test_events_waiting_for_the_llm_are_not_read_again_from_the_pending_list(
    settings: Settings, gated: tuple[FakeLLM, threading.Event, threading.Event]
) -> None:
    """Events waiting for the LLM stay in the lane's pending list. A walk of that list (after
    a reclaim, a read cut off, a batch refused) must not deliver them again while they wait:
    every delivery counts towards POMOCORE_MAX_DELIVERIES, and a lane that re-read them
    from the start of its list, again and again until the LLM answered, dead-lettered
    them as "delivered too often" (seen with a flood of unknown keys,
    tests/reliability/test_memory_flood.py). Here the walk follows a reclaim: entries a
    consumer of the group read before it died."""
    llm, asked, gate = gated
    s = one_lane(settings, llm, reclaim_idle_ms=1000)
    client = redis.Redis.from_url(s.redis_url)
    stream = s.keys.stream_key
    events = mixed_batch()
    publish(s.redis_url, stream, events)
    orphans = [now_fields("or1", "Code", 2.0, title=f"o{i}.py") for i in range(3)]
    async with running_consumer(s) as rt:
        await wait_until(lambda: asked.is_set() and pending(s) == 5, 30)
        # While 5 events wait: entries another consumer reads (in the same transaction as
        # they are added: the lane cannot get them first) and never acknowledges.
        pipe = client.pipeline(transaction=True)
        for fields in orphans:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        pipe.xreadgroup(s.group, "gone", {stream: ">"}, count=len(orphans))
        [[_, taken]] = pipe.execute()[-1]
        assert len(taken) == len(orphans)
        # Idle for reclaim_idle_ms, they are claimed by the lane and read with its list.
        await wait_until(lambda: _counted(s, "or1") == 6.0, 30)
        await asyncio.sleep(1.0)  # the lane reads on meanwhile (it used to re-read its list)
        waiting = client.xpending_range(stream, s.group, "-", "+", 100)
        dead = client.xrange(s.keys.dead_letter_key)
        dlq = [(f[b"dlq.reason"], f[b"dlq.detail"]) for _, f in dead]
        assert len(waiting) == 5, (waiting, dlq)  # the undecided events, still waiting
        assert max(p["times_delivered"] for p in waiting) <= 2, waiting
        assert len(dlq) == 1, dlq  # the invalid event only
        assert rt.consumer.reclaimer.stats.reclaimed == len(orphans)
        gate.set()
        await wait_until(lambda: pending(s) == 0, 30)
    assert client.xlen(s.keys.dead_letter_key) == 1
    valid = [e for e in events + orphans if e["duration"] != "-3"]
    expected = ["Game" if str(e["app"]).startswith("NoWaitQuest") else "Development"
                for e in valid]  # fmt: skip
    assert_scores_equal(
        actual_leaderboards(s.redis_url),
        reference_leaderboards(zip(valid, expected, strict=True), s.timezone),
    )
