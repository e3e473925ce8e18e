"""What the servers must hold after a run, computed from the published events without
pomocore's pipeline, and the assertions that compare it with what they do hold."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import pymongo
import redis

from pomocore.core.categories import WORK_CATEGORIES
from pomocore.core.settings import Settings
from pomocore.rebuild import rebuild_command
from tests.support.patterns import default_classifier
from tests.support.streams import Fields, group_state

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


def categories_of(events: Iterable[Fields]) -> list[str]:
    """The category each event must get, from the shipped default patterns."""
    classifier = default_classifier()
    return [
        classifier.classify(
            str(e.get("app", "")), str(e.get("url", "")), str(e.get("title", ""))
        ).category
        for e in events
    ]


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
        members = cast(list[tuple[bytes, float]], client.zrange(key, 0, -1, withscores=True))
        out[key.decode()] = {m.decode(): s for m, s in members}
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


def usage_log_count(settings: Settings) -> int:
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
    assert group_state(settings) == (0, 0)


def rebuild_check(settings: Settings, events: Iterable[Fields]) -> list[str]:
    """`pomocore leaderboard rebuild --from-mongo --check` over the local dates of `events`:
    the differences it reports between the usage logs and the leaderboards (JSON lines),
    none when every event's usage log names the category its leaderboard keys received."""
    zone = ZoneInfo(settings.timezone)
    days = {datetime.fromtimestamp(float(e["timestamp"]), zone).date() for e in events}
    if not days:
        return []
    out = io.StringIO()
    code = rebuild_command(settings, min(days), max(days), check=True, out=out)
    lines = out.getvalue().splitlines()
    differences = [line for line in lines if line.startswith("{")]
    assert (code != 0) == bool(differences), lines  # exit 1 exactly when something differs
    return differences


def seconds_by_user(events: Iterable[Fields]) -> dict[str, float]:
    """Each user's total duration over `events`: a `work` board's scores when every event
    is work (the apps of the sharded and Cluster tests)."""
    totals: defaultdict[str, float] = defaultdict(float)
    for fields in events:
        totals[str(fields["userId"])] += float(fields["duration"])
    return dict(totals)
