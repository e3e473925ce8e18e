"""Leaderboard period labels: ISO week edges, month/year boundaries, time zones."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator


def ts(text: str, tz: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


CASES = [
    # local time, zone, daily, weekly, monthly
    ("2026-11-22T12:00:00", "Asia/Seoul", "2026-11-22", "2026-W47", "2026-M11"),
    ("2026-02-16T00:00:00", "Asia/Seoul", "2026-02-16", "2026-W8", "2026-M2"),
    ("2026-03-01T00:00:00", "Asia/Seoul", "2026-03-01", "2026-W9", "2026-M3"),
    # ISO week belongs to the previous ISO year
    ("2027-01-01T10:00:00", "Asia/Seoul", "2027-01-01", "2026-W53", "2027-M1"),
    ("2021-01-03T23:59:59", "Asia/Seoul", "2021-01-03", "2020-W53", "2021-M1"),
    # ISO week belongs to the next ISO year
    ("2024-12-30T00:00:00", "Asia/Seoul", "2024-12-30", "2025-W1", "2024-M12"),
    ("2019-12-31T08:00:00", "UTC", "2019-12-31", "2020-W1", "2019-M12"),
    # leap day, year end
    ("2024-02-29T23:59:59", "Asia/Seoul", "2024-02-29", "2024-W9", "2024-M2"),
    ("2025-12-31T23:59:59", "Asia/Seoul", "2025-12-31", "2026-W1", "2025-M12"),
    # DST zone, both sides of the spring-forward transition
    ("2026-03-08T01:59:00", "America/New_York", "2026-03-08", "2026-W10", "2026-M3"),
    ("2026-03-08T03:00:00", "America/New_York", "2026-03-08", "2026-W10", "2026-M3"),
    # half-hour and 45-minute offsets
    ("2026-06-30T23:50:00", "Asia/Kolkata", "2026-06-30", "2026-W27", "2026-M6"),
    ("2026-06-30T23:50:00", "Asia/Kathmandu", "2026-06-30", "2026-W27", "2026-M6"),
]


@pytest.mark.parametrize(("local", "tz", "daily", "weekly", "monthly"), CASES)
def test_period_labels(local: str, tz: str, daily: str, weekly: str, monthly: str) -> None:
    periods = PeriodCalculator(tz)(ts(local, tz))
    assert (periods.daily, periods.weekly, periods.monthly) == (daily, weekly, monthly)


def test_same_instant_differs_by_time_zone() -> None:
    instant = ts("2026-11-22T16:30:00", "UTC")  # 01:30 on the 23rd in Seoul
    assert PeriodCalculator("UTC")(instant).daily == "2026-11-22"
    assert PeriodCalculator("Asia/Seoul")(instant).daily == "2026-11-23"


def test_bucket_cache_agrees_with_direct_conversion_at_every_minute_of_a_dst_day() -> None:
    calc = PeriodCalculator("America/New_York")
    zone = ZoneInfo("America/New_York")
    start = ts("2026-11-01T00:00:00", "America/New_York")  # fall-back day
    for minute in range(0, 26 * 60, 7):
        instant = start + minute * 60 + 13.5
        assert calc(instant).daily == datetime.fromtimestamp(instant, zone).strftime("%Y-%m-%d")


def test_key_formats() -> None:
    keys = KeySpace()
    assert keys.leaderboard("Development", "2026-W7") == "leaderboard:Development:2026-W7"
    assert keys.stream_key == "pattern_match_stream"
    assert keys.dead_letter_key == "pattern_match_stream:dlq"
    tagged = KeySpace(hash_tag="pomo")
    assert tagged.leaderboard("work", "2026-M3") == "{pomo}leaderboard:work:2026-M3"
    assert tagged.stream_key == "{pomo}pattern_match_stream"
