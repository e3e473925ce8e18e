"""Redis and MongoDB outages against real servers: no crash, no loss, nothing twice."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from pymongo import InsertOne
from pymongo.errors import PyMongoError

from pomocore.core.connect import consumer_mongo
from pomocore.core.errors import MongoWriteError, SinkError
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from pomocore.sinks.mongo import MongoBatch, MongoSink, duplicates_only
from tests.support.consumer import running_consumer
from tests.support.expected import (
    actual_leaderboards,
    assert_exact,
    assert_scores_equal,
    categories_of,
    reference_leaderboards,
    usage_log_count,
)
from tests.support.fault_proxy import MongoFaultProxy
from tests.support.processes import ConsumerProcess, server_env, spawn_consumer
from tests.support.servers import with_servers
from tests.support.streams import dead_letters, group_state, is_drained, now_fields, publish
from tests.support.waiting import wait_for, wait_until

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
        # Drained as Redis sees it, and as the consumer counts it: the commit script's
        # reply may still wait in the socket when the group shows nothing pending (CI: 150
        # counted, the last batch's 50 counted a moment later, after the outage began).
        await wait_until(lambda: is_drained(s) and rt.consumer.stats.committed == len(first))
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


def _consumer_count(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return len(client.xinfo_consumers(settings.keys.stream_key, settings.group))
    except redis.ResponseError:  # no stream or group yet
        return 0
    finally:
        client.close()


def test_mongo_stalled_then_down_is_not_a_delivery_across_processes(
    settings: Settings, own_mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    """Issue #13 §4: a burst held by one lane through a MongoDB stall (SIGSTOP) and then
    an outage (SIGKILL), each longer than max_deliveries x reclaim idle, while idle
    consumers in other processes run XAUTOCLAIM: nothing is dead-lettered, all counts once."""
    s = with_servers(settings, mongo_uri=own_mongo.url)
    reclaim_idle_s, max_deliveries, processes, lanes = 1.0, 2, 3, 4
    env = {
        **server_env(s),
        "POMOCORE_RECLAIM_IDLE_MS": str(int(reclaim_idle_s * 1000)),
        "POMOCORE_MAX_DELIVERIES": str(max_deliveries),
        "POMOCORE_MONGO_TIMEOUT_MS": "500",
        "POMOCORE_MONGO_RETRY_MAX": "2",
        "POMOCORE_LANES": str(lanes),
        "POMOCORE_BATCH_SIZE": "200",
        "POMOCORE_BLOCK_MS": "200",
        "POMOCORE_LOG_LEVEL": "WARNING",
    }
    warm, burst = _events(30), _events(100, offset=5)
    fault_s = max_deliveries * reclaim_idle_s + 2.0  # each phase outlasts the reclaim cycle
    consumers: list[ConsumerProcess] = []
    try:
        for i in range(processes):
            consumers.append(spawn_consumer(env, log=tmp_path / f"consumer-{i}.log"))
        wait_for(lambda: _consumer_count(s) >= processes * lanes, 90, "consumers not all up")
        publish(s.redis_url, s.keys.stream_key, warm)
        wait_for(lambda: is_drained(s), 60, "warm-up not drained")
        assert own_mongo.proc is not None
        os.kill(own_mongo.proc.pid, signal.SIGSTOP)  # stalled: connections open, no reply
        publish(s.redis_url, s.keys.stream_key, burst, atomic=True)  # one lane takes it all
        wait_for(lambda: group_state(s) == (0, len(burst)), 30, "burst not delivered")
        time.sleep(fault_s)
        own_mongo.kill()  # and then down: connections refused
        time.sleep(fault_s)
        own_mongo.start()
        wait_for(lambda: is_drained(s), 120, lambda: f"not drained: {group_state(s)}")
        codes = [c.stop() for c in consumers]
        logs = "".join(c.output() for c in consumers)
        assert codes == [0] * processes, logs[-3000:]
    finally:
        for c in consumers:
            c.kill()
    assert "batch failed" in logs  # the outage was met, not missed
    assert dead_letters(s) == []
    assert_exact(s, warm + burst)


async def test_write_concern_errors_are_an_outage_not_refused_data(
    settings: Settings, mongo_server: EmbeddedMongo
) -> None:
    """Secondaries down: every write is applied but answers wtimeout (code 64). The batch
    is held and retried, never re-read as poison: with max_deliveries=1 one re-read would
    dead-letter it. Once replication is back, everything counts exactly once."""
    proxy = MongoFaultProxy(mongo_server.port)
    proxy.start()
    try:
        s = with_servers(
            settings,
            mongo_uri=f"mongodb://{proxy.host_port}/",
            batch_size=50,
            mongo_retry_max=1,
            max_deliveries=1,
        )
        events = _events(120)
        async with running_consumer(s) as rt:
            proxy.set_mode("write_concern_error")
            publish(s.redis_url, s.keys.stream_key, events)
            await wait_until(lambda: rt.consumer.stats.sink_failures >= 6, 60)
            await wait_until(lambda: proxy.write_concern_errors >= 6, 30)
            assert rt.consumer.stats.committed == 0
            assert dead_letters(s) == []
            proxy.set_mode("pass")
            await wait_until(lambda: is_drained(s), 60, lambda: f"not drained: {group_state(s)}")
    finally:
        proxy.close()
    assert dead_letters(s) == []
    assert_exact(dataclasses.replace(s, mongo_uri=mongo_server.url), events)


async def test_a_stalled_mongo_fails_an_attempt_within_its_timeout(
    settings: Settings, own_mongo: EmbeddedMongo
) -> None:
    """SIGSTOP: connections stay open and nothing answers. pymongo has no socket timeout
    of its own, so only `timeoutMS` ends a write or a read sent to a stalled server."""
    s = with_servers(settings, mongo_uri=own_mongo.url, mongo_timeout_ms=400)
    client = consumer_mongo(s)
    db = client[s.mongo_db]
    sink = MongoSink(db, s.keys.stream_key, {}, timeout_s=s.mongo_timeout_ms / 1000)
    assert own_mongo.proc is not None
    try:
        await db.command("ping")  # a pooled connection, which the stall then holds
        os.kill(own_mongo.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(SinkError):  # (wait_for: an unbounded write fails, not hangs)
                await asyncio.wait_for(sink.write(MongoBatch(usage_ops=[InsertOne({})])), 20)
            with pytest.raises(PyMongoError):  # every other operation of the client too
                await asyncio.wait_for(db.command("ping"), 20)
            assert time.monotonic() - started < 10
        finally:
            os.kill(own_mongo.proc.pid, signal.SIGCONT)
        await db.command("ping")  # and it recovers
    finally:
        await client.close()


def test_duplicate_key_only_bulk_error_is_success() -> None:
    dup = [{"index": i, "code": 11000, "errmsg": "dup"} for i in (4, 0, 2)]
    # Success, naming the ops that hit an existing document (pymongo's op indexes).
    assert duplicates_only("pomodoro_usage_log", {"writeErrors": dup}) == [0, 2, 4]


@pytest.mark.parametrize(
    "details",
    [
        {"writeErrors": [{"code": 11000, "errmsg": "dup"}, {"code": 121, "errmsg": "invalid"}]},
        {"writeErrors": [{"code": 2, "errmsg": "bad value"}]},
        # refused data wins over a transient error in the same reply: it would come back
        {
            "writeErrors": [{"code": 2, "errmsg": "bad value"}],
            "writeConcernErrors": [{"code": 64, "errmsg": "wtimeout"}],
        },
    ],
)
def test_refused_data_fails_the_batch_as_a_data_error(details: dict[str, Any]) -> None:
    with pytest.raises(MongoWriteError):
        duplicates_only("pomodoro_usage_log", details)


@pytest.mark.parametrize(
    "details",
    [
        {"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "wtimeout"}]},
        {"writeConcernErrors": [{"code": 100, "errmsg": "not enough data-bearing nodes"}]},
        {"writeErrors": [{"code": 11000, "errmsg": "dup"}, {"code": 50, "errmsg": "time"}]},
        {"writeErrors": [{"code": 189, "errmsg": "primary stepped down"}]},
    ],
)
def test_outage_errors_are_transient_not_refused_data(details: dict[str, Any]) -> None:
    with pytest.raises(SinkError) as caught:
        duplicates_only("pomodoro_usage_log", details)
    assert not isinstance(caught.value, MongoWriteError)  # never counted as a delivery
