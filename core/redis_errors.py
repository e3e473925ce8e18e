"""Which Redis errors a consumer waits out, and which end it: one pure function, no I/O.

A server that is failing over, loading its dataset, running a long script, out of memory
or without its replicas answers with an error reply, not a dropped connection, and each
of those clears by itself. A consumer holds its batch, backs off and goes on when the
server recovers. Errors that retrying cannot fix (a bad argument, a wrong key type, a
wrong password, a missing permission) end the process with the error in its log.

    TRANSIENT  retry the same operation later, on the same connections
    RECONNECT  retry later, on new connections: the node answering is (or became) a
               replica. Behind a stable name (DNS, a virtual IP, a proxy) a failover moves
               the name, not the connections already open, so those must be dropped.
    FATAL      do not retry: the error is in the request or the configuration
"""

from __future__ import annotations

import builtins
import enum
import re

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from pomocore.core.errors import BackendError, BackendUnavailable, CommitError


class Fault(enum.Enum):
    TRANSIENT = "transient"
    RECONNECT = "reconnect"
    FATAL = "fatal"

    @property
    def retry(self) -> bool:
        return self is not Fault.FATAL


# Error codes (the first word of an error reply) that clear by themselves.
TRANSIENT_CODES = frozenset(
    {
        "LOADING",  # the server is loading its dataset after a (re)start
        "BUSY",  # a script or function runs longer than busy-reply-threshold
        "OOM",  # maxmemory reached with a no-eviction policy
        "TRYAGAIN",  # Cluster: a multi-key operation during a slot migration
        "CLUSTERDOWN",  # Cluster: slots uncovered or the cluster is failing over
        "NOREPLICAS",  # min-replicas-to-write not met
        "MISCONF",  # the server cannot persist (disk full): it refuses writes until fixed
    }
)
# Codes meaning "this node is not the primary (any more)": reconnect, then retry.
RECONNECT_CODES = frozenset(
    {
        "READONLY",  # a replica: the primary we knew was demoted (failover)
        "MASTERDOWN",  # a replica whose link to its primary is down
        "UNBLOCKED",  # a blocked read released by a role change (or a deleted key)
    }
)
# Before redis-py parses the code into a class, and for replies it does not map, the
# code is the first word of the message; "BUSYGROUP" and "BUSYKEY" are other codes.
_CODE = re.compile(r"^-?([A-Z][A-Z_]+)\b")
# Redis < 7 wraps the error of a command inside a script: "Error running script (call
# to f_...): @user_script:12: -READONLY You can't write ..."; the inner code decides.
_SCRIPT_CODE = re.compile(r"Error running script.*?-([A-Z][A-Z_]+)\b")
_CLASS_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (ReadOnlyError, "READONLY"),
    (MasterDownError, "MASTERDOWN"),  # before ClusterDownError, its base class
    (OutOfMemoryError, "OOM"),
    (ClusterDownError, "CLUSTERDOWN"),
    (TryAgainError, "TRYAGAIN"),
)
# Connection-level errors: the server is away, restarting or unreachable for now.
_CONNECTION_ERRORS = (ConnectionError, TimeoutError, builtins.ConnectionError, OSError)
# A password or ACL problem is a ConnectionError in redis-py, but retrying cannot fix it.
_AUTH_ERRORS = (AuthenticationError, AuthorizationError)
# maxclients reached: "max number of clients reached", or on a cluster node "max number
# of clients + cluster connections reached", which redis-py does not map to a
# ConnectionError (judged fatal before: a consumer on a Cluster would have exited).
_MAX_CLIENTS = "max number of clients"
# The Cluster client's own exceptions (not RedisError) while it cannot reach the nodes
# it knows or they disagree on the slots: a node down or restarting. redis-py 5.3 raises
# "cannot be connected" from a lane's read when it rediscovers the cluster during an
# outage (the sharded chaos run saw consumers exit 1 on it), and keeps raising it once it
# has dropped every node it knew: reconnect (core/connect.py, SeededCluster). Its other
# ones (keys in different slots, a command it cannot route) are errors in the request.
_CLUSTER_AWAY = ("cannot be connected", "could not agree on a valid slots cache")


def redis_fault(exc: BaseException) -> Fault:
    """What a consumer does about `exc`, raised by a Redis call (see the module doc).

    A CommitError is judged by the Redis error it wraps: the commit script's server
    error replies reach the consumer that way (sinks/commit.py).
    """
    if isinstance(exc, CommitError):
        cause = exc.__cause__
        return redis_fault(cause) if isinstance(cause, ResponseError) else Fault.FATAL
    if isinstance(exc, _AUTH_ERRORS):
        return Fault.FATAL
    if isinstance(exc, (*_CONNECTION_ERRORS, SlotNotCoveredError)):
        return Fault.TRANSIENT
    if isinstance(exc, RedisClusterException):
        if any(text in str(exc) for text in _CLUSTER_AWAY):
            return Fault.RECONNECT
        # wrapping a Redis or socket error (the forwarder saw asyncio's transport closed
        # under the client): that error decides
        cause = exc.__cause__
        return redis_fault(cause) if isinstance(cause, RedisError | OSError) else Fault.FATAL
    if not isinstance(exc, ResponseError):
        return Fault.FATAL
    code = error_code(exc)
    if code in RECONNECT_CODES:
        return Fault.RECONNECT
    if code in TRANSIENT_CODES or _MAX_CLIENTS in str(exc):
        return Fault.TRANSIENT
    return Fault.FATAL


def error_code(exc: ResponseError) -> str:
    """The error reply's code (READONLY, OOM, ...), or "" when it has none."""
    for cls, code in _CLASS_CODES:
        if isinstance(exc, cls):
            return code
    status = getattr(exc, "status_code", None)  # redis-py >= 7 keeps the parsed code
    if isinstance(status, str) and status and status != "ERR":
        return status
    message = str(exc)
    inner = _SCRIPT_CODE.search(message)
    if inner:
        return inner.group(1)
    match = _CODE.match(message)
    return match.group(1) if match else ""


def backend_error(exc: BaseException, server: str = "") -> BackendError:
    """`exc`, raised by a Redis call of a reader or producer, as our error: a
    BackendUnavailable when waiting may clear it (see `redis_fault`), else a BackendError.
    The message keeps redis-py's (which names no password) and `server` (host:port)."""
    cls = BackendUnavailable if redis_fault(exc).retry else BackendError
    return cls(f"{type(exc).__name__}: {exc}", server)


def server_name(client: object) -> str:
    """host:port (or the socket path) a client talks to, for error messages; "" if unknown.
    A Cluster client names the node it started from."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if isinstance(kwargs, dict):
        if kwargs.get("path"):
            return str(kwargs["path"])
        return f"{kwargs.get('host', '')}:{kwargs.get('port', '')}"
    nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    if isinstance(nodes, dict) and nodes:
        return str(next(iter(nodes)))
    return ""
