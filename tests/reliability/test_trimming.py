"""Safe input stream trimming: never trims a pending or undelivered entry."""

from __future__ import annotations

import dataclasses

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.consumers.trimming import StreamTrimmer, server_supports_acked
from pomocore.core.settings import Settings
from tests.support.streams import now_fields, publish


async def test_trim_stops_at_oldest_pending_and_first_undelivered(settings: Settings) -> None:
    s = dataclasses.replace(settings, stream_maxlen=5)
    key = s.keys.stream_key
    client = redis.Redis.from_url(s.redis_url)
    client.xgroup_create(key, s.group, id="0", mkstream=True)
    ids = publish(s.redis_url, key, [now_fields("u", "Code", 1.0) for _ in range(100)])
    client.xreadgroup(s.group, "c", {key: ">"}, count=30)
    client.xack(key, s.group, *ids[:10])
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        trimmer = StreamTrimmer(s, r)
        assert await trimmer.trim_once() == 10  # oldest pending is ids[10]
        assert client.xrange(key, count=1)[0][0].decode() == ids[10]
        client.xack(key, s.group, *ids[10:30])
        assert await trimmer.trim_once() == 20  # first undelivered is ids[30]
        assert client.xlen(key) == 70
        client.xreadgroup(s.group, "c", {key: ">"})
        client.xack(key, s.group, *ids[30:])
        assert await trimmer.trim_once() == 65
        assert [i.decode() for i, _ in client.xrange(key)] == ids[95:]
        assert trimmer.mode == ("acked" if await server_supports_acked(r) else "minid")
    finally:
        await r.aclose()


async def test_no_trimming_when_disabled(settings: Settings) -> None:
    key = settings.keys.stream_key
    publish(settings.redis_url, key, [now_fields("u", "Code", 1.0) for _ in range(10)])
    r = aioredis.Redis.from_url(settings.redis_url)
    try:
        assert await StreamTrimmer(settings, r).trim_once() == 0
    finally:
        await r.aclose()
    assert redis.Redis.from_url(settings.redis_url).xlen(key) == 10


def test_unknown_mode_rejected(settings: Settings) -> None:
    with pytest.raises(ValueError):
        StreamTrimmer(settings, aioredis.Redis(), mode="sometimes")
