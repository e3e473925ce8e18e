"""Patterns in MongoDB, the change announcement and live reload, on real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bson import ObjectId
from pymongo import AsyncMongoClient

from pomocore import exits
from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import (
    COLLECTION,
    PatternSet,
    default_category_id,
    documents_to_json,
    load_default_pattern_set,
)
from pomocore.classifiers.reload import watch_patterns
from pomocore.classifiers.store import (
    load_or_seed_patterns,
    publish_change,
    read_stored_patterns,
    save_patterns,
)
from pomocore.classify_cli import patterns_command
from pomocore.core.errors import BackendUnavailable, ClassifierError
from pomocore.core.ids import categorized_data_id
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.sinks.mongo import CATEGORIZED_DATA, USAGE_LOG
from tests.support.consumer import running_consumer
from tests.support.streams import is_drained, now_fields, publish
from tests.support.waiting import wait_until

KEYS = KeySpace()
NEW_HOST = ("Google Chrome", "https://brand-new-site.example/x", "")


@pytest.fixture
async def db(mongo_uri: str, mongo_db_name: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    yield client[mongo_db_name]
    await client.drop_database(mongo_db_name)
    await client.close()


async def test_load_seeds_an_empty_collection_then_reads_it_back(db: Any) -> None:
    seeded = await load_or_seed_patterns(db)
    assert seeded == load_default_pattern_set()
    assert await db[COLLECTION].count_documents({}) == len(seeded.entries)
    again = await load_or_seed_patterns(db)
    assert again.version == seeded.version and again.category_ids == seeded.category_ids


async def test_read_returns_the_stored_set_and_never_seeds(db: Any) -> None:
    assert await read_stored_patterns(db) is None
    assert await db[COLLECTION].count_documents({}) == 0  # looking wrote nothing
    seeded = await load_or_seed_patterns(db)
    stored = await read_stored_patterns(db)
    assert stored is not None and stored.version == seeded.version


def test_patterns_export_reports_an_unreachable_mongodb(settings: Settings) -> None:
    with socket.socket() as free:  # a loopback port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    away = dataclasses.replace(settings, mongo_uri=f"mongodb://127.0.0.1:{port}")
    # raised to the command's edge, which prints one line and exits 3 (tests/ops/test_cli.py)
    with pytest.raises(ClassifierError, match=f"cannot read {COLLECTION}") as info:
        patterns_command("export", away, None, io.StringIO())
    translated = exits.translate(info.value, away.redis_url, away.mongo_uri)
    assert isinstance(translated, BackendUnavailable) and translated.backend == "MongoDB"


async def test_save_is_idempotent_and_keeps_one_document_per_category(db: Any) -> None:
    ps = load_default_pattern_set()
    await save_patterns(db, ps)
    await save_patterns(db, ps)
    await db[COLLECTION].insert_one({"category": "Music", "appPatterns": ["Stray"]})  # other _id
    await save_patterns(db, ps)
    assert await db[COLLECTION].count_documents({}) == len(ps.entries)
    assert (await load_or_seed_patterns(db)).version == ps.version


async def test_publish_change_bumps_the_counter_and_announces_it(aredis: aioredis.Redis) -> None:
    pubsub = aredis.pubsub()
    await pubsub.subscribe(KEYS.patterns_channel)
    assert await publish_change(aredis, KEYS) == 1
    assert await publish_change(aredis, KEYS) == 2
    got = []
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if msg:
            got.append(msg["data"])
        if len(got) == 2:
            break
    await pubsub.aclose()
    assert got == [b"1", b"2"]


async def _watching(
    aredis: aioredis.Redis,
    db: Any,
    poll_s: float,
    body: Callable[[CachingClassifier], Awaitable[None]],
    mongo_every: int = 12,
) -> None:
    holder = CachingClassifier(Classifier.from_patterns(await load_or_seed_patterns(db)), 1000)
    stop = asyncio.Event()
    task = asyncio.create_task(
        watch_patterns(aredis, db, holder, KEYS, poll_s, stop, mongo_every=mongo_every)
    )
    try:
        await asyncio.sleep(0.2)  # subscribed
        await body(holder)
    finally:
        stop.set()
        await asyncio.wait_for(task, 3)


def _with_new_host(category: str = "Education") -> Any:
    return load_default_pattern_set().with_pattern(category, "domain", "brand-new-site.example")


async def test_a_pattern_added_in_mongodb_reaches_a_running_consumer(
    aredis: aioredis.Redis, db: Any
) -> None:
    async def body(holder: CachingClassifier) -> None:
        assert holder.classify(*NEW_HOST).category == "Browsing"  # cached now
        await save_patterns(db, _with_new_host())
        await publish_change(aredis, KEYS)
        took = await wait_until(lambda: holder.classify(*NEW_HOST).category == "Education", 5)
        assert took < 2.0  # pub/sub, not the 60 s poll

    await _watching(aredis, db, poll_s=60, body=body)


async def test_a_missed_announcement_is_caught_by_polling_the_counter(
    aredis: aioredis.Redis, db: Any
) -> None:
    async def body(holder: CachingClassifier) -> None:
        await save_patterns(db, _with_new_host())
        await aredis.incr(KEYS.patterns_version_key)  # no PUBLISH
        await wait_until(lambda: holder.classify(*NEW_HOST).category == "Education", 3)

    await _watching(aredis, db, poll_s=0.3, body=body)


async def test_an_edit_straight_in_mongodb_is_caught_by_the_periodic_reread(
    aredis: aioredis.Redis, db: Any
) -> None:
    async def body(holder: CachingClassifier) -> None:
        await db[COLLECTION].update_one(
            {"category": "Game"}, {"$push": {"domainPatterns": "brand-new-site.example"}}
        )
        await wait_until(lambda: holder.classify(*NEW_HOST).category == "Game", 3)

    await _watching(aredis, db, poll_s=0.2, body=body, mongo_every=2)


async def test_a_bad_pattern_document_keeps_the_old_matcher(
    aredis: aioredis.Redis, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(holder: CachingClassifier) -> None:
        before = holder.version
        await db[COLLECTION].update_one({"category": "Game"}, {"$set": {"priority": "high"}})
        await publish_change(aredis, KEYS)
        await wait_until(lambda: "pattern reload failed" in caplog.text, 3)
        assert holder.version == before
        assert holder.classify("Code", "", "").category == "Development"
        # fixed later: picked up again
        await db[COLLECTION].update_one({"category": "Game"}, {"$set": {"priority": 160}})
        await save_patterns(db, _with_new_host("Game"))
        await publish_change(aredis, KEYS)
        await wait_until(lambda: holder.classify(*NEW_HOST).category == "Game", 3)

    await _watching(aredis, db, poll_s=60, body=body)


def test_patterns_command_load_export_check(settings: Settings, tmp_path: Path) -> None:
    ps = _with_new_host("Finance")
    path = tmp_path / "p.json"
    path.write_text(documents_to_json(ps), "utf-8")
    out = io.StringIO()
    assert patterns_command("load", settings, str(path), out) == 0
    assert f"patterns {ps.version}, counter 1" in out.getvalue()

    out = io.StringIO()
    assert patterns_command("export", settings, None, out) == 0
    exported = json.loads(out.getvalue())["categories"]
    finance = next(c for c in exported if c["category"] == "Finance")
    assert {"pattern": "brand-new-site.example", "learned": True} in finance["domainPatterns"]

    out = io.StringIO()
    assert patterns_command("check", settings, None, out) == 0
    assert "0 error(s)" in out.getvalue()

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [{"category": "Music", "appPatterns": ["X"]}, {"category": "SNS", "appPatterns": ["x"]}]
        ),
        "utf-8",
    )
    out = io.StringIO()
    assert patterns_command("check", settings, str(bad), out) == 1
    assert "claimed by" in out.getvalue()


async def test_a_category_given_another_id_reaches_the_documents_a_running_consumer_writes(
    settings: Settings, aredis: aioredis.Redis, db: Any
) -> None:
    """A pattern file may carry its own `_id`s: after its load, the documents a running
    consumer writes name the category's new id (the sink used to keep the ids it started
    with, so `categoryId` named a deleted category_pattern document until a restart)."""
    s = dataclasses.replace(settings, pattern_poll_s=0.2)
    old_id = default_category_id("Development")
    moved = load_default_pattern_set()
    new_id = ObjectId()
    entries = [dataclasses.replace(e, id=new_id) if e.category == "Development" else e
               for e in moved.entries]  # fmt: skip
    moved = PatternSet(tuple(entries))
    async with running_consumer(s) as rt:
        publish(s.redis_url, s.keys.stream_key, [now_fields("u1", "Code", 5.0, title="a.py")])
        await wait_until(lambda: is_drained(s), 20)
        assert await _category_id_of(db, "a.py") == old_id
        await save_patterns(db, moved)
        await publish_change(aredis, s.keys)
        await wait_until(lambda: rt.classifier.category_ids["Development"] == new_id, 5)
        publish(s.redis_url, s.keys.stream_key, [now_fields("u1", "Code", 5.0, title="b.py")])
        await wait_until(lambda: is_drained(s), 20)
    assert await _category_id_of(db, "b.py") == new_id
    b_key = categorized_data_id("Code", "", "b.py")
    # (read whole: the MongoDB-wire server matches ObjectId equalities on `_id` only)
    logs = {d["categorizedDataId"]: d async for d in db[USAGE_LOG].find({})}
    assert logs[b_key]["categoryId"] == new_id


async def _category_id_of(db: Any, title: str) -> Any:
    doc = await db[CATEGORIZED_DATA].find_one({"_id": categorized_data_id("Code", "", title)})
    assert doc is not None, title
    return doc["categoryId"]
