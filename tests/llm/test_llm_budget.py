"""The cost guard is shared by processes: two consumer processes, one Redis, one budget."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import redis.asyncio as aioredis

from pomocore.classifiers.llm.budget import Budget
from pomocore.classifiers.llm.client import LLMClient
from pomocore.classifiers.llm.queue import PendingQueue
from pomocore.classifiers.llm.resolver import LLMResolver
from pomocore.core.keys import KeySpace
from tests.support.fake_llm import FakeLLM

CALLS_PER_MIN = 4


async def _consume(redis_url: str, llm_url: str, name: str, batches: int) -> int:
    redis = aioredis.Redis.from_url(redis_url)
    keys = KeySpace()
    resolver = LLMResolver(
        client=LLMClient(llm_url, "k"),
        budget=Budget(redis, keys.llm_rate_key_prefix, CALLS_PER_MIN, 10_000_000),
        queue=PendingQueue(redis, keys.llm_queue_key),
        db=None,
        model="m",
        batch_size=1,
        window_s=0.0,
    )
    answered = 0
    try:
        for i in range(batches):
            answered += len(await resolver.resolve([(f"{name}-{i}", "", "t")]))
    finally:
        await resolver.close()
        await redis.aclose()
    return answered


def _worker(
    redis_url: str, llm_url: str, name: str, batches: int, out: multiprocessing.Queue  # type: ignore[type-arg]
) -> None:
    out.put(asyncio.run(_consume(redis_url, llm_url, name, batches)))


def _away_from_minute_boundary() -> None:
    # The budget window is the wall-clock minute; do not straddle two of them.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_calls_per_minute_hold_across_two_processes(redis_url: str, fake_llm: FakeLLM) -> None:
    _away_from_minute_boundary()
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_worker, args=(redis_url, fake_llm.url, f"p{i}", 6, out))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    answered = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert fake_llm.calls == CALLS_PER_MIN
    assert sum(answered) == CALLS_PER_MIN


async def test_token_budget_refuses_calls_once_spent(aredis: aioredis.Redis) -> None:
    budget = Budget(aredis, "t:budget", calls_per_min=100, tokens_per_min=1000)
    assert await budget.acquire(600)
    assert not await budget.acquire(600)  # 1200 > 1000
    await budget.settle(600, 100)  # the server reported far fewer tokens
    assert await budget.acquire(600)
    assert await budget.usage() == (2, 700)


async def test_first_call_of_a_window_is_not_starved_by_its_size(aredis: aioredis.Redis) -> None:
    budget = Budget(aredis, "t:budget2", calls_per_min=100, tokens_per_min=1000)
    assert await budget.acquire(5000)
    assert not await budget.acquire(1)


async def test_budget_spent_means_no_call_and_queued(
    fake_llm: FakeLLM, aredis: aioredis.Redis
) -> None:
    keys = KeySpace()
    resolver = LLMResolver(
        client=LLMClient(fake_llm.url, "k"),
        budget=Budget(aredis, keys.llm_rate_key_prefix, 1, 10_000_000),
        queue=PendingQueue(aredis, keys.llm_queue_key, settle_s=0.0),
        db=None,
        model="m",
    )
    _away_from_minute_boundary()
    try:
        assert len(await resolver.resolve([("a", "", "1")])) == 1
        started = time.monotonic()
        assert await resolver.resolve([("b", "", "2")]) == {}
        assert time.monotonic() - started < 0.5
        assert fake_llm.calls == 1
        assert await resolver.queue.claim(10, 0) == [("b", "", "2")]
        assert resolver.stats.errors["budget"] == 1
    finally:
        await resolver.close()
