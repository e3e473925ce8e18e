"""Publishing events to the input stream (CONTRACT §1), checked as the consumer checks them.

    import pomocore
    # r: a redis.Redis (or RedisCluster) client of the pipeline's Redis
    pomocore.publish(r, {"userId": "u42", "app": "Code", "duration": 12.5,
                         "timestamp": time.time()})                  # -> "1760000000000-0"
    pomocore.publish_many(r, events)                                  # one pipeline per 1000
    await pomocore.apublish(aredis, event)                            # redis.asyncio clients

Each event becomes the entry's fields (pomocore.core.event_schema.stream_fields: strings
as they are, numbers as their shortest decimal, booleans `true`/`false`, None left out)
and is checked by the consumer's own validator on exactly those fields before anything is
sent: an invalid event raises RejectedEvent naming the consumer's reason and field, and
`publish_many` sends none of its events then. Failed Redis calls raise BackendError
(BackendUnavailable when retrying later may work). A `publish_many` that fails part-way
may have added the events of its earlier pipelines: publishing is at least once, and a
retried event is a new entry (the consumer counts entries, so send each event once).

`settings` gives the stream key (with the Cluster hash tag) and the limits
(POMOCORE_MAX_TEXT_CHARS, POMOCORE_MAX_FUTURE_S); without it, the contract's defaults.
With POMOCORE_SHARDS > 1 each event goes to its user's shard stream (core/shards.py:
CRC-32 of the UTF-8 `userId`, modulo the shards), as `pomocore route` would move it from
the contract stream; a pipeline then holds XADDs to several keys, in the order of the
events (non-transactional: a Cluster client sends each node its own part). The
`producer` ACL user (pomocore.acl) is enough: XADD on the streams, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster

from pomocore.core.errors import RejectedEvent
from pomocore.core.event_schema import EventFields, check_event
from pomocore.core.events import TOO_LARGE, too_large
from pomocore.core.redis_errors import backend_error, server_name
from pomocore.core.settings import Settings
from pomocore.core.shards import shard_of_field

SyncRedis = redis.Redis | redis.cluster.RedisCluster
AsyncRedis = aioredis.Redis | aiocluster.RedisCluster

# Entries per pipeline: bounds the request and reply buffers of one round trip; 1000
# XADDs of a typical event are ~200 KB.
PIPELINE_CHUNK = 1000

_DEFAULTS = Settings()


def prepare(
    events: Iterable[EventFields], settings: Settings | None = None
) -> list[dict[bytes, bytes]]:
    """Each event's stream fields, every event checked before any is sent. Raises
    RejectedEvent / TypeError whose message starts with the event's index."""
    s = settings or _DEFAULTS
    out: list[dict[bytes, bytes]] = []
    for i, event in enumerate(events):
        try:
            fields, _ = check_event(
                event, max_future_s=s.max_future_s, max_text_chars=s.max_text_chars
            )
        except RejectedEvent as exc:
            raise RejectedEvent(exc.reason, exc.field, f"(event {i}) {exc.detail}") from None
        except TypeError as exc:
            raise TypeError(f"event {i}: {exc}") from None
        why = too_large(fields, s.max_entry_bytes)  # the consumer's read-side limit
        if why:
            raise RejectedEvent(TOO_LARGE, "", f"(event {i}) {why}")
        out.append(fields)
    return out


def publish(client: SyncRedis, event: EventFields, *, settings: Settings | None = None) -> str:
    """Check one event and XADD it; returns its entry id."""
    (fields,) = prepare([event], settings)
    try:
        entry_id = client.xadd(_streams(settings)(fields), fields)  # type: ignore[arg-type]
    except _REDIS_ERRORS as exc:
        raise backend_error(exc, server_name(client)) from exc
    return _text(entry_id)


def publish_many(
    client: SyncRedis, events: Iterable[EventFields], *, settings: Settings | None = None
) -> list[str]:
    """Check every event, then XADD them in pipelines of PIPELINE_CHUNK; returns the
    entry ids in the order of the events."""
    prepared = prepare(events, settings)
    stream_of, ids = _streams(settings), []
    try:
        for chunk in _chunks(prepared):
            pipe: Any = client.pipeline(transaction=False)
            for fields in chunk:
                pipe.xadd(stream_of(fields), fields)
            ids += [_text(i) for i in pipe.execute()]
    except _REDIS_ERRORS as exc:
        raise backend_error(exc, server_name(client)) from exc
    return ids


async def apublish(
    client: AsyncRedis, event: EventFields, *, settings: Settings | None = None
) -> str:
    """`publish` for redis.asyncio clients."""
    (fields,) = prepare([event], settings)
    try:
        entry_id = await client.xadd(_streams(settings)(fields), fields)  # type: ignore[arg-type]
    except _REDIS_ERRORS as exc:
        raise backend_error(exc, server_name(client)) from exc
    return _text(entry_id)


async def apublish_many(
    client: AsyncRedis, events: Iterable[EventFields], *, settings: Settings | None = None
) -> list[str]:
    """`publish_many` for redis.asyncio clients."""
    prepared = prepare(events, settings)
    stream_of, ids = _streams(settings), []
    try:
        for chunk in _chunks(prepared):
            pipe: Any = client.pipeline(transaction=False)
            for fields in chunk:
                pipe.xadd(stream_of(fields), fields)
            ids += [_text(i) for i in await pipe.execute()]
    except _REDIS_ERRORS as exc:
        raise backend_error(exc, server_name(client)) from exc
    return ids


# redis-py wraps socket errors in its own; OSError covers what slips through (TLS).
_REDIS_ERRORS = (redis.RedisError, OSError)


def _streams(settings: Settings | None) -> Callable[[dict[bytes, bytes]], str]:
    """The stream an event's fields go to: the contract's (one shard), else its user's
    shard's (each shard's key built once per call)."""
    s = settings or _DEFAULTS
    if s.shards == 1:
        stream = s.keys.stream_key
        return lambda fields: stream
    keys: dict[int, str] = {}

    def stream_of(fields: dict[bytes, bytes]) -> str:
        shard = shard_of_field(fields.get(b"userId"), s.shards)
        if shard not in keys:
            keys[shard] = s.shard_keys(shard).stream_key
        return keys[shard]

    return stream_of


def _chunks(items: Sequence[dict[bytes, bytes]]) -> Iterable[Sequence[dict[bytes, bytes]]]:
    for start in range(0, len(items), PIPELINE_CHUNK):
        yield items[start : start + PIPELINE_CHUNK]


def _text(entry_id: Any) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
