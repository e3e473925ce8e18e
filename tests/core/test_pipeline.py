"""The consumer end to end against real Valkey and MongoDB-wire servers."""

from __future__ import annotations

import random
import time

import pymongo
import pytest
import redis
from bson import ObjectId

from pomocore.consumers.app import runtime
from pomocore.consumers.batch import validate
from pomocore.consumers.consumer import stream_entries
from pomocore.core.settings import Settings
from pomocore.workload import MALFORMED_KINDS, Workload
from tests.support.consumer import drain
from tests.support.expected import (
    REASON_OF_MALFORMED_KIND,
    actual_leaderboards,
    assert_scores_equal,
    categories_of,
    reference_leaderboards,
)
from tests.support.streams import group_state, now_fields, publish


async def test_end_to_end_exact(settings: Settings) -> None:
    now = time.time()
    workload = Workload(users=300, distinct_variants=20, malformed_ratio=0.0, seed=1)
    good = list(workload.events(1500, now))
    bad = [workload.malformed(kind, now) for kind in MALFORMED_KINDS]
    events = good[:700] + bad + good[700:]
    ids = publish(settings.redis_url, settings.keys.stream_key, events)

    stats = await drain(settings)

    assert group_state(settings) == (0, 0)
    assert stats.committed == len(events)
    expected = reference_leaderboards(
        zip(good, categories_of(good), strict=True), settings.timezone
    )
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)

    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    logs = list(db.pomodoro_usage_log.find())
    assert len(logs) == len(good)
    by_user_total = sum(d["duration"] for d in logs)
    assert abs(by_user_total - sum(float(e["duration"]) for e in good)) < 1e-6
    sample = next(
        d
        for d in logs
        if d["userId"] == good[0]["userId"] and d["timestamp"] == float(good[0]["timestamp"])
    )
    assert set(sample) >= {
        "userId",
        "categorizedDataId",
        "categoryId",
        "category",
        "session",
        "sessionMinutes",
        "sessionDate",
        "timestamp",
        "duration",
    }
    distinct = {(e["app"], e["url"], e["title"]) for e in good}
    assert db.categorized_data.count_documents({}) == len(distinct)
    cat_doc = db.categorized_data.find_one({"_id": sample["categorizedDataId"]})
    assert cat_doc is not None and cat_doc["category"] == sample["category"]
    assert cat_doc["isLLMBased"] is False
    assert (
        cat_doc["categoryId"]
        == db.category_pattern.find_one({"category": sample["category"]})["_id"]
    )

    client = redis.Redis.from_url(settings.redis_url)
    dead = client.xrange(settings.keys.dead_letter_key)
    assert len(dead) == len(bad)
    by_entry = {f[b"dlq.entry_id"].decode(): f for _, f in dead}
    for kind, entry_id in zip(MALFORMED_KINDS, ids[700 : 700 + len(bad)], strict=True):
        fields = by_entry[entry_id]
        assert fields[b"dlq.reason"].decode() == REASON_OF_MALFORMED_KIND[kind], kind
        assert fields[b"dlq.stream"] == settings.keys.stream_key.encode()
        original = bad[MALFORMED_KINDS.index(kind)]
        for name, value in original.items():  # original fields kept byte for byte
            assert fields[name.encode()] == (value if isinstance(value, bytes) else value.encode())
    ends = [e for e in good if e.get("isEnd") == "true"]
    sessions = client.xrange(settings.keys.session_score_key)
    assert len(sessions) == len(ends) > 0
    assert {(f[b"userId"].decode(), f[b"session"].decode()) for _, f in sessions} == {
        (str(e["userId"]), str(e["session"])) for e in ends
    }


