"""Reclaim, poison control and consumer clean-up for one consumer of the group.

The consumer loop calls `Reclaimer.claim()` between reads when `due()`: XAUTOCLAIM moves
up to batch_size entries idle longer than `reclaim_idle_ms` (a dead or stuck consumer's)
to this consumer, by id only (JUSTID: the reply is ids, however large the entries), and
the consumer then reads them from its own pending list with the guarded read
(consumers/reads.py), which counts their delivery, leaves an oversized entry on the server
and runs poison control, like any re-read of the pending list.
The commit script makes the race with a slow-but-alive owner harmless: whoever commits
first acknowledges, the other finds the ids no longer pending and applies nothing.

Poison control: an entry whose delivery count (XPENDING) is above `max_deliveries` is not
processed again; it becomes a `max_deliveries` dead letter, written by the same commit
script that acknowledges it. The check runs on reclaimed entries and on entries re-read
from this consumer's own pending list (a restart after a crash), which are the two ways
an entry is delivered again.

Clean-up: a consumer with an empty pending list, idle for `2 * reclaim_idle_ms`, is
deleted. The emptiness check and XGROUP DELCONSUMER run in one script, so a consumer
that owns pending entries is never deleted (its entries would become unclaimable).

Keeping: a batch in hand is kept fresh by `BatchKeeper`, so that reclaiming takes only
what a dead or paused consumer left, never a live one's batch that waits out an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pomocore.consumers.batch import Entry
from pomocore.core.events import MAX_DELIVERIES, fields_dict, too_large
from pomocore.core.keys import KeySpace
from pomocore.core.settings import Settings
from pomocore.sinks.plan import DeadLetter

log = logging.getLogger("pomocore.reclaim")

START = "0-0"

# KEYS[1] stream; ARGV group, consumer, min_idle_ms, start, count. XAUTOCLAIM JUSTID as
# Redis replies it, [cursor, ids, deleted ids] (redis-py's parser keeps only the ids).
CLAIM_IDS = """
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  'COUNT', ARGV[5], 'JUSTID')
"""

# KEYS[1] stream; ARGV group, consumer, min_idle_ms. Deletes the consumer only if its
# pending list is empty and it has been idle at least min_idle_ms. Returns 1 if deleted.
DELETE_IDLE_CONSUMER = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[3]) then
      return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
    end
    return 0
  end
end
return 0
"""


@dataclass(slots=True)
class Claimed:
    ids: list[str] = field(default_factory=list)  # now pending for this consumer, unread
    lost_to_trim: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ReclaimStats:
    runs: int = 0
    reclaimed: int = 0
    poisoned: int = 0
    lost_to_trim: int = 0
    consumers_deleted: int = 0


