"""Derived mode: weekly/monthly keys rebuilt from daily keys (sinks/derived.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.core.errors import ConfigError
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.sinks.derived import DerivedRefresher, Rebuild, rebuilds_for
from pomocore.workload import Workload
from tests.support.consumer import drain
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    categories_of,
    reference_leaderboards,
)
from tests.support.streams import publish

K = KeySpace()


def days(category: str, *labels: str) -> tuple[str, ...]:
    return tuple(f"leaderboard:{category}:{d}" for d in labels)


@pytest.mark.parametrize(
    ("stale", "expected"),
    [
        (  # a Tuesday: its ISO week runs Mon 2026-11-30 .. Sun 2026-12-06, across months
            ["leaderboard:SNS:2026-12-01"],
            [
                Rebuild(
                    "leaderboard:SNS:2026-M12",
                    days("SNS", *(f"2026-12-{d:02d}" for d in range(1, 32))),
                ),
                Rebuild(
                    "leaderboard:SNS:2026-W49",
                    days("SNS", "2026-11-30", *(f"2026-12-{d:02d}" for d in range(1, 7))),
                ),
            ],
        ),
        (  # two days of one week and one month: one rebuild each
            ["leaderboard:work:2026-02-02", "leaderboard:work:2026-02-03"],
            [
                Rebuild(
                    "leaderboard:work:2026-M2",
                    days("work", *(f"2026-02-{d:02d}" for d in range(1, 29))),
                ),
                Rebuild(
                    "leaderboard:work:2026-W6",
                    days("work", *(f"2026-02-{d:02d}" for d in range(2, 9))),
                ),
            ],
        ),
        (  # a category with a space; a weekly key and a foreign key are ignored
            ["leaderboard:Video Editing:2024-02-29", "leaderboard:SNS:2026-W49", "other:x"],
            [
                Rebuild(
                    "leaderboard:Video Editing:2024-M2",
                    days("Video Editing", *(f"2024-02-{d:02d}" for d in range(1, 30))),
                ),
                Rebuild(
                    "leaderboard:Video Editing:2024-W9",
                    days(
                        "Video Editing",
                        *(f"2024-02-{d:02d}" for d in range(26, 30)),
                        "2024-03-01",
                        "2024-03-02",
                        "2024-03-03",
                    ),
                ),
            ],
        ),
        ([], []),
    ],
)
def test_rebuilds_for(stale: list[str], expected: list[Rebuild]) -> None:
    assert rebuilds_for(K, stale) == expected


def test_rebuilds_keep_the_hash_tag() -> None:
    tagged = KeySpace(hash_tag="pomo")
    [monthly, weekly] = rebuilds_for(tagged, ["{pomo}leaderboard:SNS:2026-11-22"])
    assert weekly.key == "{pomo}leaderboard:SNS:2026-W47"
    assert weekly.days[0] == "{pomo}leaderboard:SNS:2026-11-16"
    assert monthly.key == "{pomo}leaderboard:SNS:2026-M11"


async def test_refresh_rebuilds_stale_periods_and_forgets_them(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.zadd("leaderboard:SNS:2026-11-16", {"u1": 1.5, "u2": 2.0})
    sync.zadd("leaderboard:SNS:2026-11-22", {"u1": 0.25})
    sync.zadd("leaderboard:SNS:2026-11-30", {"u1": 4.0})  # another week, same month
    sync.zadd("leaderboard:SNS:2026-W47", {"stale": 99.0})  # what the rebuild replaces
    sync.sadd(K.derived_stale_key, "leaderboard:SNS:2026-11-22")
    refresher = DerivedRefresher(aioredis.Redis.from_url(redis_url), K, 5.0)
    assert await refresher.refresh_once() == 2
    assert dict(sync.zrange("leaderboard:SNS:2026-W47", 0, -1, withscores=True)) == {
        b"u1": 1.75,
        b"u2": 2.0,
    }
    assert dict(sync.zrange("leaderboard:SNS:2026-M11", 0, -1, withscores=True)) == {
        b"u1": 5.75,
        b"u2": 2.0,
    }
    assert not sync.exists("leaderboard:SNS:2026-W48")  # not stale: not built
    assert not sync.exists(K.derived_stale_key, K.derived_refreshing_key, K.derived_lock_key)
    assert await refresher.refresh_once() == 0  # nothing stale any more


async def test_a_held_lease_means_another_refresher_works(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.zadd("leaderboard:SNS:2026-11-22", {"u1": 1.0})
    sync.sadd(K.derived_stale_key, "leaderboard:SNS:2026-11-22")
    sync.set(K.derived_lock_key, "someone-else", px=60_000)
    refresher = DerivedRefresher(aioredis.Redis.from_url(redis_url), K, 5.0)
    assert await refresher.refresh_once() is None
    assert not sync.exists("leaderboard:SNS:2026-W47")
    assert sync.smembers(K.derived_stale_key) == {b"leaderboard:SNS:2026-11-22"}


async def test_a_dead_refreshers_days_are_rebuilt_by_the_next(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.zadd("leaderboard:SNS:2026-11-22", {"u1": 1.0})
    sync.zadd("leaderboard:Music:2026-11-22", {"u2": 3.0})
    # It took the set over (and its lease expired), then died before rebuilding.
    sync.sadd(K.derived_refreshing_key, "leaderboard:SNS:2026-11-22")
    sync.sadd(K.derived_stale_key, "leaderboard:Music:2026-11-22")  # committed since
    refresher = DerivedRefresher(aioredis.Redis.from_url(redis_url), K, 5.0)
    assert await refresher.refresh_once() == 4
    assert sync.zscore("leaderboard:SNS:2026-W47", "u1") == 1.0
    assert sync.zscore("leaderboard:Music:2026-M11", "u2") == 3.0


async def test_retention_applies_to_rebuilt_keys(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    sync.zadd("leaderboard:SNS:2026-11-22", {"u1": 1.0})
    sync.sadd(K.derived_stale_key, "leaderboard:SNS:2026-11-22")
    at = 4_102_444_800  # 2100-01-01
    refresher = DerivedRefresher(aioredis.Redis.from_url(redis_url), K, 5.0, lambda key: at)
    await refresher.refresh_once()
    assert sync.expiretime("leaderboard:SNS:2026-W47") == at
    assert sync.expiretime("leaderboard:SNS:2026-M11") == at


async def test_pipeline_in_derived_mode_is_exact_after_a_refresh(settings: Settings) -> None:
    s = dataclasses.replace(settings, sinks=("leaderboard",), leaderboard_mode="derived")
    events = list(Workload(users=40, distinct_variants=5, malformed_ratio=0.0, seed=3).events(2000))
    publish(s.redis_url, s.keys.stream_key, events)
    await drain(s)
    expected = reference_leaderboards(zip(events, categories_of(events), strict=True), s.timezone)
    daily = {k: v for k, v in expected.items() if re.search(r":\d{4}-\d{2}-\d{2}$", k)}
    actual = actual_leaderboards(s.redis_url)
    # The consumer wrote daily keys only; derived ones appear with the refresher's rounds.
    assert_scores_equal({k: v for k, v in actual.items() if k in daily}, daily)
    refresher = DerivedRefresher(aioredis.Redis.from_url(s.redis_url), s.keys, 5.0)
    for _ in range(50):  # the consumer's own refresher may hold the lease for a moment
        if await refresher.refresh_once() is not None:
            break
    assert_scores_equal(actual_leaderboards(s.redis_url), expected)


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        ({"leaderboard_mode": "derived"}, True),
        ({"leaderboard_mode": "sometimes"}, False),
        ({"leaderboard_mode": "derived", "ttl_daily_days": 30}, False),  # weekly/monthly forever
        (
            {
                "leaderboard_mode": "derived",
                "ttl_daily_days": 60,
                "ttl_weekly_days": 7,
                "ttl_monthly_days": 30,
            },
            False,
        ),
        (
            {
                "leaderboard_mode": "derived",
                "ttl_daily_days": 61,
                "ttl_weekly_days": 7,
                "ttl_monthly_days": 30,
            },
            True,
        ),
        ({"leaderboard_mode": "exact", "ttl_daily_days": 7}, True),
    ],
)
def test_derived_mode_settings(overrides: dict[str, object], ok: bool) -> None:
    if ok:
        Settings.from_dsn("redis://127.0.0.1:6379/0", **overrides)
        return
    with pytest.raises(ConfigError) as err:
        Settings.from_dsn("redis://127.0.0.1:6379/0", **overrides)
    name = (
        "POMOCORE_LEADERBOARD_MODE"
        if overrides["leaderboard_mode"] != "derived"
        else "POMOCORE_TTL_DAILY_DAYS"
    )
    assert name in str(err.value)
