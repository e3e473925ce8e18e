"""Shared fixtures: real Valkey and MongoDB-wire servers on free loopback ports.

The servers are started once per test session by these fixtures and stopped at the end.
Each test gets a flushed Redis (we only ever flush the server we started) and a MongoDB
database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[EmbeddedMongo]:
    server = EmbeddedMongo()
    server.start()
    yield server
    server.close()


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
    return f"t_{uuid.uuid4().hex[:12]}"


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
