"""Servers of their own for tests that kill, restart or flush them."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(appendonly=True)  # appendfsync always
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_mongo() -> Iterator[EmbeddedMongo]:
    server = EmbeddedMongo()
    server.start()
    yield server
    server.close()


def with_servers(
    settings: Settings,
    redis_url: str | None = None,
    mongo_uri: str | None = None,
    **overrides: object,
) -> Settings:
    values: dict[str, object] = dict(overrides)
    if redis_url:
        values["redis_url"] = redis_url
    if mongo_uri:
        values["mongo_uri"] = mongo_uri
        values["mongo_db"] = f"t_{uuid.uuid4().hex[:12]}"
    return dataclasses.replace(settings, **values)  # type: ignore[arg-type]
