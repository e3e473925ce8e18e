"""Redis connections from settings: standalone or Cluster, plain or TLS, async or sync.

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
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from pomocore.core.settings import Settings

# Socket timeout of operator commands (dlq, leaderboard rebuild, patterns, the demo): a
# rebuild's largest command replies well within it; a server that hangs fails the command.
CLI_TIMEOUT_S = 30.0


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
    """The consumer's client. With `redis_cluster`, a RedisCluster (same command API)."""
    options = {"retry": no_async_retry(), **tls_options(settings), **options}
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        cluster: Any = aiocluster.RedisCluster.from_url(settings.redis_url, **options)
        return cluster  # type: ignore[no-any-return]
    return aioredis.Redis.from_url(settings.redis_url, **options)


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
    dropped by that task's caller. The Cluster client follows failovers itself.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        await pool.disconnect(inuse_connections=False)
