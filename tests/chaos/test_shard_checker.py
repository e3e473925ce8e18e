"""The sharded checker can fail: each kind of corruption of a correct sharded outcome
(POMOCORE_SHARDS=6 on one Valkey) is reported."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest
import redis

from pomocore.core.settings import Settings
from tests.chaos.checker import Published, generate
from tests.chaos.shard_run import SHARDS, ShardChecker, shard_of_fields
from tests.support.consumer import drain
from tests.support.streams import publish


@pytest.fixture
def sharded(settings: Settings) -> Settings:
    return dataclasses.replace(settings, shards=SHARDS)


@pytest.fixture
async def outcome(sharded: Settings) -> list[Published]:
    published = generate(seed=7, count=600, now_s=time.time(), bad_ratio=0.08)
    for shard, keys in enumerate(sharded.all_shard_keys):
        mine = [p for p in published if shard_of_fields(p.fields, SHARDS) == shard]
        ids = publish(sharded.redis_url, keys.stream_key, [p.fields for p in mine])
        for p, entry_id in zip(mine, ids, strict=True):
            p.entry_id = entry_id
    await drain(sharded)
    return published


def _redis(s: Settings) -> redis.Redis:
    return redis.Redis.from_url(s.redis_url)


def _user_in_another_shard(s: Settings) -> None:
    """A user's score moved whole to another shard's key: the merged top-K is unchanged,
    each shard's keys are not what its users' events make."""
    r = _redis(s)
    src, dst = s.all_shard_keys[0], s.all_shard_keys[1]
    key = next(iter(r.scan_iter(match=f"{src.leaderboard('work', '*')}")))
    period = key.decode().rsplit(":", 1)[1]
    member, score = r.zrange(key, 0, 0, withscores=True)[0]
    r.zrem(key, member)
    r.zadd(dst.leaderboard("work", period), {member: score})


def _top_member_inflated(s: Settings) -> None:
    r = _redis(s)
    key = next(iter(r.scan_iter(match=f"{s.all_shard_keys[2].leaderboard('work', '*')}")))
    member = r.zrevrange(key, 0, 0)[0]
    r.zincrby(key, 10_000.0, member)


def _duplicate_dead_letter(s: Settings) -> None:
    r = _redis(s)
    for keys in s.all_shard_keys:
        rows = r.xrange(keys.dead_letter_key, count=1)
        if rows:
            r.xadd(keys.dead_letter_key, rows[0][1])
            return
    raise AssertionError("no dead letter in any shard")


def _missing_session(s: Settings) -> None:
    r = _redis(s)
    key = s.all_shard_keys[3].session_score_key
    r.xdel(key, r.xrange(key, count=1)[0][0])


def _pending_left(s: Settings) -> None:
    r = _redis(s)
    stream = s.all_shard_keys[4].stream_key
    late = {"userId": "late", "app": "Code", "duration": "1", "timestamp": str(time.time())}
    r.xadd(stream, late)  # type: ignore[arg-type]
    r.xreadgroup(s.group, "someone", {stream: ">"})


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_user_in_another_shard, "leaderboard score wrong"),
        (_top_member_inflated, "merged top-10"),
        (_duplicate_dead_letter, "dead letter of"),
        (_missing_session, "session score missing"),
        (_pending_left, "group of"),
    ],
)
async def test_shard_checker_reports_corruption(
    sharded: Settings,
    outcome: list[Published],
    corrupt: Callable[[Settings], None],
    expected: str,
) -> None:
    checker = ShardChecker(sharded)
    assert checker.check(outcome) == []  # the correct outcome passes
    corrupt(sharded)
    violations = checker.check(outcome)
    assert any(v.startswith(expected) for v in violations), violations
