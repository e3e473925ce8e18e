"""Derived mode: weekly and monthly leaderboard keys rebuilt from the daily keys.

With `POMOCORE_LEADERBOARD_MODE=derived` the commit script increments daily keys only
(one or two ZINCRBY per event instead of three or six) and, in the same atomic step, adds
each daily key it touched to the stale set. Every `derived_refresh_s`, one refresher at a
time (a lease in Redis, taken by whichever consumer process asks first):

1. takes the stale set over: merges it into the refreshing set and deletes it, in one
   script, so a commit after this instant marks its days for the next round;
2. rebuilds the weekly and the monthly key of every (category, week) and (category,
   month) those days belong to, with one ZUNIONSTORE over all the days of the period
   (a missing day counts as empty), then applies the configured retention;
3. deletes the refreshing set, only while it still holds the lease. A refresher that died
   or lost its lease leaves the set to the next one, which rebuilds it again: a rebuild
   is idempotent.

So after every refresh each derived key equals the sum of its days at the moment it was
rebuilt, and a committed increment is never missed by the next refresh. Readers of a
weekly or monthly key see it at most about `derived_refresh_s` (plus one refresh) late.
Daily keys stay exact per event, as in the default mode.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import redis.asyncio as aioredis

from pomocore.core.expiry import DAILY
from pomocore.core.keys import KeySpace
from pomocore.core.periods import periods_of_datetime

log = logging.getLogger("pomocore.derived")

# KEYS: stale, refreshing, lock; ARGV: token. Returns the days to rebuild, or false when
# the lease is not ours.
TAKE_OVER = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
  redis.call('DEL', KEYS[1])
end
return redis.call('SMEMBERS', KEYS[2])
"""
# KEYS: refreshing, lock, last; ARGV: token, unix time. Done: forget the rebuilt days,
# record when (the staleness gauge), free the lease.
FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"""
# How long a refresher that died keeps the others out (a live one finishes well within it;
# one that overruns it is fenced off: it cannot drop the set the next holder took).
LEASE_MS = 10_000


@dataclass(frozen=True, slots=True)
class Rebuild:
    """One derived key and the daily keys it is the sum of."""

    key: str
    days: tuple[str, ...]


def rebuilds_for(keys: KeySpace, stale_days: Iterable[str]) -> list[Rebuild]:
    """The weekly and monthly keys to rebuild for a set of stale daily keys (pure)."""
    prefix = keys.leaderboard_prefix_key()
    periods: set[tuple[str, str, date]] = set()  # (category, kind, any day of the period)
    for key in stale_days:
        if not key.startswith(prefix):
            continue
        category, _, label = key[len(prefix) :].rpartition(":")
        if not DAILY.match(label):  # (fromisoformat would also take `2026-W49`)
            continue  # not a daily key: nothing derives from it
        try:
            day = date.fromisoformat(label)
        except ValueError:
            continue
        periods.add((category, "weekly", day))
        periods.add((category, "monthly", day))
    out: dict[str, Rebuild] = {}
    for category, kind, day in periods:
        labels = periods_of_datetime(day)  # a date has .year/.month/.day/.isocalendar()
        label = labels.weekly if kind == "weekly" else labels.monthly
        target = keys.leaderboard(category, label)
        if target not in out:
            days = _week_days(day) if kind == "weekly" else _month_days(day)
            out[target] = Rebuild(target, tuple(keys.leaderboard(category, d) for d in days))
    return sorted(out.values(), key=lambda r: r.key)


def _week_days(day: date) -> list[str]:
    monday = day - timedelta(days=day.isoweekday() - 1)
    return [(monday + timedelta(days=i)).isoformat() for i in range(7)]


def _month_days(day: date) -> list[str]:
    last = calendar.monthrange(day.year, day.month)[1]
    return [date(day.year, day.month, d).isoformat() for d in range(1, last + 1)]


class DerivedRefresher:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        refresh_s: float,
        expire_at: Callable[[str], int | None] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.refresh_s = refresh_s
        self.expire_at = expire_at
        self.lease_ms = LEASE_MS
        self.rebuilt = 0  # derived keys rebuilt by this process (metrics, tests)
        self._take_over = redis.register_script(TAKE_OVER)
        self._finish = redis.register_script(FINISH)

    async def refresh_once(self) -> int | None:
        """One round; the number of derived keys rebuilt, or None if another holds the lease."""
        k = self.keys
        token = secrets.token_hex(8)
        if not await self.redis.set(k.derived_lock_key, token, nx=True, px=self.lease_ms):
            return None
        stale = await self._take_over(
            keys=[k.derived_stale_key, k.derived_refreshing_key, k.derived_lock_key], args=[token]
        )
        if stale is None:  # the lease expired under us: the next holder does it
            return None
        days = [d.decode() if isinstance(d, bytes) else str(d) for d in stale]
        work = rebuilds_for(k, days)
        for start in range(0, len(work), 200):
            await self._rebuild(work[start : start + 200])
        await self._finish(
            keys=[k.derived_refreshing_key, k.derived_lock_key, k.derived_last_refresh_key],
            args=[token, f"{time.time():.3f}"],
        )
        self.rebuilt += len(work)
        return len(work)

    async def _rebuild(self, work: list[Rebuild]) -> None:
        pipe: Any = self.redis.pipeline(transaction=False)
        for r in work:
            pipe.zunionstore(r.key, list(r.days), aggregate="SUM")
            at = self.expire_at(r.key) if self.expire_at else None
            if at:
                pipe.expireat(r.key, at)
        await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every `refresh_s` until stopped; failures are logged and retried."""
        while not stop.is_set():
            try:
                rebuilt = await self.refresh_once()
                if rebuilt:
                    log.debug("derived keys rebuilt", extra={"keys": rebuilt})
            except Exception as exc:  # Redis down: the stale set waits for the next round
                log.warning("derived refresh failed", extra={"error": str(exc)[:200]})
            with contextlib.suppress(TimeoutError):  # the interval, cut short by stop
                await asyncio.wait_for(stop.wait(), self.refresh_s)
