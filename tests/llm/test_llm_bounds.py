"""The LLM path's memory, bounded (issue #14 §3): the resolver's verdict memory and its
rejected keys in bytes, the shared pending queue in keys, age and member size (each drop
counted). Real Redis; the resolvers talk to the scripted server."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from typing import Any

import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.llm.learning import Learner
from pomocore.classifiers.llm.queue import MAX_MEMBER_BYTES, PendingQueue, encode
from pomocore.classifiers.llm.reclassifier import Reclassifier
from pomocore.classifiers.llm.resolver import Verdict
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.store import save_patterns
from pomocore.core.decision import ClassKey
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.learned_cli import learned_command
from tests.support.memory import HANGUL, MIB
from tests.support.resolver import MakeResolver


def maximal_key(i: int) -> ClassKey:
    tag = f"{i:08d}"
    return tag + HANGUL[8:], "", tag + HANGUL[8:]


def _queue(redis: aioredis.Redis, clock: list[float], **kw: object) -> PendingQueue:
    keys = KeySpace()
    return PendingQueue(
        redis,
        keys.llm_queue_key,
        settle_s=0.0,
        clock=lambda: clock[0],
        users_key=keys.llm_queue_users_key,
        since_key=keys.llm_queue_since_key,
        **kw,  # type: ignore[arg-type]
    )


async def test_the_resolver_memory_holds_its_bytes(make_resolver: MakeResolver) -> None:
    resolver = make_resolver(memory_bytes=1 * MIB)
    for i in range(200):  # ~33 KB each: 6.6 MB offered to a 1 MiB memory
        resolver.remember(maximal_key(i), Verdict("Development", "m"))
        resolver._give_up(maximal_key(1000 + i))
    for lru in (resolver._memory, resolver._rejected):
        assert 20 <= len(lru) <= 32 and lru.bytes <= 1 * MIB
    assert resolver._memory.get(maximal_key(199)) is not None  # the newest kept


async def test_a_full_queue_drops_new_keys_and_counts_them(aredis: aioredis.Redis) -> None:
    clock = [1000.0]
    queue = _queue(aredis, clock, max_size=3)
    keys = [("App", "", f"t{i}") for i in range(5)]
    assert await queue.add(keys[:2], {keys[0]: "ann"}) == {}
    assert await queue.add(keys, {k: "bob" for k in keys}) == {"full": 2}
    assert await queue.size() == 3
    assert await queue.users(keys) == {keys[0]: "ann", keys[1]: "bob", keys[2]: "bob"}
    # nothing of a dropped key is written beside the queue (no orphan users or times)
    assert await aredis.hlen(queue.users_key) == 3
    assert queue.since_key and await aredis.zcard(queue.since_key) == 3


async def test_an_oversized_member_is_never_queued(aredis: aioredis.Redis) -> None:
    queue = _queue(aredis, [1000.0])
    big = ("App", "https://example.com/" + "a" * MAX_MEMBER_BYTES, "t")
    assert len(encode(big)) > MAX_MEMBER_BYTES
    assert await queue.add([big, ("App", "", "t")]) == {"too_large": 1}
    assert await queue.size() == 1


async def test_keys_older_than_the_ttl_leave_the_queue(aredis: aioredis.Redis) -> None:
    clock = [1000.0]
    queue = _queue(aredis, clock, ttl_s=60.0)
    await queue.add([("App", "", "old")], {("App", "", "old"): "ann"})
    clock[0] += 30
    await queue.add([("App", "", "new")])
    await queue.retry_later([("App", "", "old")], 5.0)  # retries do not make it younger
    clock[0] += 31
    assert await queue.expire() == 1
    assert await queue.claim(10, 1.0) == [("App", "", "new")]
    assert await aredis.hlen(queue.users_key) == 0


async def test_the_reclassifier_expires_keys_even_while_the_llm_is_away(
    make_resolver: MakeResolver, aredis: aioredis.Redis
) -> None:
    resolver = make_resolver(base_url="http://127.0.0.1:9")  # nothing listens there
    clock = [1000.0]
    resolver.queue = _queue(aredis, clock, ttl_s=60.0)
    await resolver._enqueue([("App", "", "t")])
    for breaker in resolver.breakers.values():  # the LLM is known to be down
        for _ in range(breaker.threshold):
            breaker.record_failure()
    assert not resolver.available()
    clock[0] += 61
    await Reclassifier(resolver, None, {}).run_once()
    assert resolver.stats.queue_dropped["expired"] == 1
    assert await resolver.queue.size() == 0


async def test_the_resolver_counts_what_the_queue_dropped(
    make_resolver: MakeResolver, aredis: aioredis.Redis
) -> None:
    resolver = make_resolver()
    resolver.queue = _queue(aredis, [1000.0], max_size=2)
    await resolver._enqueue([("App", "", f"t{i}") for i in range(5)])
    assert resolver.stats.queued == 2
    assert resolver.stats.queue_dropped == {"full": 3}


async def test_the_learned_cap_is_visible(
    settings: Settings, adb: AsyncDatabase[Any], aredis: aioredis.Redis
) -> None:
    await save_patterns(adb, PatternSet.from_documents([]))
    learner = Learner(aredis, adb, KeySpace(), 1, min_users=1, max_learned=1)
    for host in ("one.example", "two.example"):
        key: ClassKey = ("Firefox", f"https://{host}/", "t")
        await learner.observe({key: "Game"}, {key: ["ann"]})
    assert (learner.learned, learner.capped) == (1, 1)
    out = io.StringIO()
    s = dataclasses.replace(settings, llm_learned_max=1)
    assert await asyncio.to_thread(learned_command, s, None, out) == 0
    assert out.getvalue().splitlines()[-1] == (
        "# 1 of at most 1 (POMOCORE_LLM_LEARNED_MAX) (full: new subjects wait until one is "
        "rejected)"
    )
