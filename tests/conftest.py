"""Shared fixtures: real Valkey and MongoDB-wire servers on free loopback ports.

The servers are started once per test session by these fixtures and stopped at the end.
Each test gets a flushed Redis (we only ever flush the server we started) and a MongoDB
database of its own. The building blocks are in tests/support/servers.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.core.settings import FALLBACK_ENV, Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from tests.support.servers import fresh_db_name, running

# The OpenAI SDK's variables are fallbacks of the LLM settings: one left in a developer's
# shell would turn the LLM on in every consumer a test starts (and send requests out).
for _variable in FALLBACK_ENV.values():
    os.environ.pop(_variable, None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with running(EmbeddedRedis()) as server:
        yield server


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[EmbeddedMongo]:
    with running(EmbeddedMongo()) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()  # our own server, started by this session
    client.close()
    return redis_server.url


@pytest.fixture
def mongo_uri(mongo_server: EmbeddedMongo) -> str:
    return mongo_server.url


@pytest.fixture
def mongo_db_name() -> str:
    return fresh_db_name()


@pytest.fixture
def settings(redis_url: str, mongo_uri: str, mongo_db_name: str) -> Settings:
    return Settings.from_dsn(
        redis_url,
        mongo_uri,
        mongo_db=mongo_db_name,
        consumer_name="test-consumer",
        block_ms=100,
        linger_ms=0,
        batch_size=200,
    )


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of the test's (flushed) Redis."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
