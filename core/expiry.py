"""Leaderboard expiry: when a daily, weekly or monthly key may expire.

A key lives until the end of its period (in the leaderboard time zone) plus the configured
number of days (`POMOCORE_TTL_DAILY_DAYS`, `..._WEEKLY_DAYS`, `..._MONTHLY_DAYS`; 0 keeps
the key forever). Counting from the end of the period, not from the last write, means a
late event for an old period never extends it, and every key of one period expires at
the same instant.

    daily   2026-11-22  ends 2026-11-23 00:00 local
    weekly  2026-W7     ends on the Monday 00:00 that starts ISO week 8
    monthly 2026-M3     ends 2026-04-01 00:00 local
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pomocore.core.settings import Settings

DAILY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
WEEKLY = re.compile(r"^(\d{4})-W(\d{1,2})$")
MONTHLY = re.compile(r"^(\d{4})-M(\d{1,2})$")


def period_kind(label: str) -> str:
    """`daily`, `weekly` or `monthly` for a period label; ValueError otherwise."""
    for kind, pattern in (("daily", DAILY), ("weekly", WEEKLY), ("monthly", MONTHLY)):
        if pattern.match(label):
            return kind
    raise ValueError(f"not a period label: {label!r}")


def period_end(label: str) -> date:
    """The first local date after the period."""
    if m := DAILY.match(label):
        return date(int(m[1]), int(m[2]), int(m[3])) + timedelta(days=1)
    if m := WEEKLY.match(label):
        return date.fromisocalendar(int(m[1]), int(m[2]), 1) + timedelta(weeks=1)
    if m := MONTHLY.match(label):
        year, month = int(m[1]), int(m[2])
        return date(year + month // 12, month % 12 + 1, 1)
    raise ValueError(f"not a period label: {label!r}")


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """Days each kind of period is kept after its end (0 = forever), in `timezone`."""

    timezone: str
    daily_days: int = 0
    weekly_days: int = 0
    monthly_days: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ExpiryPolicy:
        return cls(
            settings.timezone,
            settings.ttl_daily_days,
            settings.ttl_weekly_days,
            settings.ttl_monthly_days,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.daily_days or self.weekly_days or self.monthly_days)

    def days(self, kind: str) -> int:
        return {"daily": self.daily_days, "weekly": self.weekly_days, "monthly": self.monthly_days}[
            kind
        ]

    def expire_at(self, label: str) -> int | None:
        """Unix seconds at which the key of this period label expires; None = never."""
        keep = self.days(period_kind(label))
        if not keep:
            return None
        end = period_end(label)
        local = datetime(end.year, end.month, end.day, tzinfo=ZoneInfo(self.timezone))
        return int((local + timedelta(days=keep)).timestamp())

    def expire_at_key(self, key: str) -> int | None:
        """Same, from a leaderboard key (`leaderboard:{category}:{label}`, any hash tag)."""
        return self.expire_at(key.rsplit(":", 1)[-1])


def expire_at_function(settings: Settings) -> Callable[[str], int | None] | None:
    """Leaderboard key -> unix expiry, or None when no expiry is configured."""
    policy = ExpiryPolicy.from_settings(settings)
    return policy.expire_at_key if policy.enabled else None
