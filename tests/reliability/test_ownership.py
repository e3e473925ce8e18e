"""One user cannot rewrite another user's data (issue #14 §1): producer-supplied ids
against a real consumer, Valkey and the MongoDB-wire server.

A `pomodoroUsageLogId` only updates an existing usage log of the event's own user: a
foreign id is dead-lettered as `foreign_document`, an unknown one as `unknown_document`,
the rest of the batch is committed, and the rejected entries add nothing anywhere. A
retry of an entry whose first attempt already wrote its user's log neither counts it
twice nor dead-letters it (docs/guarantees.md, "Ownership of producer-supplied ids").
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pymongo
import pytest
import redis
from bson import ObjectId

from pomocore.core.decision import ClassKey, Decision
from pomocore.core.ids import categorized_data_id, stream_tag, usage_log_id
from pomocore.core.settings import Settings
from pomocore.sinks.mongo import ENTRY_MARK
from tests.support.consumer import drain, running_consumer
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    categories_of,
    rebuild_check,
    reference_leaderboards,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.servers import with_servers
from tests.support.streams import dead_letters, is_drained, now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

Fields = dict[str, str | bytes]


def _db(settings: Settings) -> Any:
    return pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]


def _upstream_log(settings: Settings, user: str) -> str:
    """A usage log the producer's backend created (CONTRACT §1: "created upstream")."""
    doc = {"userId": user, "duration": 1.0, "category": "Finance"}
    return str(_db(settings).pomodoro_usage_log.insert_one(doc).inserted_id)


def _reasons(settings: Settings) -> dict[str, tuple[str, str]]:
    return {
        f[b"dlq.entry_id"].decode(): (f[b"dlq.reason"].decode(), f[b"dlq.field"].decode())
        for f in dead_letters(settings)
    }


def _assert_counted(settings: Settings, counted: list[Fields]) -> None:
    expected = reference_leaderboards(
        zip(counted, categories_of(counted), strict=True), settings.timezone
    )
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)


async def test_hostile_producers_are_dead_lettered_and_the_rest_of_the_batch_counts(
    settings: Settings,
) -> None:
    """One burst (one batch): alice updates her own upstream log; mallory names bob's log,
    an id that exists nowhere, and the derived id of an entry alice will write later (ids
    are predictable: entry time and sequence). Mallory's entries are dead-lettered and
    change nothing; alice's and bob's count; alice's later event writes her own log."""
    key = settings.keys.stream_key
    alices, bobs = _upstream_log(settings, "alice"), _upstream_log(settings, "bob")
    future_id = f"{int(time.time() * 1000) + 60_000}-0"  # XADD of alice's next entry
    squat = str(usage_log_id(stream_tag(key), future_id))
    burst = [
        now_fields("alice", "Code", 30.0, title="mine.py", pomodoroUsageLogId=alices),
        now_fields("mallory", "Code", 500.0, pomodoroUsageLogId=bobs, isEnd="true", session=3),
        now_fields("mallory", "Steam", 700.0, pomodoroUsageLogId=str(ObjectId())),
        now_fields("mallory", "Figma", 900.0, pomodoroUsageLogId=squat),
        now_fields("bob", "Slack", 12.0),
    ]
    ids = publish(settings.redis_url, key, burst, atomic=True)
    await drain(settings)
    assert _reasons(settings) == {
        ids[1]: ("foreign_document", "pomodoroUsageLogId"),
        ids[2]: ("unknown_document", "pomodoroUsageLogId"),
        ids[3]: ("unknown_document", "pomodoroUsageLogId"),
    }
    db = _db(settings)
    bob = db.pomodoro_usage_log.find_one({"_id": ObjectId(bobs)})
    assert bob == {"_id": ObjectId(bobs), "userId": "bob", "duration": 1.0, "category": "Finance"}
    assert db.pomodoro_usage_log.count_documents({"userId": "mallory"}) == 0
    assert db.pomodoro_usage_log.count_documents({"_id": ObjectId(squat)}) == 0
    alice = db.pomodoro_usage_log.find_one({"_id": ObjectId(alices)})
    assert (alice["duration"], alice["category"], alice[ENTRY_MARK]) == (
        30.0,
        "Development",
        ids[0],
    )

    later = now_fields("alice", "Code", 45.0, title="next.py")
    client = redis.Redis.from_url(settings.redis_url)
    assert client.xadd(key, later, id=future_id).decode() == future_id  # type: ignore[arg-type]
    client.close()
    await drain(settings)
    doc = db.pomodoro_usage_log.find_one({"_id": ObjectId(squat)})
    assert (doc["userId"], doc["duration"]) == ("alice", 45.0)
    _assert_counted(settings, [burst[0], burst[4], later])  # no key holds mallory
    sessions = redis.Redis.from_url(settings.redis_url).xrange(settings.keys.session_score_key)
    assert sessions == []  # mallory's rejected session end scored nothing
    assert len(dead_letters(settings)) == 3
    assert is_drained(settings)


