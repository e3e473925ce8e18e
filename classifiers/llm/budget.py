"""Cost guard shared by every consumer process: calls and tokens per minute, in Redis.

Fixed one-minute windows (`{prefix}:calls:{minute}`, `{prefix}:tokens:{minute}`) checked
and incremented by one Lua script, so concurrent processes can never together exceed
the limits within a window. A fixed window may let up to twice the limit through across
a window boundary; the limits are a cost cap, not a smoothing device.

Per user (issue #15 §2): a call made for one user's keys also counts in
`{user_prefix}:{sha256(user)[:16]}:{minute}`, and is refused once that user has had
`user_share` of `calls_per_min` (at least one call) in the window, so one producer with
endless unique titles cannot spend everybody's budget. Keys of no known user ("") only
count against the shared limits.

A budget check that cannot reach Redis (down, or its connection pool exhausted by a
burst) retries for at most `redis_wait_s` and then refuses: it never raises, and never
allows a call the shared counter has not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pomocore.core.settings import Settings

log = logging.getLogger(__name__)

# Refusal reasons (LLMUnavailable.reason, counter labels).
BUDGET: Final = "budget"
USER_SHARE: Final = "user_share"
# How long a budget check keeps trying to reach Redis before it refuses the call.
REDIS_WAIT_S = 1.0
_RETRY_PAUSE_S = 0.02

_ACQUIRE = """
local calls = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local want = tonumber(ARGV[3])
if calls + 1 > tonumber(ARGV[1]) then return 0 end
if tokens > 0 and tokens + want > tonumber(ARGV[2]) then return -1 end
if KEYS[3] then
  local mine = tonumber(redis.call('GET', KEYS[3]) or '0')
  if mine + 1 > tonumber(ARGV[5]) then return -2 end
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('INCRBY', KEYS[2], want)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


class Budget:
    """`reserve(estimated_tokens, user)` before each call; `settle(estimate, actual)` after."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        calls_per_min: int,
        tokens_per_min: int,
        window_s: int = 60,
        clock: Callable[[], float] = time.time,
        *,
        user_prefix: str = "",
        user_share: float = 1.0,
        redis_wait_s: float = REDIS_WAIT_S,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.calls_per_min = calls_per_min
        self.tokens_per_min = tokens_per_min
        self._window_s = window_s
        self._clock = clock
        self._user_prefix = user_prefix or f"{prefix}:user"
        # Calls per window one user may have; at least one, so a share never locks out.
        self.user_calls = max(1, int(user_share * calls_per_min))
        self._redis_wait_s = redis_wait_s
        self._script = redis.register_script(_ACQUIRE)

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: Settings) -> Budget:
        """The budget every consumer shares (also read by `pomocore status`)."""
        keys = settings.keys
        return cls(
            redis, keys.llm_rate_key_prefix, settings.llm_calls_per_min,
            settings.llm_tokens_per_min, user_prefix=keys.llm_user_calls_key_prefix,
            user_share=settings.llm_user_share,
        )  # fmt: skip

    def _keys(self) -> tuple[str, str]:
        window = int(self._clock() // self._window_s)
        return f"{self._prefix}:calls:{window}", f"{self._prefix}:tokens:{window}"

    def user_key(self, user: str) -> str:
        """The user's call counter of the current window (the id hashed: bounded, opaque)."""
        window = int(self._clock() // self._window_s)
        digest = hashlib.sha256(user.encode()).hexdigest()[:16]
        return f"{self._user_prefix}:{digest}:{window}"

    async def acquire(self, estimated_tokens: int, user: str = "") -> bool:
        """True when a call may go out (see `reserve`)."""
        return await self.reserve(estimated_tokens, user) is None

    async def reserve(self, estimated_tokens: int, user: str = "") -> str | None:
        """Reserve one call and `estimated_tokens` (and one of `user`'s calls). None when
        granted, else the refusal: BUDGET (window spent, or Redis unreachable: without the
        shared counter the cap cannot be promised) or USER_SHARE.

        The first call of a window is always allowed on tokens (a single oversized request
        must not be starved forever).
        """
        calls_key, tokens_key = self._keys()
        keys = [calls_key, tokens_key] + ([self.user_key(user)] if user else [])
        args = [
            self.calls_per_min, self.tokens_per_min, max(0, estimated_tokens),
            self._window_s * 2, self.user_calls,
        ]  # fmt: skip
        result = await self._run(keys, args)
        if result == 1:
            return None
        return USER_SHARE if result == -2 else BUDGET

    async def _run(self, keys: list[str], args: list[int]) -> int | None:
        """The script's result; None when Redis stayed unreachable for `redis_wait_s`.

        Connection trouble is retried: a burst can exhaust the connection pool
        (MaxConnectionsError) for a moment, and refusing then would leave answerable
        items without an answer."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._redis_wait_s
        while True:
            try:
                return int(await self._script(keys=keys, args=args))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if loop.time() + _RETRY_PAUSE_S >= give_up_at:
                    log.warning("llm budget check: redis unreachable (%s)", type(exc).__name__)
                    return None
                await asyncio.sleep(_RETRY_PAUSE_S)
            except RedisError as exc:
                log.warning("llm budget check failed: %s", type(exc).__name__)
                return None

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
