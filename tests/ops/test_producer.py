"""The producer kit (`pomocore.publish` and friends) against a real Valkey: what it sends
is what the consumer accepts, an invalid event sends nothing and names the consumer's
reason, keys follow the settings, Redis failures arrive as our errors, and the
`producer` ACL user is enough."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

import pomocore
from pomocore import acl
from pomocore.core.connect import no_async_retry, no_retry
from pomocore.core.errors import BackendError, BackendUnavailable, RejectedEvent
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of
from pomocore.embedded import free_port
from pomocore.producer import PIPELINE_CHUNK
from pomocore.reader import LeaderboardReader
from tests.support.consumer import drain
from tests.support.streams import dead_letters


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def event(user: str, duration: float, **extra: object) -> dict[str, object]:
    return {"userId": user, "app": "Code", "duration": duration,
            "timestamp": time.time() - 60, **extra}  # fmt: skip


async def test_published_events_are_all_accepted_by_the_consumer(
    settings: Settings, client: redis.Redis
) -> None:
    end = event("solo", 1.5, isEnd=True, session=7, sessionDate="2026-02-12", sessionMinutes=25)
    first = pomocore.publish(client, end)
    n = PIPELINE_CHUNK + 200  # more than one pipeline
    events = [event(f"u{i % 10}", 2.0, title=f"t{i}", url=None) for i in range(n)]
    ids = pomocore.publish_many(client, events, settings=settings)
    assert len(ids) == n and len(set(ids)) == n
    stored = [i.decode() for i, _ in client.xrange(settings.keys.stream_key)]  # type: ignore[union-attr]
    assert stored == [first, *ids]  # in order, one entry each
    _, fields = client.xrange(settings.keys.stream_key, ids[0], ids[0])[0]  # type: ignore[index]
    assert fields[b"duration"] == b"2.0" and b"url" not in fields  # None is left out
    stats = await drain(settings)
    assert stats.committed == n + 1
    assert dead_letters(settings) == []
    with LeaderboardReader.from_settings(settings) as reader:
        rows = reader.top("Development", "daily", None, limit=20)
    assert {r.user: r.score for r in rows} == {**{f"u{i}": 2.0 * n / 10 for i in range(10)},
                                               "solo": 1.5}  # fmt: skip


def test_an_invalid_event_sends_nothing(settings: Settings, client: redis.Redis) -> None:
    good = event("u1", 5.0)
    with pytest.raises(RejectedEvent) as info:
        pomocore.publish_many(client, [good, event("u2", 90_000.0), good], settings=settings)
    assert (info.value.reason, info.value.field) == ("out_of_range", "duration")
    assert "event 1" in str(info.value)
    with pytest.raises(RejectedEvent) as info:
        pomocore.publish(client, {**good, "timestamp": time.time() + 3600})
    assert info.value.reason == "future_timestamp"
    with pytest.raises(RejectedEvent) as info:
        pomocore.publish(client, {**good, "isEnd": "true"})  # the wire form is checked too
    assert (info.value.reason, info.value.field) == ("missing_field", "session")
    with pytest.raises(TypeError, match="userId"):
        pomocore.publish(client, {**good, "userId": 42})  # type: ignore[dict-item]
    short = dataclasses.replace(settings, max_text_chars=64)  # the settings' limits apply
    with pytest.raises(RejectedEvent, match="too_long"):
        pomocore.publish(client, {**good, "title": "x" * 65}, settings=short)
    # An entry the consumer would dead-letter unread (POMOCORE_MAX_ENTRY_BYTES): extra
    # fields count too.
    with pytest.raises(RejectedEvent) as info:
        pomocore.publish(client, {**good, "note": "n" * settings.max_entry_bytes})
    assert info.value.reason == "too_large"
    assert client.exists(settings.keys.stream_key) == 0


def test_stream_key_follows_the_settings(settings: Settings, client: redis.Redis) -> None:
    tagged = dataclasses.replace(settings, stream="custom_stream", key_hash_tag="t1")
    (entry,) = pomocore.publish_many(client, [event("u1", 1.0)], settings=tagged)
    assert client.xrange("{t1}custom_stream")[0][0].decode() == entry  # type: ignore[index]
    pomocore.publish(client, event("u1", 1.0))  # no settings: the contract's stream
    assert client.xlen("pattern_match_stream") == 1


async def test_async_publish(settings: Settings, aredis: aioredis.Redis) -> None:
    one = await pomocore.apublish(aredis, event("a1", 3.0), settings=settings)
    many = await pomocore.apublish_many(aredis, [event("a2", 4.0)] * 3, settings=settings)
    entries = await aredis.xrange(settings.keys.stream_key)
    assert [i.decode() for i, _ in entries] == [one, *many]
    with pytest.raises(RejectedEvent):
        await pomocore.apublish(aredis, event("", 1.0), settings=settings)
    assert await aredis.xlen(settings.keys.stream_key) == 4
    await drain(settings)
    assert dead_letters(settings) == []


async def test_redis_failures_are_our_errors(settings: Settings, client: redis.Redis) -> None:
    port = free_port()  # nothing listens there
    away = redis.Redis("127.0.0.1", port, socket_connect_timeout=1, retry=no_retry())
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}|localhost:{port}"):
        pomocore.publish(away, event("u1", 1.0))
    with pytest.raises(BackendUnavailable):
        pomocore.publish_many(away, [event("u1", 1.0)])
    away_async = aioredis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=1, retry=no_async_retry()
    )
    with pytest.raises(BackendUnavailable):
        await pomocore.apublish_many(away_async, [event("u1", 1.0)])
    await away_async.aclose()
    client.set(settings.keys.stream_key, "not a stream")
    with pytest.raises(BackendError) as info:  # WRONGTYPE: retrying will not help
        pomocore.publish(client, event("u1", 1.0), settings=settings)
    assert not isinstance(info.value, BackendUnavailable)
    assert isinstance(info.value.__cause__, redis.ResponseError)


def test_the_producer_acl_user_is_enough(settings: Settings, client: redis.Redis) -> None:
    args = acl.setuser_args(settings.keys, "producer", "pw", name="t-producer")
    client.execute_command("ACL", "SETUSER", *args)  # type: ignore[no-untyped-call]
    host, port = (
        client.connection_pool.connection_kwargs["host"],
        client.connection_pool.connection_kwargs["port"],
    )
    producer = redis.Redis(host=host, port=port, username="t-producer", password="pw")
    try:
        ids = pomocore.publish_many(producer, [event("u1", 1.0), event("u2", 2.0)],
                                    settings=settings)  # fmt: skip
        assert client.xlen(settings.keys.stream_key) == len(ids) == 2
        with pytest.raises(BackendError, match=r"NoPermission|NOPERM"):
            pomocore.publish(producer, event("u1", 1.0), settings=dataclasses.replace(
                settings, stream="elsewhere"))  # fmt: skip
    finally:
        producer.close()
        client.execute_command("ACL", "DELUSER", "t-producer")  # type: ignore[no-untyped-call]


async def test_with_shards_each_event_goes_to_its_users_shard(
    settings: Settings, client: redis.Redis, aredis: aioredis.Redis
) -> None:
    """POMOCORE_SHARDS=6: each event in its user's shard stream (crc32 of the UTF-8
    userId, mod 6), the ids returned in the order of the events, nothing on the contract
    stream; the same checks as with one shard."""
    s = dataclasses.replace(settings, shards=6)
    users = [f"user-{i}" for i in range(40)] + ["ユーザー", "😀"]
    events = [event(users[i % len(users)], 1.0, title=f"t{i}") for i in range(PIPELINE_CHUNK + 50)]
    ids = pomocore.publish_many(client, events, settings=s)
    ids.append(pomocore.publish(client, events[0], settings=s))
    ids += await pomocore.apublish_many(aredis, events[:7], settings=s)
    ids.append(await pomocore.apublish(aredis, events[1], settings=s))
    sent = [*events, events[0], *events[:7], events[1]]
    stored: dict[tuple[int, str], bytes] = {}  # (shard, entry id) -> title
    for i in range(6):
        for entry_id, fields in client.xrange(s.shard_keys(i).stream_key):  # type: ignore[union-attr]
            stored[i, entry_id.decode()] = fields[b"title"]
    assert client.exists(s.keys.stream_key) == 0
    # (ids are unique per stream: two shards' entries may share one)
    shards = [shard_of(str(e["userId"]), 6) for e in sent]
    assert len(ids) == len(sent) == len(stored) == len(set(zip(shards, ids, strict=True)))
    assert [stored[k] for k in zip(shards, ids, strict=True)] == [
        str(e["title"]).encode() for e in sent
    ]
    assert set(shards) == set(range(6))
    with pytest.raises(RejectedEvent):  # checked as before: nothing sent
        pomocore.publish_many(client, [events[0], event("u", -1.0)], settings=s)
    assert len(stored) == sum(client.xlen(s.shard_keys(i).stream_key) for i in range(6))
