"""Learning under races and failures (issue #15 §3, found in review), real servers:

(a) two processes learning at the same instant each keep their pattern, even when the
    learning lock expires under a slow save (MongoDB behind a proxy that delays it);
(b) a save that fails once does not lose the subject: it is learned at its next verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from pomocore.classifiers.llm.learning import Learner
from pomocore.classifiers.patterns import PatternSet
from pomocore.classifiers.store import load_or_seed_patterns, save_patterns
from pomocore.core.decision import ClassKey
from pomocore.core.errors import ClassifierError
from pomocore.core.keys import KeySpace
from pomocore.embedded import EmbeddedMongo
from tests.support.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mongo_proxy(mongo_server: EmbeddedMongo) -> Iterator[FaultProxy]:
    proxy = FaultProxy(mongo_server.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
async def proxied_db(
    mongo_proxy: FaultProxy, mongo_db_name: str
) -> AsyncIterator[AsyncDatabase[Any]]:
    """The test's database, reached through `mongo_proxy`."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        f"mongodb://{mongo_proxy.host_port}/?directConnection=true",
        serverSelectionTimeoutMS=3000,
        connectTimeoutMS=2000,
        socketTimeoutMS=10_000,
    )
    yield client[mongo_db_name]
    await client.close()


async def _learned(db: AsyncDatabase[Any]) -> set[str]:
    patterns = await load_or_seed_patterns(db)
    return {p.text for e in patterns.entries for p in (*e.app_patterns, *e.domain_patterns)
            if p.learned}  # fmt: skip


def _verdict(host: str) -> tuple[dict[ClassKey, str], dict[ClassKey, list[str]]]:
    key: ClassKey = ("Firefox", f"https://{host}/page", "a title")
    return {key: "Game"}, {key: ["ann"]}


async def test_two_learners_at_the_same_instant_both_keep_their_pattern(
    adb: AsyncDatabase[Any],
    proxied_db: AsyncDatabase[Any],
    mongo_proxy: FaultProxy,
    aredis: aioredis.Redis,
) -> None:
    await save_patterns(adb, PatternSet.from_documents([]))
    await proxied_db.command("ping")  # connected: no handshake in the timings below
    # Learner "slow" reaches MongoDB through a proxy that delays every message by 0.3 s:
    # it reads the pattern set at ~0.9 s and writes at ~2.7 s. Its lock expires at 1.5 s
    # (as a 30 s lock does under a long stall), so "fast" takes it and saves in between.
    mongo_proxy.set_mode("latency", latency_s=0.3)
    slow = Learner(aredis, proxied_db, KeySpace(), 1, min_users=1, lock_ttl_s=1.5)
    fast = Learner(aredis, adb, KeySpace(), 1, min_users=1, lock_ttl_s=1.5)

    async def later() -> None:
        await asyncio.sleep(0.2)  # "slow" holds the lock by then
        await fast.observe(*_verdict("fast.example"))

    await asyncio.gather(slow.observe(*_verdict("slow.example")), later())

    assert await _learned(adb) == {"slow.example", "fast.example"}  # no lost update


async def test_a_failed_save_leaves_the_subject_to_its_next_verdict(
    proxied_db: AsyncDatabase[Any], mongo_proxy: FaultProxy, aredis: aioredis.Redis
) -> None:
    await save_patterns(proxied_db, PatternSet.from_documents([]))
    learner = Learner(aredis, proxied_db, KeySpace(), 1, min_users=1)
    mongo_proxy.set_mode("reset")  # MongoDB unreachable during the save
    with pytest.raises((PyMongoError, ClassifierError)):  # (the resolver logs it, goes on)
        await learner.observe(*_verdict("flaky.example"))
    mongo_proxy.set_mode("pass")

    learned = await learner.observe(*_verdict("flaky.example"))  # the next verdict

    assert [p.pattern for p in learned] == ["flaky.example"]
    assert await _learned(proxied_db) == {"flaky.example"}
