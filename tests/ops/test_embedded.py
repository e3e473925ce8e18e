"""The embedded servers behind `pomocore demo`, the tests and the benchmarks."""

from __future__ import annotations

import time

import redis

from pomocore.embedded import EmbeddedRedis

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
