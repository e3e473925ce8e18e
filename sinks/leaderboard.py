"""Leaderboard increments and the commit step that acknowledges a batch.

`CommitPlan` is built without I/O from a batch's accepted and rejected entries: the
per-(key, user) sums of durations, the dead letters and the session-score entries.
`Committer.commit()` sends it to Redis as one script (sinks/commit.lua) that
acknowledges the entries and applies the effects atomically, exactly once.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError

from classifiers.categories import WORK, WORK_CATEGORIES
from pipeline.errors import CommitError
from pipeline.events import Event
from pipeline.keys import KeySpace
from pipeline.periods import BUCKET_S, PeriodCalculator

COMMIT_SCRIPT = resources.files("sinks").joinpath("commit.lua").read_text(encoding="utf-8")

# Fields of the dead-letter entry added after the original fields.
DLQ_REASON = b"dlq.reason"
DLQ_FIELD = b"dlq.field"
DLQ_DETAIL = b"dlq.detail"
DLQ_ENTRY_ID = b"dlq.entry_id"
DLQ_STREAM = b"dlq.stream"
DLQ_CONSUMER = b"dlq.consumer"
# A dead letter keeps at most this many original fields (Lua's unpack() has a stack limit).
DLQ_MAX_ORIGINAL_FIELDS = 256


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    fields: dict[bytes, bytes]
    reason: str
    field: str = ""
    detail: str = ""


Block = tuple[tuple[str, ...], dict[str, float]]
"""Leaderboard keys that take the same per-user sums, and those sums (user -> seconds)."""


@dataclass(slots=True)
class CommitPlan:
    """Everything one commit script call applies, for a set of entry ids.

    Increments come in blocks: a category's daily, weekly and monthly keys take the same
    per-user sums (and so do the three `work` keys), so each sum is formatted, sent and
    parsed once per block instead of once per key. A key is in one block.
    """

    ids: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    sessions: list[tuple[str, str, int]] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    @property
    def increments(self) -> dict[str, dict[str, float]]:
        """Per key: user -> seconds to add (the blocks, spelt out)."""
        return {key: dict(users) for keys, users in self.blocks for key in keys}

    @property
    def increment_count(self) -> int:
        """ZINCRBY calls the commit applies: one per (key, user)."""
        return sum(len(keys) * len(users) for keys, users in self.blocks)


class IncrementBuilder:
    """Turns accepted events with their categories into a CommitPlan (pure, no I/O)."""

    def __init__(self, keys: KeySpace, periods: PeriodCalculator, *, derived: bool = False) -> None:
        """`derived=True`: increments go to daily keys only; the weekly and monthly keys are
        rebuilt from them by `sinks.derived.DerivedRefresher` (POMOCORE_LEADERBOARD_MODE)."""
        self.keys = keys
        self.periods = periods
        self.derived = derived
        # (category, 15-minute bucket) -> keys: one dict lookup per event on the hot path
        # (all instants of a bucket share their local date: pipeline/periods.py). The keys
        # of one category and day are one tuple object, whichever bucket found them.
        self._key_cache: dict[tuple[str, int], tuple[str, ...]] = {}
        self._same_keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def leaderboard_keys(self, category: str, timestamp_s: float) -> tuple[str, ...]:
        """The 3 keys of the category, plus the 3 `work` keys for a work category (daily
        keys only in derived mode)."""
        cache_key = (category, int(timestamp_s // BUCKET_S))
        keys = self._key_cache.get(cache_key)
        if keys is None:
            periods = self.periods(timestamp_s)
            labels = (periods.daily,) if self.derived else periods.labels()
            categories = (category, WORK) if category in WORK_CATEGORIES else (category,)
            keys = tuple(self.keys.leaderboard(c, label) for c in categories for label in labels)
            if len(self._key_cache) > 10_000:
                self._key_cache.clear()
                self._same_keys.clear()
            keys = self._same_keys.setdefault(keys, keys)
            self._key_cache[cache_key] = keys
        return keys

    def plan(
        self,
        accepted: Iterable[tuple[Event, str]],
        dead_letters: Sequence[DeadLetter],
        default_session_date: str | None = None,
    ) -> CommitPlan:
        # Sum per (keys of a category and day, user) first: one dict update per event.
        # Then the keys fed by the same groups share one block of sums (increments equal up
        # to float rounding to adding event by event: docs/guarantees.md, "Float scores").
        groups: dict[int, tuple[tuple[str, ...], defaultdict[str, float]]] = {}
        plan = CommitPlan(dead_letters=list(dead_letters))
        ids, cached, keys_of = plan.ids, self._key_cache.get, self.leaderboard_keys
        for event, category in accepted:
            ids.append(event.entry_id)
            ts = event.timestamp_s
            keys = cached((category, int(ts // BUCKET_S))) or keys_of(category, ts)
            group = groups.get(id(keys))  # (the group holds the tuple: its id stays unique)
            if group is None:
                group = groups[id(keys)] = (keys, defaultdict(float))
            group[1][event.user_id] += event.duration_s
            if event.is_end and event.session is not None:
                date = event.session_date or self.periods(ts).daily
                plan.sessions.append((event.user_id, date, event.session))
        ids.extend(d.entry_id for d in dead_letters)
        plan.blocks = _blocks(list(groups.values()))
        return plan


def _blocks(groups: Sequence[tuple[tuple[str, ...], dict[str, float]]]) -> list[Block]:
    """One block per set of groups that feed the same keys.

    The usual batch (one day) has one group per category: its three keys form a block with
    the group's own sums; the `work` keys are fed by every work category's group, merged
    once for all three of them.
    """
    if len(groups) == 1:
        return [groups[0]]
    feeders: dict[str, list[int]] = {}
    for index, (keys, _) in enumerate(groups):
        for key in keys:
            feeders.setdefault(key, []).append(index)
    keys_by_feeders: dict[tuple[int, ...], list[str]] = {}
    for key, fed_by in feeders.items():
        keys_by_feeders.setdefault(tuple(fed_by), []).append(key)
    blocks: list[Block] = []
    for indices, block_keys in keys_by_feeders.items():
        users = groups[indices[0]][1]
        if len(indices) > 1:
            users = dict(users)
            for index in indices[1:]:
                for user, amount in groups[index][1].items():
                    users[user] = users.get(user, 0.0) + amount
        blocks.append((tuple(block_keys), users))
    return blocks


ExpireAt = Callable[[str], "int | None"]


def script_arguments(
    plan: CommitPlan,
    keys: KeySpace,
    group: str,
    consumer: str,
    expire_at: ExpireAt | None = None,
    mark_derived: bool = False,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of sinks/commit.lua for a plan."""
    lb_keys = [key for keys_of_block, _ in plan.blocks for key in keys_of_block]
    script_keys = [
        keys.stream_key, keys.dead_letter_key, keys.session_score_key, keys.derived_stale_key,
        *lb_keys,
    ]  # fmt: skip
    argv: list[Any] = [
        group, consumer, int(mark_derived), len(plan.ids), *plan.ids, len(plan.dead_letters)
    ]  # fmt: skip
    for dead in plan.dead_letters:
        flat = _dead_letter_fields(dead, keys.stream_key, consumer)
        argv.append(len(flat))
        argv.extend(flat)
    argv.append(len(plan.sessions))
    for user, date, session in plan.sessions:
        argv.extend((user, date, session))
    argv.append(len(plan.blocks))
    append = argv.append
    for keys_of_block, users in plan.blocks:
        append(len(keys_of_block))
        append(len(users))
        for user, amount in users.items():
            append(user)
            append(repr(amount))  # shortest exact round-trip of the double
    for key in lb_keys:
        append((expire_at(key) if expire_at else None) or 0)
    return script_keys, argv


