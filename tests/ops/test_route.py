"""`pomocore route` against a real Valkey (and the 3-node cluster): every entry of the
contract stream moved to its user's shard, fields unchanged, once; repeats of the script
are no-ops; a restart re-forwards its pending entries as repeats; a holder whose lease
lapsed is fenced off; a standby takes over; `pomocore shards` lists the shards."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from pomocore import route
from pomocore.core import retry
from pomocore.core.connect import async_redis
from pomocore.core.errors import ConfigError
from pomocore.core.events import MAX_ENTRY_FIELDS
from pomocore.core.keys import ROUTE_GROUP
from pomocore.core.settings import Settings
from pomocore.core.shards import key_slot, shard_of, shard_tag
from pomocore.embedded import EmbeddedRedis, free_port
from pomocore.route import FORWARD, Forwarder, LeaseLost, shard_args
from tests.support.processes import run_cli, server_env
from tests.support.servers import cluster_settings, redis_cluster
from tests.support.waiting import wait_until

SHARDS = 6
RAW_XRANGE = "return redis.call('XRANGE', KEYS[1], '-', '+')"
RAW_READ = """return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                              'STREAMS', KEYS[1], '>')[1][2]"""

Fields = list[bytes]


@pytest.fixture
def sharded(settings: Settings) -> Settings:
    return dataclasses.replace(settings, shards=SHARDS, batch_size=50)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def flat(user: str | None, n: int, **extra: str) -> Fields:
    """An entry's fields as XADD sends them: a unique `n` to find it again."""
    out = [] if user is None else [b"userId", user.encode()]
    out += [b"app", b"Code", b"duration", b"1.5", b"n", str(n).encode()]
    for name, value in extra.items():
        out += [name.encode(), value.encode()]
    return out


def xadd_flat(client: Any, stream: str, fields: Fields) -> str:
    """XADD with the fields as given (repeated names too, which a dict would merge)."""
    entry_id = client.execute_command("XADD", stream, "*", *fields)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def shard_contents(client: Any, settings: Settings) -> dict[int, list[Fields]]:
    """Each shard stream's entries, as flat field lists, in stream order."""
    out = {}
    for i in range(settings.shards):  # (through a script: redis-py would make dicts of them)
        raw = client.eval(RAW_XRANGE, 1, settings.shard_keys(i).stream_key)
        out[i] = [list(fields) for _, fields in raw]
    return out


def expected_shard(fields: Fields, shards: int) -> int:
    users = [fields[i + 1] for i in range(0, len(fields), 2) if fields[i] == b"userId"]
    return shard_of(users[-1].decode(), shards) if users else 0


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def route_state(client: redis.Redis | RedisCluster, settings: Settings) -> tuple[int, int]:
    """(lag, pending) of the route group on the contract stream; (-1, -1) before it exists."""
    try:
        groups = client.xinfo_groups(settings.keys.stream_key)
    except redis.ResponseError:
        return -1, -1
    for g in groups:
        if g["name"] in (ROUTE_GROUP, ROUTE_GROUP.encode()):
            return int(g.get("lag") or 0), int(g["pending"])
    return -1, -1


