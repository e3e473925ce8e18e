"""Leaderboard reads: Python API, CLI, HTTP endpoint; expiry times."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pomocore.core.expiry import ExpiryPolicy, period_end
from pomocore.core.settings import Settings
from pomocore.embedded import free_port
from pomocore.http_api import LeaderboardHTTPServer
from pomocore.reader import AsyncLeaderboardReader, LeaderboardReader, QueryError
from tests.support.consumer import drain
from tests.support.http_client import http_get
from tests.support.processes import run_cli
from tests.support.streams import now_fields, publish

TZ = ZoneInfo("Asia/Seoul")
# 2026-02-12 10:00 in Seoul: daily 2026-02-12, weekly 2026-W7, monthly 2026-M2
TS = datetime(2026, 2, 12, 10, 0, tzinfo=TZ).timestamp()


@pytest.fixture
async def filled(settings: Settings) -> Settings:
    events = [
        now_fields("alice", "Code", 300.0, timestamp=TS),
        now_fields("bob", "Code", 100.0, timestamp=TS),
        now_fields("bob", "Code", 50.0, timestamp=TS + 60),
        now_fields("carol", "Code", 900.0, timestamp=TS),
        now_fields("dave", "Netflix", 400.0, timestamp=TS),
    ]
    publish(settings.redis_url, settings.keys.stream_key, events)
    await drain(settings)
    return settings


def test_reader_top_and_rank(filled: Settings) -> None:
    reader = LeaderboardReader.from_settings(filled)
    try:
        top = reader.top("Development", "daily", "2026-02-12", limit=10)
        assert [(r.rank, r.user, r.score) for r in top] == [
            (1, "carol", 900.0),
            (2, "alice", 300.0),
            (3, "bob", 150.0),
        ]
        assert [r.user for r in reader.top("work", "weekly", "2026-02-09", limit=2)] == [
            "carol",
            "alice",
        ]
        assert reader.key("work", "monthly", "2026-02-28").endswith("leaderboard:work:2026-M2")
        bob = reader.rank("bob", "Development", "monthly", "2026-02-01")
        assert bob is not None and (bob.rank, bob.score) == (3, 150.0)
        assert reader.rank("dave", "work", "daily", "2026-02-12") is None
        assert reader.top("Development", "daily", "2026-02-13") == []
        with pytest.raises(QueryError):
            reader.top("Development", "yearly", "2026-02-12")
        with pytest.raises(QueryError):
            reader.top("Development", "daily", "12/02/2026")
        with pytest.raises(QueryError):
            reader.top("Development", "daily", "2026-02-12", limit=0)
    finally:
        reader.close()


async def test_async_reader(filled: Settings) -> None:
    reader = AsyncLeaderboardReader.from_settings(filled)
    try:
        top = await reader.top("Development", "weekly", "2026-02-12", limit=1)
        assert [(r.rank, r.user) for r in top] == [(1, "carol")]
        row = await reader.rank("alice", "work", "daily", "2026-02-12")
        assert row is not None and row.rank == 2
    finally:
        await reader.close()


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_cli("leaderboard", *args, env={"POMOCORE_REDIS_URL": settings.redis_url})


def test_cli_top_and_rank(filled: Settings) -> None:
    out = _cli(
        filled, "top", "--category", "Development", "--period", "daily",
        "--date", "2026-02-12", "--limit", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["1\tcarol\t900.000", "2\talice\t300.000"]
    out = _cli(
        filled, "rank", "--user", "bob", "--category", "work", "--period", "weekly",
        "--date", "2026-02-12", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"rank": 3, "user": "bob", "score": 150.0}
    out = _cli(filled, "rank", "--user", "nobody", "--category", "work", "--period", "daily")
    assert out.returncode == 1


def _get(url: str) -> tuple[int, dict[str, object]]:
    status, body = http_get(url)
    return status, json.loads(body)


def test_http_endpoint(filled: Settings) -> None:
    server = LeaderboardHTTPServer(LeaderboardReader.from_settings(filled), free_port()).start()
    base = f"http://127.0.0.1:{server.port}/v1/leaderboard"
    try:
        status, doc = _get(f"{base}/top?category=Development&period=daily&date=2026-02-12&limit=2")
        assert status == 200
        assert doc["label"] == "2026-02-12"
        assert doc["rows"] == [
            {"rank": 1, "user": "carol", "score": 900.0},
            {"rank": 2, "user": "alice", "score": 300.0},
        ]
        status, doc = _get(f"{base}/rank?user=alice&category=work&period=monthly&date=2026-02-03")
        assert status == 200 and doc["row"] == {"rank": 2, "user": "alice", "score": 300.0}
        assert _get(f"{base}/top?category=Development&period=hourly")[0] == 400
        assert _get(f"{base}/top?period=daily")[0] == 400
        assert _get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
        req = urllib.request.Request(f"{base}/top", method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 405
    finally:
        server.close()
        server.reader.close()


def test_expire_at_counts_from_period_end() -> None:
    policy = ExpiryPolicy("Asia/Seoul", daily_days=7, weekly_days=28, monthly_days=90)
    day = 86400
    seoul_midnight = datetime(2026, 2, 13, tzinfo=TZ).timestamp()
    assert policy.expire_at("2026-02-12") == seoul_midnight + 7 * day
    # 2026-W7 is Mon 2026-02-09 .. Sun 02-15; ends Mon 02-16 00:00
    assert policy.expire_at("2026-W7") == datetime(2026, 2, 16, tzinfo=TZ).timestamp() + 28 * day
    assert policy.expire_at("2026-M12") == datetime(2027, 1, 1, tzinfo=TZ).timestamp() + 90 * day
    assert policy.expire_at_key("{t}leaderboard:work:2026-M2") == (
        datetime(2026, 3, 1, tzinfo=TZ).timestamp() + 90 * day
    )
    assert ExpiryPolicy("Asia/Seoul").expire_at("2026-02-12") is None
    assert period_end("2020-W53").isoformat() == "2021-01-04"
    with pytest.raises(ValueError):
        policy.expire_at("2026-Q1")