def _dead_letter_fields(dead: DeadLetter, stream_key: str, consumer: str) -> list[bytes]:
    flat: list[bytes] = []
    for name, value in list(dead.fields.items())[:DLQ_MAX_ORIGINAL_FIELDS]:
        flat += (name, value)
    flat += (
        DLQ_REASON, dead.reason.encode(),
        DLQ_FIELD, dead.field.encode(),
        DLQ_DETAIL, dead.detail.encode(),
        DLQ_ENTRY_ID, dead.entry_id.encode(),
        DLQ_STREAM, stream_key.encode(),
        DLQ_CONSUMER, consumer.encode(),
    )  # fmt: skip
    return flat


class Committer:
    """Runs the commit script. Shielded: a cancelled caller never leaves it half-observed."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        group: str,
        consumer: str,
        expire_at: ExpireAt | None = None,
        *,
        mark_derived: bool = False,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.mark_derived = mark_derived  # derived mode: record the days the refresher rebuilds
        # Per key, not per event: a key's expire-at never changes, so remember it.
        self.expire_at = functools.lru_cache(maxsize=4096)(expire_at) if expire_at else None
        self._script = redis.register_script(COMMIT_SCRIPT)

    async def commit_once(self, plan: CommitPlan) -> tuple[bool, list[str]]:
        """Run the script once: (True, []) when committed, else (False, still-pending ids)."""
        if not plan.ids:
            return True, []
        script_keys, argv = script_arguments(
            plan, self.keys, self.group, self.consumer, self.expire_at, self.mark_derived
        )
        try:
            reply = await asyncio.shield(self._run(script_keys, argv))
        except ResponseError as exc:
            raise CommitError(f"commit script failed: {exc}") from exc
        if reply[0] == 1:
            return True, []
        return False, [i.decode() if isinstance(i, bytes) else str(i) for i in reply[1:]]

    async def _run(self, script_keys: list[str], argv: list[Any]) -> Any:
        if type(self.redis) is not aioredis.Redis:
            return await self._script(keys=script_keys, args=argv)  # e.g. Redis Cluster
        # redis-py's asyncio client encodes commands in pure Python (~6 µs per event for
        # this script's arguments); hiredis packs the same RESP request in C.
        packed = pack_command(("EVALSHA", self._script.sha, len(script_keys), *script_keys, *argv))
        try:
            return await self._send(packed)
        except NoScriptError:  # a restarted or flushed server: load it, then once more
            await self.redis.script_load(COMMIT_SCRIPT)
            return await self._send(packed)

    async def _send(self, packed: bytes) -> Any:
        pool = self.redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(packed)
            return await conn.read_response()
        except BaseException as exc:
            if not isinstance(exc, ResponseError):  # the connection state is unknown now
                await conn.disconnect()
            raise
        finally:
            await pool.release(conn)


__all__ = [
    "Block",
    "CommitPlan",
    "Committer",
    "DeadLetter",
    "IncrementBuilder",
    "script_arguments",
]
