"""Redis Cluster: a local 3-node Valkey cluster on loopback ports; the pipeline with
`POMOCORE_REDIS_CLUSTER=1` and a hash tag commits atomically on one slot."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from pomocore.core.errors import ConfigError
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis, free_port
from pomocore.reader import LeaderboardReader
from tests.support.consumer import drain
from tests.support.streams import connected_group_state, now_fields

pytestmark = pytest.mark.timeout(120)

SLOTS = ((0, 5460), (5461, 10922), (10923, 16383))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    nodes: list[EmbeddedRedis] = []
    bus_ports: list[int] = []
    try:
        for i in range(3):
            bus_ports.append(free_port())
            d: Path = tmp_path_factory.mktemp(f"node{i}")
            node = EmbeddedRedis(
                d,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-node-timeout", "2000",
                    # explicit bus port: the default (port + 10000) may be taken or > 65535
                    "--cluster-port", str(bus_ports[-1]),
                ],
            )  # fmt: skip
            node.start()
            nodes.append(node)
        clients = [redis.Redis(host="127.0.0.1", port=n.port) for n in nodes]
        for c, (lo, hi) in zip(clients, SLOTS, strict=True):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)  # type: ignore[no-untyped-call]
        for n, bus in zip(nodes[1:], bus_ports[1:], strict=True):
            clients[0].execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "MEET", "127.0.0.1", n.port, bus
            )
        deadline = time.monotonic() + 30
        while True:
            infos = [c.execute_command("CLUSTER", "INFO") for c in clients]  # type: ignore[no-untyped-call]
            texts = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
            if all("cluster_state:ok" in t and "cluster_known_nodes:3" in t for t in texts):
                break
            assert time.monotonic() < deadline, texts
            time.sleep(0.1)
        for c in clients:
            c.close()
        yield nodes
    finally:
        for n in nodes:
            n.close()


def cluster_settings(settings: Settings, nodes: list[EmbeddedRedis], tag: str) -> Settings:
    return dataclasses.replace(
        settings,
        redis_url=f"redis://127.0.0.1:{nodes[0].port}",
        redis_cluster=1,
        key_hash_tag=tag,
    )


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
    shard = {next(i for i, (lo, hi) in enumerate(SLOTS) if lo <= s <= hi) for s in slots}
    assert len(shard) >= 2
    s = cluster_settings(settings, cluster, "s1")
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    client.xadd(s.keys.stream_key, now_fields("solo", "Code", 5.0))  # type: ignore[arg-type]
    assert asyncio.run(drain(s, timeout_s=30, state=connected_group_state)).committed == 1
    client.close()


def test_cluster_without_a_hash_tag_is_refused() -> None:
    with pytest.raises(ConfigError, match="POMOCORE_KEY_HASH_TAG"):
        Settings.from_env({"POMOCORE_REDIS_CLUSTER": "1"})


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
