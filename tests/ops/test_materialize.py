"""`pomocore leaderboard materialize`: the contract's keys rebuilt from the shards equal
the merged shards (whole boards, expiry included), lose a member removed from its shard,
disappear when every shard is empty; on a standalone Valkey and on the 3-node cluster;
the command's passes, loop and refusal without shards."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.cluster import RedisCluster

from pomocore.core.expiry import ExpiryPolicy
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of
from pomocore.embedded import EmbeddedRedis
from pomocore.materialize import Materializer, labels_of, materialize_command, run
from pomocore.reader import LeaderboardReader
from tests.support.processes import run_cli
from tests.support.servers import cluster_settings, redis_cluster
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

SHARDS = 6
TZ = "Asia/Seoul"
NOW_S = datetime(2026, 2, 12, 10, 0, tzinfo=ZoneInfo(TZ)).timestamp()
LABELS = ("2026-02-12", "2026-W7", "2026-M2")  # today's; the day before adds 2026-02-11
SCORES = {f"user{i}": float(100 * (i % 9) + 1500 * (i % 2)) for i in range(300)}


def fill(client: Any, settings: Settings, scores: dict[str, float], label: str) -> None:
    pipe = client.pipeline(transaction=False)
    for user, score in scores.items():
        shard = settings.shard_keys(shard_of(user, settings.shards))
        for category in ("Development", "work"):
            pipe.zincrby(shard.leaderboard(category, label), score, user)
    pipe.execute()


def board(client: Any, key: str) -> list[tuple[str, float]]:
    return [(m.decode(), s) for m, s in client.zrevrange(key, 0, -1, withscores=True)]


def merged(settings: Settings) -> list[tuple[str, float]]:
    """The work board of 2026-02-12 as the sharded reader reads it, whole."""
    with LeaderboardReader.from_settings(settings) as reader:
        rows = reader.top("work", "daily", "2026-02-12", limit=1000)
    return [(r.user, r.score) for r in rows]


def check(client: Any, settings: Settings) -> None:
    fill(client, settings, SCORES, "2026-02-12")
    fill(client, settings, {"late": 5.0}, "2026-02-11")  # yesterday: within --days 2
    fill(client, settings, {"old": 5.0}, "2026-02-01")  # not a current period
    stale = settings.keys.leaderboard("Game", "2026-02-12")
    client.zadd(stale, {"gone": 1.0})  # a contract key whose boards are all empty
    found = Materializer(client, settings).run_once(days=2, now_s=NOW_S)
    assert found.labels == (*LABELS, "2026-02-11")
    # Development and work, of the day, of yesterday
    assert (found.written, found.deleted, found.members) == (4, 1, 2 * 300 + 2)
    assert not client.exists(stale)
    key = settings.keys.leaderboard("work", "2026-02-12")
    expected = sorted(SCORES.items(), key=lambda p: (p[1], p[0].encode()), reverse=True)
    assert board(client, key) == expected == merged(settings)
    assert board(client, settings.keys.leaderboard("work", "2026-02-11")) == [("late", 5.0)]
    assert not client.exists(settings.keys.leaderboard("work", "2026-02-01"))
    assert client.ttl(key) == -1  # no POMOCORE_TTL_*: kept, as the shards' keys
    # a member removed from its shard disappears; a new one appears; expiry set
    removed = "user7"
    shard = settings.shard_keys(shard_of(removed, SHARDS))
    client.zrem(shard.leaderboard("work", "2026-02-12"), removed)
    fill(client, settings, {"newcomer": 9999.0}, "2026-02-12")
    with_ttl = dataclasses.replace(settings, ttl_daily_days=3650)  # ends in the future
    Materializer(client, with_ttl).run_once(days=1, now_s=NOW_S)
    after = dict(board(client, key))
    assert removed not in after and after["newcomer"] == 9999.0 and len(after) == 300
    assert client.expiretime(key) == ExpiryPolicy(TZ, daily_days=3650).expire_at("2026-02-12")
    assert not [k for k in client.scan_iter("*staging*")]  # renamed, none left behind


def test_materialize_on_valkey(redis_url: str, settings: Settings) -> None:
    s = dataclasses.replace(settings, shards=SHARDS, timezone=TZ)
    client = redis.Redis.from_url(redis_url)
    check(client, s)
    client.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def test_materialize_on_a_cluster(cluster: list[EmbeddedRedis], settings: Settings) -> None:
    """Shards on three nodes; each contract key and its staging key in the hash tag's slot."""
    s = dataclasses.replace(cluster_settings(settings, cluster, "mt"), shards=SHARDS, timezone=TZ)
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    check(client, s)
    client.close()


def test_the_loop_keeps_the_keys_within_the_interval(redis_url: str, settings: Settings) -> None:
    s = dataclasses.replace(settings, shards=SHARDS)
    client = redis.Redis.from_url(redis_url)
    today = labels_of(time.time(), s.timezone, 1)[0]
    key = s.keys.leaderboard("work", today)
    stop, reports = threading.Event(), []
    thread = threading.Thread(
        target=run, args=(Materializer(client, s), 0.2, 1, stop, reports.append), daemon=True
    )
    thread.start()
    try:
        fill(client, s, {"a": 5.0}, today)
        wait_for(lambda: board(client, key) == [("a", 5.0)], 5, "not materialized")
        fill(client, s, {"b": 7.0}, today)
        wait_for(lambda: board(client, key) == [("b", 7.0), ("a", 5.0)], 5, "not refreshed")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and len(reports) >= 2
    client.close()


def test_the_command(redis_url: str, settings: Settings) -> None:
    s = dataclasses.replace(settings, shards=SHARDS)
    client = redis.Redis.from_url(redis_url)
    today = labels_of(time.time(), s.timezone, 1)[0]
    fill(client, s, {"a": 5.0, "b": 6.0}, today)
    out = io.StringIO()
    assert materialize_command(s, once=True, interval_s=1, days=1, as_json=True, out=out) == 0
    doc = json.loads(out.getvalue())
    assert (doc["written"], doc["members"]) == (2, 4)
    env = {"POMOCORE_REDIS_URL": redis_url, "POMOCORE_SHARDS": str(SHARDS)}
    result = run_cli("leaderboard", "materialize", "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("materialized 2 boards (4 members), deleted 0")
    result = run_cli("leaderboard", "materialize", "--once", env={"POMOCORE_REDIS_URL": redis_url})
    assert result.returncode == 2 and b"POMOCORE_SHARDS is 1" in result.stderr
    client.close()
