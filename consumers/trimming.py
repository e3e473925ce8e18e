"""Stream trimming: the input stream kept near `stream_maxlen` without ever removing an
entry a group still needs; the dead-letter and session-score streams capped by count and
age.

**Input stream** (`POMOCORE_STREAM_MAXLEN` > 0). One script (atomic: nothing is delivered,
acknowledged or created between the computation and the trim) computes the first entry
some group still needs: the oldest entry pending in any group (XPENDING summary) and the
first entry not yet delivered to some group (XINFO GROUPS `last-delivered-id` + 1). It
then runs `XTRIM MINID ~ <that id> LIMIT <XLEN - maxlen>`: whole stream nodes older than
that id, at most as many entries as exceed the bound. So an entry is removed only when it
is both acknowledged by every group and outside the newest ~`maxlen`; no entry is copied
(the script reads group metadata, never entries). With no group on the stream nothing is
trimmed: every entry waits for the first group (created at id 0 by the consumers).

**Dead-letter and session-score streams.** Capped by count (`..._MAXLEN`, `XTRIM MAXLEN ~`)
and by age (`..._MAX_AGE_S`, `XTRIM MINID ~` at now - age): what is dropped is counted
(`dropped`, the metric `pomocore_stream_trimmed_total`) and logged.

Only commands the `worker` ACL user may run (shell/acl.py): XLEN, XINFO GROUPS/STREAM,
XPENDING, XTRIM and EVALSHA; no INFO.

**Keeping up.** `XTRIM ... ~` frees whole nodes (measured on Valkey 9.1: 2.4 ms for
100,000 entries of ~200 bytes, 24 ns per entry), so one call may trim MAX_TRIM_PER_CALL
entries; a call that hits that limit is followed by the next at once. Otherwise the next
pass comes when, at the rate entries are being added (XINFO STREAM `entries-added`, which
trimming does not change), the stream would pass its bound by HEADROOM_SHARE of it:
between MIN_PERIOD_S and MAX_PERIOD_S (BEHIND_PERIOD_S while a group's position keeps the
stream past its bound: it may move on at any moment). And sooner: once this process has
acknowledged that headroom's worth of entries since the last pass (`observing`: the
runtime's observer), so a burst after a quiet spell is trimmed as it is committed.

An entry trimmed while pending anyway (by another tool) is reported by XAUTOCLAIM as
deleted; consumers/reclaim.py counts it as lost-to-trim.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from pomocore.core.keys import KeySpace
from pomocore.core.observer import BatchOutcome, Fanout, Observer
from pomocore.core.settings import Settings

log = logging.getLogger("pomocore.trimming")

# At most this many entries per XTRIM: about 2.4 ms of server time (24 ns per entry, above).
MAX_TRIM_PER_CALL = 100_000
# Passes are at least this far apart (unless one hit MAX_TRIM_PER_CALL). A pass is one
# script call per stream reading metadata only: at 50 passes/s a few hundred µs of Redis
# time per second.
MIN_PERIOD_S = 0.02
# ... and at most this far: the longest a burst after a quiet spell goes unnoticed (the
# rate is known from the second pass that sees it). A quiet stream costs 1 call/s.
MAX_PERIOD_S = 1.0
# A stream left past its bound (a group's oldest pending or first undelivered entry
# stopped the trim) is looked at this often: the entries behind it become trimmable
# the moment the group moves on (a reclaimed batch acknowledged, a backlog read).
BEHIND_PERIOD_S = 0.1
# The next pass comes before the stream grows past its bound by this share of the bound
# (at least HEADROOM_MIN entries): the bound's overshoot at a steady rate.
HEADROOM_SHARE = 0.1
HEADROOM_MIN = 1_000

# Lua: stream ids compared as decimal strings (exact for any 64-bit part); also used by
# the forwarder's scripts (shell/route.py).
LUA_ID_LESS = """
local function split(id)
  return string.match(id, '^(%d+)-(%d+)$')
end
local function less(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
"""
# Lua helpers of the trimming scripts.
_IDS = LUA_ID_LESS + """
-- the id right after `id` (an id with a sequence too long to add to exactly: itself,
-- which keeps one entry more)
local function after(id)
  local ms, seq = split(id)
  if #seq > 15 then return id end
  return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end
local function added(key)
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then return info[i + 1] end
  end
  return -1
end
"""

# KEYS[1] input stream; ARGV[1] maxlen, ARGV[2] max entries per call.
# Returns {trimmed, XLEN before, entries-added (-1 unknown), bound id ('' none)}.
SAFE_TRIM = (
    _IDS
    + """
local len = redis.call('XLEN', KEYS[1])
if len == 0 then return {0, 0, 0, ''} end
local total = added(KEYS[1])
local excess = len - tonumber(ARGV[1])
if excess <= 0 then return {0, len, total, ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, len, total, ''} end
local bound = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local undelivered = after(info['last-delivered-id'])
  if not bound or less(undelivered, bound) then bound = undelivered end
  if tonumber(info['pending']) > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], info['name'])[2]
    if oldest and less(oldest, bound) then bound = oldest end
  end
