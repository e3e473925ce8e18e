"""The usage log and the leaderboard agree on an event's category, whatever the decision
does between two processings of the event (docs/guarantees.md, "One category per event").

Real Valkey and MongoDB-wire servers; the classifiers are scripted (a decision that
changes between attempts is the point), the faults are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import pymongo
import pytest
import redis
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from pomocore.consumers.batch import BatchProcessor, Entry
from pomocore.consumers.consumer import ensure_group
from pomocore.core.decision import ClassKey, Decision
from pomocore.core.ids import stream_tag, usage_log_id
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.sinks.commit import Committer
from pomocore.sinks.mongo import MongoSink
from pomocore.sinks.plan import CommitPlan, IncrementBuilder
from tests.support.consumer import drain, running_consumer
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    rebuild_check,
    reference_leaderboards,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.patterns import default_classifier
from tests.support.servers import with_servers
from tests.support.streams import is_drained, now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

FIRST, THEN = "Development", "Game"  # a work category and another: the `work` keys differ


class ScriptedClassifier:
    """Answers `categories[n]` on its n-th call (the last one from then on) and runs
    `hooks[n]` first, if there is one."""

    def __init__(self, categories: Sequence[str], hooks: Sequence[Callable[[], None]] = ()):
        self.categories = list(categories)
        self.hooks = list(hooks)
        self.calls = 0

    def classify_many(self, keys: Sequence[ClassKey]) -> list[Decision]:
        n, self.calls = self.calls, self.calls + 1
        if n < len(self.hooks):
            self.hooks[n]()
        category = self.categories[min(n, len(self.categories) - 1)]
        return [Decision(category, "app", "scripted")] * len(keys)


def _events(n: int, **extra: str) -> list[dict[str, str | bytes]]:
    return [now_fields(f"u{i % 3}", "Code", 10.0 + i, title=f"t{i}", **extra) for i in range(n)]


def _usage_log_categories(settings: Settings) -> list[str]:
    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    return [d.get("category") for d in db.pomodoro_usage_log.find({}, {"category": 1})]


def _assert_counted_as(settings: Settings, events: list[dict[str, str | bytes]], cat: str) -> None:
    """Every event's usage log says `cat`, and `cat`'s keys (only) received its duration."""
    assert _usage_log_categories(settings) == [cat] * len(events)
    expected = reference_leaderboards([(e, cat) for e in events], settings.timezone)
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)
    assert rebuild_check(settings, events) == []


async def test_a_retried_batch_keeps_the_category_of_its_usage_logs(settings: Settings) -> None:
    """First attempt: classified FIRST, usage logs written, the commit fails (Redis resets
    the connection). The retry classifies THEN (an LLM answer arrived, patterns reloaded):
    the leaderboards must still get FIRST, the category the usage logs hold."""
    proxy = FaultProxy(urlsplit(settings.redis_url).port or 6379)
    proxy.start()
    try:
        s = with_servers(settings, redis_url=f"redis://{proxy.host_port}/0", lanes=1)
        events = _events(20)
        publish(settings.redis_url, s.keys.stream_key, events)
        classifier = ScriptedClassifier(
            [FIRST, THEN], [lambda: proxy.set_mode("reset"), lambda: proxy.set_mode("pass")]
        )
        async with running_consumer(s) as rt:
            rt.consumer.processor.classifier = classifier  # before the consumer's first read
            await wait_until(lambda: is_drained(settings), 90, "the batch was not committed")
            assert rt.consumer.stats.sink_failures >= 1  # the first commit did fail
        assert classifier.calls >= 2
    finally:
        proxy.close()
    _assert_counted_as(settings, events, FIRST)


class GatedCommitter(Committer):
    """A real commit that waits for `gate`: the test decides which consumer commits first.
    `reached` is set when the batch's MongoDB writes are done and its commit is next."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def commit_once(self, plan: CommitPlan) -> tuple[bool, list[str]]:
        self.reached.set()
        await self.gate.wait()
        return await super().commit_once(plan)


@dataclasses.dataclass
class Lane:
    processor: BatchProcessor
    committer: GatedCommitter