async def test_processing_the_same_entries_again_changes_nothing(settings: Settings) -> None:
    events = [now_fields(f"u{i % 7}", "Code", 10.25 + i, title=f"f{i}.py") for i in range(50)]
    events.append(now_fields("u1", "Slack", 5.0, isEnd="true", session="2"))
    events.append(now_fields("", "Code", 1.0))  # rejected
    publish(settings.redis_url, settings.keys.stream_key, events)
    client = redis.Redis.from_url(settings.redis_url)
    async with runtime(settings) as rt:
        reply = (
            await rt.redis.xreadgroup(
                settings.group, "c1", {settings.keys.stream_key: ">"}, count=100
            )
            if await _group(rt, settings)
            else None
        )
        assert reply is not None
        entries = stream_entries(reply)  # the runtime's client returns the raw reply
        await rt.consumer.processor.process(entries)
        before = _snapshot(client, settings)
        # The reply of the commit was lost / the entries were redelivered to a slow consumer:
        await rt.consumer.processor.process(entries)
        await rt.consumer.processor.process(entries[:10])
    assert _snapshot(client, settings) == before
    assert before["dlq"] == 1 and before["sessions"] == 1 and before["logs"] == 51


async def test_reclaimed_entries_count_once(settings: Settings) -> None:
    """A consumer stalls after MongoDB; another claims and commits; the first commits late."""
    events = [now_fields(f"u{i % 3}", "Code", 1.5, title=f"{i}.py") for i in range(30)]
    publish(settings.redis_url, settings.keys.stream_key, events)
    client = redis.Redis.from_url(settings.redis_url)
    async with runtime(settings) as rt:
        await _group(rt, settings)
        reply = await rt.redis.xreadgroup(
            settings.group, "slow", {settings.keys.stream_key: ">"}, count=100
        )
        entries = stream_entries(reply)  # the runtime's client returns the raw reply
        ids = [e[0] for e in entries]
        half = ids[:15]
        client.xclaim(settings.keys.stream_key, settings.group, "fast", 0, half)
        # "fast" commits its half first ...
        await rt.consumer.processor.process([e for e in entries if e[0] in half])
        # ... then "slow" commits all 30: only its 15 still-pending entries may count.
        outcome = await rt.consumer.processor.process(entries)
    assert outcome.skipped_already_acked == 15 and outcome.committed == 15
    expected = reference_leaderboards(((e, "Development") for e in events), settings.timezone)
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)
    assert group_state(settings) == (0, 0)


async def test_invalid_entries_never_poison_a_batch(settings: Settings) -> None:
    rng = random.Random(3)
    events: list[dict[str, str | bytes]] = []
    for i in range(200):
        fields: dict[str, str | bytes] = now_fields(f"u{i % 5}", "Code", 2.0, title=f"{i}")
        if i % 4 == 0:
            name = rng.choice(list(fields))
            fields[name] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        events.append(fields)
    publish(settings.redis_url, settings.keys.stream_key, events)
    await drain(settings)
    client = redis.Redis.from_url(settings.redis_url)
    dead = client.xlen(settings.keys.dead_letter_key)
    logs = pymongo.MongoClient(settings.mongo_uri)[
        settings.mongo_db
    ].pomodoro_usage_log.count_documents({})
    assert dead + logs == len(events) and dead > 0 and logs >= 150
    assert group_state(settings) == (0, 0)


async def test_upstream_ids_are_the_documents_updated(settings: Settings) -> None:
    cat_id, log_id = ObjectId(), ObjectId()
    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    db.categorized_data.insert_one(
        {"_id": cat_id, "app": "Code", "url": "", "title": "x", "category": "Uncategorized"}
    )
    db.pomodoro_usage_log.insert_one({"_id": log_id, "userId": "u9", "duration": 0})
    publish(
        settings.redis_url,
        settings.keys.stream_key,
        [
            now_fields(
                "u9",
                "Code",
                42.0,
                title="x",
                categorizedDataId=str(cat_id),
                pomodoroUsageLogId=str(log_id),
            ),
        ],
    )
    await drain(settings)
    assert db.pomodoro_usage_log.count_documents({}) == 1
    log = db.pomodoro_usage_log.find_one({"_id": log_id})
    assert log is not None and log["duration"] == 42.0 and log["categorizedDataId"] == cat_id
    assert log["category"] == "Development"
    doc = db.categorized_data.find_one({"_id": cat_id})
    assert doc is not None and doc["category"] == "Development"
    assert db.categorized_data.count_documents({}) == 1