end
local limit = math.min(excess, tonumber(ARGV[2]))
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', '~', bound, 'LIMIT', limit)
return {trimmed, len, total, bound}
"""
)

# KEYS[1] a capped stream; ARGV[1] maxlen (0 = none), ARGV[2] oldest id kept by age
# ('' = none), ARGV[3] max entries per call.
# Returns {dropped by count, dropped by age, XLEN before, entries-added (-1 unknown)}.
CAP_TRIM = (
    _IDS
    + """
local len = redis.call('XLEN', KEYS[1])
if len == 0 then return {0, 0, 0, 0} end
local total = added(KEYS[1])
local limit = tonumber(ARGV[3])
local by_count, by_age = 0, 0
local maxlen = tonumber(ARGV[1])
if maxlen > 0 and len > maxlen then
  local n = math.min(len - maxlen, limit)
  by_count = redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', maxlen, 'LIMIT', n)
end
if ARGV[2] ~= '' then
  by_age = redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2], 'LIMIT', limit)
end
return {by_count, by_age, len, total}
"""
)


@dataclass(frozen=True, slots=True)
class Pass:
    """What one trim of one stream saw and did."""

    stream: str  # input, dead_letter or session_score
    length: int  # XLEN before the trim
    added: int  # XINFO STREAM entries-added (0: the stream is empty; -1: unknown)
    bound: int  # the entries the stream is kept near (0 = no count bound)
    by_count: int = 0  # entries trimmed by the count bound (input: by stream_maxlen)
    by_age: int = 0  # entries trimmed by the age cap

    @property
    def headroom(self) -> float:
        return max(HEADROOM_MIN, self.bound * HEADROOM_SHARE)

    @property
    def behind(self) -> bool:
        """Still past its bound by more than the headroom after the trim."""
        left = self.length - self.by_count - self.by_age
        return self.bound > 0 and left - self.bound > self.headroom

    @property
    def limited(self) -> bool:
        """Probably stopped by MAX_TRIM_PER_CALL, with more to trim now: it trimmed and
        is still past its bound by more than the headroom (for the input stream, the
        first entry a group needs may have stopped it instead: the next pass trims
        nothing and waits as usual), or it trimmed more than half a call's limit by age."""
        return (self.by_count > 0 and self.behind) or self.by_age > MAX_TRIM_PER_CALL // 2


@dataclass(frozen=True, slots=True)
class Cap:
    """The count and age caps of one of the output streams."""

    stream: str
    key: str
    maxlen: int
    max_age_s: float


def caps(settings: Settings, keys: KeySpace | None = None) -> list[Cap]:
    """The dead-letter and session-score streams' caps (those with any cap set), of the
    shard with `keys` (default: `settings.keys`)."""
    keys = keys or settings.keys
    out = [
        Cap("dead_letter", keys.dead_letter_key, settings.dead_letter_maxlen,
            settings.dead_letter_max_age_s),
        Cap("session_score", keys.session_score_key, settings.session_score_maxlen,
            settings.session_score_max_age_s),
    ]  # fmt: skip
    return [c for c in out if c.maxlen > 0 or c.max_age_s > 0]


def trimming_enabled(settings: Settings) -> bool:
    return settings.stream_maxlen > 0 or bool(caps(settings))


