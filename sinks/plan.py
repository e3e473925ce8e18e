"""Leaderboard increments of a batch: the commit plan.

`CommitPlan` is built without I/O from a batch's accepted and rejected entries: the
per-(key, user) sums of durations, the dead letters and the session-score entries.
`pomocore.sinks.commit.Committer` sends it to Redis as one script (sinks/commit.lua) that
acknowledges the entries and applies the effects atomically, exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import floordiv, itemgetter
from typing import cast

from pomocore.core.categories import WORK, WORK_CATEGORIES
from pomocore.core.events import Event
from pomocore.core.keys import KeySpace
from pomocore.core.periods import BUCKET_S, PeriodCalculator, Periods


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
        # (all instants of a bucket share their local date: core/periods.py). The keys
        # of one category and day are one tuple object, whichever bucket found them, and
        # are built once (a workload spread over days meets ~100 buckets a day).
        self._key_cache: dict[tuple[str, int], tuple[str, ...]] = {}
        self._same_keys: dict[tuple[str, Periods], tuple[str, ...]] = {}

    def leaderboard_keys(self, category: str, timestamp_s: float) -> tuple[str, ...]:
        """The 3 keys of the category, plus the 3 `work` keys for a work category (daily
        keys only in derived mode)."""
        cache_key = (category, int(timestamp_s // BUCKET_S))
        keys = self._key_cache.get(cache_key)
        if keys is None:
            periods = self.periods(timestamp_s)
            keys = self._same_keys.get((category, periods))
            if keys is None:  # a new category and day: its keys, once
                labels = (periods.daily,) if self.derived else periods.labels()
                categories = (category, WORK) if category in WORK_CATEGORIES else (category,)
                keys = tuple(self.keys.leaderboard(c, lb) for c in categories for lb in labels)
            if len(self._key_cache) > 10_000:
                self._key_cache.clear()
                self._same_keys.clear()
            self._same_keys[(category, periods)] = keys
            self._key_cache[cache_key] = keys
        return keys

    def plan(
        self,
        accepted: Iterable[tuple[Event, str]],
        dead_letters: Sequence[DeadLetter],
        default_session_date: str | None = None,
    ) -> CommitPlan:
        """The plan of accepted (event, category) pairs and dead letters."""
        pairs = list(accepted)
        return self.plan_events(
            [event for event, _ in pairs], [category for _, category in pairs], dead_letters
        )

    def plan_events(
        self,
        events: Sequence[Event],
        categories: Sequence[str],
        dead_letters: Sequence[DeadLetter],
    ) -> CommitPlan:
        """The plan of `events`, each with its category (`categories[i]`: `events[i]`'s).

        Sums per (keys of a category and day, user) first: one dict update per event, the
        rest column by column in C (`benchmarks.consumer_cpu`, "plan": 2.1 -> ~0.6 µs an
        event). Then the keys fed by the same groups share one block of sums (increments
        equal up to float rounding to adding event by event: docs/guarantees.md, "Float
        scores"; each sum adds its events in their order).
        """
        plan = CommitPlan(ids=list(map(_entry_id, events)), dead_letters=list(dead_letters))
        stamps = list(map(_timestamp, events))
        buckets = map(int, map(floordiv, stamps, repeat(BUCKET_S)))
        keys_of: list[tuple[str, ...] | None] = list(
            map(self._key_cache.get, zip(categories, buckets, strict=False))
        )
        if None in keys_of:  # (category, bucket) pairs new to the cache
            for i in [i for i, keys in enumerate(keys_of) if keys is None]:
                keys_of[i] = self.leaderboard_keys(categories[i], stamps[i])
        groups: dict[int, tuple[tuple[str, ...], dict[str, float]]] = {}
        sums_of: dict[int, dict[str, float]] = {}
        # (a group holds its keys tuple: its id stays unique while the plan is built)
        for group, keys, user, duration in zip(
            map(id, keys_of), keys_of, map(_user_id, events), map(_duration, events), strict=True
        ):
            sums = sums_of.get(group)
            if sums is None:
                sums = sums_of[group] = {}
                groups[group] = (cast(tuple[str, ...], keys), sums)
            sums[user] = sums.get(user, 0.0) + duration
        for event in compress(events, map(_is_end, events)):
            if event.session is not None:
                date = event.session_date or self.periods(event.timestamp_s).daily
                plan.sessions.append((event.user_id, date, event.session))
        plan.ids.extend(d.entry_id for d in dead_letters)
        plan.blocks = merge_blocks(list(groups.values()))
        return plan


# Fields of an Event picked in C (Event is a tuple; tests/core pins the positions).
_entry_id = itemgetter(0)
_user_id = itemgetter(1)
_duration = itemgetter(5)
_timestamp = itemgetter(6)
_is_end = itemgetter(10)


def merge_blocks(groups: Sequence[tuple[tuple[str, ...], dict[str, float]]]) -> list[Block]:
    """One block per set of groups that feed the same keys (a group is any (keys, sums)
    pair: a (category, day) of one batch, or a block of one of several merged plans).

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


__all__ = [
    "Block",
    "CommitPlan",
    "DeadLetter",
    "IncrementBuilder",
    "merge_blocks",
]