async def test_leaderboard_only_sink(settings: Settings) -> None:
    import dataclasses

    s = dataclasses.replace(settings, sinks=("leaderboard",))
    events = [now_fields("u1", "Spotify", 30.0), now_fields("u2", "Steam", 12.0)]
    publish(s.redis_url, s.keys.stream_key, events)
    await drain(s)
    expected = reference_leaderboards(zip(events, ["Music", "Game"], strict=True), s.timezone)
    assert_scores_equal(actual_leaderboards(s.redis_url), expected)
    assert (
        "category_pattern"
        not in pymongo.MongoClient(s.mongo_uri)[s.mongo_db].list_collection_names()
    )


def test_validate_splits_a_batch() -> None:
    s = Settings.from_env({})
    good = {b"userId": b"u", b"app": b"Code", b"duration": b"1", b"timestamp": b"1000"}
    batch = validate([("1-0", good), ("1-1", {b"userId": b"u"}), ("1-2", None)], s, now_s=2000)
    assert [e.entry_id for e in batch.accepted] == ["1-0"]
    assert [(d.entry_id, d.reason) for d in batch.dead_letters] == [("1-1", "missing_field")]
    assert batch.trimmed == ["1-2"]


async def _group(rt: object, settings: Settings) -> bool:
    from pomocore.consumers.consumer import ensure_group

    await ensure_group(rt.redis, settings)  # type: ignore[attr-defined]
    return True


def _snapshot(client: redis.Redis, settings: Settings) -> dict[str, object]:
    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    return {
        "boards": actual_leaderboards(settings.redis_url),
        "dlq": client.xlen(settings.keys.dead_letter_key),
        "sessions": client.xlen(settings.keys.session_score_key),
        "logs": db.pomodoro_usage_log.count_documents({}),
        "cats": db.categorized_data.count_documents({}),
        "pending": client.xpending(settings.keys.stream_key, settings.group)["pending"],
    }


pytestmark = pytest.mark.timeout(120)


async def test_leaderboard_expiry_is_set_by_the_pipeline(settings: Settings) -> None:
    import dataclasses

    s = dataclasses.replace(settings, ttl_daily_days=2, ttl_monthly_days=400)
    publish(s.redis_url, s.keys.stream_key, [now_fields("u1", "Spotify", 30.0)])
    await drain(s)
    client = redis.Redis.from_url(s.redis_url)
    keys = {k.decode().rsplit(":", 1)[1]: k for k in client.scan_iter(match="leaderboard:*")}
    daily = next(k for label, k in keys.items() if "-W" not in label and "-M" not in label)
    weekly = next(k for label, k in keys.items() if "-W" in label)
    assert client.ttl(daily) > 0 and client.ttl(weekly) == -1
    assert 2 * 86400 < client.ttl(daily) <= 3 * 86400 + 60


async def test_process_pool_gives_the_same_results(settings: Settings) -> None:
    import dataclasses

    s = dataclasses.replace(settings, classifier_pool_workers=1, classifier_pool_threshold=1)
    events = list(Workload(users=50, distinct_variants=40, malformed_ratio=0.0, seed=5).events(400))
    publish(s.redis_url, s.keys.stream_key, events)
    await drain(s)
    expected = reference_leaderboards(zip(events, categories_of(events), strict=True), s.timezone)
    assert_scores_equal(actual_leaderboards(s.redis_url), expected)


async def test_the_consumer_leaves_the_garbage_collector_as_it_found_it(
    settings: Settings,
) -> None:
    import gc

    before = gc.get_threshold()
    publish(settings.redis_url, settings.keys.stream_key, [now_fields("u1", "Code", 1.0)])
    await drain(settings)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
