"""The Redis side as a producer and an operator see it: publish events, read the group's
lag and pending count, read the dead-letter stream. Plain redis-py, no pomocore code,
except `connected_group_state` for servers only pomocore's connection settings reach."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from pomocore.core.connect import sync_redis
from pomocore.core.settings import Settings

Fields = Mapping[str, str | bytes]
# what redis-py returns for XRANGE with bytes responses (its stubs say less)
StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


def now_fields(user: str, app: str, duration: float, **extra: Any) -> dict[str, str | bytes]:
    """One event as a tracker publishes it, a minute old unless `timestamp` is given."""
    fields: dict[str, str | bytes] = {
        "userId": user,
        "app": app,
        "title": extra.pop("title", ""),
        "url": extra.pop("url", ""),
        "duration": repr(duration),
        "timestamp": repr(extra.pop("timestamp", time.time() - 60)),
    }
    fields.update({k: str(v) if not isinstance(v, bytes) else v for k, v in extra.items()})
    return fields


def publish(url: str, stream: str, events: Iterable[Fields], *, atomic: bool = False) -> list[str]:
    """XADD each event as a producer would; returns the entry ids.

    `atomic`: in one MULTI/EXEC, so that the first blocked reader gets the whole burst
    (a consumer's XREADGROUP is otherwise woken by the first XADD alone).
    """
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=atomic)
    for fields in events:
        pipe.xadd(stream, dict(fields))  # type: ignore[arg-type]
    ids = [i.decode() for i in pipe.execute()]
    client.close()
    return ids


def group_state(settings: Settings) -> tuple[int, int]:
    """(lag, pending) of the group; lag counts entries not yet delivered; (-1, -1) when
    the stream or the group does not exist."""
    return _group_state(redis.Redis.from_url(settings.redis_url), settings, redis.ResponseError)


def is_drained(settings: Settings) -> bool:
    """Nothing undelivered and nothing pending in the group."""
    return group_state(settings) == (0, 0)


def connected_group_state(settings: Settings) -> tuple[int, int]:
    """`group_state` through pomocore's own connection settings (TLS, Cluster); (-1, -1)
    on any error, the cluster not being ready included."""
    return _group_state(sync_redis(settings), settings, Exception)


def _group_state(client: Any, settings: Settings, absent: type[Exception]) -> tuple[int, int]:
    """Read with `client` (closed after), summed over the shards; `absent` errors, or a
    shard without the group, mean (-1, -1)."""
    lag = pending = 0
    try:
        for keys in settings.all_shard_keys:
            state = _shard_group_state(client, keys.stream_key, settings.group)
            if state is None:
                return -1, -1
            lag, pending = lag + state[0], pending + state[1]
    except absent:
        return -1, -1
    finally:
        client.close()
    return lag, pending


def _shard_group_state(client: Any, stream_key: str, group: str) -> tuple[int, int] | None:
    for g in client.xinfo_groups(stream_key):
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return int(g.get("lag") or 0), int(g["pending"])
    return None


def dead_letters(settings: Settings) -> list[dict[bytes, bytes]]:
    """The fields of every entry of the dead-letter stream, oldest first."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        entries = cast(StreamEntries, client.xrange(settings.keys.dead_letter_key))
        return [f for _, f in entries]
    finally:
        client.close()
