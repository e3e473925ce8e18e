"""Reads bounded in bytes (issue #14 §3, consumers/reads.py): an entry over
POMOCORE_MAX_ENTRY_BYTES is dead-lettered as too_large without being read whole, a reply
over POMOCORE_BATCH_MAX_BYTES is cut off, and reclaiming respects both. Real servers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from pomocore.consumers.reads import GuardedReader, ReadSizer
from pomocore.core.connect import REPLY_BYTES, ReplyTooLarge, bound_replies
from pomocore.core.events import MAX_ENTRY_FIELDS, Oversized, entry_bytes
from pomocore.core.settings import Settings
from pomocore.dlq import replay
from pomocore.embedded import EmbeddedRedis
from tests.support.consumer import drain
from tests.support.expected import assert_exact
from tests.support.memory import documented_bound_bytes, peak_rss_bytes
from tests.support.processes import server_env, spawn_consumer
from tests.support.servers import running, with_servers
from tests.support.streams import dead_letters, group_state, now_fields, publish
from tests.support.waiting import wait_for

KIB = 1024
MIB = 1024 * KIB


def _small(settings: Settings, **overrides: object) -> Settings:
    """Limits small enough that a test needs a few MB, not GB, to cross them."""
    values: dict[str, object] = {"max_entry_bytes": 128 * KIB, "batch_max_bytes": 1 * MIB}
    values.update(overrides)
    return dataclasses.replace(settings, **values)  # type: ignore[arg-type]


def _good(n: int, offset: int = 0) -> list[dict[str, str | bytes]]:
    apps = ["Code", "Slack", "Figma"]
    return [now_fields(f"u{(i + offset) % 5}", apps[i % 3], 5.0 + i) for i in range(n)]


def _huge(user: str, size: int) -> dict[str, str | bytes]:
    return now_fields(user, "Code", 7.0, title="t" * size)


def _too_large_letters(settings: Settings) -> list[dict[bytes, bytes]]:
    letters = dead_letters(settings)
    assert {f[b"dlq.reason"] for f in letters} <= {b"too_large"}, letters[:1]
    for letter in letters:  # no original field was copied: only the dlq.* ones
        assert all(name.startswith(b"dlq.") for name in letter), list(letter)
    return letters


# --- the parts -------------------------------------------------------------------------


def test_read_sizer_keeps_twice_the_entry_size_within_the_batch_bytes() -> None:
    sizer = ReadSizer(Settings.from_env({}, batch_max_bytes=8 * MIB))
    assert sizer.count(1000, 0) == 1000  # before any read: 1 KiB assumed, far below
    assert sizer.observe(300 * 1000, [("1-0", [b"a", b"b"])] * 1000) == 300_000
    assert sizer.count(1000, 0) == 1000
    sizer.observe(70 * KIB * 10, [("1-0", [b"a", b"b"])] * 10)  # 70 KiB entries
    assert sizer.count(1000, 0) == 8 * MIB // (2 * 70 * KIB) == 58
    assert sizer.count(1000, 8 * MIB - 100 * KIB) == 0  # the batch is full by bytes
    sizer.cut_off()
    assert sizer.guarded and sizer.count(1000, 0) == 8 * MIB // (2 * sizer.max_entry_bytes)


async def test_a_bounded_client_cuts_off_a_reply_and_reconnects(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    bound_replies(client, 1 * MIB)
    try:
        await client.set("small", b"x" * 1000)
        await client.set("big", b"x" * (2 * MIB))
        assert await client.get("small") == b"x" * 1000
        assert 1000 < REPLY_BYTES.get() < 1100
        with pytest.raises(ReplyTooLarge):
            await client.get("big")
        assert REPLY_BYTES.get() <= 1 * MIB + 64 * KIB  # read no further than the bound
        assert await client.get("small") == b"x" * 1000  # a fresh connection, in sync
    finally:
        await client.aclose()


async def test_guarded_read_leaves_oversized_entries_on_the_server(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    s = _small(settings)
    stream = s.keys.stream_key
    await aredis.xgroup_create(stream, s.group, id="0", mkstream=True)
    many = {f"f{i}": "v" for i in range(MAX_ENTRY_FIELDS + 1)}
    fields = [_good(1)[0], _huge("big", 300 * KIB), _good(1, 1)[0], many]
    ids = publish(s.redis_url, stream, fields)
    reader = GuardedReader(s, aredis)

    got = await reader.read(">", 100)

    assert [i for i, _ in got] == ids
    assert isinstance(got[0][1], list) and isinstance(got[2][1], list)
    huge = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields[1].items()}
    assert got[1][1] == Oversized(entry_bytes(huge), len(huge))
    assert got[3][1] == Oversized(entry_bytes({k.encode(): b"v" for k in many}), len(many))
    pending = await aredis.xpending_range(stream, s.group, "-", "+", 10)
    assert [p["times_delivered"] for p in pending] == [1, 1, 1, 1]  # each delivered once
    assert await reader.read(">", 100) == []


async def test_guarded_read_of_pending_entries_counts_a_delivery_and_sees_deletions(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    s = _small(settings)
    stream = s.keys.stream_key
    await aredis.xgroup_create(stream, s.group, id="0", mkstream=True)
    ids = publish(s.redis_url, stream, _good(3))
    await aredis.xreadgroup(s.group, s.consumer_name, {stream: ">"})
    await aredis.xdel(stream, ids[1])

    got = await GuardedReader(s, aredis).read("0", 100)

    assert [(i, f is None) for i, f in got] == [(ids[0], False), (ids[1], True), (ids[2], False)]
    pending = await aredis.xpending_range(stream, s.group, "-", "+", 10)
    delivered = {p["message_id"].decode(): p["times_delivered"] for p in pending}
    assert (delivered[ids[0]], delivered[ids[2]]) == (2, 2)  # (Redis counts no deleted one)


async def test_guarded_read_returns_at_most_half_the_batch_bytes(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    s = _small(settings)  # 1 MiB a batch: a call keeps up to 512 KiB, plus one entry
    stream = s.keys.stream_key
    await aredis.xgroup_create(stream, s.group, id="0", mkstream=True)
    publish(s.redis_url, stream, [_huge(f"u{i}", 100 * KIB) for i in range(20)])
    client = aioredis.Redis.from_url(s.redis_url)
    bound_replies(client, s.batch_max_bytes)
    try:
        got = await GuardedReader(s, client).read(">", 1000)
        assert len(got) == 6  # 5 x 100 KiB (and a few bytes) < 512 KiB: the sixth passes it
        assert REPLY_BYTES.get() < s.batch_max_bytes
    finally:
        await client.aclose()


# --- the consumer ------------------------------------------------------------------------


async def test_an_entry_over_the_limit_is_dead_lettered_without_its_fields(
    settings: Settings,
) -> None:
    # Within a batch's bytes the entry is read (plain XREADGROUP), then rejected before
    # validation copies it; its dead letter carries no original field.
    s = _small(settings, batch_max_bytes=8 * MIB)
    good = _good(20)
    hostile = [_huge("big", 200 * KIB), {f"f{i}": "v" for i in range(MAX_ENTRY_FIELDS + 1)}]
    ids = publish(s.redis_url, s.keys.stream_key, [*good[:10], *hostile, *good[10:]])

    stats = await drain(s)

    letters = _too_large_letters(s)
    assert sorted(f[b"dlq.entry_id"] for f in letters) == sorted(i.encode() for i in ids[10:12])
    assert stats.reads_cut_off == 0 and stats.rejected_by_reason == {"too_large": 2}
    assert_exact(s, good)


async def test_a_reply_over_the_batch_bytes_is_cut_off_and_read_again_guarded(
    settings: Settings,
) -> None:
    s = _small(settings, batch_size=1000)
    good = _good(30)
    huge = [_huge(f"big{i}", 300 * KIB) for i in range(30)]  # 9 MB: one read would take all
    publish(s.redis_url, s.keys.stream_key, [*good[:15], *huge, *good[15:]])

    stats = await drain(s)

    assert stats.reads_cut_off >= 1
    assert len(_too_large_letters(s)) == 30
    assert_exact(s, good)
    assert group_state(s) == (0, 0)


async def test_reclaimed_oversized_entries_are_dead_lettered_unread(settings: Settings) -> None:
    s = _small(settings, reclaim_idle_ms=200)
    client = redis.Redis.from_url(s.redis_url)
    client.xgroup_create(s.keys.stream_key, s.group, id="0", mkstream=True)
    good = _good(10)
    publish(s.redis_url, s.keys.stream_key, [*good[:5], *[_huge("big", 300 * KIB)] * 8, *good[5:]])
    # "dead-1" takes every entry and dies; the consumer reclaims them (XAUTOCLAIM JUSTID:
    # 2.4 MB of entries, more than the 1 MiB batch, come back as ids only).
    client.xreadgroup(s.group, "dead-1", {s.keys.stream_key: ">"})

    stats = await drain(s)

    assert stats.reads_cut_off == 0  # nothing read whole: the ids, then the guarded read
    assert len(_too_large_letters(s)) == 8
    assert_exact(s, good)
    assert client.xpending(s.keys.stream_key, s.group)["pending"] == 0


async def test_replay_leaves_too_large_dead_letters_alone(settings: Settings) -> None:
    s = _small(settings)
    publish(s.redis_url, s.keys.stream_key, [_huge("big", 200 * KIB), *_good(1)])
    await drain(s)
    client = redis.Redis.from_url(s.redis_url)
    assert replay(client, s.keys) == []  # nothing to put back: the fields were never copied
    assert len(_too_large_letters(s)) == 1
    assert client.xlen(s.keys.stream_key) == 2


# --- the case: 500 entries of 2 MB against a real consumer process ----------------

HUGE_ENTRIES = 500
HUGE_ENTRY_BYTES = 2 * MIB


@pytest.mark.timeout(300)
def test_500_entries_of_2_mb_are_dead_lettered_and_the_consumer_stays_up(
    settings: Settings, tmp_path: Path
) -> None:
    with running(EmbeddedRedis()) as server:  # ~1 GB of entries: a server of its own
        s = with_servers(settings, redis_url=server.url)
        client = redis.Redis.from_url(s.redis_url)
        good = _good(40)
        publish(s.redis_url, s.keys.stream_key, good[:20])
        pipe = client.pipeline(transaction=False)
        for i in range(HUGE_ENTRIES):
            huge = now_fields(f"big{i}", "Code", 5.0, title=b"t" * HUGE_ENTRY_BYTES)
            if i % 2:  # half of them with a 1 MB field name, as a hostile producer sends
                huge = {"n" * MIB: b"v" * MIB, "userId": f"big{i}"}
            pipe.xadd(s.keys.stream_key, huge)  # type: ignore[arg-type]
            if i % 20 == 19:
                pipe.execute()
        pipe.execute()
        publish(s.redis_url, s.keys.stream_key, good[20:])
        env = server_env(s)
        with spawn_consumer(env, log=tmp_path / "run.log") as consumer:
            wait_for(lambda: group_state(s) == (0, 0) or consumer.poll() is not None, 240, "drain")
            assert consumer.poll() is None, consumer.output()[-3000:]  # still up
            peak = peak_rss_bytes(consumer.proc.pid)
            assert consumer.stop() == 0, consumer.output()[-3000:]
        letters = _too_large_letters(s)
        assert len(letters) == HUGE_ENTRIES
        assert_exact(s, good)
        bound = documented_bound_bytes(Settings.from_env({}))
        print(f"peak RSS {peak / MIB:.0f} MiB, documented bound {bound / MIB:.0f} MiB")
        assert peak < bound, f"peak RSS {peak / MIB:.0f} MiB over {bound / MIB:.0f} MiB"
        client.close()
