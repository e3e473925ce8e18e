"""Reclaim from dead consumers, consumer clean-up, poison control, lost-to-trim."""

from __future__ import annotations

import asyncio
import dataclasses

import redis
import redis.asyncio as aioredis

from pomocore.consumers.reclaim import BatchKeeper, Reclaimer
from pomocore.core.settings import Settings
from tests.support.consumer import drain
from tests.support.expected import assert_exact
from tests.support.streams import dead_letters, now_fields, publish
from tests.support.waiting import wait_until


def _events(n: int, offset: int = 0) -> list[dict[str, str | bytes]]:
    apps = ["Code", "Slack", "Figma", "Spotify"]
    return [
        now_fields(f"u{(i + offset) % 7}", apps[i % 4], 10.0 + i + offset / 10) for i in range(n)
    ]


def _group(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url)
    client.xgroup_create(settings.keys.stream_key, settings.group, id="0", mkstream=True)
    return client


async def test_entries_of_a_dead_consumer_are_reclaimed_and_counted_once(
    settings: Settings,
) -> None:
    s = dataclasses.replace(settings, reclaim_idle_ms=200)
    client = _group(s)
    events = _events(60)
    publish(s.redis_url, s.keys.stream_key, events)
    # "dead-1" reads 40 entries and dies without acknowledging them.
    got = client.xreadgroup(s.group, "dead-1", {s.keys.stream_key: ">"}, count=40)
    assert len(got[0][1]) == 40

    stats = await drain(s)

    assert stats.committed == 60
    assert_exact(s, events)
    assert client.xpending(s.keys.stream_key, s.group)["pending"] == 0
    assert dead_letters(s) == []


async def test_idle_consumer_deleted_only_when_its_pending_list_is_empty(
    settings: Settings,
) -> None:
    s = dataclasses.replace(settings, reclaim_idle_ms=100)
    client = _group(s)
    publish(s.redis_url, s.keys.stream_key, _events(5))
    client.xreadgroup(s.group, "busy", {s.keys.stream_key: ">"}, count=5)
    client.xgroup_createconsumer(s.keys.stream_key, s.group, "empty")
    await asyncio.sleep(0.4)  # both idle for longer than 2 x reclaim_idle_ms
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        reclaimer = Reclaimer(s, r)
        assert await reclaimer.delete_idle_consumers() == ["empty"]
        # the script itself refuses a consumer that owns pending entries
        assert (
            await reclaimer._delete_script(keys=[s.keys.stream_key], args=[s.group, "busy", 0]) == 0
        )
    finally:
        await r.aclose()
    names = {c["name"] for c in client.xinfo_consumers(s.keys.stream_key, s.group)}
    assert names == {b"busy"}
    assert client.xpending(s.keys.stream_key, s.group)["pending"] == 5


async def test_entry_delivered_too_often_is_dead_lettered_with_its_ack(
    settings: Settings,
) -> None:
    s = dataclasses.replace(settings, reclaim_idle_ms=200, max_deliveries=3)
    client = _group(s)
    good = _events(4)
    poison = now_fields("poison-user", "Code", 99.0)
    ids = publish(s.redis_url, s.keys.stream_key, [good[0], poison, *good[1:]])
    client.xreadgroup(s.group, "crashy", {s.keys.stream_key: ">"})  # delivery 1
    for _ in range(3):  # a consumer that crashed on it three more times
        client.xclaim(s.keys.stream_key, s.group, "crashy", 0, [ids[1]])

    await drain(s)

    letters = dead_letters(s)
    assert len(letters) == 1
    (letter,) = letters
    assert letter[b"dlq.reason"] == b"max_deliveries"
    assert letter[b"dlq.entry_id"] == ids[1].encode()
    assert letter[b"dlq.detail"] == b"delivered 5 times"
    assert letter[b"userId"] == b"poison-user"
    assert_exact(s, good)  # the poison entry: acknowledged, no usage log, no score


async def test_own_pending_entries_redelivered_too_often_are_dead_lettered(
    settings: Settings,
) -> None:
    # The same consumer name restarts after crashing on an entry: it re-reads its own
    # pending list (not XAUTOCLAIM), and the delivery count is checked there too.
    s = dataclasses.replace(settings, max_deliveries=2)
    client = _group(s)
    good = _events(3)
    ids = publish(s.redis_url, s.keys.stream_key, good)
    for _ in range(2):
        client.xreadgroup(s.group, s.consumer_name, {s.keys.stream_key: "0" if _ else ">"})
    # delivered twice so far; the restart's re-read makes it 3 > 2
    await drain(s)
    letters = dead_letters(s)
    assert sorted(f[b"dlq.entry_id"] for f in letters) == sorted(i.encode() for i in ids)
    assert {f[b"dlq.reason"] for f in letters} == {b"max_deliveries"}
    assert_exact(s, [])


async def test_entries_trimmed_while_pending_are_counted_as_lost(settings: Settings) -> None:
    s = dataclasses.replace(settings, reclaim_idle_ms=200)
    client = _group(s)
    events = _events(10)
    ids = publish(s.redis_url, s.keys.stream_key, events)
    client.xreadgroup(s.group, "dead-1", {s.keys.stream_key: ">"})
    client.xdel(s.keys.stream_key, *ids[:3])  # trimmed by someone before processing

    await drain(s)

    assert int(client.get(s.keys.lost_to_trim_key) or 0) == 3
    assert_exact(s, events[3:])


async def test_keeper_keeps_a_held_batch_fresh_without_counting_a_delivery(
    settings: Settings,
) -> None:
    """Issue #13 §4: while a lane holds a batch, another consumer's XAUTOCLAIM finds
    nothing idle long enough to take; once the lane lets go, the batch is reclaimable."""
    s = dataclasses.replace(settings, reclaim_idle_ms=1000)
    client = _group(s)
    ids = publish(s.redis_url, s.keys.stream_key, _events(5))
    client.xreadgroup(s.group, s.consumer_name, {s.keys.stream_key: ">"})  # delivery 1
    stream, idle = s.keys.stream_key, s.reclaim_idle_ms
    r = aioredis.Redis.from_url(s.redis_url)
    try:
        keeper = BatchKeeper(Reclaimer(s, r))
        async with keeper.running():
            token = keeper.hold([(i, None) for i in ids])
            for _ in range(6):  # three reclaim idles
                await asyncio.sleep(idle / 2000)
                assert client.xautoclaim(stream, s.group, "other", idle)[1] == []
            assert keeper.refreshes >= 6
            keeper.release(token)
            taken: list[bytes] = []
            await wait_until(
                lambda: bool(taken.extend(client.xautoclaim(stream, s.group, "other", idle)[1]))
                or len(taken) == len(ids),
                30,
            )
    finally:
        await r.aclose()
    pending = client.xpending_range(stream, s.group, "-", "+", 10)
    assert {p["consumer"] for p in pending} == {b"other"}
    assert {p["times_delivered"] for p in pending} == {2}  # the read and the reclaim only
