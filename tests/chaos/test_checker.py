"""The checker can fail: each kind of corruption of a correct outcome is reported."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymongo
import pytest
import redis

from pomocore.core.settings import Settings
from tests.chaos.checker import Checker, Published, generate
from tests.support.consumer import drain
from tests.support.streams import publish


@pytest.fixture
async def outcome(settings: Settings) -> list[Published]:
    published = generate(seed=5, count=400, now_s=time.time(), bad_ratio=0.08)
    ids = publish(settings.redis_url, settings.keys.stream_key, [p.fields for p in published])
    for p, entry_id in zip(published, ids, strict=True):
        p.entry_id = entry_id
    await drain(settings)
    assert any(p.reason for p in published)
    assert any(p.fields.get("isEnd") == "true" for p in published)
    return published


def _mongo(settings: Settings) -> Any:
    return pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def _extra_zincrby(s: Settings) -> None:
    r = _redis(s)
    key = next(iter(r.scan_iter(match="leaderboard:*")))
    member = r.zrange(key, 0, 0)[0]
    r.zincrby(key, 12.5, member)


def _missing_usage_log(s: Settings) -> None:
    db = _mongo(s)
    db.pomodoro_usage_log.delete_one({"_id": db.pomodoro_usage_log.find_one()["_id"]})


def _duplicate_usage_log(s: Settings) -> None:
    db = _mongo(s)
    doc = db.pomodoro_usage_log.find_one()
    doc.pop("_id")
    db.pomodoro_usage_log.insert_one(doc)


def _duplicate_dead_letter(s: Settings) -> None:
    r = _redis(s)
    _, fields = r.xrange(s.keys.dead_letter_key, count=1)[0]
    r.xadd(s.keys.dead_letter_key, fields)


def _missing_session(s: Settings) -> None:
    r = _redis(s)
    r.xdel(s.keys.session_score_key, r.xrange(s.keys.session_score_key, count=1)[0][0])


def _pending_left(s: Settings) -> None:
    r = _redis(s)
    r.xadd(
        s.keys.stream_key,
        {"userId": "late", "app": "Code", "duration": "1", "timestamp": str(time.time())},
    )
    r.xreadgroup(s.group, "someone", {s.keys.stream_key: ">"})


def _stray_key(s: Settings) -> None:
    _redis(s).zadd("leaderboard:Game:2020-01-01", {"ghost": 1.0})


def _usage_log_recategorized(s: Settings, category: str = "Game") -> None:
    """A usage log that names another category than the one its event was counted in
    (with another category than Game: one of an event the patterns leave undecided)."""
    db = _mongo(s)
    if category == "Game":
        doc = db.pomodoro_usage_log.find_one({"category": {"$nin": ["Game"]}})
    else:
        doc = db.pomodoro_usage_log.find_one({"category": "Uncategorized"})
    assert doc is not None
    db.pomodoro_usage_log.update_one({"_id": doc["_id"]}, {"$set": {"category": category}})


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_extra_zincrby, "leaderboard score wrong"),
        (_missing_usage_log, "usage log missing"),
        (_duplicate_usage_log, "usage log extra or duplicated"),
        (_duplicate_dead_letter, "dead letter of"),
        (_missing_session, "session score missing"),
        (_pending_left, "pending list not empty"),
        (_stray_key, "leaderboard key extra"),
        (_usage_log_recategorized, "rebuild --check"),
    ],
)
async def test_checker_reports_corruption(
    settings: Settings,
    outcome: list[Published],
    corrupt: Callable[[Settings], None],
    expected: str,
) -> None:
    checker = Checker(settings)
    assert checker.check(outcome) == []  # the correct outcome passes
    corrupt(settings)
    violations = checker.check(outcome)
    assert violations, "the checker missed a corruption"
    assert any(v.startswith(expected) for v in violations), violations


async def test_checker_with_an_llm_holds_usage_logs_to_leaderboards(
    settings: Settings, outcome: list[Published]
) -> None:
    """With an LLM in the run, an undecided event may carry an LLM label; but its usage log
    and its leaderboard keys must still agree."""
    checker = Checker(settings, llm_labels=("Education",))
    assert checker.check(outcome) == []
    _usage_log_recategorized(settings, "Education")  # allowed, but counted as Uncategorized
    violations = checker.check(outcome)
    assert any(v.startswith("rebuild --check") for v in violations), violations
    assert any(v.startswith("leaderboard score wrong") for v in violations), violations
    assert not any(v.startswith("usage log") for v in violations), violations
