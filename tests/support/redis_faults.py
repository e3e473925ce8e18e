"""Redis answering with errors instead of going away, produced with real servers: each a
context manager, the fault holds for the block and is undone (with the data kept) after.

    with read_only_window(primary, replica):   # READONLY (a FAILOVER there and back)
    with master_down_window(server):           # MASTERDOWN (a replica, its primary gone)
    with busy_window(server, seconds=3):       # BUSY (another client's long script)
    with oom_window(server):                   # OOM (maxmemory below what is used)

And LOADING, which a restart brings rather than a window:

    fill_for_slow_load(server, keys=40_000)    # data that takes a while to load ...
    restart_loading(server)                    # ... kill -9, start, back while it loads

A server answers clients while it loads only every `loading-process-events-interval-bytes`
of its file (2 MB by default, more than a test's data): below that it is silent, and
clients wait instead of getting LOADING. `SLOW_LOAD` makes it answer every KiB.

All drive the servers with plain redis-py, outside pomocore.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

from pomocore.embedded import EmbeddedRedis, free_port
from tests.support.waiting import wait_for

# A script that keeps the server busy for ARGV[1] seconds (TIME is allowed in scripts).
BUSY_SCRIPT = """
local start = tonumber(redis.call('TIME')[1])
while tonumber(redis.call('TIME')[1]) - start < tonumber(ARGV[1]) do end
return 1
"""
BUSY_REPLY_MS = 50  # other clients get BUSY once a script has run this long
# Each key of the RDB part of a loaded file takes 200 µs more (key-load-delay), and the
# server answers clients (-LOADING) every KiB of the file: 40,000 keys load in ~8 s.
# Valkey and Redis >= 7 take both options.
SLOW_LOAD = ("--key-load-delay", "200", "--loading-process-events-interval-bytes", "1024")


def _client(server: EmbeddedRedis, timeout_s: float = 30.0) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=timeout_s)


def _role(client: redis.Redis) -> str:
    return str(client.info("replication")["role"])


def _link_up(client: redis.Redis) -> bool:
    info = client.info("replication")
    return info["role"] == "slave" and info.get("master_link_status") == "up"


def replicate(primary: EmbeddedRedis, replica: EmbeddedRedis) -> None:
    """`replica` becomes an up-to-date replica of `primary`."""
    a, b = _client(primary), _client(replica)
    for c in (a, b):  # the first sync at once, not after the 5 s default delay
        c.config_set("repl-diskless-sync-delay", 0)
    b.replicaof("127.0.0.1", primary.port)
    wait_for(lambda: _link_up(b), 30, "the replica never synced")
    a.close()
    b.close()


@contextlib.contextmanager
def read_only_window(primary: EmbeddedRedis, replica: EmbeddedRedis) -> Iterator[None]:
    """`primary` is a replica of `replica` for the block: its clients' writes (XREADGROUP,
    the commit script, XCLAIM) get READONLY, and blocked reads UNBLOCKED. FAILOVER waits
    for the other side to catch up, both ways, so nothing written is lost."""
    replicate(primary, replica)
    a, b = _client(primary), _client(replica)
    try:
        a.execute_command("FAILOVER", "TIMEOUT", 20_000)
        wait_for(lambda: _link_up(a), 30, "the primary never became a replica")
        yield
        b.execute_command("FAILOVER", "TIMEOUT", 20_000)
        wait_for(lambda: _role(a) == "master", 30, "the primary never came back")
        b.replicaof("no", "one")
    finally:
        a.close()
        b.close()


def fail_over(primary: EmbeddedRedis, replica: EmbeddedRedis) -> None:
    """A FAILOVER for good: `replica` is the primary afterwards, `primary` its replica."""
    replicate(primary, replica)
    a = _client(primary)
    a.execute_command("FAILOVER", "TIMEOUT", 20_000)
    wait_for(lambda: _link_up(a), 30, "the primary never became a replica")
    a.close()


@contextlib.contextmanager
def master_down_window(server: EmbeddedRedis) -> Iterator[None]:
    """`server` is a replica of a primary that does not answer, serving no stale data:
    every data command gets MASTERDOWN. The server keeps its dataset (it never syncs)."""
    c = _client(server)
    c.config_set("replica-serve-stale-data", "no")
    c.replicaof("127.0.0.1", free_port())
    try:
        yield
    finally:
        c.replicaof("no", "one")
        c.config_set("replica-serve-stale-data", "yes")
        c.close()


@contextlib.contextmanager
def busy_window(server: EmbeddedRedis, seconds: int) -> Iterator[None]:
    """Another client runs a script for `seconds`; meanwhile every other command gets
    BUSY. The block starts once BUSY is seen and the window ends when the script does
    (the block may end earlier: leaving it waits for the script)."""
    runner, probe = _client(server, seconds + 30.0), _client(server)
    probe.config_set("busy-reply-threshold", BUSY_REPLY_MS)
    script = threading.Thread(target=runner.eval, args=(BUSY_SCRIPT, 0, seconds), daemon=True)
    script.start()

    def busy() -> bool:
        try:
            probe.ping()
        except redis.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False

    try:
        wait_for(busy, 10, "the script never made the server busy")
        yield
    finally:
        script.join(seconds + 30.0)
        probe.config_set("busy-reply-threshold", 5000)
        runner.close()
        probe.close()


@contextlib.contextmanager
def oom_window(server: EmbeddedRedis) -> Iterator[None]:
    """maxmemory below the memory in use (no eviction): commands that may grow memory
    (XGROUP CREATE ... MKSTREAM, INCRBY, a script's first write) get OOM."""
    c = _client(server)
    c.config_set("maxmemory", 1)
    try:
        yield
    finally:
        c.config_set("maxmemory", 0)
        c.close()


def fill_for_slow_load(server: EmbeddedRedis, keys: int) -> None:
    """`keys` small keys (`filler:*`), rewritten into the AOF's RDB base, which
    key-load-delay slows down (the incremental AOF is replayed at full speed). The
    server must keep an AOF (`appendonly=True`)."""
    c = _client(server)
    pipe = c.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"filler:{i}", "x")
    pipe.execute()
    c.bgrewriteaof()

    def rewritten() -> bool:
        info = c.info("persistence")
        return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]

    wait_for(rewritten, 60, "the AOF rewrite never finished")
    c.close()


def restart_loading(server: EmbeddedRedis) -> None:
    """kill -9, then start on the same port with `SLOW_LOAD`, returning once it listens:
    it answers -LOADING until its AOF is replayed (`server.loading()`)."""
    server.kill()
    server.extra_args = [*server.extra_args, *SLOW_LOAD]
    server.start(wait_ready=False)
    assert server.loading(), "the restarted server loaded its data at once"
