"""Transient errors: those of lower libraries that mean "the connection went away"
become connection errors, and every Redis error is either waited out or fatal."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis._parsers.base import BaseParser
from redis.crc import key_slot
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pomocore.consumers.app import redis_client
from pomocore.consumers.consumer import _closed_is_transient
from pomocore.core.connect import async_redis, sync_redis
from pomocore.core.errors import CommitError
from pomocore.core.redis_errors import Fault, redis_fault
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from tests.support.servers import CLUSTER_SLOTS, cluster_settings, redis_cluster


async def _raise(exc: BaseException) -> None:
    raise exc


@pytest.mark.parametrize(
    ("raised", "becomes_connection_error"),
    [
        (
            RuntimeError("unable to perform operation on <TCPTransport>; the handler is closed"),
            True,
        ),
        (RuntimeError("Transport is closing"), True),
        (AttributeError("'NoneType' object has no attribute 'writelines'"), True),
        (RuntimeError("something else"), False),
        (AttributeError("'Event' object has no attribute 'user'"), False),  # a real bug
    ],
)
async def test_closed_is_transient(raised: BaseException, becomes_connection_error: bool) -> None:
    expected = RedisConnectionError if becomes_connection_error else type(raised)
    with pytest.raises(expected):
        await _closed_is_transient(_raise(raised))


# --- which Redis errors a consumer waits out (core/redis_errors.py) ---

T, R, F = Fault.TRANSIENT, Fault.RECONNECT, Fault.FATAL
# Replies as servers send them: parse_error builds what redis-py raises for each.
REPLIES = [
    ("READONLY You can't write against a read only replica.", R),
    ("READONLY You can't write against a read only replica. script: abc, on @user_script:1.", R),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", R),
    ("UNBLOCKED force unblock from blocking operation, instance state changed", R),
    ("LOADING Redis is loading the dataset in memory", T),
    ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.", T),
    ("OOM command not allowed when used memory > 'maxmemory'.", T),
    ("OOM command not allowed when used memory > 'maxmemory'. script: on @user_script:1.", T),
    ("CLUSTERDOWN The cluster is down", T),
    ("TRYAGAIN Multiple keys request during rehashing of slot", T),
    ("NOREPLICAS Not enough good replicas to write.", T),
    ("MISCONF Errors writing to the AOF file: No space left on device", T),
    ("ERR max number of clients reached", T),
    # what a cluster node says (redis-py maps only the first wording to ConnectionError)
    ("ERR max number of clients + cluster connections reached", T),
    ("ERR Error running script (call to f_1): @user_script:9: -READONLY You can't write", R),
    ("ERR Error running script (call to f_1): @user_script:9: -OOM command not allowed", T),
    ("ERR Error running script (call to f_1): @user_script:9: -WRONGTYPE Operation", F),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", F),
    ("BUSYGROUP Consumer Group name already exists", F),
    ("BUSYKEY Target key name already exists.", F),
    ("NOGROUP No such key 'pattern_match_stream' or consumer group", F),
    ("NOSCRIPT No matching script. Please use EVAL.", F),
    ("NOPERM this user has no permissions to run the 'xack' command", F),
    ("NOAUTH Authentication required.", F),
    ("WRONGPASS invalid username-password pair or user is disabled.", F),
    ("EXECABORT Transaction discarded because of previous errors.", F),
    ("MOVED 3999 127.0.0.1:6381", F),
    ("CROSSSLOT Keys in request don't hash to the same slot", F),
    ("ERR pomocore: bad entry id", F),
    ("ERR unknown command 'XAUTOCLAIM'", F),
]


@pytest.mark.parametrize(("reply", "fault"), REPLIES)
def test_redis_error_replies_are_classified(reply: str, fault: Fault) -> None:
    error = BaseParser.parse_error(reply)
    assert redis_fault(error) is fault
    # the commit script's errors reach the consumer wrapped (sinks/commit.py)
    if isinstance(error, ResponseError):
        wrapped = CommitError(f"commit script failed: {error}")
        wrapped.__cause__ = error
        assert redis_fault(wrapped) is fault


def _caused_by(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (RedisConnectionError("Connection closed by server."), T),
        (RedisTimeoutError("Timeout reading from socket"), T),
        (BusyLoadingError("Redis is loading the dataset in memory"), T),
        (ConnectionResetError(104, "Connection reset by peer"), T),
        (OSError(113, "No route to host"), T),
        (TimeoutError(), T),
        (AuthenticationError("invalid username-password pair"), F),
        (ResponseError("READONLY You can't write against a read only replica."), R),
        (ResponseError("something without a code"), F),
        (CommitError("commit script failed: bad arguments"), F),  # our own refusal
        (ValueError("a bug"), F),
        (RuntimeError("a bug"), F),
        # the Cluster client's own, while a node is down (redis-py 5.3, sharded chaos)
        (RedisClusterException("Redis Cluster cannot be connected. Please provide at "
                               "least one reachable node: None"), R),
        (RedisClusterException("startup_nodes could not agree on a valid slots cache: "
                               "127.0.0.1:7000 vs 127.0.0.1:7001 on slot: 3"), R),
        (SlotNotCoveredError('Command # 1 (GET k) of pipeline caused error: Slot "3" not '
                             "covered by the cluster."), T),
        (RedisClusterException("GET - all keys must map to the same key slot"), F),
        (RedisClusterException("No way to dispatch this command to Redis Cluster."), F),
        (_caused_by(RedisClusterException("a node failed"), RedisConnectionError("reset")), T),
        (_caused_by(RedisClusterException("a node failed"), ValueError("a bug")), F),
    ],
)
def test_other_errors_are_classified(error: BaseException, fault: Fault) -> None:
    assert redis_fault(error) is fault
    assert fault.retry is (fault is not F)


def test_every_client_has_an_explicit_policy_without_retries(settings: Settings) -> None:
    """redis-py >= 6 retries underneath the caller by default; our loops own retries."""
    clients = [sync_redis(settings), async_redis(settings), redis_client(settings)]
    # `_retries`: redis-py 5.3 (the floor) has no `Retry.get_retries()`.
    assert [c.get_retry()._retries for c in clients] == [0, 0, 0]  # type: ignore[union-attr]


# --- the Cluster clients: one attempt per command ---


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


# redis-py 5 (the floor is 5.3) retries an asyncio Cluster command
# `cluster_error_retry_attempts` times (3) whatever `retry` says (`retry` governs from 6.0),
# and its asyncio Cluster pipelines need at least 1 (they make that many passes and fail
# outright at 0): there the consumer's client keeps them (core/connect.py).
ASYNC_CLUSTER_ATTEMPTS = 4 if int(redis.__version__.split(".")[0]) < 6 else 1


def _key_on(node: int) -> str:
    lo, hi = CLUSTER_SLOTS[node]
    return next(k for k in (f"k{i}" for i in range(10_000)) if lo <= key_slot(k.encode()) <= hi)


class FullNode:
    """A cluster node that refuses new connections (maxclients 1, taken by this admin
    connection), counting them: each attempt of a client to reach it is one refusal."""

    def __init__(self, node: EmbeddedRedis) -> None:
        self.admin = redis.Redis(port=node.port, single_connection_client=True)

    def refused(self) -> int:
        return int(self.admin.info("stats")["rejected_connections"])

    def attempts(self, call: Callable[[], Any]) -> tuple[int, BaseException]:
        """How many connections `call` tried, and what it raised."""
        before = self.refused()
        self.admin.config_set("maxclients", 1)
        try:
            with pytest.raises(Exception) as raised:
                call()
        finally:
            self.admin.config_set("maxclients", 10_000)
        return self.refused() - before, raised.value

    def close(self) -> None:
        self.admin.close()


async def _first_contact(make: Callable[[Settings], Any], s: Settings, key: str) -> None:
    """A command to the full node on fresh connections, the slots learnt before from the
    start-up node (which is not full)."""
    client = make(s)
    try:
        await client.get(_key_on(0))
        for node in client.get_nodes():
            await node.disconnect()
        await client.get(key)
    finally:
        await client.aclose()


def test_cluster_clients_try_a_command_once(
    cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    """redis-py's Cluster client retries a failed command underneath the caller unless
    told not to (`retry`; `cluster_error_retry_attempts` on redis-py 5.3), each retry
    after a rediscovery of the cluster: a lane's command could last several socket
    timeouts, past its liveness bound. A node that refuses connections shows the
    attempts. The error they end with is one a consumer waits out."""
    s = cluster_settings(settings, cluster, "t")
    full, key = FullNode(cluster[-1]), _key_on(len(cluster) - 1)
    try:
        client = sync_redis(s)
        tried, error = full.attempts(lambda: client.get(key))
        client.close()
        assert (tried, redis_fault(error).retry) == (1, True), error
        for make in (async_redis, redis_client):
            contact = _first_contact(make, s, key)
            tried, error = full.attempts(functools.partial(asyncio.run, contact))
            assert (tried, redis_fault(error).retry) == (ASYNC_CLUSTER_ATTEMPTS, True), error
    finally:
        full.close()
