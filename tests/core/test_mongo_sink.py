"""MongoSink against the real MongoDB-wire server: documents, round trips, and what an
existing categorized_data document keeps or takes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pymongo
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.core.decision import Decision, Source
from pomocore.core.events import Event
from pomocore.core.ids import categorized_data_id
from pomocore.sinks.mongo import CATEGORIZED_DATA, USAGE_LOG, MongoSink

CATEGORY_IDS = {"Development": 1, "Entertainment": 2, "Uncategorized": 3, "Finance": 4}


@pytest.fixture
async def db(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    yield client[mongo_db_name]
    await client.drop_database(mongo_db_name)
    await client.close()


def sink(db: AsyncDatabase[dict[str, Any]]) -> MongoSink:
    return MongoSink(db, "pomocore:events", CATEGORY_IDS)


def event(n: int, title: str) -> Event:
    return Event(f"{1_700_000_000_000 + n}-0", "user-1", "Code", title, "", 10.0, 1.7e9)


def pairs(
    titles: list[str], category: str = "Development", source: Source = "app", first: int = 0
) -> list[tuple[Event, Decision]]:
    return [(event(first + i, t), Decision(category, source, "x")) for i, t in enumerate(titles)]


def stored(db_uri: str, db_name: str, title: str) -> dict[str, Any] | None:
    with pymongo.MongoClient(db_uri) as client:
        doc_id = categorized_data_id("Code", "", title)
        doc = client[db_name][CATEGORIZED_DATA].find_one({"_id": doc_id})
        return dict(doc) if doc is not None else None


async def test_new_keys_cost_one_write_each_collection(
    db: AsyncDatabase[dict[str, Any]], mongo_uri: str, mongo_db_name: str
) -> None:
    s = sink(db)
    await s.write(s.build(pairs(["a.py", "b.py", "a.py"])))
    assert s.round_trips == 2  # no read: new keys are inserted blind
    assert await db[CATEGORIZED_DATA].count_documents({}) == 2
    assert await db[USAGE_LOG].count_documents({}) == 3
    doc = stored(mongo_uri, mongo_db_name, "a.py")
    assert doc is not None and doc["category"] == "Development" and doc["categoryId"] == 1


async def test_known_keys_cost_only_the_usage_write(db: AsyncDatabase[dict[str, Any]]) -> None:
    s = sink(db)
    await s.write(s.build(pairs(["a.py", "b.py"])))
    await s.write(s.build(pairs(["a.py", "b.py"], first=10)))
    assert s.round_trips == 3
    assert await db[USAGE_LOG].count_documents({}) == 4


async def test_replaying_a_batch_writes_nothing_new(db: AsyncDatabase[dict[str, Any]]) -> None:
    batch = pairs(["a.py", "b.py"])
    await sink(db).write(sink(db).build(batch))
    await sink(db).write(sink(db).build(batch))  # a fresh consumer: nothing in memory
    assert await db[CATEGORIZED_DATA].count_documents({}) == 2
    assert await db[USAGE_LOG].count_documents({}) == 2


async def test_a_document_with_the_same_category_is_left_alone(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    await sink(db).write(sink(db).build(pairs(["a.py"])))
    other = sink(db)  # another consumer: the key exists, but not in its memory
    await other.write(other.build(pairs(["a.py", "new.py"], first=5)))
    # insert (one duplicate) + read of the duplicate + usage logs; no update needed
    assert other.round_trips == 3
    assert await db[CATEGORIZED_DATA].count_documents({}) == 2


async def test_a_stale_category_is_updated(
    db: AsyncDatabase[dict[str, Any]], mongo_uri: str, mongo_db_name: str
) -> None:
    first = sink(db)
    await first.write(first.build(pairs(["a.py"], category="Uncategorized", source="default")))
    other = sink(db)  # e.g. after a pattern reload, another process
    await other.write(other.build(pairs(["a.py"], first=1)))
    doc = stored(mongo_uri, mongo_db_name, "a.py")
    assert doc is not None and (doc["category"], doc["categoryId"]) == ("Development", 1)


async def test_memory_of_another_category_triggers_the_update(
    db: AsyncDatabase[dict[str, Any]], mongo_uri: str, mongo_db_name: str
) -> None:
    s = sink(db)
    await s.write(s.build(pairs(["a.py"], category="Uncategorized", source="default")))
    await s.write(s.build(pairs(["a.py"], first=1)))  # the same consumer after a reload
    doc = stored(mongo_uri, mongo_db_name, "a.py")
    assert doc is not None and doc["category"] == "Development"


async def test_an_llm_verdict_is_never_overwritten_by_a_rule(
    db: AsyncDatabase[dict[str, Any]], mongo_uri: str, mongo_db_name: str
) -> None:
    await sink(db).write(sink(db).build(pairs(["ledger"], category="Finance", source="llm")))
    other = sink(db)
    await other.write(other.build(pairs(["ledger"], category="Uncategorized", source="default")))
    doc = stored(mongo_uri, mongo_db_name, "ledger")
    assert doc is not None and doc["category"] == "Finance" and doc["isLLMBased"]


async def test_an_llm_verdict_replaces_a_rule(
    db: AsyncDatabase[dict[str, Any]], mongo_uri: str, mongo_db_name: str
) -> None:
    first = sink(db)
    await first.write(first.build(pairs(["ledger"], category="Uncategorized", source="default")))
    other = sink(db)
    await other.write(other.build(pairs(["ledger"], category="Finance", source="llm")))
    doc = stored(mongo_uri, mongo_db_name, "ledger")
    assert doc is not None and doc["category"] == "Finance" and doc["isLLMBased"]


async def test_lanes_writing_the_same_new_keys_do_not_race(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    import asyncio

    s = sink(db)  # one sink per process, shared by its lanes
    titles = [f"f{i}.py" for i in range(50)]
    await asyncio.gather(*(s.write(s.build(pairs(titles, first=100 * n))) for n in range(4)))
    # One lane inserts each key; the others wait for it: no duplicate, no read back.
    assert s.round_trips == 5  # one categorized_data insert + four usage-log writes
    assert await db[CATEGORIZED_DATA].count_documents({}) == 50
    assert await db[USAGE_LOG].count_documents({}) == 200
