"""Test helpers: publish like a producer, drain with a real consumer, and an independent
reference for what the leaderboards must hold."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis

from pomocore.consumers.app import run_until_stopped, runtime
from pomocore.consumers.consumer import ConsumerStats
from pomocore.core.categories import WORK_CATEGORIES
from pomocore.core.settings import Settings

# The contract's reason for each defect the workload generator injects (docs/contract.md).
REASON_OF_MALFORMED_KIND = {
    "missing_user": "missing_field",
    "invalid_utf8": "invalid_utf8",
    "nan_duration": "not_finite",
    "negative_duration": "out_of_range",
    "future_timestamp": "future_timestamp",
    "bad_bool": "invalid_bool",
    "bad_number": "invalid_number",
    "too_long_title": "too_long",
    "all_empty": "missing_field",
}

Fields = Mapping[str, str | bytes]


def publish(url: str, stream: str, events: Iterable[Fields]) -> list[str]:
    """XADD each event as a producer would (plain redis-py, no pomocore code)."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for fields in events:
        pipe.xadd(stream, dict(fields))  # type: ignore[arg-type]
    ids = [i.decode() for i in pipe.execute()]
    client.close()
    return ids


def group_state(url: str, stream: str, group: str) -> tuple[int, int]:
    """(lag, pending) of the group; lag counts entries not yet delivered."""
    client = redis.Redis.from_url(url)
    try:
        for g in client.xinfo_groups(stream):
            if g["name"].decode() == group:
                return int(g.get("lag") or 0), int(g["pending"])
    except redis.ResponseError:
        pass
    finally:
        client.close()
    return -1, -1


async def drain(
    settings: Settings,
    timeout_s: float = 60.0,
    state: Callable[[], tuple[int, int]] | None = None,
) -> ConsumerStats:
    """Run one in-process consumer until the group has nothing undelivered or pending.

    `state` returns (lag, pending); by default read from `settings.redis_url`.
    """
    state = state or (
        lambda: group_state(settings.redis_url, settings.keys.stream_key, settings.group)
    )
    stop = asyncio.Event()
    async with runtime(settings) as rt:
        task = asyncio.create_task(run_until_stopped(rt, stop))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
            if await asyncio.to_thread(state) == (0, 0):
                break
        stop.set()
        await task
        return rt.consumer.stats


def reference_leaderboards(
    events: Iterable[tuple[Fields, str]], tz: str, prefix: str = "leaderboard"
) -> dict[str, dict[str, float]]:
    """What every leaderboard key must hold, computed without pomocore's code."""
    zone = ZoneInfo(tz)
    out: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for fields, category in events:
        local = datetime.fromtimestamp(float(fields["timestamp"]), zone)
        year, week, _ = local.isocalendar()
        periods = (local.strftime("%Y-%m-%d"), f"{year}-W{week}", f"{local.year}-M{local.month}")
        for cat in [category, "work"] if category in WORK_CATEGORIES else [category]:
            for period in periods:
                out[f"{prefix}:{cat}:{period}"][str(fields["userId"])] += float(fields["duration"])
    return {k: dict(v) for k, v in out.items()}


def actual_leaderboards(url: str, prefix: str = "leaderboard") -> dict[str, dict[str, float]]:
    client = redis.Redis.from_url(url)
    out: dict[str, dict[str, float]] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        out[key.decode()] = {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}
    client.close()
    return out


def assert_scores_equal(
    actual: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]
) -> None:
    """Same keys, same members, scores equal up to float summation order (1e-6 s)."""
    assert set(actual) == set(expected), set(actual) ^ set(expected)
    for key, members in expected.items():
        assert set(actual[key]) == set(members), key
        for member, score in members.items():
            assert abs(actual[key][member] - score) <= 1e-6 * max(1.0, abs(score)), (key, member)


def now_fields(user: str, app: str, duration: float, **extra: Any) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        "userId": user,
        "app": app,
        "title": extra.pop("title", ""),
        "url": extra.pop("url", ""),
        "duration": repr(duration),
        "timestamp": repr(extra.pop("timestamp", time.time() - 60)),
    }
    fields.update({k: str(v) if not isinstance(v, bytes) else v for k, v in extra.items()})
    return fields


def categories_of(events: Iterable[Fields]) -> list[str]:
    """The category each event must get, from the shipped default patterns."""
    from pomocore.classifiers.engine import Classifier
    from pomocore.classifiers.patterns import load_default_pattern_set

    classifier = Classifier.from_patterns(load_default_pattern_set())
    return [
        classifier.classify(
            str(e.get("app", "")), str(e.get("url", "")), str(e.get("title", ""))
        ).category
        for e in events
    ]


def usage_log_count(settings: Settings) -> int:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongo_uri)
    try:
        return client[settings.mongo_db].pomodoro_usage_log.count_documents({})
    finally:
        client.close()


def assert_exact(settings: Settings, good: list[dict[str, str | bytes]]) -> None:
    """Leaderboards, usage logs and the group are exactly what `good` events imply."""
    expected = reference_leaderboards(
        zip(good, categories_of(good), strict=True), settings.timezone
    )
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)
    assert usage_log_count(settings) == len(good)
    assert group_state(settings.redis_url, settings.keys.stream_key, settings.group) == (0, 0)
