"""The embedded servers behind `pomocore demo`, the tests and the benchmarks."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import redis.cluster

from pomocore.embedded import (
    EmbeddedCluster,
    EmbeddedRedis,
    EmbeddedServerError,
    cluster_slot_ranges,
    free_port,
)

# Replaying 20,000 keys at 50 µs each takes about a second; answering clients every 1 KiB
# of the file makes the server reply -LOADING meanwhile instead of staying silent.
_SLOW_LOAD = ("--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024")


def test_a_restarted_server_serves_commands_once_start_returns() -> None:
    """start() returns only after the data set is loaded: CI saw an XADD right after a
    restart fail with BusyLoadingError while the server replayed its AOF."""
    server = EmbeddedRedis(appendonly=True, extra_args=_SLOW_LOAD)
    with server:
        client = redis.Redis.from_url(server.url)
        pipe = client.pipeline(transaction=False)
        for i in range(20_000):
            pipe.set(f"k{i}", "v")
        pipe.execute()
        client.bgrewriteaof()  # the keys go into the RDB-format base the delay applies to
        while client.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.05)
        client.close()
        server.kill()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.xadd("s", {"a": "1"})
        assert client.dbsize() == 20_001
        client.close()


@pytest.mark.parametrize(
    ("masters", "ranges"),
    [
        (1, ((0, 16383),)),
        # what `redis-cli --cluster create` assigns to 3 masters
        (3, ((0, 5460), (5461, 10922), (10923, 16383))),
        (6, ((0, 2730), (2731, 5460), (5461, 8191), (8192, 10922), (10923, 13652), (13653, 16383))),
    ],
)
def test_cluster_slot_ranges_cut_the_slot_space_as_redis_cli_does(
    masters: int, ranges: tuple[tuple[int, int], ...]
) -> None:
    assert cluster_slot_ranges(masters) == ranges


@pytest.mark.parametrize("masters", [1, 2, 3, 5, 7, 16])
def test_cluster_slot_ranges_cover_every_slot_once(masters: int) -> None:
    ranges = cluster_slot_ranges(masters)
    slots = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    assert slots == list(range(16384))


def test_an_appendonly_cluster_node_keeps_its_keys_and_slots_across_a_crash(
    tmp_path: Path,
) -> None:
    """The chaos suite kills a cluster node: with AOF it comes back with its data, its
    slots and its peers (nodes.conf), and the cluster serves again."""
    with EmbeddedCluster(tmp_path, 3, appendonly=True) as cluster:
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        keys = [f"{{t{i}}}k" for i in range(30)]  # tags over every node
        for k in keys:
            client.set(k, k)
        owners = {client.keyslot(k) for k in keys}
        assert len({_node_of(cluster, slot) for slot in owners}) == 3
        client.close()
        cluster.nodes[1].kill()
        cluster.nodes[1].start()
        deadline = time.monotonic() + 30
        while True:
            client = redis.cluster.RedisCluster.from_url(cluster.url)
            try:
                assert [client.get(k) for k in keys] == [k.encode() for k in keys]
                break
            # (redis-py 5.3 raises ClusterDownError, not a RedisClusterException, while
            # the cluster notices the node is back)
            except (
                redis.exceptions.RedisClusterException,
                redis.exceptions.ClusterError,
                redis.exceptions.ConnectionError,
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            finally:
                client.close()


def _node_of(cluster: EmbeddedCluster, slot: int) -> int:
    return next(i for i, (lo, hi) in enumerate(cluster.slot_ranges) if lo <= slot <= hi)


def test_a_server_that_does_not_come_up_in_time_is_not_left_running(tmp_path: Path) -> None:
    """A start that times out kills what it started (leaked servers once piled up after
    TLS-only servers timed out in the readiness probe)."""
    server = EmbeddedRedis(tmp_path, extra_args=_SLOW_LOAD)
    server.start()
    client = redis.Redis.from_url(server.url)
    pipe = client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"k{i}", "v")
    pipe.execute()
    client.save()  # an RDB the restart loads at 50 µs a key: about a second
    client.close()
    server.kill()
    with pytest.raises(EmbeddedServerError):
        server.start(timeout_s=0.3)
    assert server.proc is not None and server.proc.poll() is not None
    server.close()


def _ephemeral_range() -> tuple[int, int]:
    lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(lo), int(hi)


def test_free_ports_are_distinct_and_outside_the_ephemeral_range() -> None:
    """A port from the kernel's ephemeral range can be taken by any outgoing connection
    between free_port() and the server's start (CI lost cluster tests to it)."""
    lo, hi = _ephemeral_range()
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if lo <= p <= hi]


@contextmanager
def _listening_on(port: int) -> Iterator[None]:
    with socket.socket() as taker:
        taker.bind(("127.0.0.1", port))
        taker.listen()
        yield


def test_a_server_whose_picked_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    taken = server.port
    with _listening_on(taken):
        server.start()
    try:
        assert server.port != taken
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.close()


def test_a_server_given_a_taken_port_fails_rather_than_move(tmp_path: Path) -> None:
    """A caller's port is a promise to the caller: never silently another one."""
    port = free_port()
    server = EmbeddedRedis(tmp_path, port=port)
    with _listening_on(port), pytest.raises(EmbeddedServerError):
        server.start()
    assert server.port == port
    server.close()


def test_a_cluster_whose_bus_port_was_taken_still_forms(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path)
    taken = cluster.bus_ports[1]
    with _listening_on(taken):
        cluster.start()
    try:
        assert taken not in cluster.bus_ports
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        cluster.close()


def test_a_cluster_that_does_not_come_up_leaves_no_node_running(tmp_path: Path) -> None:
    """A node that cannot start fails the cluster's start, and the nodes already started
    are killed with it (one stayed behind, listening, after a failed start)."""
    cluster = EmbeddedCluster(tmp_path)
    cluster.nodes[1].extra_args.append("--no-such-option")  # Valkey exits 1 at start
    with pytest.raises(EmbeddedServerError):
        cluster.start()
    try:
        first = cluster.nodes[0].proc
        assert first is not None and first.poll() is not None
    finally:
        cluster.close()
