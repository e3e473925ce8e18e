"""Transient errors: those of lower libraries that mean "the connection went away"
become connection errors, and every Redis error is either waited out or fatal."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
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
