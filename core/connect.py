"""Redis and MongoDB connections from settings.

Redis: standalone or Cluster, plain or TLS, async or sync.

- `POMOCORE_REDIS_URL=rediss://...` turns TLS on; `POMOCORE_REDIS_TLS_CA_FILE` names the CA
  that signed the server certificate, `..._CERT_FILE`/`..._KEY_FILE` a client certificate
  for servers that require one (`tls-auth-clients yes`).
- `POMOCORE_REDIS_CLUSTER=1` uses the Cluster client (slot routing, MOVED/ASK handling);
  set `POMOCORE_KEY_HASH_TAG` too so every key one commit script touches shares a slot.

The async client is what consumers use; the sync one serves probes, `pomocore check`,
the metrics sampler and leaderboard readers.

Every client gets an explicit retry policy: none. redis-py >= 6 otherwise retries a
failed command on connection errors (with backoff) underneath the caller, so one call
could last many times its socket timeout, and a probe or the metrics sampler outlived a
scrape or health-check timeout. Our own loops own retries (consumers/consumer.py), and
each call is bounded by its socket timeout. A caller that wants redis-py's retries
passes its own `retry=`.

The Cluster clients too: from redis-py 6.0 they go by `retry`, commands and pipelines.
redis-py 5 (the floor is 5.3) retries a Cluster command `cluster_error_retry_attempts`
times (3) whatever `retry` says, rediscovering the cluster before each: the blocking
client gets 0. The asyncio one keeps them there, as its pipelines make that many passes
and fail outright at 0.

MongoDB: every client is built here. The consumer's (`consumer_mongo`) gives each
operation a deadline; the operator commands' and probes' (`sync_mongo`, `async_mongo`)
bound each wait on the network.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import pymongo
import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from hiredis import pack_command
from pymongo import AsyncMongoClient
from redis._parsers import _AsyncHiredisParser
from redis.asyncio.connection import Connection as AsyncConnection
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.retry import Retry

from pomocore.core.settings import Settings

# Socket timeout of operator commands (dlq, leaderboard rebuild, patterns, the demo): a
# rebuild's largest command replies well within it; a server that hangs fails the command.
CLI_TIMEOUT_S = 30.0
# How long a client waits to connect to MongoDB, and an operator command to reach it
# (server selection too): an unreachable server fails the command in seconds, not after
# CLI_TIMEOUT_S.
MONGO_CONNECT_TIMEOUT_S = 5.0
# Start-up may wait this long for MongoDB (the initial patterns): a consumer (re)started
# during a short outage or stall waits for it instead of exiting.
MONGO_START_TIMEOUT_S = 30.0


def no_retry() -> Retry:
    """A synchronous client's policy: no retries (a fresh object: clients copy it)."""
    return Retry(NoBackoff(), 0)


def no_async_retry() -> AsyncRetry:
    """An asyncio client's policy: no retries."""
    return AsyncRetry(NoBackoff(), 0)