@pytest.fixture
async def lanes(settings: Settings) -> AsyncIterator[Callable[[str, str], Lane]]:
    """`make(consumer, category)`: a batch processor of its own (its own MongoSink memory,
    as another process has) whose classifier answers `category`."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_uri)
    aredis = aioredis.Redis.from_url(settings.redis_url)
    db = client[settings.mongo_db]
    ids = default_classifier().category_ids
    builder = IncrementBuilder(settings.keys, PeriodCalculator(settings.timezone))

    def make(consumer: str, category: str) -> Lane:
        s = dataclasses.replace(settings, consumer_name=consumer)
        committer = GatedCommitter(aredis, s.keys, s.group, consumer)
        mongo = MongoSink(db, s.keys.stream_key, ids)
        classifier = ScriptedClassifier([category])
        return Lane(BatchProcessor(s, classifier, builder, committer, mongo=mongo), committer)

    yield make
    await aredis.aclose()
    await client.close()


def _read_as(settings: Settings, consumer: str) -> list[Entry]:
    r = redis.Redis.from_url(settings.redis_url)
    reply: Any = r.xreadgroup(settings.group, consumer, {settings.keys.stream_key: ">"})
    r.close()
    return [(i.decode(), fields) for _, entries in reply for i, fields in entries]


def _claim_as(settings: Settings, consumer: str, entries: list[Entry]) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    r.xclaim(settings.keys.stream_key, settings.group, consumer, 0, [i for i, _ in entries])
    r.close()


@pytest.mark.parametrize("producer_ids", [False, True], ids=["derived-ids", "producer-ids"])
@pytest.mark.parametrize("first_commit", ["old", "new"])
async def test_two_consumers_one_entry_one_category(
    settings: Settings,
    aredis: aioredis.Redis,
    lanes: Callable[[str, str], Lane],
    producer_ids: bool,
    first_commit: str,
) -> None:
    """Consumer `old` (patterns of one version) reads the entries, writes their usage logs
    as FIRST and stalls before its commit; consumer `new` (another version) reclaims them
    and classifies THEN. Whoever commits first, the leaderboards get the category of the
    usage logs, FIRST: the usage log written first decides.

    With ids from the producer (`pomodoroUsageLogId`, documents updated in place), `new`
    must not overwrite what `old` wrote for the same entries either."""
    events = _events(12)
    if producer_ids:  # the producer created the documents upstream (CONTRACT §3)
        db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
        for fields in events:
            doc_id = db.pomodoro_usage_log.insert_one({"userId": fields["userId"]}).inserted_id
            fields["pomodoroUsageLogId"] = str(doc_id)
    await ensure_group(aredis, settings)
    publish(settings.redis_url, settings.keys.stream_key, events)
    old, new = lanes("old", FIRST), lanes("new", THEN)
    entries = _read_as(settings, "old")
    old_task = asyncio.create_task(old.processor.process(entries))
    await asyncio.wait_for(old.committer.reached.wait(), 30)
    _claim_as(settings, "new", entries)  # `old` looked dead: its entries were reclaimed
    new_task = asyncio.create_task(new.processor.process(entries))
    await asyncio.wait_for(new.committer.reached.wait(), 30)
    order = (old, new) if first_commit == "old" else (new, old)
    order[0].committer.gate.set()
    first = await asyncio.wait_for(old_task if first_commit == "old" else new_task, 30)
    order[1].committer.gate.set()
    second = await asyncio.wait_for(new_task if first_commit == "old" else old_task, 30)
    assert (first.committed, second.committed) == (len(events), 0)
    assert second.skipped_already_acked == len(events)
    assert is_drained(settings)
    _assert_counted_as(settings, events, FIRST)


async def test_a_stored_category_outside_the_taxonomy_is_not_a_key_name(
    settings: Settings,
) -> None:
    """A usage log that pomocore did not write, under the event's id, with a category that
    is no category: the event keeps its own decision, no leaderboard key takes that name."""
    events = _events(3)
    ids = publish(settings.redis_url, settings.keys.stream_key, events)
    db = pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]
    tag = stream_tag(settings.keys.stream_key)
    for entry_id in ids:
        db.pomodoro_usage_log.insert_one(
            {"_id": usage_log_id(tag, entry_id), "category": "{evil}:x"}
        )
    await drain(settings)
    expected = reference_leaderboards([(e, FIRST) for e in events], settings.timezone)
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)