class Reclaimer:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        clock: Callable[[], float] = time.monotonic,
        *,
        keys: KeySpace | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys or settings.keys  # the shard's keys (core/shards.py)
        self.stream_key = self.keys.stream_key
        self.clock = clock
        self.cursor = START
        self.interval_s = min(30.0, max(0.05, settings.reclaim_idle_ms / 2000))
        self.cleanup_every_s = max(1.0, settings.reclaim_idle_ms / 1000)
        self.consumer_idle_ms = 2 * settings.reclaim_idle_ms
        self._next_at = clock() + self.interval_s
        self._next_cleanup_at = clock() + self.cleanup_every_s
        self._delete_script = redis.register_script(DELETE_IDLE_CONSUMER)
        self._claim_script = redis.register_script(CLAIM_IDS)
        self.stats = ReclaimStats()

    def due(self) -> bool:
        return self.clock() >= self._next_at

    async def claim(self) -> Claimed:
        """One XAUTOCLAIM JUSTID step (COUNT batch_size) from the kept cursor: the ids
        claimed are pending for this consumer, to be read with its pending list."""
        self._next_at = self.clock() + self.interval_s
        self.stats.runs += 1
        s = self.settings
        reply = await self._claim_script(
            keys=[self.stream_key],
            args=[s.group, s.consumer_name, s.reclaim_idle_ms, self.cursor, s.batch_size],
        )
        cursor, ids = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self.cursor = _text(cursor)
        if self.cursor != START:
            self._next_at = self.clock()  # more to scan: continue on the next loop turn
        out = Claimed([_text(i) for i in ids], [_text(i) for i in deleted])
        if out.lost_to_trim:
            # XAUTOCLAIM already removed them from the pending list: the entries were
            # trimmed from the stream before anyone processed them. Nothing can recover them.
            self.stats.lost_to_trim += len(out.lost_to_trim)
            await self.redis.incrby(self.keys.lost_to_trim_key, len(out.lost_to_trim))
            log.error(
                "pending entries lost to stream trimming",
                extra={"count": len(out.lost_to_trim), "first_id": out.lost_to_trim[0]},
            )
        if out.ids:
            self.stats.reclaimed += len(out.ids)
            log.warning(
                "reclaimed idle entries",
                extra={"count": len(out.ids), "idle_ms": self.settings.reclaim_idle_ms},
            )
        if self.clock() >= self._next_cleanup_at:
            self._next_cleanup_at = self.clock() + self.cleanup_every_s
            await self.delete_idle_consumers()
        return out

    async def delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(self.stream_key, self.settings.group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for entry_id, rows in zip(ids, await pipe.execute(), strict=True):
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

    async def split_poison(self, entries: Sequence[Entry]) -> tuple[list[Entry], list[DeadLetter]]:
        """Entries delivered more than max_deliveries times become dead letters."""
        limit = self.settings.max_deliveries
        counts = await self.delivery_counts([i for i, f in entries if f is not None])
        keep: list[Entry] = []
        dead: list[DeadLetter] = []
        max_entry_bytes = self.settings.max_entry_bytes
        for entry_id, fields in entries:
            n = counts.get(entry_id, 0)
            # (An oversized entry is left to validation: too_large, without its fields.)
            if fields is not None and n > limit and not too_large(fields, max_entry_bytes):
                detail = f"delivered {n} times"
                as_dict = fields if isinstance(fields, dict) else _as_dict(fields)
                dead.append(DeadLetter(entry_id, as_dict, MAX_DELIVERIES, "", detail))
            else:
                keep.append((entry_id, fields))
        if dead:
            self.stats.poisoned += len(dead)
            log.error(
                "dead-lettering entries delivered too often",
                extra={"count": len(dead), "max_deliveries": limit, "first_id": dead[0].entry_id},
            )
        return keep, dead

    async def touch(self, ids: Sequence[str]) -> set[str]:
        """Reset the idle time of entries this consumer holds (no delivery is counted).

        Returns the ids still pending: one reclaimed and acknowledged elsewhere is gone.
        """
        if not ids:
            return set()
        claimed = await self.redis.xclaim(
            self.stream_key,
            self.settings.group,
            self.settings.consumer_name,
            0,
            list(ids),
            justid=True,
        )
        return {_text(i) for i in claimed}

    async def delete_idle_consumers(self) -> list[str]:
        """Delete consumers idle for 2 x reclaim_idle_ms whose pending list is empty."""
        infos: list[dict[str, Any]] = await self.redis.xinfo_consumers(
            self.stream_key, self.settings.group
        )
        deleted: list[str] = []
        for info in infos:
            name = _text(info["name"])
            if name == self.settings.consumer_name or int(info["pending"]) > 0:
                continue
            if int(info["idle"]) < self.consumer_idle_ms:
                continue
            done = await self._delete_script(
                keys=[self.stream_key],
                args=[self.settings.group, name, self.consumer_idle_ms],
            )
            if done:
                deleted.append(name)
        if deleted:
            self.stats.consumers_deleted += len(deleted)
            log.info("deleted idle consumers", extra={"consumers": deleted})
        return deleted


def _as_dict(fields: Any) -> dict[bytes, bytes]:
    return fields_dict(fields) if isinstance(fields, list) else {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# A failed refresh is retried on the next tick; these are what an unreachable, restarting
# or closing Redis raises (uvloop: RuntimeError on a socket the peer just reset).
REFRESH_ERRORS = (RedisError, OSError, RuntimeError)


def _ids(entries: Sequence[Entry], dead: Sequence[DeadLetter]) -> list[str]:
    return [i for i, _ in entries] + [d.entry_id for d in dead]


class BatchKeeper:
    """Keeps the batch one lane holds owned and fresh, on a timer of its own.

    XAUTOCLAIM in any consumer of the group takes entries idle for longer than
    `reclaim_idle_ms`, and each takeover counts a delivery. A lane that holds a batch
    through a MongoDB stall or outage retries it for as long as that lasts; were its
    entries refreshed only between retry rounds, the group would take them over again
    and again until `max_deliveries` dead-lettered healthy events. So every
    `reclaim_idle_ms / 4`, whatever the batch's attempts and backoff are doing, its
    entries' idle time is reset with XCLAIM JUSTID by the same consumer (`touch`), which
    does not count a delivery and leaves alone an entry that is no longer pending. The
    timer runs in the lane's process: a consumer that is killed or paused stops
    refreshing, and its batch is reclaimed after the reclaim idle, as it should be.
    """

    def __init__(self, reclaimer: Reclaimer, clock: Callable[[], float] = time.monotonic) -> None:
        self.reclaimer = reclaimer
        self.clock = clock
        self.refresh_every_s = reclaimer.settings.reclaim_idle_ms / 4000
        # What the lane holds: its batch in hand, and the batches it finishes in the
        # background while events wait for the LLM (consumers/consumer.py), by token.
        self.held: dict[int, tuple[Sequence[Entry], Sequence[DeadLetter]]] = {}
        self.fresh_at: dict[int, float] = {}  # when each holding was last made fresh
        self.tokens = itertools.count()
        self.refreshes = 0
        self.failures = 0  # refreshes failed in a row

    def hold(self, entries: Sequence[Entry], dead: Sequence[DeadLetter] = ()) -> int:
        """The lane now holds `entries` (just delivered, claimed or touched: fresh); the
        token releases them."""
        token = next(self.tokens)
        self.held[token] = (entries, dead)
        self.fresh_at[token] = self.clock()
        return token

    def release(self, token: int) -> None:
        """The batch is acknowledged, or left for its pending list to deliver again."""
        self.held.pop(token, None)
        self.fresh_at.pop(token, None)

    def held_ids(self) -> set[str]:
        """The ids of every entry and dead letter the lane holds now."""
        return {i for entries, dead in self.held.values() for i in _ids(entries, dead)}

    def due(self) -> bool:
        oldest = min(self.fresh_at.values(), default=None)
        return oldest is not None and self.clock() - oldest >= self.refresh_every_s

    async def refresh(self) -> None:
        """Touch every held entry (one XCLAIM JUSTID); holdings released meanwhile are
        not made fresh again."""
        held = dict(self.held)
        ids = [i for entries, dead in held.values() for i in _ids(entries, dead)]
        started = self.clock()
        try:
            await self.reclaimer.touch(ids)
        except REFRESH_ERRORS as exc:
            # Redis away: nobody who shares the outage can reclaim the batch meanwhile
            # either. The next tick retries; the first failure in a row is worth a warning.
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "could not refresh the batch in hand", extra={"error": str(exc)[:200]})
            return
        for token in held:
            if token in self.fresh_at:  # still held
                self.fresh_at[token] = started
        self.refreshes += 1
        self.failures = 0

    async def run(self) -> None:
        """Refresh the batch in hand whenever due; checks twice per refresh period."""
        while True:
            await asyncio.sleep(self.refresh_every_s / 2)
            if self.due():
                await self.refresh()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BatchKeeper]:
        """The timer for as long as the block runs (a lane's whole life)."""
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.wait([task])  # (a cancellation of our own still propagates)