class StreamTrimmer:
    """Trims the input stream toward `stream_maxlen` and caps the output streams."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        clock: Callable[[], float] = time.time,
        *,
        keys: KeySpace | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.clock = clock
        self.keys = keys or settings.keys  # the shard's keys (core/shards.py)
        self._safe = redis.register_script(SAFE_TRIM)
        self._cap = redis.register_script(CAP_TRIM)
        self.trimmed_total = 0  # input entries trimmed by this process
        # (stream, cap) -> entries dropped by this process: ("dead_letter", "age"), ...
        self.dropped: Counter[tuple[str, str]] = Counter()
        self._seen: dict[str, tuple[float, int]] = {}  # stream -> (time, entries-added)
        # acknowledged entries that wake the trimmer early: the input stream's headroom
        # (else the session scores', which commits add to; None: no count bound)
        bounds = (
            [settings.stream_maxlen]
            if settings.stream_maxlen
            else [
                c.maxlen
                for c in caps(settings, self.keys)
                if c.stream == "session_score" and c.maxlen
            ]
        )
        self.wake_after: int | None = (
            int(max(HEADROOM_MIN, HEADROOM_SHARE * min(bounds))) if bounds else None
        )
        self._acknowledged = 0
        self._wake = asyncio.Event()

    def acknowledged(self, entries: int) -> None:
        """This process acknowledged `entries` (a committed batch): wake the trimmer once
        they add up to `wake_after` since its last pass. No I/O (an observer hook)."""
        if self.wake_after is None:
            return
        self._acknowledged += entries
        if self._acknowledged >= self.wake_after:
            self._wake.set()

    def observing(self, inner: Observer | None) -> Observer:
        """`inner` (or nothing) plus the commits that wake this trimmer."""
        counter = _CommitCounter(self)
        return counter if inner is None else Fanout(inner, counter)

    async def trim_once(self) -> int:
        """One trim of the input stream; the number of entries trimmed."""
        result = await self.trim_input()
        return 0 if result is None else result.by_count

    async def trim_input(self) -> Pass | None:
        """Trim toward stream_maxlen without touching needed entries (None: disabled)."""
        maxlen = self.settings.stream_maxlen
        if maxlen <= 0:
            return None
        reply = await self._safe(
            keys=[self.keys.stream_key], args=[maxlen, MAX_TRIM_PER_CALL]
        )
        result = Pass("input", int(reply[1]), int(reply[2]), maxlen, by_count=int(reply[0]))
        if result.by_count:
            self.trimmed_total += result.by_count
            self.dropped["input", "maxlen"] += result.by_count
            log.debug("trimmed input stream", extra={"entries": result.by_count, "maxlen": maxlen})
        return result

    async def cap_once(self) -> list[Pass]:
        """One trim of each capped output stream."""
        out = []
        for cap in caps(self.settings, self.keys):
            oldest = ""
            if cap.max_age_s > 0:
                oldest = f"{max(0, int((self.clock() - cap.max_age_s) * 1000))}-0"
            reply = await self._cap(keys=[cap.key], args=[cap.maxlen, oldest, MAX_TRIM_PER_CALL])
            result = Pass(
                cap.stream, int(reply[2]), int(reply[3]), cap.maxlen,
                by_count=int(reply[0]), by_age=int(reply[1]),
            )  # fmt: skip
            for kind, n in (("maxlen", result.by_count), ("age", result.by_age)):
                if n:
                    self.dropped[cap.stream, kind] += n
                    log.warning(
                        "capped stream: oldest entries dropped",
                        extra={"stream": cap.key, "cap": kind, "entries": n},
                    )
            out.append(result)
        return out

    async def pass_once(self) -> list[Pass]:
        """Every stream once: the input stream, then the capped ones."""
        first = await self.trim_input()
        return ([first] if first else []) + await self.cap_once()

    def next_delay_s(self, passes: list[Pass], period_s: float) -> float:
        """When to pass again: at once if a trim was cut short; else before the fastest
        growing stream passes its bound by its headroom, within [MIN_PERIOD_S, period_s],
        and within BEHIND_PERIOD_S while a group keeps a stream past its bound."""
        if any(p.limited for p in passes):
            return 0.0
        now = self.clock()
        delay = min(period_s, BEHIND_PERIOD_S) if any(p.behind for p in passes) else period_s
        for p in passes:
            seen = self._seen.get(p.stream)
            if p.added >= 0:
                self._seen[p.stream] = (now, p.added)
            if seen is None or p.added < 0 or p.bound <= 0:
                continue
            elapsed_s, grown = now - seen[0], p.added - seen[1]
            if elapsed_s <= 0 or grown <= 0:
                continue
            delay = min(delay, p.headroom / (grown / elapsed_s))
        return max(MIN_PERIOD_S, delay)

    async def run(self, stop: asyncio.Event, period_s: float = MAX_PERIOD_S) -> None:
        """Background task: pass after pass until stop (errors are logged, not fatal)."""
        while not stop.is_set():
            delay = period_s
            self._acknowledged = 0
            self._wake.clear()
            try:
                delay = self.next_delay_s(await self.pass_once(), period_s)
            except Exception as exc:  # Redis down: the consumer reconnects; we try later
                log.warning("stream trim failed", extra={"error": str(exc)[:200]})
            if delay <= 0:
                await asyncio.sleep(0)  # let the lanes run between two full trims
                continue
            await self._sleep(stop, delay)

    async def _sleep(self, stop: asyncio.Event, delay_s: float) -> None:
        """Until `delay_s` passed or `stop` is set; after MIN_PERIOD_S, enough commits
        (`acknowledged`) end it too."""
        first_s = min(delay_s, MIN_PERIOD_S)
        for events, timeout_s in (([stop], first_s), ([stop, self._wake], delay_s - first_s)):
            waits = [asyncio.ensure_future(e.wait()) for e in events]
            try:
                await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if any(e.is_set() for e in events):
                return


class _CommitCounter(Observer):
    """Tells the trimmer how many entries each committed batch acknowledged."""

    def __init__(self, trimmer: StreamTrimmer) -> None:
        self.trimmer = trimmer

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        self.trimmer.acknowledged(len(entries))