async def drain(settings: Settings, aclient: Any, sync: Any, **kwargs: Any) -> list[Forwarder]:
    running = [
        Forwarder(settings, aclient, lease_s=kwargs.get("lease_s", 2.0), consumer=f"route-{i}")
        for i in range(kwargs.get("forwarders", 1))
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(f.run(stop)) for f in running]
    try:
        await wait_until(
            lambda: route_state(sync, settings) == (0, 0),
            timeout_s=30,
            describe=lambda: f"route group: {route_state(sync, settings)}",
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return running


# --- pure ---


def test_shard_args_by_user_in_order() -> None:
    entries: list[tuple[str, Fields | None]] = [
        ("1-1", flat("alice", 1)),
        ("1-2", None),  # deleted while pending: nothing to move
        ("1-3", flat(None, 3)),  # no userId: shard 0 (its consumer dead-letters it)
        ("1-4", [b"userId", b"\xff\xfe", b"n", b"4"]),  # not UTF-8: shard 0 too
        ("1-5", [b"userId", b"x", b"n", b"5", b"userId", b"bob"]),  # the last one counts
        ("1-6", flat("alice", 6)),
    ]
    per_shard, gone = shard_args(entries, SHARDS)
    assert gone == 1
    alice, bob = shard_of("alice", SHARDS), shard_of("bob", SHARDS)
    assert alice != bob  # (the test needs them apart)
    assert per_shard[alice][:3] == ["1-1", 8, b"userId"]
    assert [per_shard[alice][i] for i in (0, 10)] == ["1-1", "1-6"]
    assert per_shard[bob] == ["1-5", 6, b"userId", b"x", b"n", b"5", b"userId", b"bob"]
    zero = per_shard[0]
    assert zero[0] == "1-3" and zero[1] == 6 and zero[8] == "1-4"
    huge = [b"userId", b"alice"] + [v for i in range(400) for v in (f"f{i}".encode(), b"v")]
    per_shard, _ = shard_args([("2-1", huge)], SHARDS)
    assert per_shard[alice][1] == 2 * (MAX_ENTRY_FIELDS + 1)  # still too_large downstream


# --- the script ---


def test_forward_script_moves_once_and_refuses_repeats_and_older_epochs(
    sharded: Settings, client: redis.Redis
) -> None:
    keys = sharded.shard_keys(2)
    forward = client.register_script(FORWARD)
    run = lambda epoch, *args: forward(keys=[keys.stream_key, keys.route_last_key],  # noqa: E731
                                       args=[epoch, *args])  # fmt: skip
    batch = ["5-1", 4, b"userId", b"a", b"n", b"1", "5-2", 4, b"userId", b"b", b"n", b"2"]
    assert run(3, *batch) == [2, 0]
    assert run(3, *batch) == [0, 2]  # the same call again: repeats, nothing added
    assert run(4, "5-2", 2, b"n", b"2", "5-3", 2, b"n", b"3") == [1, 1]
    assert run(3, "5-9", 2, b"n", b"9") == [-1, 4]  # an older holder: fenced off
    assert run(3) == [-1, 4]
    entries = client.xrange(keys.stream_key)
    assert [f[b"n"] for _, f in entries] == [b"1", b"2", b"3"]  # type: ignore[index]
    assert client.hgetall(keys.route_last_key) == {b"id": b"5-3", b"epoch": b"4"}
    # ids compare as numbers, not strings
    assert run(4, "10-0", 2, b"n", b"10") == [1, 0]
    assert run(4, "9-99", 2, b"n", b"x") == [0, 1]
    client.delete(keys.stream_key)
    client.set(keys.stream_key, "not a stream")
    assert run(4, "11-0", 2, b"n", b"11") == [-2, b"string"]
    assert client.hget(keys.route_last_key, "id") == b"10-0"  # nothing written


# --- the forwarder ---


async def test_every_entry_moves_to_its_shard_once_fields_unchanged(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    stream = sharded.keys.stream_key
    published = [flat(f"user-{i % 41}", i) for i in range(600)]
    published += [flat(None, 600), flat("ユーザー", 601, note="ü")]
    published.append([b"userId", b"x", b"n", b"602", b"userId", b"y"])  # repeated name
    for fields in published:
        xadd_flat(client, stream, fields)
    (forwarder,) = await drain(sharded, aclient, client)
    assert forwarder.stats.moved == len(published) and forwarder.stats.repeats == 0
    contents = shard_contents(client, sharded)
    expected: dict[int, list[Fields]] = {i: [] for i in range(SHARDS)}
    for fields in published:
        expected[expected_shard(fields, SHARDS)].append(fields)
    assert contents == expected  # in order, once, unchanged
    assert all(contents.values())  # every shard got some
    assert client.xlen(stream) == len(published)  # (POMOCORE_STREAM_MAXLEN=0: kept)
    assert client.get(sharded.keys.route_lease_key) is None  # handed over on the way out


async def test_a_restart_moves_its_pending_entries_as_repeats(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    """A forwarder killed after moving part of a batch (some shards' calls ran, nothing
    acknowledged): the next one claims the batch, skips what was moved, moves the rest."""
    stream = sharded.keys.stream_key
    published = [flat(f"u{i % 13}", i) for i in range(120)]
    for fields in published:
        xadd_flat(client, stream, fields)
    client.xgroup_create(stream, ROUTE_GROUP, id="0")
    raw = client.eval(RAW_READ, 1, stream, ROUTE_GROUP, "crashed", 80)
    batch = [(i.decode(), list(f)) for i, f in raw]
    per_shard, _ = shard_args(batch, SHARDS)
    forward = client.register_script(FORWARD)
    moved_before = 0
    for shard in list(per_shard)[:3]:  # the crash came after three shards' calls
        k = sharded.shard_keys(shard)
        reply = forward(keys=[k.stream_key, k.route_last_key], args=[1, *per_shard[shard]])
        moved_before += reply[0]  # type: ignore[index]
    assert moved_before > 0
    (forwarder,) = await drain(sharded, aclient, client)
    assert forwarder.stats.repeats == moved_before
    assert forwarder.stats.moved == len(published) - moved_before
    moved = [fields for entries in shard_contents(client, sharded).values() for fields in entries]
    assert sorted(f[-1] for f in moved) == sorted(f[-1] for f in published)  # each `n` once
    consumers = client.xinfo_consumers(stream, ROUTE_GROUP)
    assert [c["name"] for c in consumers] == [b"route-0"]  # the crashed one removed


async def test_a_holder_whose_lease_lapsed_is_fenced_off(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    """A holder stalled past its lease (SIGSTOP, a long pause) and woken after another
    took over: it can neither read the contract stream nor write to any shard."""
    stream = sharded.keys.stream_key
    for i in range(40):
        xadd_flat(client, stream, flat(f"u{i}", i))
    old = Forwarder(sharded, aclient, lease_s=0.5, consumer="old")
    await old._create_group("0")
    lease = await old._take_lease()
    assert lease is not None
    await old._take_over(lease)
    assert await old._step(lease, "0") == ">"  # nothing pending
    raw = client.eval(RAW_READ, 1, stream, ROUTE_GROUP, "old", 20)  # read, then it stalled
    stalled_batch = [(i.decode(), list(f)) for i, f in raw]
    await asyncio.sleep(0.7)  # the lease lapses
    new = Forwarder(sharded, aclient, lease_s=5, consumer="new")
    new_lease = await new._take_lease()
    assert new_lease is not None and new_lease.epoch == lease.epoch + 1
    await new._take_over(new_lease)  # fences every shard, claims the stalled batch
    with pytest.raises(LeaseLost):
        await old._forward(lease, stalled_batch)
    with pytest.raises(LeaseLost):
        await old._step(lease, ">")
    assert all(client.xlen(sharded.shard_keys(i).stream_key) == 0 for i in range(SHARDS))
    stop = asyncio.Event()
    task = asyncio.create_task(new._hold(new_lease, stop))
    await wait_until(lambda: route_state(client, sharded) == (0, 0), timeout_s=10)
    stop.set()
    await task
    assert new.stats.moved == 40 and new.stats.repeats == 0
    assert sum(len(v) for v in shard_contents(client, sharded).values()) == 40


async def test_a_ledger_past_the_epoch_counter_raises_the_counter(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    """The epoch counter lost (its key deleted, a restore without it) while the shards'
    ledgers keep their epochs: the next holder raises the counter past them and works,
    instead of being refused by every shard."""
    client.hset(sharded.shard_keys(3).route_last_key, "epoch", 41)
    for i in range(20):
        xadd_flat(client, sharded.keys.stream_key, flat(f"u{i}", i))
    (forwarder,) = await drain(sharded, aclient, client)
    assert forwarder.stats.moved == 20 and forwarder.stats.lost == 0
    assert client.get(sharded.keys.route_epoch_key) == b"42"
    epochs = {client.hget(sharded.shard_keys(i).route_last_key, "epoch") for i in range(SHARDS)}
    assert epochs == {b"42"}


async def test_a_standby_takes_over_when_the_holder_stops(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    stream = sharded.keys.stream_key
    first = Forwarder(sharded, aclient, lease_s=30, consumer="first")
    second = Forwarder(sharded, aclient, lease_s=30, consumer="second")
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    t1 = asyncio.create_task(first.run(stop_first))
    await wait_until(lambda: first.stats.leases == 1, timeout_s=10)
    t2 = asyncio.create_task(second.run(stop_second))
    for i in range(30):
        xadd_flat(client, stream, flat(f"u{i}", i))
    await wait_until(lambda: route_state(client, sharded) == (0, 0), timeout_s=10)
    assert second.stats.leases == 0  # a standby
    stop_first.set()
    await t1  # hands the lease over: the standby need not wait 30 s
    await wait_until(lambda: second.stats.leases == 1, timeout_s=5)
    for i in range(30, 60):
        xadd_flat(client, stream, flat(f"u{i}", i))
    await wait_until(lambda: route_state(client, sharded) == (0, 0), timeout_s=10)
    stop_second.set()
    await t2
    assert (first.stats.moved, second.stats.moved) == (30, 30)
    assert second.stats.repeats == 0


async def test_the_contract_stream_is_trimmed_behind_the_group(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    s = dataclasses.replace(sharded, stream_maxlen=100, batch_size=500)
    pipe = client.pipeline(transaction=False)
    for i in range(3000):
        pipe.execute_command("XADD", s.keys.stream_key, "*", *flat(f"u{i % 50}", i))
    pipe.execute()
    (forwarder,) = await drain(s, aclient, client)
    assert forwarder.stats.moved == 3000
    assert client.xlen(s.keys.stream_key) < 3000  # acknowledged entries trimmed


async def test_start_id_places_a_new_group(
    sharded: Settings, client: redis.Redis, aclient: aioredis.Redis
) -> None:
    """`--start-id`: where the group starts when the forwarder creates it (a deployment
    that had one shard starts it after what its consumers read)."""
    stream = sharded.keys.stream_key
    read_before = [xadd_flat(client, stream, flat(f"u{i}", i)) for i in range(10)]
    forwarder = Forwarder(sharded, aclient, lease_s=2)
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop, start_id=read_before[-1]))
    await wait_until(lambda: route_state(client, sharded) == (0, 0), timeout_s=10)
    for i in range(10, 15):
        xadd_flat(client, stream, flat(f"u{i}", i))
    await wait_until(lambda: forwarder.stats.moved == 5, timeout_s=10)
    stop.set()
    await task
    moved = [f for entries in shard_contents(client, sharded).values() for f in entries]
    assert sorted(int(f[-1]) for f in moved) == [10, 11, 12, 13, 14]


# --- the pauses after transient Redis errors ---

# (the jitter's draw, the pauses after 1..7 errors in a row): core/retry.py's backoff_s
# with equal jitter, doubling from 0.1 s, capped at 2 s.
BACKOFF_TABLE = [
    (0.0, [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),
    (0.5, [0.075, 0.15, 0.3, 0.6, 1.2, 1.5, 1.5]),
    (1.0, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]),
]


class Pauses:
    """In place of the forwarder's `_wait`: records each pause, returns at once, and stops
    the forwarder after as many pauses as the table has."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seconds: list[float] = []

    async def __call__(self, stop: asyncio.Event, seconds: float) -> None:
        self.seconds.append(seconds)
        if len(self.seconds) >= self.limit:
            stop.set()
        await asyncio.sleep(0)


def pinned_draw(monkeypatch: pytest.MonkeyPatch, draw: float, limit: int) -> Pauses:
    monkeypatch.setattr(retry.random, "random", lambda: draw)
    pauses = Pauses(limit)
    monkeypatch.setattr(route, "_wait", pauses)
    return pauses


@pytest.mark.parametrize(("draw", "delays_s"), BACKOFF_TABLE)
def test_retry_delays_are_the_shared_backoff(
    monkeypatch: pytest.MonkeyPatch, draw: float, delays_s: list[float]
) -> None:
    monkeypatch.setattr(retry.random, "random", lambda: draw)
    got = [route.retry_delay_s(n) for n in range(1, len(delays_s) + 1)]
    assert got == pytest.approx(delays_s)


@pytest.mark.parametrize(("draw", "delays_s"), BACKOFF_TABLE)
async def test_a_forwarder_without_redis_backs_off_with_jitter(
    monkeypatch: pytest.MonkeyPatch, sharded: Settings, draw: float, delays_s: list[float]
) -> None:
    """The lease loop, Redis unreachable from the start (nothing listens on the port)."""
    gone = dataclasses.replace(sharded, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    pauses = pinned_draw(monkeypatch, draw, len(delays_s))
    client = async_redis(gone, socket_connect_timeout=1)
    try:
        await asyncio.wait_for(Forwarder(gone, client).run(asyncio.Event()), 30)
    finally:
        await client.aclose()
    assert pauses.seconds == pytest.approx(delays_s)


@pytest.mark.parametrize(("draw", "delays_s"), BACKOFF_TABLE[:1])
async def test_a_holder_whose_redis_dies_backs_off_with_jitter(
    monkeypatch: pytest.MonkeyPatch, sharded: Settings, draw: float, delays_s: list[float]
) -> None:
    """The holder's loop: the lease taken, then its Redis killed."""
    with EmbeddedRedis() as server:
        own = dataclasses.replace(sharded, redis_url=server.url)
        client = async_redis(own, socket_connect_timeout=1)
        forwarder = Forwarder(own, client, lease_s=30)
        pauses = pinned_draw(monkeypatch, draw, len(delays_s))
        task = asyncio.create_task(forwarder.run(asyncio.Event()))
        try:
            await wait_until(lambda: forwarder.stats.leases == 1, timeout_s=10)
            server.kill()
            await asyncio.wait_for(task, 30)
        finally:
            task.cancel()
            await client.aclose()
    assert pauses.seconds == pytest.approx(delays_s)
    assert forwarder.stats.leases == 1  # every pause was the holder's: it never let go


def test_route_with_one_shard_is_a_configuration_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="POMOCORE_SHARDS"):
        Forwarder(settings, aioredis.Redis())
    done = run_cli("route", env=server_env(settings))
    assert done.returncode == 2 and b"POMOCORE_SHARDS" in done.stderr


def test_shards_command_lists_tags_streams_and_slots() -> None:
    done = run_cli("shards", "--json", env={"POMOCORE_SHARDS": "3"})
    assert done.returncode == 0, done.stderr.decode()
    doc = json.loads(done.stdout)
    assert doc["contract_stream"] == "pattern_match_stream"
    assert [r["stream"] for r in doc["rows"]] == [
        "{" + shard_tag(i, 3) + "}pattern_match_stream" for i in range(3)
    ]
    assert [r["slot"] for r in doc["rows"]] == [key_slot(shard_tag(i, 3)) for i in range(3)]
    text = run_cli("shards", env={"POMOCORE_SHARDS": "3"}).stdout.decode()
    assert shard_tag(2, 3) in text and "pattern_match_stream" in text


# --- on a 3-node cluster ---


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("route-cluster")) as nodes:
        yield nodes


@pytest.mark.timeout(120)
async def test_forwarder_on_a_three_node_cluster(
    cluster: list[EmbeddedRedis], sharded: Settings
) -> None:
    s = dataclasses.replace(cluster_settings(sharded, cluster, "route"), block_ms=100)
    sync = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    aclient = AsyncRedisCluster(host="127.0.0.1", port=cluster[0].port)
    try:
        published = [flat(f"user-{i % 29}", i) for i in range(400)] + [flat(None, 400)]
        for fields in published:
            xadd_flat(sync, s.keys.stream_key, fields)
        (forwarder,) = await drain(s, aclient, sync)
        assert forwarder.stats.moved == len(published)
        contents = shard_contents(sync, s)
        expected: dict[int, list[Fields]] = {i: [] for i in range(SHARDS)}
        for fields in published:
            expected[expected_shard(fields, SHARDS)].append(fields)
        assert contents == expected
        # the shards' streams live on every node
        owners = {sync.keyslot(s.shard_keys(i).stream_key) * 3 // 16384 for i in range(SHARDS)}
        assert owners == {0, 1, 2}
    finally:
        await aclient.aclose()
        sync.close()
