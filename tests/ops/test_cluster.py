"""Redis Cluster: a local 3-node Valkey cluster on loopback ports; the pipeline with
`POMOCORE_REDIS_CLUSTER=1` and a hash tag commits atomically on one slot."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import DataError

import pomocore
from pomocore.consumers.app import redis_client
from pomocore.consumers.consumer import stream_entries
from pomocore.core.connect import (
    CPackingConnection,
    CPackingSSLConnection,
    async_redis,
    drop_idle_connections,
)
from pomocore.core.errors import ConfigError
from pomocore.core.redis_errors import Fault, redis_fault
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of
from pomocore.embedded import EmbeddedCluster, EmbeddedRedis
from pomocore.producer import PIPELINE_CHUNK
from pomocore.reader import AsyncLeaderboardReader, LeaderboardReader
from tests.support.consumer import drain
from tests.support.servers import CLUSTER_SLOTS, cluster_settings, redis_cluster
from tests.support.streams import connected_group_state, now_fields

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def test_pipeline_on_a_three_node_cluster(cluster: list[EmbeddedRedis], settings: Settings) -> None:
    s = cluster_settings(settings, cluster, "pomocore")
    keys = s.keys
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    for k in (keys.stream_key, keys.dead_letter_key, keys.session_score_key):
        client.delete(k)
    now = time.time() - 60
    for i in range(40):
        client.xadd(
            keys.stream_key,
            now_fields(f"u{i % 4}", "Code", 15.0, timestamp=now, isEnd="true", session=i),  # type: ignore[arg-type]
        )
    client.xadd(keys.stream_key, {"userId": "bad", "duration": "x"})
    stats = asyncio.run(drain(s, timeout_s=40, state=connected_group_state))
    assert stats.committed == 41
    slot = key_slot(keys.stream_key.encode())
    reader = LeaderboardReader.from_settings(s)
    lb = reader.key("work", "daily", None)
    assert key_slot(lb.encode()) == slot == key_slot(keys.dead_letter_key.encode())
    top = reader.top("work", "daily", None, limit=10)
    reader.close()
    assert [r.score for r in top] == [150.0] * 4
    assert client.xlen(keys.dead_letter_key) == 1
    assert client.xlen(keys.session_score_key) == 40
    # the keys live on exactly one of the three shards (the trade-off: one hot shard)
    owners = [n for n in cluster if redis.Redis(host="127.0.0.1", port=n.port).dbsize() > 0]
    assert len(owners) == 1
    client.close()


def test_sharding_by_stream_spreads_over_shards(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """Several streams, each with its own tag (and group, and consumer set): each
    stream's keys share a slot, different streams may live on different shards."""
    tags = ["s0", "s1", "s2", "s3", "s4", "s5"]
    slots = {key_slot(Settings.from_env({}, key_hash_tag=t).keys.stream_key.encode()) for t in tags}
    shard = {next(i for i, (lo, hi) in enumerate(CLUSTER_SLOTS) if lo <= s <= hi) for s in slots}
    assert len(shard) >= 2
    s = cluster_settings(settings, cluster, "s1")
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    client.xadd(s.keys.stream_key, now_fields("solo", "Code", 5.0))  # type: ignore[arg-type]
    assert asyncio.run(drain(s, timeout_s=30, state=connected_group_state)).committed == 1
    client.close()


def test_cluster_without_a_hash_tag_is_refused() -> None:
    with pytest.raises(ConfigError, match="POMOCORE_KEY_HASH_TAG"):
        Settings.from_env({"POMOCORE_REDIS_CLUSTER": "1"})


