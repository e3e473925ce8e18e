"""Cost guard shared by every consumer process: calls and tokens per minute, in Redis.

Fixed one-minute windows (`{prefix}:calls:{minute}`, `{prefix}:tokens:{minute}`) checked
and incremented by one Lua script, so concurrent processes can never together exceed
the limits within a window. A fixed window may let up to twice the limit through across
a window boundary; the limits are a cost cap, not a smoothing device.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_ACQUIRE = """
local calls = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local want = tonumber(ARGV[3])
if calls + 1 > tonumber(ARGV[1]) then return 0 end
if tokens > 0 and tokens + want > tonumber(ARGV[2]) then return -1 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('INCRBY', KEYS[2], want)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


class Budget:
    """`acquire(estimated_tokens)` before each call; `settle(estimate, actual)` after it."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        calls_per_min: int,
        tokens_per_min: int,
        window_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.calls_per_min = calls_per_min
        self.tokens_per_min = tokens_per_min
        self._window_s = window_s
        self._clock = clock
        self._script = redis.register_script(_ACQUIRE)

    def _keys(self) -> tuple[str, str]:
        window = int(self._clock() // self._window_s)
        return f"{self._prefix}:calls:{window}", f"{self._prefix}:tokens:{window}"

    async def acquire(self, estimated_tokens: int) -> bool:
        """Reserve one call and `estimated_tokens`. False when the window is spent.

        The first call of a window is always allowed on tokens (a single oversized request
        must not be starved forever). If Redis is down we refuse: without the shared
        counter we cannot promise the cap.
        """
        calls_key, tokens_key = self._keys()
        try:
            result = await self._script(
                keys=[calls_key, tokens_key],
                args=[
                    self.calls_per_min,
                    self.tokens_per_min,
                    max(0, estimated_tokens),
                    self._window_s * 2,
                ],
            )
        except (RedisError, OSError):
            return False
        return int(result) == 1

    async def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token counter once the server reported the real usage."""
        delta = actual_tokens - estimated_tokens
        if delta == 0:
            return
        _, tokens_key = self._keys()
        # On failure the counter only errs on the cheap side for the rest of the window.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.incrby(tokens_key, delta)

    async def usage(self) -> tuple[int, int]:
        """(calls, tokens) used in the current window."""
        calls_key, tokens_key = self._keys()
        calls, tokens = await self._redis.mget(calls_key, tokens_key)
        return int(calls or 0), int(tokens or 0)

    async def remaining(self) -> tuple[int, int]:
        """(calls, tokens) still allowed in the current window, never below 0."""
        calls, tokens = await self.usage()
        return max(0, self.calls_per_min - calls), max(0, self.tokens_per_min - tokens)
