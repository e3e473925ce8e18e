"""Leaderboard period labels (CONTRACT §4) for a unix timestamp in a time zone.

    daily    2026-11-22
    weekly   2026-W7      ISO year and ISO week, week not zero-padded
    monthly  2026-M3      month not zero-padded

Converting a timestamp to a local date costs ~1 µs with zoneinfo, so labels are memoised
per 15-minute bucket of UTC time: every UTC offset and transition in the tz database
since 1970 is a multiple of 15 minutes, so all instants of one bucket share a local date.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

BUCKET_S = 900


class Periods(NamedTuple):
    daily: str
    weekly: str
    monthly: str

    def labels(self) -> tuple[str, str, str]:
        return (self.daily, self.weekly, self.monthly)


def periods_of_datetime(local: date) -> Periods:
    iso_year, iso_week, _ = local.isocalendar()
    return Periods(
        daily=f"{local.year:04d}-{local.month:02d}-{local.day:02d}",
        weekly=f"{iso_year}-W{iso_week}",
        monthly=f"{local.year}-M{local.month}",
    )


class PeriodCalculator:
    """Timestamp → Periods in one time zone, memoised per 15-minute bucket."""

    def __init__(self, timezone: str, cache_size: int = 4096) -> None:
        self.tz = ZoneInfo(timezone)
        self._bucket = lru_cache(maxsize=cache_size)(self._compute)

    def _compute(self, bucket: int) -> Periods:
        return periods_of_datetime(datetime.fromtimestamp(bucket * BUCKET_S, self.tz))

    def __call__(self, timestamp_s: float) -> Periods:
        return self._bucket(int(timestamp_s // BUCKET_S))
