"""User-partitioned shards (POMOCORE_SHARDS): each shard's stream is consumed into its
own keys, a user's score lives in exactly one shard, and the shards together hold what
one shard would (issue #17). On a standalone Valkey and on the local 3-node cluster."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.cluster import RedisCluster

from pomocore.consumers.app import lane_plan
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of
from pomocore.embedded import EmbeddedRedis
from pomocore.rebuild import rebuild
from tests.support.consumer import drain, running_consumer
from tests.support.expected import seconds_by_user
from tests.support.servers import cluster_settings, redis_cluster
from tests.support.streams import connected_group_state, group_state, now_fields
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

SHARDS = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("shard-cluster")) as nodes:
        yield nodes


def _events(n: int, users: int = 40) -> list[dict[str, Any]]:
    ts = time.time() - 120
    return [
        now_fields(f"user-{i % users}", "Code", 1.0 + i % 7, timestamp=ts, isEnd="true", session=i)
        for i in range(n)
    ]


def _publish_by_shard(client: Any, settings: Settings, events: list[dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for fields in events:
        keys = settings.shard_keys(shard_of(str(fields["userId"]), settings.shards))
        pipe.xadd(keys.stream_key, fields)
    pipe.execute()


def _boards(client: Any, settings: Settings) -> list[dict[str, float]]:
    """Each shard's daily `work` board: user → score."""
    label = PeriodCalculator(settings.timezone)(time.time() - 120).labels()[0]
    out = []
    for keys in settings.all_shard_keys:
        rows = client.zrange(keys.leaderboard("work", label), 0, -1, withscores=True)
        out.append({m.decode(): s for m, s in rows})
    return out


def _assert_exact(
    client: Any, settings: Settings, events: list[dict[str, Any]], *, session_scores: bool = True
) -> None:
    boards = _boards(client, settings)
    for shard, board in enumerate(boards):
        assert all(shard_of(user, settings.shards) == shard for user in board)
    merged = {user: score for board in boards for user, score in board.items()}
    assert merged == pytest.approx(seconds_by_user(events))
    assert sum(len(b) for b in boards) == len(merged)  # no user in two shards
    if not session_scores:  # (written by the shards that consumed them)
        return
    per_shard = collections.Counter(shard_of(str(e["userId"]), settings.shards) for e in events)
    for shard, keys in enumerate(settings.all_shard_keys):
        assert client.xlen(keys.session_score_key) == per_shard[shard]


def test_lanes_cover_the_served_shards() -> None:
    six = Settings.from_env({"POMOCORE_SHARDS": "6", "POMOCORE_LANES": "4"})
    assert lane_plan(six) == [0, 1, 2, 3, 4, 5]  # at least one lane per shard
    some = dataclasses.replace(six, consumer_shards="1,4", lanes=4)
    assert lane_plan(some) == [1, 4, 1, 4]
    assert lane_plan(Settings.from_env({"POMOCORE_LANES": "3"})) == [0, 0, 0]


async def test_two_consumers_split_the_shards_and_end_exact(settings: Settings) -> None:
    s = dataclasses.replace(settings, shards=SHARDS, sinks=("leaderboard",))
    events = _events(3000)
    client = redis.Redis.from_url(s.redis_url)
    _publish_by_shard(client, s, events)
    first = dataclasses.replace(s, consumer_shards="0-2", consumer_name="a")
    second = dataclasses.replace(s, consumer_shards="3-5", consumer_name="b")
    async with running_consumer(first), running_consumer(second):
        await wait_until(lambda: group_state(s) == (0, 0), timeout_s=60)
    _assert_exact(client, s, events)
    assert client.exists(s.keys.stream_key) == 0  # the contract stream is not read
    client.close()


async def test_shards_with_mongo_keep_usage_logs_apart(settings: Settings) -> None:
    """Entry ids repeat across shards' streams; usage-log ids carry the shard's stream."""
    s = dataclasses.replace(settings, shards=3)
    client = redis.Redis.from_url(s.redis_url)
    events = _events(300, users=9)
    _publish_by_shard(client, s, events)
    stats = await drain(s, timeout_s=60)
    assert stats.committed == 300
    _assert_exact(client, s, events)
    client.close()


def test_six_shards_on_a_three_node_cluster(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    s = dataclasses.replace(
        cluster_settings(settings, cluster, "pomo"), shards=SHARDS, sinks=("leaderboard",)
    )
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    events = _events(3000)
    _publish_by_shard(client, s, events)
    stats = asyncio.run(drain(s, timeout_s=90, state=connected_group_state))
    assert stats.committed == 3000
    _assert_exact(client, s, events)
    # every node holds two shards' keys: the work spreads over the cluster
    per_node = [redis.Redis(host="127.0.0.1", port=n.port).dbsize() for n in cluster]
    assert min(per_node) > 0
    client.close()


async def test_changing_the_shard_count_drain_switch_rebuild(settings: Settings) -> None:
    """The documented procedure (docs/operations.md, "Changing the number of shards"):
    drain at N = 3, switch to N = 6, rebuild the leaderboards from MongoDB; the old
    layout's keys are gone, the new one is exact, and consuming goes on at N = 6."""
    three = dataclasses.replace(settings, shards=3)
    six = dataclasses.replace(settings, shards=6)
    client = redis.Redis.from_url(settings.redis_url)
    before = _events(400, users=12)
    _publish_by_shard(client, three, before)
    assert (await drain(three, timeout_s=60)).committed == 400
    today = datetime.fromtimestamp(time.time() - 120, ZoneInfo(settings.timezone)).date()
    report = rebuild(client, six, today, today, check=False)
    assert report.written > 0 and report.pending == 0
    _assert_exact(client, six, before, session_scores=False)
    three_boards = [b for b in _boards(client, three) if b]
    assert three_boards == []  # the N = 3 leaderboard keys were deleted by the rebuild
    assert rebuild(client, six, today, today, check=True).diffs == []
    after = _events(300, users=12)
    _publish_by_shard(client, six, after)
    assert (await drain(six, timeout_s=60)).committed == 300
    _assert_exact(client, six, before + after, session_scores=False)
    client.close()
