"""Reading the leaderboards (CONTRACT §4): top N, and a user's rank and score.

    reader = LeaderboardReader.from_settings(settings)
    reader.top("Development", "weekly", "2026-02-12", limit=10)   # [Row(rank=1, ...), ...]
    reader.rank("u42", "work", "daily")                           # Row or None (today)

`date` is a local date (`YYYY-MM-DD`, a `datetime.date`, or None for today in the
leaderboard time zone); the period's label is derived from it, so `weekly` + `2026-02-12`
reads `leaderboard:{category}:2026-W7`. Ranks are 1-based, highest score first; equal
scores are ordered as Redis orders them (member, descending). Readers only issue
ZREVRANGE, ZREVRANK and ZSCORE: the `reader` ACL user (pomocore.acl) is enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from pomocore.core.connect import async_redis, sync_redis
from pomocore.core.keys import KeySpace
from pomocore.core.periods import periods_of_datetime
from pomocore.core.settings import Settings

PERIODS = ("daily", "weekly", "monthly")
MAX_LIMIT = 1000
MAX_CATEGORY_CHARS = 64
MAX_USER_CHARS = 128
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class QueryError(ValueError):
    """A bad reader query (unknown period, bad date, limit out of range...)."""


@dataclass(frozen=True, slots=True)
class Row:
    rank: int
    user: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "user": self.user, "score": self.score}


class LeaderboardKeys:
    """Query → key, with validation shared by the sync and async readers."""

    def __init__(self, keys: KeySpace, timezone: str) -> None:
        self.keys = keys
        self.tz = ZoneInfo(timezone)

    def label(self, period: str, day: date | str | None = None) -> str:
        if period not in PERIODS:
            raise QueryError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        if day is None:
            day = datetime.now(self.tz).date()
        elif isinstance(day, str):
            if not _DATE.match(day):
                raise QueryError(f"date must be YYYY-MM-DD, got {day!r}")
            try:
                day = date.fromisoformat(day)
            except ValueError as exc:
                raise QueryError(f"invalid date {day!r}") from exc
        periods = periods_of_datetime(datetime(day.year, day.month, day.day, tzinfo=self.tz))
        return {"daily": periods.daily, "weekly": periods.weekly, "monthly": periods.monthly}[
            period
        ]

    def key(self, category: str, period: str, day: date | str | None = None) -> str:
        if not category or len(category) > MAX_CATEGORY_CHARS:
            raise QueryError(f"category must be 1-{MAX_CATEGORY_CHARS} characters")
        return self.keys.leaderboard(category, self.label(period, day))


def check_limit(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise QueryError(f"offset must be >= 0, got {offset}")


def check_user(user: str) -> None:
    if not user or len(user) > MAX_USER_CHARS:
        raise QueryError(f"user must be 1-{MAX_USER_CHARS} characters")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _rows(reply: Any, offset: int) -> list[Row]:
    return [Row(offset + i + 1, _text(m), float(s)) for i, (m, s) in enumerate(reply)]


class LeaderboardReader:
    """Blocking reader (CLI, HTTP endpoint, scripts)."""

    def __init__(self, redis: Any, keys: KeySpace, timezone: str) -> None:
        self.redis = redis
        self.naming = LeaderboardKeys(keys, timezone)

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaderboardReader:
        return cls(sync_redis(settings, timeout_s=5.0), settings.keys, settings.timezone)

    def key(self, category: str, period: str, day: date | str | None = None) -> str:
        return self.naming.key(category, period, day)

    def top(
        self,
        category: str,
        period: str,
        day: date | str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Row]:
        check_limit(limit, offset)
        key = self.key(category, period, day)
        reply = self.redis.zrevrange(key, offset, offset + limit - 1, withscores=True)
        return _rows(reply, offset)

    def rank(
        self, user: str, category: str, period: str, day: date | str | None = None
    ) -> Row | None:
        check_user(user)
        key = self.key(category, period, day)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrank(key, user)
        pipe.zscore(key, user)
        rank, score = pipe.execute()
        if rank is None or score is None:
            return None
        return Row(int(rank) + 1, user, float(score))

    def close(self) -> None:
        self.redis.close()


class AsyncLeaderboardReader:
    """The same queries for asyncio services."""

    def __init__(self, redis: aioredis.Redis, keys: KeySpace, timezone: str) -> None:
        self.redis = redis
        self.naming = LeaderboardKeys(keys, timezone)

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncLeaderboardReader:
        return cls(async_redis(settings), settings.keys, settings.timezone)

    async def top(
        self,
        category: str,
        period: str,
        day: date | str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Row]:
        check_limit(limit, offset)
        key = self.naming.key(category, period, day)
        reply = await self.redis.zrevrange(key, offset, offset + limit - 1, withscores=True)
        return _rows(reply, offset)

    async def rank(
        self, user: str, category: str, period: str, day: date | str | None = None
    ) -> Row | None:
        check_user(user)
        key = self.naming.key(category, period, day)
        rank: Any = await self.redis.zrevrank(key, user)
        score: Any = await self.redis.zscore(key, user)
        if rank is None or score is None:
            return None
        return Row(int(rank) + 1, user, float(score))

    async def close(self) -> None:
        await self.redis.aclose()
