"""Fixtures of the LLM tests: the scriptable fake server and async clients.

Redis and MongoDB are the real embedded servers of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.llm.budget import Budget
from pomocore.classifiers.llm.client import LLMClient
from pomocore.classifiers.llm.learning import Learner
from pomocore.classifiers.llm.queue import PendingQueue
from pomocore.classifiers.llm.resolver import LLMResolver
from pomocore.classifiers.llm.retry import RetryPolicy
from pomocore.core.keys import KeySpace
from tests.support.fake_llm import FakeLLM

PRIMARY = "primary-model"
FALLBACK = "fallback-model"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def adb(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[AsyncDatabase[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
    yield client[mongo_db_name]
    await client.close()


MakeResolver = Callable[..., LLMResolver]


@pytest.fixture
async def make_resolver(
    fake_llm: FakeLLM, aredis: aioredis.Redis, adb: AsyncDatabase[Any]
) -> AsyncIterator[MakeResolver]:
    """Build resolvers against the fake server with test-sized timeouts; closed after the test."""
    made: list[LLMResolver] = []

    def make(**kw: Any) -> LLMResolver:
        keys = KeySpace()
        base_url = kw.pop("base_url", fake_llm.url)
        calls_per_min = kw.pop("calls_per_min", 1000)
        tokens_per_min = kw.pop("tokens_per_min", 10_000_000)
        learn_after = kw.pop("learn_after", 1000)
        db = kw.pop("db", adb)
        args: dict[str, Any] = {
            "client": LLMClient(base_url, "test-key"),
            "budget": Budget(aredis, keys.llm_rate_key_prefix, calls_per_min, tokens_per_min),
            "queue": PendingQueue(aredis, keys.llm_queue_key, settle_s=0.0),
            "db": db,
            "model": PRIMARY,
            "timeout_s": 2.0,
            "open_circuit_s": 15.0,
            "batch_size": 25,
            "window_s": 0.05,
            "retry": RetryPolicy(max_attempts=3, base_s=0.05, cap_s=0.2),
            "learner": Learner(aredis, db, keys, learn_after),
        }
        args.update(kw)
        resolver = LLMResolver(**args)
        made.append(resolver)
        return resolver

    yield make
    for r in made:
        await r.close()
