"""`pomocore dlq list|replay|purge` and `pomocore leaderboard rebuild` against real servers."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pymongo
import redis

from pomocore.core.ids import stream_tag, usage_log_id
from pomocore.core.settings import Settings
from pomocore.dlq import dlq_command
from pomocore.rebuild import rebuild_command
from tests.support.consumer import drain
from tests.support.expected import (
    actual_leaderboards,
    assert_scores_equal,
    categories_of,
    reference_leaderboards,
)
from tests.support.streams import dead_letters, now_fields, publish


def _db(settings: Settings) -> Any:
    return pymongo.MongoClient(settings.mongo_uri)[settings.mongo_db]


async def test_list_replay_purge(settings: Settings) -> None:
    s = dataclasses.replace(settings, reclaim_idle_ms=200, max_deliveries=1)
    key = s.keys.stream_key
    client = redis.Redis.from_url(s.redis_url)
    client.xgroup_create(key, s.group, id="0", mkstream=True)
    good = [now_fields("u1", "Code", 5.0), now_fields("u2", "Figma", 7.0)]
    poison = now_fields("u3", "Code", 11.0)
    bad = now_fields("u4", "Code", 3.0, isEnd="maybe")
    ids = publish(s.redis_url, key, [*good, poison, bad])
    client.xreadgroup(s.group, "crashy", {key: ">"}, count=3)
    client.xclaim(key, s.group, "crashy", 0, [ids[2]])  # poison delivered twice
    # the crashed consumer had already written the poison entry's usage log
    _db(s).pomodoro_usage_log.insert_one(
        {"_id": usage_log_id(stream_tag(key), ids[2]), "userId": "u3", "duration": 11.0}
    )
    await drain(s)
    # good[0], good[1] were reclaimed once (2 deliveries > 1) as well: all three are poison
    reasons = sorted(f[b"dlq.reason"] for f in dead_letters(s))
    assert reasons == [b"invalid_bool", b"max_deliveries", b"max_deliveries", b"max_deliveries"]

    out = io.StringIO()
    assert dlq_command("list", s, "invalid_bool", None, False, out) == 0
    (row,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert row["field"] == "isEnd" and row["entry_id"] == ids[3]
    assert row["fields"]["userId"] == "u4"

    out = io.StringIO()
    assert dlq_command("replay", s, "max_deliveries", None, False, out) == 0
    assert "replayed 3 dead letters" in out.getvalue()
    s2 = dataclasses.replace(s, max_deliveries=10)
    await drain(s2)
    replayed = [*good, poison]
    expected = reference_leaderboards(
        zip(replayed, categories_of(replayed), strict=True), s.timezone
    )
    assert_scores_equal(actual_leaderboards(s.redis_url), expected)
    # the replayed poison entry updated the document its crashed consumer wrote
    assert _db(s).pomodoro_usage_log.count_documents({}) == 3
    assert (
        _db(s).pomodoro_usage_log.count_documents({"userId": "u3", "category": "Development"}) == 1
    )

    out = io.StringIO()
    assert dlq_command("purge", s, None, None, False, out) == 1  # needs --yes
    assert len(dead_letters(s)) == 1
    assert dlq_command("purge", s, "invalid_bool", None, True, io.StringIO()) == 0
    assert dead_letters(s) == []


async def test_rebuild_check_reports_and_rebuild_restores(settings: Settings) -> None:
    now = time.time()
    events = [
        now_fields(
            f"u{i % 5}",
            ["Code", "Slack", "Figma"][i % 3],
            1.0 + i / 7,
            timestamp=now - 600 - i * 2400,
        )
        for i in range(120)
    ]
    publish(settings.redis_url, settings.keys.stream_key, events)
    await drain(settings)
    expected = reference_leaderboards(
        zip(events, categories_of(events), strict=True), settings.timezone
    )
    zone = ZoneInfo(settings.timezone)
    first = datetime.fromtimestamp(min(float(e["timestamp"]) for e in events), zone).date()
    last = datetime.fromtimestamp(max(float(e["timestamp"]) for e in events), zone).date()

    out = io.StringIO()
    assert rebuild_command(settings, first, last, check=True, out=out) == 0
    assert "0 differ" in out.getvalue()

    client = redis.Redis.from_url(settings.redis_url)
    some_key, other_key = sorted(expected)[:2]
    client.zincrby(some_key, 42.0, "u1")  # an increment applied twice
    client.delete(other_key)  # a lost key
    client.zadd(f"leaderboard:Game:{last.isoformat()}", {"ghost": 5.0})  # a stray key
    client.expire(some_key, 1000)

    out = io.StringIO()
    assert rebuild_command(settings, first, last, check=True, out=out) == 1
    reported = {json.loads(line)["key"] for line in out.getvalue().splitlines()[:-1]}
    assert reported == {some_key, other_key, f"leaderboard:Game:{last.isoformat()}"}

    assert rebuild_command(settings, first, last, check=False, out=io.StringIO()) == 0
    assert_scores_equal(actual_leaderboards(settings.redis_url), expected)
    assert 0 < client.ttl(some_key) <= 1000  # the key's TTL survives the rewrite
    assert rebuild_command(settings, first, last, check=True, out=io.StringIO()) == 0