def tls_options(settings: Settings) -> dict[str, Any]:
    """ssl_* keyword arguments of redis-py for the TLS settings that are set."""
    out: dict[str, Any] = {}
    if settings.redis_tls_ca_file:
        out["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file:
        out["ssl_certfile"] = settings.redis_tls_cert_file
    if settings.redis_tls_key_file:
        out["ssl_keyfile"] = settings.redis_tls_key_file
    return out if settings.redis_url.startswith("rediss://") else {}


def async_redis(settings: Settings, **options: Any) -> aioredis.Redis:
    """The consumer's client. With `redis_cluster`, a RedisCluster (same command API)
    whose node connections pack commands in C (`CPackingConnection`)."""
    options = {"retry": no_async_retry(), **tls_options(settings), **options}
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        cluster: Any = SeededCluster.from_url(settings.redis_url, **options)
        pack_in_c(cluster)
        return cluster  # type: ignore[no-any-return]
    return aioredis.Redis.from_url(settings.redis_url, **options)


class SeededCluster(aiocluster.RedisCluster):
    """The async Cluster client, able to get back the nodes it started from.

    redis-py drops a node from its start-up list when a command to it fails to connect,
    and rediscovers the cluster from that list only; once every node it knew has been
    down for a moment (a restart of the seed node in the sharded chaos run), the list is
    empty and every command fails with "Redis Cluster cannot be connected ... None" for
    good (redis-py issues 3221 and 3693; seen with redis-py 5.3). `reseed()` puts the
    start-up nodes back, so the next command rediscovers the cluster when it is back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeds = dict(self.nodes_manager.startup_nodes)

    def reseed(self) -> None:
        for name, node in self._seeds.items():
            self.nodes_manager.startup_nodes.setdefault(name, node)


# --- commands packed in C -------------------------------------------------------------


class CPackingConnection(AsyncConnection):
    """redis-py's asyncio connection, packing each command with `hiredis.pack_command`.

    redis-py's asyncio connections pack in pure Python (its synchronous ones use hiredis):
    on a Cluster that was 4.40 s of the consumer's 10.92 s of CPU in the shard benchmark
    (cProfile, benchmarks/README.md's shard section), against 0.21 s with hiredis.

    hiredis packs str, bytes, int and float (repr, as redis-py's encoder) and memoryview
    to the same bytes as redis-py's encoder with UTF-8, strict; it raises TypeError for
    every other argument (bool, None, bytearray, IntEnum, ...), which goes to redis-py's
    packer so it raises its DataError or encodes as it always did.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        encoder: Any = self.encoder
        # hiredis encodes str as UTF-8, strict: another encoding keeps redis-py's packer.
        self._pack_in_c = (
            encoder.encoding.lower().replace("-", "").replace("_", "") == "utf8"
            and encoder.encoding_errors == "strict"
        )

    def pack_command(self, *args: Any) -> list[bytes]:
        if not self._pack_in_c:
            return super().pack_command(*args)
        # As redis-py: a command name with spaces ("CONFIG GET") is several arguments.
        name = args[0]
        if isinstance(name, str):
            args = (*name.encode().split(), *args[1:])
        elif isinstance(name, bytes) and b" " in name:
            args = (*name.split(), *args[1:])
        try:
            return [pack_command(args)]
        except TypeError:  # an argument hiredis does not take: redis-py decides
            return super().pack_command(*args)

    def pack_commands(self, commands: Any) -> list[bytes]:
        # One buffer for a pipeline: redis-py's chunking (at 6000 bytes) saves copying a
        # large value in Python; hiredis copies in C.
        return [b"".join(chunk for args in commands for chunk in self.pack_command(*args))]


class CPackingSSLConnection(CPackingConnection, AsyncSSLConnection):
    """`CPackingConnection` over TLS (rediss://)."""


def pack_in_c(cluster: aiocluster.RedisCluster) -> None:
    """Every node connection of `cluster` is a `CPackingConnection` (or its TLS variant).

    The Cluster client takes no `connection_class` (from_url drops it; the constructor
    sets redis-py's Connection or SSLConnection in the arguments its nodes are built
    from), and connects lazily: setting the class in those arguments, and on the nodes
    built from them already, before the first command reaches every connection.
    """
    nodes = cluster.nodes_manager
    for kwargs in (cluster.connection_kwargs, nodes.connection_kwargs):
        kwargs["connection_class"] = _c_packing(kwargs.get("connection_class"))
    known = [*nodes.startup_nodes.values(), *nodes.nodes_cache.values()]
    for node in known:
        node.connection_class = _c_packing(node.connection_class)


def _c_packing(connection_class: Any) -> Any:
    """Our class in place of redis-py's stock one; any other class stays."""
    if connection_class is AsyncSSLConnection:
        return CPackingSSLConnection
    if connection_class is AsyncConnection:
        return CPackingConnection
    return connection_class


def sync_redis(settings: Settings, timeout_s: float = 2.0, **options: Any) -> redis.Redis:
    """A blocking client with short timeouts (probes, CLI, metrics sampler, readers)."""
    options = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": no_retry(),
        **tls_options(settings),
        **options,
    }
    if settings.redis_cluster:
        cluster: Any = redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
        if hasattr(cluster, "cluster_error_retry_attempts"):  # redis-py < 6 (module doc)
            cluster.cluster_error_retry_attempts = 0
        return cluster  # type: ignore[no-any-return]
    return redis.Redis.from_url(settings.redis_url, **options)


def command_timeout_s(settings: Settings) -> float:
    """The consumer client's socket timeout: the longest one of its commands can wait for
    a reply (an XREADGROUP blocks up to `block_ms` before it replies)."""
    return max(10.0, settings.block_ms / 1000 + 5)


async def drop_idle_connections(client: aioredis.Redis) -> None:
    """Close the pooled connections not in use, so the next commands connect anew (and
    resolve the server's name again, reaching the new primary after a failover).

    The connection that just failed was released to the pool before its error reached
    the caller, so it is among them; one in use by another task fails on its own and is
    dropped by that task's caller. The Cluster client follows failovers itself, from
    the nodes it started from (`SeededCluster.reseed`).
    """
    if isinstance(client, SeededCluster):
        client.reseed()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        await pool.disconnect(inuse_connections=False)


async def send_packed(client: aioredis.Redis, packed: bytes, replies: int) -> list[Any]:
    """Send a request packed already (`hiredis.pack_command`: redis-py's asyncio client
    packs in pure Python) on one pooled connection of a standalone client, and read
    `replies` replies; an error reply comes back as its exception, in its place.

    Any other failure leaves the connection's state unknown (replies may be unread on
    it): it is closed before it goes back to the pool. Used by the commit script's calls
    (sinks/commit.py) and the forwarder's (shell/route.py)."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(packed)
        out: list[Any] = []
        for _ in range(replies):
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:  # one command's error; the others still come
                out.append(exc)
        return out
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


# --- replies bounded in bytes -------------------------------------------------------------

REPLY_BYTES: ContextVar[int] = ContextVar("pomocore_reply_bytes", default=-1)
"""Bytes read from the socket for the last reply this task received through a client with
a bounded parser (`bounded_parser`); -1 when none did."""


class ReplyTooLarge(RedisConnectionError):
    """A reply grew past the client's byte bound: it was cut off and the connection closed
    (what was read of it is freed with the connection). The command may have had effects:
    an XREADGROUP cut off this way has delivered its entries, unread."""


# redis-py 5.3 parses a Cluster's redirections (MOVED, ASK, TRYAGAIN, ...) into their
# exceptions only in its ClusterParser, which `bound_replies` replaces: without them a
# MOVED reached the caller as a plain ResponseError, unfollowed. redis-py >= 6 has them in
# every parser (and no ClusterParser).
_CLUSTER_ERRORS: dict[str, Any] = getattr(
    getattr(aiocluster, "ClusterParser", None), "EXCEPTION_CLASSES", {}
)


class _BoundedParser(_AsyncHiredisParser):
    """hiredis, with a bound on the bytes of one reply (`max_reply_bytes`).

    Redis sends an XREADGROUP's entries whole, however large: 500 entries of 2 MB would
    be read, and turned into objects, before any check of ours ran. This parser stops
    reading a reply once more than `max_reply_bytes` arrived for it and raises
    ReplyTooLarge; redis-py then closes the connection (a reply cannot be resumed). So a
    reply never costs more than the bound plus one socket read (64 KiB).
    """

    max_reply_bytes = 0  # set by bounded_parser
    # (redis-py declares it a plain attribute: read only)
    EXCEPTION_CLASSES = {**_AsyncHiredisParser.EXCEPTION_CLASSES, **_CLUSTER_ERRORS}  # noqa: RUF012

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._reply_bytes = 0
        try:
            return await super().read_response(*args, **kwargs)
        finally:
            REPLY_BYTES.set(self._reply_bytes)

    async def read_from_socket(self) -> bool:
        # As hiredis' own (redis-py 5.3 to 8), counting what is fed to the reader.
        stream: Any = self._stream
        buffer = await stream.read(self._read_size)
        if not buffer or not isinstance(buffer, bytes):
            raise RedisConnectionError("Connection closed by server.")
        self._reply_bytes = getattr(self, "_reply_bytes", 0) + len(buffer)
        if self._reply_bytes > self.max_reply_bytes:
            raise ReplyTooLarge(
                f"reply over {self.max_reply_bytes} bytes (POMOCORE_BATCH_MAX_BYTES): cut off"
            )
        reader: Any = self._reader
        reader.feed(buffer)
        return True


def bounded_parser(max_reply_bytes: int) -> type[_AsyncHiredisParser]:
    """A parser class (redis-py's `parser_class`) whose replies are cut off past
    `max_reply_bytes`."""
    return type("BoundedParser", (_BoundedParser,), {"max_reply_bytes": max_reply_bytes})


def bound_replies(client: aioredis.Redis, max_reply_bytes: int) -> None:
    """Every connection `client` opens from now on parses with `bounded_parser`.

    A standalone client takes `parser_class` in its pool's connection arguments; the
    Cluster client builds its node connections from its nodes manager's arguments (it does
    not accept `parser_class` itself) and connects lazily, so setting them before the
    first command reaches every node connection.
    """
    parser = bounded_parser(max_reply_bytes)
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.connection_kwargs["parser_class"] = parser
    nodes = getattr(client, "nodes_manager", None)
    if nodes is not None:
        nodes.connection_kwargs["parser_class"] = parser
        known = [*nodes.startup_nodes.values(), *nodes.nodes_cache.values()]
        for node in known:  # (built before: each copied the arguments)
            node.connection_kwargs["parser_class"] = parser


# --- MongoDB ------------------------------------------------------------------------------


def consumer_mongo(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    """The consumer's client. Every operation is bounded: `timeoutMS` caps each one whole
    (server selection, connecting, reading the reply, the driver's own retry), unless a
    `pymongo.timeout` block gives it another deadline (a batch's writes share one;
    start-up waits longer). Without it, a stalled server holds a read forever (pymongo
    has no socket timeout)."""
    return AsyncMongoClient(
        settings.mongo_uri,
        timeoutMS=settings.mongo_timeout_ms,
        serverSelectionTimeoutMS=int(MONGO_START_TIMEOUT_S * 1000),
        connectTimeoutMS=min(int(MONGO_CONNECT_TIMEOUT_S * 1000), settings.mongo_timeout_ms),
        tz_aware=True,
    )


def mongo_options(timeout_s: float, connect_timeout_s: float) -> dict[str, Any]:
    """Reach a server within `connect_timeout_s` (selection, connection, handshake); each
    reply within `timeout_s`. Per reply, not `timeoutMS`: that caps a find's cursor over
    its whole life (the default for non-tailable cursors under the driver's client-side
    operation timeout), and a rebuild or reclassify reads millions of documents through
    one. Datetimes come back aware, in UTC."""
    connect_ms = int(connect_timeout_s * 1000)
    return {
        "serverSelectionTimeoutMS": connect_ms,
        "connectTimeoutMS": connect_ms,
        "socketTimeoutMS": int(timeout_s * 1000),
        "tz_aware": True,
    }


def sync_mongo(
    settings: Settings,
    timeout_s: float = CLI_TIMEOUT_S,
    connect_timeout_s: float = MONGO_CONNECT_TIMEOUT_S,
) -> pymongo.MongoClient[dict[str, Any]]:
    """A blocking client for operator commands and probes (`mongo_options`)."""
    return pymongo.MongoClient(settings.mongo_uri, **mongo_options(timeout_s, connect_timeout_s))


def async_mongo(
    settings: Settings,
    timeout_s: float = CLI_TIMEOUT_S,
    connect_timeout_s: float = MONGO_CONNECT_TIMEOUT_S,
) -> AsyncMongoClient[dict[str, Any]]:
    """An asyncio client for operator commands (`mongo_options`)."""
    return AsyncMongoClient(settings.mongo_uri, **mongo_options(timeout_s, connect_timeout_s))
