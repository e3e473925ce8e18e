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
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from pomocore.classifiers.llm.queue import decode
from pomocore.consumers.batch import Entry
from pomocore.core.observer import BatchOutcome
from pomocore.core.settings import Settings
from pomocore.sinks.commit import Committer
from pomocore.sinks.plan import CommitPlan, DeadLetter
from tests.support.consumer import drain, running_consumer
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    rebuild_check,
    reference_leaderboards,
)
from tests.support.fake_llm import Behaviour, FakeLLM, Request
from tests.support.streams import group_state, now_fields, publish
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


def assert_counted_as(
    s: Settings,
    valid: list[dict[str, str | bytes]],
    expected: list[str],
    *,
    check_usage_logs: bool = True,
) -> None:
    """The leaderboards hold exactly `valid` under the `expected` categories, and (unless
    told otherwise) every usage log agrees with them (`leaderboard rebuild --check`)."""
    assert_scores_equal(
        actual_leaderboards(s.redis_url),
        reference_leaderboards(zip(valid, expected, strict=True), s.timezone),
    )
    if check_usage_logs:
        assert rebuild_check(s, valid) == []


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
    assert_counted_as(s, valid, expected, check_usage_logs=False)
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
    assert_counted_as(s, valid, expected)
    assert redis.Redis.from_url(s.redis_url).xlen(s.keys.dead_letter_key) == 1


def queued_keys(s: Settings) -> set[tuple[str, str, str] | None]:
    """The keys waiting for the reclassifier."""
    client = redis.Redis.from_url(s.redis_url)
    return {decode(m) for m in client.zrange(s.keys.llm_queue_key, 0, -1)}


def overflow_batch(user: str, unknown: str, n: int) -> list[dict[str, str | bytes]]:
    """`n` events the patterns decide, with one of an app they do not know in the middle."""
    events = [now_fields(user, "Code", 2.0 + i, title=f"{user}{i}.py") for i in range(n)]
    events.insert(n // 2, now_fields(user, unknown, 4.0, title="level"))
    return events


async def test_with_every_waiting_slot_taken_later_batches_do_not_wait(
    settings: Settings, gated: tuple[FakeLLM, threading.Event, threading.Event]
) -> None:
    """With POMOCORE_LLM_WAITING_BATCHES=1 and the LLM holding its answer, the one slot is
    taken by the first batch. Later batches mixing decided and undecided events do not
    wait for it: each commits whole while the first batch still waits (its 5 events the
    only ones pending, the gate still closed); their undecided keys get the no-LLM rule,
    as keys the budget refuses, are queued for the reclassifier and counted. One of them
    is a key the first batch is asking about: its later event keeps the no-LLM rule too.
    Every event counted once, in its usage log's category."""
    llm, asked, gate = gated
    s = one_lane(settings, llm, llm_waiting_batches=1, linger_ms=0)
    first = mixed_batch()
    publish(s.redis_url, s.keys.stream_key, first)
    later = [
        overflow_batch("nb1", "NoWaitOther", 3),
        overflow_batch("nb2", "NoWaitQuest0", 4),  # pending in the first batch's request
        overflow_batch("nb3", "NoWaitThird", 5),
    ]
    async with running_consumer(s) as rt:
        await wait_until(lambda: asked.is_set() and pending(s) == 5, 30)
        client = redis.Redis.from_url(s.redis_url)
        for batch in later:  # one at a time: the one lane reads each batch alone
            publish(s.redis_url, s.keys.stream_key, batch)
            # read and committed whole: nothing undelivered, only the first batch pending
            await wait_until(lambda: group_state(s) == (0, 5), 20)
            assert not gate.is_set()  # the first batch is still waiting for the LLM
        assert rt.resolver is not None and rt.resolver.stats.overflow_keys == 3
        assert {("NoWaitOther", "", "level"), ("NoWaitQuest0", "", "level"),
                ("NoWaitThird", "", "level")} <= queued_keys(s)  # fmt: skip
        gate.set()
        await wait_until(lambda: pending(s) == 0, 30)
    await drain(s)
    valid = [e for e in first if e["duration"] != "-3"]
    expected = ["Game" if str(e["app"]).startswith("NoWaitQuest") else "Development"
                for e in valid]  # fmt: skip
    for batch in later:
        valid += batch
        expected += ["Development" if e["app"] == "Code" else "Uncategorized" for e in batch]
    assert_counted_as(s, valid, expected)
    assert client.xlen(s.keys.dead_letter_key) == 1


async def test_a_slot_taken_between_the_two_steps_defers_the_second(
    settings: Settings, gated: tuple[FakeLLM, threading.Event, threading.Event]
) -> None:
    """The first step found the one slot free; another lane's batch takes it before the
    second step (injected: the slot is taken right after the first step commits). The
    second step does not wait for it: committed at once, its keys deferred, no LLM call."""
    llm, asked, _gate = gated
    s = one_lane(settings, llm, llm_waiting_batches=1)
    events = mixed_batch()
    async with running_consumer(s) as rt:
        consumer = rt.consumer
        first_step = consumer.processor.process_decided

        async def then_the_slot_is_taken(
            entries: Sequence[Entry], extra_dead: Sequence[DeadLetter] = ()
        ) -> tuple[BatchOutcome, list[Entry]]:
            outcome = await first_step(entries, extra_dead)
            await consumer.waiting_slots.held.acquire()  # as another lane's batch would
            return outcome

        consumer.processor.process_decided = then_the_slot_is_taken  # type: ignore[method-assign]
        publish(s.redis_url, s.keys.stream_key, events)
        await wait_until(lambda: group_state(s) == (0, 0), 30)
        assert not asked.is_set() and llm.calls == 0
        assert rt.resolver is not None and rt.resolver.stats.overflow_keys == 5
    valid = [e for e in events if e["duration"] != "-3"]
    expected = ["Uncategorized" if str(e["app"]).startswith("NoWaitQuest") else "Development"
                for e in valid]  # fmt: skip
    assert_counted_as(s, valid, expected)



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
    assert_counted_as(s, valid, expected, check_usage_logs=False)
