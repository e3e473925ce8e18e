"""Fixtures of the LLM tests: the scriptable fake server and resolvers wired to it.

Redis and MongoDB are the real embedded servers of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.support.fake_llm import FakeLLM
from tests.support.resolver import MakeResolver, ResolverFactory


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
async def adb(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[AsyncDatabase[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
    yield client[mongo_db_name]
    await client.close()


@pytest.fixture
async def make_resolver(
    fake_llm: FakeLLM, aredis: aioredis.Redis, adb: AsyncDatabase[Any]
) -> AsyncIterator[MakeResolver]:
    """Build resolvers against the fake server; all closed after the test."""
    factory = ResolverFactory(fake_llm.url, aredis, adb)
    yield factory
    await factory.close()
