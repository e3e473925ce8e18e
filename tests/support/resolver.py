"""LLM resolvers wired to the fake server, real Redis and real MongoDB, with test-sized
timeouts; the LLM tests' `make_resolver` fixture is a ResolverFactory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.llm.budget import Budget
from pomocore.classifiers.llm.client import LLMClient
from pomocore.classifiers.llm.learning import Learner
from pomocore.classifiers.llm.queue import PendingQueue
from pomocore.classifiers.llm.resolver import LLMResolver
from pomocore.classifiers.llm.retry import RetryPolicy
from pomocore.core.keys import KeySpace

PRIMARY = "primary-model"
FALLBACK = "fallback-model"

MakeResolver = Callable[..., LLMResolver]


class ResolverFactory:
    """Builds resolvers (any LLMResolver argument can be overridden by keyword, plus
    `base_url`, `calls_per_min`, `tokens_per_min`, `learn_after`, `learn_min_users`,
    `learn_mode`, `learned_max`, `send` and `db`) and closes every one it built."""

    def __init__(self, base_url: str, redis: aioredis.Redis, db: AsyncDatabase[Any]) -> None:
        self.base_url = base_url
        self.redis = redis
        self.db = db
        self.made: list[LLMResolver] = []

    def __call__(self, **kw: Any) -> LLMResolver:
        keys = KeySpace()
        base_url = kw.pop("base_url", self.base_url)
        calls_per_min = kw.pop("calls_per_min", 1000)
        tokens_per_min = kw.pop("tokens_per_min", 10_000_000)
        learn_after = kw.pop("learn_after", 1000)
        learner_kw = {
            "min_users": kw.pop("learn_min_users", 1),
            "mode": kw.pop("learn_mode", "auto"),
            "max_learned": kw.pop("learned_max", 500),
        }
        send = kw.pop("send", "full")
        db = kw.pop("db", self.db)
        r = self.redis
        args: dict[str, Any] = {
            "client": LLMClient(base_url, "test-key", send),
            "budget": Budget(r, keys.llm_rate_key_prefix, calls_per_min, tokens_per_min),
            "queue": PendingQueue(
                r,
                keys.llm_queue_key,
                settle_s=0.0,
                users_key=keys.llm_queue_users_key,
                since_key=keys.llm_queue_since_key,
            ),
            "db": db,
            "model": PRIMARY,
            "timeout_s": 2.0,
            "open_circuit_s": 15.0,
            "batch_size": 25,
            "window_s": 0.05,
            "retry": RetryPolicy(max_attempts=3, base_s=0.05, cap_s=0.2),
            "learner": Learner(r, db, keys, learn_after, **learner_kw),
        }
        args.update(kw)
        resolver = LLMResolver(**args)
        self.made.append(resolver)
        return resolver

    async def close(self) -> None:
        for resolver in self.made:
            await resolver.close()
