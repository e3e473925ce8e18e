"""Group commit (sinks/commit.py CommitGroup) against a real server: the lanes' plans that
queue up behind a call go out merged, all-or-nothing, each lane keeping its own entries."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.consumers.batch import MAX_COMMIT_ATTEMPTS, BatchProcessor, ValidatedBatch
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.errors import CommitContended, CommitError, SinkError
from pomocore.core.events import Event
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.sinks.commit import MAX_IN_FLIGHT, CommitGroup, Committer, Part
from pomocore.sinks.plan import CommitPlan, IncrementBuilder

KEYS = KeySpace()
TS = 1_795_316_733.0  # 2026-11-22 12:05 in Seoul
BUILDER = IncrementBuilder(KEYS, PeriodCalculator("Asia/Seoul"))


def deliver(url: str, consumer: str, n: int) -> list[str]:
    """n new entries, read by `consumer` of group g (pending under its name)."""
    client = redis.Redis.from_url(url)
    for i in range(n):
        client.xadd(KEYS.stream_key, {"i": str(i)})
    if not client.exists(KEYS.stream_key) or not any(
        g["name"] == b"g" for g in client.xinfo_groups(KEYS.stream_key)
    ):
        client.xgroup_create(KEYS.stream_key, "g", id="0")
    reply = client.xreadgroup("g", consumer, {KEYS.stream_key: ">"}, count=n)
    return [entry_id.decode() for entry_id, _ in reply[0][1]]


def plan_for(ids: list[str], user: str, category: str, seconds: float) -> CommitPlan:
    events = [(Event(i, user, "a", "t", "", seconds, TS), category) for i in ids]
    return BUILDER.plan(events, [])


def scores(url: str, key: str) -> dict[str, float]:
    rows = redis.Redis.from_url(url).zrange(key, 0, -1, withscores=True)
    return {member.decode(): score for member, score in rows}


def owners(url: str) -> dict[str, str]:
    rows = redis.Redis.from_url(url).xpending_range(KEYS.stream_key, "g", "-", "+", 100)
    return {r["message_id"].decode(): r["consumer"].decode() for r in rows}


def lanes(url: str, group: CommitGroup, names: list[str]) -> list[Committer]:
    client = aioredis.Redis.from_url(url)
    return [Committer(client, KEYS, "g", name, commit_group=group) for name in names]


async def test_plans_queued_together_go_out_in_one_call(redis_url: str) -> None:
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "g")
    a, b, c = lanes(redis_url, group, ["p", "p.1", "p.2"])
    plans = [
        plan_for(deliver(redis_url, "p", 3), "u1", "Development", 1.5),
        plan_for(deliver(redis_url, "p.1", 2), "u1", "Documentation", 2.0),
        plan_for(deliver(redis_url, "p.2", 4), "u2", "SNS", 0.25),
    ]
    results = await asyncio.gather(
        *(lane.commit_once(p) for lane, p in zip((a, b, c), plans, strict=True))
    )
    assert results == [(True, [])] * 3
    assert (group.calls, group.plans) == (1, 3)
    assert owners(redis_url) == {}  # everything acknowledged
    assert scores(redis_url, "leaderboard:work:2026-W47") == {"u1": 3 * 1.5 + 2 * 2.0}
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {"u2": 1.0}
    assert scores(redis_url, "leaderboard:Development:2026-M11") == {"u1": 4.5}


async def test_a_merged_call_that_meets_an_acknowledged_id_writes_nothing(
    redis_url: str,
) -> None:
    """Lane p's batch holds an id another consumer acknowledged: the merged call writes
    nothing, puts every other id back under its own lane, and each lane learns its ids."""
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "g")
    p, q = lanes(redis_url, group, ["p", "q"])
    ids_p, ids_q = deliver(redis_url, "p", 3), deliver(redis_url, "q", 2)
    redis.Redis.from_url(redis_url).xack(KEYS.stream_key, "g", ids_p[1])
    plan_p, plan_q = plan_for(ids_p, "u1", "SNS", 1.0), plan_for(ids_q, "u2", "SNS", 1.0)
    results = await asyncio.gather(p.commit_once(plan_p), q.commit_once(plan_q))
    assert results == [(False, [ids_p[0], ids_p[2]]), (False, ids_q)]
    assert owners(redis_url) == {ids_p[0]: "p", ids_p[2]: "p", ids_q[0]: "q", ids_q[1]: "q"}
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {}
    # The lanes' retries, narrowed to what is still pending, apply everything once.
    narrowed = plan_for([ids_p[0], ids_p[2]], "u1", "SNS", 1.0)
    results = await asyncio.gather(p.commit_once(narrowed), q.commit_once(plan_q))
    assert results == [(True, [])] * 2
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {"u1": 2.0, "u2": 2.0}
    assert owners(redis_url) == {}


async def test_a_call_stays_within_the_id_cap(redis_url: str) -> None:
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "g", max_merged_ids=3)
    names = ["p", "p.1", "p.2"]
    committers = lanes(redis_url, group, names)
    plans = [plan_for(deliver(redis_url, n, 2), "u1", "SNS", 1.0) for n in names]
    results = await asyncio.gather(
        *(c.commit_once(p) for c, p in zip(committers, plans, strict=True))
    )
    assert results == [(True, [])] * 3
    assert (group.calls, group.plans) == (3, 3)  # 2 + 2 > 3: one plan per call
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {"u1": 6.0}


async def test_a_cancelled_caller_still_has_its_plan_committed(redis_url: str) -> None:
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "g")
    p, q = lanes(redis_url, group, ["p", "q"])
    first = asyncio.ensure_future(
        p.commit_once(plan_for(deliver(redis_url, "p", 2), "u1", "SNS", 1.0))
    )
    second = asyncio.ensure_future(
        q.commit_once(plan_for(deliver(redis_url, "q", 1), "u2", "SNS", 1.0))
    )
    await asyncio.sleep(0)  # both queued
    second.cancel()
    assert await first == (True, [])
    with pytest.raises(asyncio.CancelledError):
        await second
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {"u1": 2.0, "u2": 1.0}
    assert owners(redis_url) == {}


async def test_a_failed_call_fails_every_plan_in_it(redis_url: str) -> None:
    deliver(redis_url, "p", 1)  # the stream exists; group "nope" does not
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "nope")
    p, q = lanes(redis_url, group, ["p", "q"])
    results = await asyncio.gather(
        p.commit_once(plan_for(["1-1"], "u1", "SNS", 1.0)),
        q.commit_once(plan_for(["1-2"], "u2", "SNS", 1.0)),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [CommitError, CommitError]
    assert "NOGROUP" in str(results[0])


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_no_plan_is_left_behind_when_senders_finish(redis_url: str, in_flight: int) -> None:
    """Lanes committing back to back while other I/O completes around them: a plan queued
    in the step where the last sender finished must still go out (found by the bench smoke
    test: a lane waited forever for its commit)."""
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "g", max_in_flight=in_flight)
    names = [f"p.{i}" for i in range(8)]
    committers = lanes(redis_url, group, names)
    rounds = 80
    ids = {name: deliver(redis_url, name, rounds) for name in names}
    other = aioredis.Redis.from_url(redis_url)

    async def lane(committer: Committer, my_ids: list[str]) -> None:
        for entry_id in my_ids:
            await other.ping()  # a reply that can land in the same loop step as a commit's
            result = await committer.commit_once(plan_for([entry_id], "u1", "SNS", 1.0))
            assert result == (True, [])

    jobs = (lane(c, ids[n]) for c, n in zip(committers, names, strict=True))
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=60)
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {"u1": 8.0 * rounds}
    assert owners(redis_url) == {}


class RecordingGroup(CommitGroup):
    """A CommitGroup that records, per script call, each lane's consumer and ids in it."""

    def __init__(self, url: str, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        super().__init__(aioredis.Redis.from_url(url), KEYS, "g", max_in_flight=max_in_flight)
        self.sent: list[list[tuple[str, list[str]]]] = []

    async def _call(self, parts: list[Part]) -> tuple[bool, list[str]]:
        self.sent.append([(consumer, list(plan.ids)) for plan, consumer in parts])
        return await super()._call(parts)


class NoClassifier:
    def classify_many(self, keys: Sequence[ClassKey]) -> list[Decision]:
        raise AssertionError("these tests only commit")


def lane_processor(url: str, committer: Committer) -> BatchProcessor:
    return BatchProcessor(Settings.from_dsn(url), NoClassifier(), BUILDER, committer)


def events_of(ids: list[str], user: str, seconds: float) -> list[tuple[Event, Decision]]:
    return [(Event(i, user, "a", "t", "", seconds, TS), Decision("SNS", "app")) for i in ids]


async def test_lanes_holding_the_same_id_commit_it_once(redis_url: str) -> None:
    """Lane q reclaimed x from lane p, which still holds it: both commit batches with x at
    once. Merged into one call, the second XACK of x found it acknowledged by the first,
    the whole call was undone on every attempt, and both lanes returned as if committed
    with all their entries still pending."""
    group = RecordingGroup(redis_url)
    p, q = lanes(redis_url, group, ["p", "q"])
    x, a = deliver(redis_url, "p", 2)
    (b,) = deliver(redis_url, "q", 1)
    redis.Redis.from_url(redis_url).xclaim(KEYS.stream_key, "g", "q", 0, [x])  # q's reclaim
    batch_p, batch_q = events_of([x, a], "u1", 5.0), events_of([x, b], "u1", 5.0)
    outcomes = await asyncio.gather(
        lane_processor(redis_url, p).commit(ValidatedBatch(), batch_p),
        lane_processor(redis_url, q).commit(ValidatedBatch(), batch_q),
    )
    assert owners(redis_url) == {}  # all three acknowledged
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {"u1": 15.0}  # x once
    assert sum(o.committed for o in outcomes) == 3
    assert sum(o.skipped_already_acked for o in outcomes) == 1
    for call in group.sent:
        with_x = [consumer for consumer, ids in call if x in ids]
        assert len(with_x) <= 1, group.sent


async def test_plans_sharing_an_id_go_out_in_separate_calls(redis_url: str) -> None:
    group = RecordingGroup(redis_url, max_in_flight=1)  # one call at a time: a fixed order
    p, q, r = lanes(redis_url, group, ["p", "q", "r"])
    x, a = deliver(redis_url, "p", 2)
    (c,) = deliver(redis_url, "r", 1)
    results = await asyncio.gather(
        p.commit_once(plan_for([x, a], "u1", "SNS", 1.0)),
        q.commit_once(plan_for([x], "u1", "SNS", 1.0)),
        r.commit_once(plan_for([c], "u2", "SNS", 1.0)),
    )
    # p goes out alone; q (sharing x) starts the next call, and r, disjoint, joins it.
    assert group.sent == [[("p", [x, a])], [("q", [x]), ("r", [c])]]
    assert results == [(True, []), (False, []), (False, [c])]
    assert owners(redis_url) == {c: "r"}


async def test_a_call_stays_within_the_key_cap(redis_url: str) -> None:
    group = CommitGroup(aioredis.Redis.from_url(redis_url), KEYS, "g", max_merged_keys=8)
    names = ["p", "p.1", "p.2"]
    committers = lanes(redis_url, group, names)
    plans = [plan_for(deliver(redis_url, n, 1), "u1", "Development", 1.0) for n in names]
    assert [len(plan.increments) for plan in plans] == [6, 6, 6]  # category and work, 3 each
    results = await asyncio.gather(
        *(c.commit_once(p) for c, p in zip(committers, plans, strict=True))
    )
    assert results == [(True, [])] * 3
    assert (group.calls, group.plans) == (3, 3)  # 6 + 6 > 8: one plan per call
    assert scores(redis_url, "leaderboard:work:2026-11-22") == {"u1": 3.0}


class RivalFirst(Committer):
    """A lane whose every commit meets an id that another consumer acknowledged just
    before (a rival that keeps winning one entry of the batch)."""

    async def commit_once(self, plan: CommitPlan) -> tuple[bool, list[str]]:
        await self.commit_group.redis.xack(KEYS.stream_key, "g", plan.ids[0])
        return await super().commit_once(plan)


async def test_an_exhausted_commit_is_an_error_never_a_success(redis_url: str) -> None:
    """Returning after the last attempt reported the batch committed while two of its
    entries were still pending."""
    ids = deliver(redis_url, "p", MAX_COMMIT_ATTEMPTS + 2)
    lane = RivalFirst(aioredis.Redis.from_url(redis_url), KEYS, "g", "p")
    with pytest.raises(CommitContended) as exc:
        await lane_processor(redis_url, lane).commit(ValidatedBatch(), events_of(ids, "u1", 1.0))
    assert isinstance(exc.value, SinkError)  # the consumer holds the batch and retries it
    assert (exc.value.attempts, exc.value.still_pending) == (MAX_COMMIT_ATTEMPTS, 2)
    assert owners(redis_url) == {ids[-2]: "p", ids[-1]: "p"}  # still pending, still p's
    assert scores(redis_url, "leaderboard:SNS:2026-11-22") == {}  # nothing applied
