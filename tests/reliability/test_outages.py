"""Redis and MongoDB outages against real servers: no crash, no loss, nothing twice."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import redis
from pymongo.errors import BulkWriteError

from pomocore.core.errors import MongoWriteError
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from pomocore.sinks.mongo import MongoSink
from tests.support.consumer import running_consumer
from tests.support.expected import (
    actual_leaderboards,
    assert_exact,
    assert_scores_equal,
    categories_of,
    reference_leaderboards,
    usage_log_count,
)
from tests.support.servers import with_servers
from tests.support.streams import dead_letters, group_state, is_drained, now_fields, publish
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def _events(n: int, offset: int = 0) -> list[dict[str, str | bytes]]:
    apps = ["Code", "Slack", "Figma", "Spotify", "Google Chrome"]
    return [
        now_fields(
            f"u{(i + offset) % 11}",
            apps[i % 5],
            1.5 + (i % 13) * 0.25,
            url="https://github.com/x" if i % 5 == 4 else "",
        )
        for i in range(n)
    ]


async def test_redis_killed_and_restarted_mid_batch(
    settings: Settings, own_redis: EmbeddedRedis
) -> None:
    s = with_servers(settings, redis_url=own_redis.url, mongo_uri=settings.mongo_uri, batch_size=50)
    first, second = _events(3000), _events(500, offset=3)
    async with running_consumer(s) as rt:
        publish(s.redis_url, s.keys.stream_key, first)
        await wait_until(lambda: rt.consumer.stats.committed >= 300)
        own_redis.kill()  # SIGKILL while batches are in flight
        await asyncio.sleep(1.0)
        own_redis.start()  # same port and AOF (appendfsync always)
        publish(s.redis_url, s.keys.stream_key, second)
        await wait_until(lambda: is_drained(s), 120)
        assert rt.consumer.stats.redis_failures + rt.consumer.stats.sink_failures > 0
    assert_exact(s, first + second)
    assert dead_letters(s) == []


async def test_group_recreated_after_flush(settings: Settings) -> None:
    s = dataclasses.replace(settings, batch_size=50)
    before, after = _events(200), _events(300, offset=5)
    async with running_consumer(s):
        publish(s.redis_url, s.keys.stream_key, before)
        await wait_until(lambda: is_drained(s))
        redis.Redis.from_url(s.redis_url).flushall()  # NOGROUP on the next read
        await asyncio.sleep(0.3)
        publish(s.redis_url, s.keys.stream_key, after)
        await wait_until(lambda: is_drained(s))
    expected = reference_leaderboards(zip(after, categories_of(after), strict=True), s.timezone)
    assert_scores_equal(actual_leaderboards(s.redis_url), expected)
    assert usage_log_count(s) == len(before) + len(after)


async def test_mongo_down_nothing_acknowledged_reading_stops_then_exact(
    settings: Settings, own_mongo: EmbeddedMongo
) -> None:
    s = with_servers(
        settings, mongo_uri=own_mongo.url, batch_size=50, mongo_retry_max=1, max_deliveries=2
    )
    first, second = _events(200), _events(600, offset=7)
    async with running_consumer(s) as rt:
        publish(s.redis_url, s.keys.stream_key, first)
        await wait_until(lambda: is_drained(s))
        own_mongo.kill()
        committed = rt.consumer.stats.committed
        publish(s.redis_url, s.keys.stream_key, second)
        await asyncio.sleep(8)  # several abandoned retry rounds
        lag, pending = group_state(s)
        assert rt.consumer.stats.committed == committed  # nothing acknowledged
        # one batch in hand per lane, not piled up (backpressure)
        assert pending <= s.batch_size * s.lanes
        assert lag >= len(second) - s.batch_size * s.lanes
        assert rt.consumer.stats.sink_failures >= 1
        own_mongo.start()
        await wait_until(lambda: is_drained(s), 120)
    assert_exact(s, first + second)
    # an outage is not a poison message: nothing dead-lettered for max_deliveries
    assert dead_letters(s) == []


class _FakeCollection:
    def __init__(self, error: BulkWriteError) -> None:
        self.error = error

    async def bulk_write(self, ops: Any, ordered: bool) -> None:
        raise self.error


class _FakeDb(dict[str, Any]):
    pass


def _sink(error: BulkWriteError) -> MongoSink:
    db: Any = _FakeDb(pomodoro_usage_log=_FakeCollection(error))
    return MongoSink(db, "s", {})


async def test_duplicate_key_only_bulk_error_is_success() -> None:
    dup = [{"index": i, "code": 11000, "errmsg": "dup"} for i in (4, 0, 2)]
    # Success, naming the ops that hit an existing document (pymongo's op indexes).
    assert await _sink(BulkWriteError({"writeErrors": dup}))._bulk("pomodoro_usage_log", []) == [
        0,
        2,
        4,
    ]


@pytest.mark.parametrize(
    "details",
    [
        {"writeErrors": [{"code": 11000, "errmsg": "dup"}, {"code": 121, "errmsg": "invalid"}]},
        {"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "wtimeout"}]},
        {"writeErrors": [{"code": 2, "errmsg": "bad value"}]},
    ],
)
async def test_other_bulk_errors_fail_the_batch(details: dict[str, Any]) -> None:
    with pytest.raises(MongoWriteError):
        await _sink(BulkWriteError(details))._bulk("pomodoro_usage_log", [])
