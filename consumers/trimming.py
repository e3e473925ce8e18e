"""Input stream trimming that never removes an entry a group still needs.

With `stream_maxlen` > 0 the input stream is trimmed to about that many entries, but
never past the first entry some group still needs: the oldest entry pending in any group
(delivered, not acknowledged) and the first entry not yet delivered to some group.

- Valkey and Redis < 8.2: one script computes that bound and runs `XTRIM MINID` with
  min(bound, id of the entry that keeps `stream_maxlen` entries). Atomic: nothing is
  delivered or acknowledged between the computation and the trim.
- Redis >= 8.2: `XTRIM MAXLEN ~ n ACKED` does the same on the server (it only deletes
  entries acknowledged by every group); chosen automatically, or with mode="acked".

An entry trimmed while pending anyway (by another tool) is reported by XAUTOCLAIM as
deleted; consumers/reclaim.py counts those as lost-to-trim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from pomocore.core.settings import Settings

log = logging.getLogger("pomocore.trimming")

# At most this many entries are trimmed per call (bounds the script's run time).
MAX_TRIM_PER_CALL = 50_000

# KEYS[1] stream; ARGV[1] maxlen, ARGV[2] max entries to trim. Returns {trimmed, minid}.
SAFE_TRIM = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local len = redis.call('XLEN', KEYS[1])
local excess = len - tonumber(ARGV[1])
if excess <= 0 then return {0, ''} end
if excess > tonumber(ARGV[2]) then excess = tonumber(ARGV[2]) end
-- the first id that must stay by count: the (excess+1)-th entry
local range = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess + 1)
if #range <= excess then return {0, ''} end
local minid = range[excess + 1][1]
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  -- first entry not yet delivered to this group: last-delivered-id + 1
  local ms, seq = parse(info['last-delivered-id'])
  local undelivered = string.format('%d-%d', ms, seq + 1)
  if less(undelivered, minid) then minid = undelivered end
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    if summary[2] and less(summary[2], minid) then minid = summary[2] end
  end
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
return {trimmed, minid}
"""


async def server_supports_acked(redis: aioredis.Redis) -> bool:
    """XTRIM ... ACKED exists in Redis >= 8.2 (not in Valkey)."""
    info: dict[str, Any] = await redis.info("server")
    if "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey":
        return False
    version = tuple(int(p) for p in str(info.get("redis_version", "0.0")).split(".")[:2])
    return version >= (8, 2)


class StreamTrimmer:
    """Trims the input stream toward `stream_maxlen` (mode: auto, minid or acked)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, mode: str = "auto") -> None:
        if mode not in ("auto", "minid", "acked"):
            raise ValueError(f"unknown trim mode {mode!r}")
        self.settings = settings
        self.redis = redis
        self.mode = mode
        self._script = redis.register_script(SAFE_TRIM)
        self.trimmed_total = 0

    async def trim_once(self) -> int:
        """Trim toward stream_maxlen without touching needed entries; returns entries trimmed."""
        maxlen = self.settings.stream_maxlen
        if maxlen <= 0:
            return 0
        if self.mode == "auto":
            self.mode = "acked" if await server_supports_acked(self.redis) else "minid"
        key = self.settings.keys.stream_key
        if self.mode == "acked":
            trimmed = int(
                await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    "XTRIM", key, "MAXLEN", "~", maxlen, "ACKED"
                )
            )
        else:
            reply = await self._script(keys=[key], args=[maxlen, MAX_TRIM_PER_CALL])
            trimmed = int(reply[0])
        self.trimmed_total += trimmed
        if trimmed:
            log.info("trimmed input stream", extra={"entries": trimmed, "maxlen": maxlen})
        return trimmed

    async def run(self, stop: asyncio.Event, period_s: float = 10.0) -> None:
        """Background task: trim every period_s until stop (errors are logged, not fatal)."""
        while not stop.is_set():
            try:
                await self.trim_once()
            except Exception as exc:  # Redis down: the consumer reconnects; we try later
                log.warning("stream trim failed", extra={"error": str(exc)[:200]})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)