async def test_producer_and_readers_on_a_cluster(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """publish_many pipelines (more than one) through both Cluster clients to the tagged
    stream; the readers' pipelines (ranks, the rank probe) go to the board's one slot."""
    s = cluster_settings(settings, cluster, "pk")
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    aclient = AsyncRedisCluster(host="127.0.0.1", port=cluster[0].port)
    ts = time.time() - 60
    events = [{"userId": f"u{i % 5}", "app": "Code", "duration": 1.0 + i % 5, "timestamp": ts}
              for i in range(PIPELINE_CHUNK + 100)]  # fmt: skip
    ids = pomocore.publish_many(client, events, settings=s)
    ids += await pomocore.apublish_many(aclient, events[:10], settings=s)
    ids.append(await pomocore.apublish(aclient, events[0], settings=s))
    await aclient.aclose()
    assert client.xlen(s.keys.stream_key) == len(ids) == len(set(ids)) == PIPELINE_CHUNK + 111
    stats = await drain(s, timeout_s=60, state=connected_group_state)
    assert stats.committed == len(ids)
    with LeaderboardReader.from_settings(s) as reader:
        top = reader.top("work", "daily", None, limit=5)
        assert [r.user for r in top] == ["u4", "u3", "u2", "u1", "u0"]
        assert reader.rank("u2", "work", "daily") == top[2]
        assert reader.ranks(["u0", "nobody"], "work", "daily") == {"u0": top[4], "nobody": None}
        assert reader.around("u2", "work", "daily", n=1) == top[1:4]
        assert reader.count("work", "daily") == 5
    async with AsyncLeaderboardReader.from_settings(s) as areader:
        assert await areader.ranks(["u4", "u3"], "work", "daily") == {"u4": top[0], "u3": top[1]}
        assert await areader.around("u0", "work", "daily", n=2) == top[2:]


def test_reads_are_bounded_in_bytes_on_a_cluster(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """The Cluster client's node connections parse with the bounded parser too: a read over
    POMOCORE_BATCH_MAX_BYTES is cut off, its entries read guarded and the oversized ones
    dead-lettered as too_large, unread (issue #14 §3, consumers/reads.py)."""
    s = dataclasses.replace(
        cluster_settings(settings, cluster, "bounded"),
        max_entry_bytes=128 * 1024,
        batch_max_bytes=1 << 20,
    )
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    for i in range(6):
        client.xadd(s.keys.stream_key, now_fields(f"u{i}", "Code", 5.0))  # type: ignore[arg-type]
    for i in range(12):  # 3.6 MB: more than a batch's bytes in one reply
        huge = now_fields(f"big{i}", "Code", 5.0, title="t" * 300_000)
        client.xadd(s.keys.stream_key, huge)  # type: ignore[arg-type]
    stats = asyncio.run(drain(s, timeout_s=40, state=connected_group_state))
    assert stats.reads_cut_off >= 1
    assert stats.rejected_by_reason == {"too_large": 12}
    assert stats.accepted == 6
    client.close()


async def test_the_consumers_cluster_client_recovers_after_a_node_outage(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings
) -> None:
    """redis-py drops a node from the Cluster client's start-up list when a command to it
    fails to connect, and closes every node's connections: the lanes' commands in flight
    to the other nodes fail too and drop theirs. With the list empty the client fails for
    good ("cannot be connected ... None": redis-py 5.3; the sharded chaos run's consumers
    never recovered). A lane's reconnect (drop_idle_connections) puts the start-up nodes
    back (core/connect.py, SeededCluster)."""
    with EmbeddedCluster(tmp_path_factory.mktemp("reseed"), 3, appendonly=True) as nodes:
        s = dataclasses.replace(settings, redis_url=nodes.url, redis_cluster=1, key_hash_tag="t")
        client = async_redis(s, socket_connect_timeout=0.5, socket_timeout=1.0)
        keys = [f"{{t{i}}}k" for i in range(30)]  # over every node
        for k in keys:
            await client.set(k, "v")
        nodes.nodes[0].kill()
        for _ in range(5):  # lanes at work on every node while one is down
            await asyncio.gather(*(client.get(k) for k in keys * 4), return_exceptions=True)
        nodes.nodes[0].start()
        deadline = time.monotonic() + 30
        while True:
            try:
                assert [await client.get(k) for k in keys] == [b"v"] * len(keys)
                break
            except Exception as exc:
                assert redis_fault(exc).retry, exc
                if redis_fault(exc) is Fault.RECONNECT:
                    await drop_idle_connections(client)  # as a consumer lane does
                assert time.monotonic() < deadline, exc
                await asyncio.sleep(0.2)
        await client.aclose()


async def test_producer_with_shards_on_a_cluster(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """POMOCORE_SHARDS=6 on three nodes: one publish_many pipeline holds XADDs to six
    streams on three nodes (both Cluster clients split it by node); every event lands in
    its user's shard stream, the ids in the order of the events."""
    s = dataclasses.replace(cluster_settings(settings, cluster, "pks"), shards=6)
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    aclient = AsyncRedisCluster(host="127.0.0.1", port=cluster[0].port)
    ts = time.time() - 60
    events = [{"userId": f"u{i % 23}", "app": "Code", "duration": 1.0, "timestamp": ts,
               "title": f"t{i}"} for i in range(PIPELINE_CHUNK + 100)]  # fmt: skip
    ids = pomocore.publish_many(client, events, settings=s)
    ids += await pomocore.apublish_many(aclient, events[:20], settings=s)
    ids.append(await pomocore.apublish(aclient, events[5], settings=s))
    ids.append(pomocore.publish(client, events[6], settings=s))
    await aclient.aclose()
    sent = [*events, *events[:20], events[5], events[6]]
    shards = [shard_of(str(e["userId"]), 6) for e in sent]
    stored: dict[tuple[int, str], bytes] = {}
    for i in range(6):
        for entry_id, fields in client.xrange(s.shard_keys(i).stream_key):
            stored[i, entry_id.decode()] = fields[b"title"]
    assert len(stored) == len(sent)
    assert [stored[k] for k in zip(shards, ids, strict=True)] == [
        str(e["title"]).encode() for e in sent
    ]
    nodes = {CLUSTER_SLOTS.index(next(r for r in CLUSTER_SLOTS if r[0] <= key_slot(
        s.shard_keys(i).stream_key.encode()) <= r[1])) for i in range(6)}  # fmt: skip
    assert nodes == {0, 1, 2}
    client.close()


def _node_connections(client: AsyncRedisCluster) -> list[object]:
    return [c for node in client.get_nodes() for c in node._connections]


async def test_the_consumer_s_cluster_client_packs_in_c(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """Every node connection of the consumer's Cluster client is ours (hiredis packing,
    core/connect.py): str, bytes, int and float arguments, alone and in a pipeline, reach
    the server exactly as redis-py's encoder writes them; a bool is still a DataError."""
    s = cluster_settings(settings, cluster, f"pack-{uuid.uuid4().hex[:8]}")
    client: Any = redis_client(s)
    key = s.keys.stream_key + ":packed"
    args: list[Any] = ["é", b"\xff\x00 \r\n", 7, -2**70, 1.5, 0.1, 1e-7, float("inf")]
    expected = [b"\xc3\xa9", b"\xff\x00 \r\n", b"7", b"-1180591620717411303424", b"1.5",
                b"0.1", b"1e-07", b"inf"]  # fmt: skip
    try:
        await client.rpush(key, *args)
        async with client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *args)
            pipe.lrange(key, 0, -1)
            _, stored = await pipe.execute()
        assert stored == expected * 2
        with pytest.raises(DataError):
            await client.rpush(key, True)
        connections = _node_connections(client)
        assert connections and {type(c) for c in connections} == {CPackingConnection}
    finally:
        await client.delete(key)
        await client.aclose()


async def test_the_consumer_s_cluster_client_reads_the_raw_stream_reply(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """XREADGROUP on the Cluster client returns Redis' reply unparsed (a flat field list
    per entry, no dict), as the standalone client does (consumers/consumer.py)."""
    s = cluster_settings(settings, cluster, f"raw-{uuid.uuid4().hex[:8]}")
    client: Any = redis_client(s)
    stream = s.keys.stream_key
    try:
        await client.xgroup_create(stream, s.group, id="0", mkstream=True)
        entry_id = await client.xadd(stream, {"userId": "u1", "app": "Code"})
        reply = await client.xreadgroup(s.group, "c1", {stream: ">"}, count=10)
        messages = [[entry_id, [b"userId", b"u1", b"app", b"Code"]]]
        assert reply in ([[stream.encode(), messages]], {stream.encode(): messages})  # RESP2/3
        assert stream_entries(reply) == [(entry_id.decode(), [b"userId", b"u1", b"app", b"Code"])]
    finally:
        await client.delete(stream)
        await client.aclose()


def test_a_tls_cluster_client_packs_in_c() -> None:
    """rediss:// makes redis-py's SSLConnection the node class: ours takes its place (the
    client connects lazily; building it reaches no server)."""
    s = Settings.from_env({}, redis_url="rediss://127.0.0.1:1", redis_cluster=1, key_hash_tag="t")
    client: Any = async_redis(s)
    nodes = client.nodes_manager
    assert nodes.connection_kwargs["connection_class"] is CPackingSSLConnection
    assert {n.connection_class for n in nodes.startup_nodes.values()} == {CPackingSSLConnection}


async def test_the_consumer_s_cluster_client_follows_moved(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """A stale slot map (a slot migrated, a failover) makes a node answer MOVED: the
    consumer's client, whose node connections parse with the bounded parser, still
    recognises it and follows it (redis-py 5.3 knows MOVED only in its ClusterParser)."""
    s = cluster_settings(settings, cluster, f"moved-{uuid.uuid4().hex[:8]}")
    client: Any = redis_client(s)
    key = s.keys.stream_key + ":moved"
    try:
        await client.set(key, "v")
        slot = key_slot(key.encode())
        owner = client.nodes_manager.slots_cache[slot][0]
        other = next(n for n in client.get_primaries() if n.name != owner.name)
        client.nodes_manager.slots_cache[slot] = [other]  # stale: the next GET meets MOVED
        assert await client.get(key) == b"v"
        assert client.nodes_manager.slots_cache[slot][0].name == owner.name
    finally:
        await client.delete(key)
        await client.aclose()