async def test_a_foreign_categorized_data_id_neither_rewrites_nor_loses_the_event(
    settings: Settings,
) -> None:
    """Mallory names the record of alice's key with her own (app, url, title): the record
    keeps its key and category, and mallory's event counts under her own key's record."""
    db = _db(settings)
    record = {"app": "Code", "url": "", "title": "alice.py", "category": "Finance"}
    alices = db.categorized_data.insert_one(record).inserted_id
    event = now_fields("mallory", "Steam", 20.0, categorizedDataId=str(alices))
    publish(settings.redis_url, settings.keys.stream_key, [event])
    await drain(settings)
    assert db.categorized_data.find_one({"_id": alices}) == {"_id": alices, **record}
    log = db.pomodoro_usage_log.find_one({"userId": "mallory"})
    assert log["categorizedDataId"] == categorized_data_id("Steam", "", "")
    _assert_counted(settings, [event])
    assert dead_letters(settings) == []


class HookedClassifier:
    """The consumer's own classifier that, on its n-th call, first runs `hooks[n]`."""

    def __init__(self, inner: Any, hooks: list[Any]) -> None:
        self.inner = inner
        self.hooks = hooks
        self.calls = 0

    def classify_many(self, keys: list[ClassKey]) -> list[Decision]:
        if self.calls < len(self.hooks):
            self.hooks[self.calls]()
        self.calls += 1
        return self.inner.classify_many(keys)


async def test_a_retried_batch_neither_double_counts_nor_dead_letters_its_own_logs(
    settings: Settings,
) -> None:
    """First attempt: the ownership check passes, the usage logs are written, and the
    commit fails (Redis resets the connection). The retry finds the logs written by these
    very entries: none is dead-lettered, each counts once; the foreign one is rejected
    once."""
    proxy = FaultProxy(urlsplit(settings.redis_url).port or 6379)
    proxy.start()
    try:
        s = with_servers(settings, redis_url=f"redis://{proxy.host_port}/0", lanes=1)
        own = [_upstream_log(settings, f"u{i}") for i in range(6)]
        events = [
            now_fields(f"u{i}", "Code", 10.0 + i, title=f"t{i}", pomodoroUsageLogId=log_id)
            for i, log_id in enumerate(own)
        ]
        foreign = now_fields("mallory", "Code", 99.0, pomodoroUsageLogId=own[0])
        ids = publish(settings.redis_url, s.keys.stream_key, [*events, foreign], atomic=True)
        hooks = [lambda: proxy.set_mode("reset"), lambda: proxy.set_mode("pass")]
        async with running_consumer(s) as rt:
            # before the consumer's first read
            classifier = HookedClassifier(rt.consumer.processor.classifier, hooks)
            rt.consumer.processor.classifier = classifier
            await wait_until(lambda: is_drained(settings), 90, "the batch was not committed")
            assert rt.consumer.stats.sink_failures >= 1  # the first commit did fail
        assert classifier.calls >= 2
    finally:
        proxy.close()
    assert _reasons(settings) == {ids[-1]: ("foreign_document", "pomodoroUsageLogId")}
    _assert_counted(settings, events)
    db = _db(settings)
    for log_id, entry_id in zip(own, ids, strict=False):
        doc = db.pomodoro_usage_log.find_one({"_id": ObjectId(log_id)})
        assert doc[ENTRY_MARK] == entry_id
    assert rebuild_check(settings, events) == []
