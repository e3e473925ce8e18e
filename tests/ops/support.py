"""Helpers of the operations tests: drain a consumer when the plain test helpers cannot
reach the server (TLS, Cluster), using pomocore's own connection settings."""

from __future__ import annotations

from pomocore.consumers.consumer import ConsumerStats
from pomocore.core.connect import sync_redis
from pomocore.core.settings import Settings
from tests.support.pipeline import drain as shared_drain


def group_state(settings: Settings) -> tuple[int, int]:
    client = sync_redis(settings)
    try:
        for g in client.xinfo_groups(settings.keys.stream_key):
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == settings.group:
                return int(g.get("lag") or 0), int(g["pending"])
    except Exception:
        pass
    finally:
        client.close()
    return -1, -1


async def drain(settings: Settings, timeout_s: float = 60.0) -> ConsumerStats:
    """The shared drain, watching the group through a TLS/Cluster-aware client."""
    return await shared_drain(settings, timeout_s, state=lambda: group_state(settings))
