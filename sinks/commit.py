"""The commit step: one Redis script acknowledges entries and applies their effects.

`Committer.commit_once(plan)` runs sinks/commit.lua for a lane's CommitPlan. The lanes of
a process share one `CommitGroup`, which keeps at most two script calls in flight and
merges the plans that arrive meanwhile into the next call (group commit, as databases do
with log flushes). A merged call acknowledges several batches at once and sends each (key, user)
sum once, so Redis runs fewer ZINCRBY per event exactly when it is the bottleneck; with
no queue, a plan goes out alone and at once. The script stays all-or-nothing for the
whole call: if any id was acknowledged elsewhere, nothing is written and every caller
gets its own still-pending ids back. Plans that share an entry id never go out in one call.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain
from typing import Any

import orjson
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError

from pomocore.core.connect import send_packed
from pomocore.core.errors import CommitError, WrongKeyType
from pomocore.core.keys import KeySpace
from pomocore.core.observer import Observer, observed
from pomocore.sinks.plan import Block, CommitPlan, DeadLetter, merge_blocks

log = logging.getLogger("pomocore.commit")

COMMIT_SCRIPT = resources.files("pomocore.sinks").joinpath("commit.lua").read_text(encoding="utf-8")

# Fields of the dead-letter entry added after the original fields.
DLQ_REASON = b"dlq.reason"
DLQ_FIELD = b"dlq.field"
DLQ_DETAIL = b"dlq.detail"
DLQ_ENTRY_ID = b"dlq.entry_id"
DLQ_STREAM = b"dlq.stream"
DLQ_CONSUMER = b"dlq.consumer"
# A dead letter keeps at most this many original fields (Lua's unpack() has a stack limit).
DLQ_MAX_ORIGINAL_FIELDS = 256
# Ids and leaderboard keys in one merged call: merging stops before a call exceeds either,
# so one script call (which blocks Redis while it runs) stays short. A plan larger than
# this goes out alone: its ids are at most POMOCORE_BATCH_SIZE (<= 5,000) and its keys
# at most six per event. (The script takes lists of ids and keys in chunks, so Lua's
# unpack() limit of 8,000 values binds neither.)
MAX_MERGED_IDS = 5_000
MAX_MERGED_KEYS = 10_000
# Script calls in flight per process. Two: while Redis runs one, the next is on the wire,
# so Redis does not idle while the client packs a request; plans arriving while both run
# are merged. (One in flight idled Redis between calls; four merged less: benchmarks/README.)
MAX_IN_FLIGHT = 2

# The error sinks/commit.lua returns for a key of the wrong type:
# 'POMOCORE_WRONGTYPE <actual type> <expected type> <key>'.
WRONG_TYPE_ERROR = "POMOCORE_WRONGTYPE "

ExpireAt = Callable[[str], "int | None"]
Part = tuple[CommitPlan, str]
"""A plan and the consumer (lane) whose pending entries it acknowledges."""


def script_arguments(
    plan: CommitPlan,
    keys: KeySpace,
    group: str,
    consumer: str,
    expire_at: ExpireAt | None = None,
    mark_derived: bool = False,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of sinks/commit.lua for one plan."""
    return merged_script_arguments([(plan, consumer)], keys, group, expire_at, mark_derived)


