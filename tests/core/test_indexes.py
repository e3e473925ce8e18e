"""MongoDB indexes (issue #16 §7): every query the code sends is listed and served by
`_id` or an index pomocore creates; the indexes are created at start-up, idempotently,
and the MongoDB-wire server's planner uses them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo import AsyncMongoClient

from pomocore.consumers.app import runtime
from pomocore.consumers.indexes import INDEXES, QUERIES, Query, ensure_indexes, serving_index
from pomocore.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# A MongoDB call whose first argument is not a string literal (str.find("/") is not one)
CALL = re.compile(
    r"\.(find|find_one|count_documents|update_one|update_many|delete_one|delete_many|"
    r"aggregate|distinct|find_one_and_update|replace_one)\((?!\s*[\"'])(?!ch\))"
    r"|\b(UpdateOne|ReplaceOne|DeleteOne|UpdateMany)\("
)
DEF = re.compile(r"^\s*(?:async )?def (\w+)")


def call_sites() -> set[str]:
    """`path::function` of every MongoDB query in the package's source."""
    sites = set()
    for folder in ("shell", "core", "classifiers", "consumers", "sinks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            function = "<module>"
            for line in path.read_text().splitlines():
                if m := DEF.match(line):
                    function = m.group(1)
                if CALL.search(line) and not line.lstrip().startswith(("#", '"')):
                    sites.add(f"{path.relative_to(ROOT)}::{function}")
    return sites


def test_every_query_of_the_code_is_listed() -> None:
    listed = {q.where for q in QUERIES}
    found = call_sites()
    assert found - listed == set(), f"queries not in consumers/indexes.py QUERIES: {found - listed}"
    assert listed - found == set(), f"QUERIES names call sites that are gone: {listed - found}"


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.where)
def test_every_query_shape_is_served(query: Query) -> None:
    assert serving_index(query) is not None, f"{query} would scan its collection"


@pytest.mark.parametrize(
    ("query", "served"),
    [
        (Query("pomodoro_usage_log", (), "x", range="timestamp"), "pomocore_timestamp"),
        (Query("pomodoro_usage_log", ("userId",), "", range="timestamp"), "pomocore_user_timestamp"),  # noqa: E501
        (Query("pomodoro_usage_log", ("userId",), "x"), "pomocore_user_timestamp"),
        (Query("pomodoro_usage_log", (), "x", range="duration"), None),
        (Query("pomodoro_usage_log", ("category",), "x"), None),
        (Query("categorized_data", ("isLLMBased",), "x"), None),
        (Query("learned_pattern_review", ("status",), "x"), "pomocore_status"),
        (Query("category_pattern", ("_id", "whatever"), "x"), "_id"),
        (Query("categorized_data", (), "x", range="_id"), "_id"),
        (Query("categorized_data", ("app",), "x", range="_id"), None),
    ],
)  # fmt: skip
def test_serving_index_table(query: Query, served: str | None) -> None:
    got = serving_index(query)
    assert (got if isinstance(got, str) or got is None else got.name) == served


def index_keys(db: Any, collection: str) -> set[tuple[tuple[str, int], ...]]:
    return {tuple(spec["key"].items()) for spec in db[collection].list_indexes()}


async def test_indexes_created_once_and_used(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_uri)
    sync: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_uri)
    try:
        db = client[settings.mongo_db]
        created = await ensure_indexes(db)
        assert sorted(created) == sorted(i.name for i in INDEXES)
        assert await ensure_indexes(db) == []  # idempotent: a restart creates nothing
        sdb = sync[settings.mongo_db]
        for index in INDEXES:
            assert index.keys in index_keys(sdb, index.collection), index.name
        logs = sdb["pomodoro_usage_log"]
        logs.insert_many(
            [{"userId": f"u{i % 5}", "timestamp": i, "duration": 1} for i in range(50)]
        )
        plan = logs.find({"timestamp": {"$gte": 10, "$lt": 20}}).explain()
        # the MongoDB-wire server explains with its SQL planner's words; MongoDB says IXSCAN
        text = str(plan.get("queryPlanner", {}).get("winningPlan"))
        assert "INDEX" in text or "IXSCAN" in text, text
    finally:
        await client.close()
        sync.close()


async def test_an_index_with_the_same_keys_under_another_name_counts(settings: Settings) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_uri)
    try:
        db = client[settings.mongo_db]
        await db["learned_pattern_review"].create_index([("status", 1)], name="operators_own")
        created = await ensure_indexes(db)
        assert "pomocore_status" not in created and len(created) == len(INDEXES) - 1
    finally:
        await client.close()


async def test_a_consumer_creates_them_at_start_up(settings: Settings) -> None:
    async with runtime(settings):
        pass
    sync: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_uri)
    try:
        for index in INDEXES:
            assert index.keys in index_keys(sync[settings.mongo_db], index.collection)
    finally:
        sync.close()
