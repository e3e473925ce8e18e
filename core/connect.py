"""Redis connections from settings: standalone or Cluster, plain or TLS, async or sync.

- `POMOCORE_REDIS_URL=rediss://...` turns TLS on; `POMOCORE_REDIS_TLS_CA_FILE` names the CA
  that signed the server certificate, `..._CERT_FILE`/`..._KEY_FILE` a client certificate
  for servers that require one (`tls-auth-clients yes`).
- `POMOCORE_REDIS_CLUSTER=1` uses the Cluster client (slot routing, MOVED/ASK handling);
  set `POMOCORE_KEY_HASH_TAG` too so every key one commit script touches shares a slot.

The async client is what consumers use; the sync one serves probes, `pomocore check`,
the metrics sampler and leaderboard readers.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster

from pomocore.core.settings import Settings


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
    options = {**tls_options(settings), **options}
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
        **tls_options(settings),
        **options,
    }
    if settings.redis_cluster:
        cluster: Any = redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
        return cluster  # type: ignore[no-any-return]
    return redis.Redis.from_url(settings.redis_url, **options)