def merged_script_arguments(
    parts: Sequence[Part],
    keys: KeySpace,
    group: str,
    expire_at: ExpireAt | None = None,
    mark_derived: bool = False,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of sinks/commit.lua for several plans committed in one call."""
    blocks = _merged_blocks([plan for plan, _ in parts])
    lb_keys = [key for keys_of_block, _ in blocks for key in keys_of_block]
    script_keys = [
        keys.stream_key, keys.dead_letter_key, keys.session_score_key, keys.derived_stale_key,
        *lb_keys,
    ]  # fmt: skip
    argv: list[Any] = [group, int(mark_derived), len(parts)]
    for plan, consumer in parts:
        argv += (consumer, len(plan.ids), *plan.ids)
    argv.append(sum(len(plan.dead_letters) for plan, _ in parts))
    for plan, consumer in parts:
        for dead in plan.dead_letters:
            flat = _dead_letter_fields(dead, keys.stream_key, consumer)
            argv.append(len(flat))
            argv.extend(flat)
    argv.append(sum(len(plan.sessions) for plan, _ in parts))
    for plan, _ in parts:
        for user, date, session in plan.sessions:
            argv.extend((user, date, session))
    argv.append(len(blocks))
    for keys_of_block, users in blocks:
        argv += (len(keys_of_block), len(users))
        # user, amount, user, amount, ... in C
        argv += chain.from_iterable(zip(users, amounts(users.values()), strict=True))
    argv += [(expire_at(key) if expire_at else None) or 0 for key in lb_keys]
    return script_keys, argv


def amounts(values: Collection[float]) -> list[bytes]:
    """Each float as the shortest text that reads back as the same double, as repr() has
    it but formatted by orjson in one call: ~0.1 µs a value against ~0.35 for repr()
    (`benchmarks.consumer_cpu`, "script_arguments"). The text can differ from repr's
    (`1e16` for `1e+16`); Lua's tonumber and ZINCRBY read both as the same double. The
    sums are finite (orjson would write null for NaN and infinities)."""
    return orjson.dumps(list(values))[1:-1].split(b",") if values else []


def _merged_blocks(plans: Sequence[CommitPlan]) -> list[Block]:
    if len(plans) == 1:
        return plans[0].blocks
    return merge_blocks([block for plan in plans for block in plan.blocks])


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


@dataclass(slots=True)
class _Waiting:
    plan: CommitPlan
    consumer: str
    result: asyncio.Future[tuple[bool, list[str]]]


class CommitGroup:
    """Runs the commit script for the lanes of a process, at most `max_in_flight` calls at
    a time; plans submitted while they run are merged into the next call (group commit).

    A caller that is cancelled while waiting does not withdraw its plan: the call runs (or
    has run) anyway, like a shielded call, so a batch is never half-observed.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        group: str,
        expire_at: ExpireAt | None = None,
        *,
        mark_derived: bool = False,
        max_merged_ids: int = MAX_MERGED_IDS,
        max_merged_keys: int = MAX_MERGED_KEYS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.mark_derived = mark_derived  # derived mode: record the days the refresher rebuilds
        # Per key, not per event: a key's expire-at never changes, so remember it.
        self.expire_at = functools.lru_cache(maxsize=4096)(expire_at) if expire_at else None
        self.max_merged_ids = max_merged_ids
        self.max_merged_keys = max_merged_keys
        self.max_in_flight = max_in_flight
        self.calls = 0  # script calls made
        self.plans = 0  # plans committed by them (plans / calls: the merge factor)
        self._script = redis.register_script(COMMIT_SCRIPT)
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._senders: set[asyncio.Task[None]] = set()

    async def commit(self, plan: CommitPlan, consumer: str) -> tuple[bool, list[str]]:
        """(True, []) when committed, else (False, the plan's ids that are still pending)."""
        if not plan.ids:
            return True, []
        result: asyncio.Future[tuple[bool, list[str]]] = asyncio.get_running_loop().create_future()
        result.add_done_callback(_retrieve)
        self._queue.append(_Waiting(plan, consumer, result))
        if len(self._senders) < self.max_in_flight:
            self._senders.add(asyncio.create_task(self._send_queued()))
        return await asyncio.shield(result)

    async def _send_queued(self) -> None:
        try:
            await self._send_until_empty()
        finally:
            # In the same step that found the queue empty: a done callback would run a
            # step later, and a plan queued in between would find every sender "busy"
            # and wait forever.
            task = asyncio.current_task()
            if task is not None:
                self._senders.discard(task)

    async def _send_until_empty(self) -> None:
        while self._queue:
            taken = self._take()
            try:
                done, pending = await self._call([(w.plan, w.consumer) for w in taken])
            except BaseException as exc:
                for waiting in taken:
                    if not waiting.result.done():
                        waiting.result.set_exception(exc)
                if not isinstance(exc, Exception):  # cancelled: the loop is going away
                    for waiting in self._queue:
                        waiting.result.cancel()
                    self._queue.clear()
                    raise
                continue
            self.calls += 1
            self.plans += len(taken) if done else 0
            still = set(pending)
            for waiting in taken:
                mine = [] if done else [i for i in waiting.plan.ids if i in still]
                if not waiting.result.done():
                    waiting.result.set_result((done, mine))

    def _take(self) -> list[_Waiting]:
        """The oldest plan, and the plans after it while the call stays within the caps and
        no two of them share an entry id.

        Two lanes can hold the same id: one lane's reclaim took a batch another lane still
        holds. Merged, the script's second XACK of that id finds it acknowledged by the
        first, so the whole call is undone, for both lanes, on every retry. Sent apart,
        the first call commits it and the second learns it is no longer pending.
        """
        first = self._queue.popleft()
        taken = [first]
        if not self._queue:  # the common case when Redis keeps up: nothing to merge
            return taken
        ids, keys = len(first.plan.ids), _key_count(first.plan)
        seen = set(first.plan.ids)
        while self._queue:
            plan = self._queue[0].plan
            ids += len(plan.ids)
            keys += _key_count(plan)
            if ids > self.max_merged_ids or keys > self.max_merged_keys:
                break
            if not seen.isdisjoint(plan.ids):
                break  # it goes out in the next call (FIFO order kept)
            seen.update(plan.ids)
            taken.append(self._queue.popleft())
        return taken

    async def _call(self, parts: list[Part]) -> tuple[bool, list[str]]:
        script_keys, argv = merged_script_arguments(
            parts, self.keys, self.group, self.expire_at, self.mark_derived
        )
        try:
            reply = await self._run(script_keys, argv)
        except ResponseError as exc:
            raise _commit_error(exc, parts) from exc
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
        (reply,) = await send_packed(self.redis, packed, 1)
        if isinstance(reply, ResponseError):
            raise reply
        return reply


def _key_count(plan: CommitPlan) -> int:
    """Leaderboard keys of a plan (a key is in one block)."""
    return sum(len(keys) for keys, _ in plan.blocks)


def _commit_error(exc: ResponseError, parts: Sequence[Part]) -> CommitError:
    """The script's error as ours; a key of the wrong type is logged here, once per call
    (each lane in the call also counts it: `Observer.operation_failed`)."""
    message = str(exc)
    if not message.startswith(WRONG_TYPE_ERROR):
        return CommitError(f"commit script failed: {message}")
    _, actual, expected, key = message.split(" ", 3)
    log.error(
        "commit refused: a key the commit writes has the wrong type; nothing acknowledged",
        extra={
            "key": key,
            "type": actual,
            "expected": expected,
            "consumers": sorted({consumer for _, consumer in parts}),
            "entries": sum(len(plan.ids) for plan, _ in parts),
        },
    )
    return WrongKeyType(key, actual, expected)


def _retrieve(result: asyncio.Future[Any]) -> None:
    """Mark an exception as seen: a cancelled caller no longer awaits its result."""
    if not result.cancelled():
        result.exception()


class Committer:
    """A lane's view of the commit step: its consumer name and its process's CommitGroup
    (a group of its own when none is given: then every call goes out alone)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: KeySpace,
        group: str,
        consumer: str,
        expire_at: ExpireAt | None = None,
        *,
        mark_derived: bool = False,
        commit_group: CommitGroup | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.consumer = consumer
        self.observer = observer or Observer()
        self.commit_group = commit_group or CommitGroup(
            redis, keys, group, expire_at, mark_derived=mark_derived
        )

    async def commit_once(self, plan: CommitPlan) -> tuple[bool, list[str]]:
        """Run the script once for this plan, possibly merged with other lanes' plans:
        (True, []) when committed, else (False, the plan's ids that are still pending)."""
        return await observed(
            self.observer, "redis", "commit_script", self.commit_group.commit(plan, self.consumer)
        )


__all__ = [
    "COMMIT_SCRIPT",
    "MAX_MERGED_IDS",
    "MAX_MERGED_KEYS",
    "CommitGroup",
    "Committer",
    "merged_script_arguments",
    "script_arguments",
]
