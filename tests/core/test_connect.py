"""MongoDB clients of the operator commands and probes (core/connect.py): one builder,
and every wait on the network bounded. A server that stops answering in the middle of a
command fails it within the read timeout; before, `leaderboard rebuild`, `dlq replay`,
`patterns learned|load` and the demo built their own clients without a socket timeout and
waited forever."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import time
from collections.abc import Iterator
from typing import Any

import pymongo.errors
import pytest

from pomocore.core.connect import async_mongo, sync_mongo
from pomocore.core.settings import Settings
from tests.support.fault_proxy import FaultProxy
from tests.test_layers import package_sources

# Every MongoDB client is built there (the consumer's, with its deadline per operation,
# too).
BUILDERS = {"core/connect.py"}
TIMEOUT_S = 1.0


def test_only_the_builders_construct_mongodb_clients() -> None:
    found = []
    for rel, source in package_sources().items():
        for node in ast.walk(ast.parse(source, rel)):
            if isinstance(node, ast.Call) and _name(node.func) in (
                "MongoClient",
                "AsyncMongoClient",
            ):
                found.append(f"{rel}:{node.lineno}")
    assert found and all(f.split(":")[0] in BUILDERS for f in found), found


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


@pytest.fixture
def proxy(mongo_server: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(mongo_server.port)
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def proxied(settings: Settings, proxy: FaultProxy) -> Settings:
    return dataclasses.replace(settings, mongo_uri=f"mongodb://{proxy.host_port}/")


def test_a_server_that_stops_answering_fails_a_sync_read_within_the_timeout(
    proxied: Settings, proxy: FaultProxy
) -> None:
    client = sync_mongo(proxied, timeout_s=TIMEOUT_S, connect_timeout_s=TIMEOUT_S)
    try:
        coll = client[proxied.mongo_db]["t"]
        coll.insert_one({"_id": 1})
        proxy.set_mode("blackhole")
        started = time.monotonic()
        with pytest.raises(pymongo.errors.PyMongoError):
            coll.find_one({"_id": 1})
        assert time.monotonic() - started < TIMEOUT_S + 3
    finally:
        client.close()


async def test_a_server_that_stops_answering_fails_an_async_read_within_the_timeout(
    proxied: Settings, proxy: FaultProxy
) -> None:
    client = async_mongo(proxied, timeout_s=TIMEOUT_S, connect_timeout_s=TIMEOUT_S)
    try:
        coll = client[proxied.mongo_db]["t"]
        await coll.insert_one({"_id": 1})
        proxy.set_mode("blackhole")
        started = time.monotonic()
        with pytest.raises(pymongo.errors.PyMongoError):
            await coll.find_one({"_id": 1})
        assert time.monotonic() - started < TIMEOUT_S + 3
    finally:
        await client.close()


def test_a_long_read_is_not_cut_off_by_the_timeout(proxied: Settings, proxy: FaultProxy) -> None:
    """The timeout is per reply, not per cursor: a find whose batches arrive slowly but
    steadily runs to its end however long it takes in all (a rebuild reads millions)."""
    client = sync_mongo(proxied, timeout_s=TIMEOUT_S, connect_timeout_s=TIMEOUT_S)
    try:
        coll = client[proxied.mongo_db]["t"]
        coll.insert_many([{"_id": i} for i in range(40)])
        proxy.set_mode("latency", latency_s=0.2)
        started = time.monotonic()
        docs = list(coll.find({}, batch_size=5))
        assert len(docs) == 40
        assert time.monotonic() - started > 1.5 * TIMEOUT_S  # 8 batches, 0.2 s each way
    finally:
        client.close()


def test_datetimes_come_back_aware(settings: Settings) -> None:
    client = sync_mongo(settings)
    try:
        coll = client[settings.mongo_db]["t"]
        coll.insert_one({"_id": "at", "at": datetime.datetime(2026, 11, 30, 9, 0)})
        doc = coll.find_one({"_id": "at"})
        assert doc is not None
        assert doc["at"] == datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.UTC)
    finally:
        client.close()
