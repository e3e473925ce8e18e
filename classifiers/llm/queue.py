"""Keys waiting for the LLM, shared by all processes: a Redis sorted set with leases.

Member: the JSON array [app, url, title]. Score: the time (unix seconds) the key may next
be taken. `claim` moves due members' scores into the future (a lease), so a reclassifier
that dies mid-way does not lose them: the lease expires and another process takes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

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
    ) -> None:
        self._redis = redis
        self.key = key
        # Keys become due only after `settle_s`: by then the core has written the
        # categorized_data document the reclassifier is going to correct.
        self.settle_s = settle_s
        self._clock = clock
        self._claim = redis.register_script(_CLAIM)

    async def add(self, keys: Iterable[ClassKey]) -> int:
        """Queue keys (NX: a key already queued or leased keeps its schedule)."""
        due = self._clock() + self.settle_s
        mapping = {encode(k): due for k in keys}
        if not mapping:
            return 0
        added = await self._redis.zadd(self.key, mapping, nx=True)
        return int(added or 0)

    async def claim(self, count: int, lease_s: float) -> list[ClassKey]:
        now = self._clock()
        raw = await self._claim(keys=[self.key], args=[now, count, now + lease_s])
        keys: list[ClassKey] = []
        for member in raw:
            key = decode(member)
            if key is None:  # not ours or corrupt: drop it rather than loop on it
                await self._redis.zrem(self.key, member)
            else:
                keys.append(key)
        return keys

    async def done(self, keys: Iterable[ClassKey]) -> None:
        members = [encode(k) for k in keys]
        if members:
            await self._redis.zrem(self.key, *members)

    async def retry_later(self, keys: Iterable[ClassKey], delay_s: float) -> None:
        when = self._clock() + delay_s
        mapping = {encode(k): when for k in keys}
        if mapping:
            await self._redis.zadd(self.key, mapping, xx=True)

    async def size(self) -> int:
        return int(await self._redis.zcard(self.key))
