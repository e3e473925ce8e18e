"""Keys waiting for the LLM, shared by all processes: a Redis sorted set with leases.

Member: the JSON array [app, url, title]. Score: the time (unix seconds) the key may next
be taken. `claim` moves due members' scores into the future (a lease), so a reclassifier
that dies mid-way does not lose them: the lease expires and another process takes them.
The user a key was queued for is kept beside it (a hash, `users_key`, member → user) so
it is asked again within that user's share (issue #15 §2).

Leases and retries move those scores, so the time a key was first queued is kept apart,
in a second sorted set (`since_key`, same members): `oldest_age` reads it for the metrics.
The queue, the users hash and the since set are written in one pipeline, not a
transaction (a Cluster client may route them to different nodes): a time whose key has
left the queue is dropped when `oldest_age` meets it, so a lost write can only hide a
key's age, never keep an old one forever; a lost user write leaves the key asked without
a user (in the shared, no-user requests), a lost user removal at worst keeps a re-queued
key in its former user's share.

Bounds (issue #14 §3): at most `max_size` keys (POMOCORE_LLM_QUEUE_MAX): a key arriving
at a full queue is dropped (`full`); a key waiting longer than `ttl_s`
(POMOCORE_LLM_QUEUE_TTL_S) since it was first queued is dropped by `expire` (`expired`);
a key whose member would be longer than MAX_MEMBER_BYTES is never queued (`too_large`).
Each drop is counted (`LLMStats.queue_dropped`, metric `pomocore_llm_queue_dropped`); a
dropped key keeps the no-LLM rule it already has. A member is stored three times (queue,
users hash, since set), so the queue holds at most 3 x max_size x MAX_MEMBER_BYTES.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from pomocore.core.decision import ClassKey
from pomocore.core.settings import Settings

# KEYS[1] queue; ARGV[1] score, ARGV[2] max size, ARGV[3..] members. Adds (NX) the members
# not queued yet while the queue has room. Returns {dropped, {indices of the members that
# are queued now: added, or queued before}}.
_ADD = """
local size = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[2])
local dropped, queued = 0, {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    queued[#queued + 1] = i - 2
  elseif size >= max then
    dropped = dropped + 1
  else
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    size = size + 1
    queued[#queued + 1] = i - 2
  end
end
return {dropped, queued}
"""

# The longest member queued: [app, url, title] as JSON. Longer keys (a title or URL of
# thousands of characters) keep their no-LLM rule; the LLM would see them cut anyway
# (classifiers/llm/prompt.py).
MAX_MEMBER_BYTES = 4096
# Members expired per call of `expire` (one ZRANGEBYSCORE page).
EXPIRE_PAGE = 500

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
end
return due
"""


def encode(key: ClassKey) -> bytes:
    return orjson.dumps(list(key))


def decode(member: bytes | str) -> ClassKey | None:
    try:
        app, url, title = orjson.loads(member)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    if not all(isinstance(s, str) for s in (app, url, title)):
        return None
    return (app, url, title)


class PendingQueue:
    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        settle_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        users_key: str = "",
        since_key: str | None = None,
        max_size: int = 10_000,
        ttl_s: float = 86_400.0,
    ) -> None:
        self._redis = redis
        self.key = key
        self.users_key = users_key or f"{key}:users"
        self.since_key = since_key  # None: no first-queued times kept (oldest_age is None)
        # Keys become due only after `settle_s`: by then the core has written the
        # categorized_data document the reclassifier is going to correct.
        self.settle_s = settle_s
        self.max_size = max_size
        self.ttl_s = ttl_s  # enforced with since_key (`expire`)
        self._clock = clock
        self._claim = redis.register_script(_CLAIM)
        self._add = redis.register_script(_ADD)

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: Settings) -> PendingQueue:
        """The queue every consumer shares (also read by `pomocore status`)."""
        keys = settings.keys
        return cls(
            redis,
            keys.llm_queue_key,
            users_key=keys.llm_queue_users_key,
            since_key=keys.llm_queue_since_key,
            max_size=settings.llm_queue_max,
            ttl_s=settings.llm_queue_ttl_s,
        )

    async def add(
        self, keys: Iterable[ClassKey], users: Mapping[ClassKey, str] | None = None
    ) -> dict[str, int]:
        """Queue keys (NX: a key already queued or leased keeps its schedule, user and
        first-queued time) while there is room. `users`: the one user each key is queued
        for. Returns the keys dropped, by reason (`full`, `too_large`)."""
        now = self._clock()
        dropped: dict[str, int] = {}
        wanted = [(k, encode(k)) for k in dict.fromkeys(keys)]
        fitting = [(k, m) for k, m in wanted if len(m) <= MAX_MEMBER_BYTES]
        if len(fitting) < len(wanted):
            dropped["too_large"] = len(wanted) - len(fitting)
        if not fitting:
            return dropped
        reply = await self._add(
            keys=[self.key], args=[now + self.settle_s, self.max_size, *(m for _, m in fitting)]
        )
        if int(reply[0]):
            dropped["full"] = int(reply[0])
        queued = [fitting[int(i) - 1] for i in reply[1]]
        owners = {m: users[k] for k, m in queued if users and users.get(k)}
        if owners or (queued and self.since_key is not None):
            async with self._redis.pipeline(transaction=False) as pipe:
                for member, user in owners.items():
                    pipe.hsetnx(self.users_key, member, user)
                if self.since_key is not None and queued:
                    pipe.zadd(self.since_key, dict.fromkeys((m for _, m in queued), now), nx=True)
                await pipe.execute()
        return dropped

    async def expire(self) -> int:
        """Drop keys first queued more than `ttl_s` ago (up to EXPIRE_PAGE per call);
        returns how many left the queue. Needs `since_key`."""
        if self.since_key is None:
            return 0
        old: list[Any] = await self._redis.zrangebyscore(
            self.since_key, "-inf", self._clock() - self.ttl_s, start=0, num=EXPIRE_PAGE
        )
        return await self._remove(old) if old else 0

    async def users(self, keys: Iterable[ClassKey]) -> dict[ClassKey, str]:
        """The user each key was queued for (keys queued without one are left out)."""
        keys = list(keys)
        if not keys:
            return {}
        raw = await self._redis.hmget(self.users_key, [encode(k) for k in keys])
        return {
            k: u.decode() if isinstance(u, bytes) else str(u)
            for k, u in zip(keys, raw, strict=True)
            if u
        }

    async def claim(self, count: int, lease_s: float) -> list[ClassKey]:
        now = self._clock()
        raw = await self._claim(keys=[self.key], args=[now, count, now + lease_s])
        keys: list[ClassKey] = []
        for member in raw:
            key = decode(member)
            if key is None:  # not ours or corrupt: drop it rather than loop on it
                await self._remove([member])
            else:
                keys.append(key)
        return keys

    async def done(self, keys: Iterable[ClassKey]) -> None:
        members = [encode(k) for k in keys]
        if members:
            await self._remove(members)

    async def _remove(self, members: Sequence[bytes | str]) -> int:
        """Drop members from the queue, the users hash and the since set (one pipeline,
        not a transaction: see the module docstring); returns how many left the queue."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.key, *members)
            pipe.hdel(self.users_key, *members)
            if self.since_key is not None:
                pipe.zrem(self.since_key, *members)
            return int((await pipe.execute())[0])

    async def retry_later(self, keys: Iterable[ClassKey], delay_s: float) -> None:
        when = self._clock() + delay_s
        mapping = {encode(k): when for k in keys}
        if mapping:
            await self._redis.zadd(self.key, mapping, xx=True)

    async def size(self) -> int:
        return int(await self._redis.zcard(self.key))

    async def oldest_age(self, max_stale: int = 10, *, prune: bool = True) -> float | None:
        """Seconds since the longest-waiting key was first queued: 0 for an empty queue,
        None without `since_key`. Drops up to `max_stale` times whose key is gone; with
        `prune` False (a read-only caller: `pomocore status`) skips them instead."""
        if self.since_key is None:
            return None
        skipped = 0
        for _ in range(max_stale + 1):
            oldest: Any = await self._redis.zrange(
                self.since_key, skipped, skipped, withscores=True
            )
            if not oldest:
                return 0.0
            member, since = oldest[0]  # (member, score) with withscores
            if await self._redis.zscore(self.key, member) is not None:
                return max(0.0, self._clock() - float(since))
            if prune:
                await self._redis.zrem(self.since_key, member)
            else:
                skipped += 1
        return 0.0
