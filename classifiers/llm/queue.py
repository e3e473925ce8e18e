"""Keys waiting for the LLM, shared by all processes: a Redis sorted set with leases.

Member: the JSON array [app, url, title]. Score: the time (unix seconds) the key may next
be taken. `claim` moves due members' scores into the future (a lease), so a reclassifier
that dies mid-way does not lose them: the lease expires and another process takes them.
The user a key was queued for is kept beside it (a hash, member → user) so it is asked
again within that user's share (issue #15 §2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import orjson
import redis.asyncio as aioredis

from pomocore.core.decision import ClassKey

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
    ) -> None:
        self._redis = redis
        self.key = key
        self.users_key = users_key or f"{key}:users"
        # Keys become due only after `settle_s`: by then the core has written the
        # categorized_data document the reclassifier is going to correct.
        self.settle_s = settle_s
        self._clock = clock
        self._claim = redis.register_script(_CLAIM)

    async def add(
        self, keys: Iterable[ClassKey], users: Mapping[ClassKey, str] | None = None
    ) -> int:
        """Queue keys (NX: a key already queued or leased keeps its schedule and user)."""
        due = self._clock() + self.settle_s
        keys = list(keys)
        mapping = {encode(k): due for k in keys}
        if not mapping:
            return 0
        owners = {encode(k): users[k] for k in keys if users and users.get(k)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.key, mapping, nx=True)
            for member, user in owners.items():
                pipe.hsetnx(self.users_key, member, user)
            added = (await pipe.execute())[0]
        return int(added or 0)

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
                await self._redis.zrem(self.key, member)
                await self._redis.hdel(self.users_key, member)
            else:
                keys.append(key)
        return keys

    async def done(self, keys: Iterable[ClassKey]) -> None:
        members = [encode(k) for k in keys]
        if members:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.key, *members)
                pipe.hdel(self.users_key, *members)
                await pipe.execute()

    async def retry_later(self, keys: Iterable[ClassKey], delay_s: float) -> None:
        when = self._clock() + delay_s
        mapping = {encode(k): when for k in keys}
        if mapping:
            await self._redis.zadd(self.key, mapping, xx=True)

    async def size(self) -> int:
        return int(await self._redis.zcard(self.key))
