"""Servers of their own for tests that kill, restart or flush them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from tests.support.servers import running


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with running(EmbeddedRedis(appendonly=True)) as server:  # appendfsync always
        yield server


@pytest.fixture
def own_mongo() -> Iterator[EmbeddedMongo]:
    with running(EmbeddedMongo()) as server:
        yield server
