"""The stream consumer: owns every read from the input stream and drives the batches.

Workers (the classifier, the process pool) only compute; all broker I/O happens here
and in the commit step (dramatiq's rule). One consumer = one name in the group.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from pomocore.consumers.batch import BatchProcessor, Entry
from pomocore.consumers.reads import GuardedReader, ReadSizer
from pomocore.consumers.reclaim import BatchKeeper, Reclaimer
from pomocore.core.connect import (
    REPLY_BYTES,
    ReplyTooLarge,
    command_timeout_s,
    drop_idle_connections,
)
from pomocore.core.errors import Backpressure, CommitError, MongoWriteError, SinkError
from pomocore.core.events import Oversized
from pomocore.core.keys import KeySpace
from pomocore.core.liveness import Heart
from pomocore.core.observer import BatchOutcome, Observer
from pomocore.core.redis_errors import Fault, redis_fault
from pomocore.core.retry import backoff_s
from pomocore.core.settings import Settings
from pomocore.sinks.plan import DeadLetter

log = logging.getLogger("pomocore.consumer")

OWN_PENDING = "0"  # XREADGROUP id: re-read entries already delivered to this consumer
NEW_ENTRIES = ">"
NO_GROUP = object()  # what _xreadgroup returns for NOGROUP (a raw reply is None on timeout)
# The LLM resolver answers within its timeout plus this margin (classifiers/llm/resolver.py).
LLM_MARGIN_S = 5.0


@dataclass(slots=True)
class ConsumerStats(BatchOutcome):
    """A consumer's batches summed since it started, and what failed on the way."""

    batches: int = 0
    sink_failures: int = 0
    redis_failures: int = 0
    reads_cut_off: int = 0  # replies over POMOCORE_BATCH_MAX_BYTES (consumers/reads.py)
    last_batch_s: float = 0.0

    def add_batch(self, outcome: BatchOutcome, elapsed_s: float) -> None:
        self.add(outcome)
        self.batches += 1
        self.last_batch_s = elapsed_s


async def ensure_group(
    redis: aioredis.Redis, settings: Settings, keys: KeySpace | None = None
) -> None:
    """Create the consumer group (and the stream) if missing; id 0 reads the whole stream.
    `keys`: the shard's (default: `settings.keys`)."""
    stream_key = (keys or settings.keys).stream_key
    try:
        await redis.xgroup_create(stream_key, settings.group, id="0", mkstream=True)
        log.info("created consumer group", extra={"group": settings.group})
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True, slots=True)
class WaitingSlots:
    """Bounds on the batches a process finishes in the background while their events wait
    for the LLM (issue #15 §6), shared by its lanes.

    `held`: how many it holds at once (`POMOCORE_LLM_WAITING_BATCHES`); a lane that finds
    them all taken does not wait for one: its batch's undecided keys are deferred (the
    no-LLM rule now, queued for the reclassifier), as keys the budget refuses.

    `asking`: how many ask the LLM at once, one per lane, as when each lane waited for its
    own batch: the provider's load stays what it was, and a key is asked within its
    deadline instead of timing out in a pile of calls behind the provider (with 16 asking
    at once, the benchmark's first pass saw 467 of 888 unknown keys time out into the
    reclassifier's queue; with 4, 2). The others queue here, where only the events waiting
    for the LLM wait.
    """

    held: asyncio.Semaphore
    asking: asyncio.Semaphore

    @classmethod
    def from_settings(cls, settings: Settings, lanes: int | None = None) -> WaitingSlots:
        """`lanes`: the process's lanes (default POMOCORE_LANES; more with shards)."""
        held = max(1, settings.llm_waiting_batches)
        return cls(asyncio.Semaphore(held), asyncio.Semaphore(lanes or settings.lanes))


class StreamConsumer:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        processor: BatchProcessor,
        *,
        reclaims: bool = True,
        observer: Observer | None = None,
        heart: Heart | None = None,
        waiting_slots: WaitingSlots | None = None,
        keys: KeySpace | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.processor = processor
        self.keys = keys or settings.keys  # the shard's keys (core/shards.py)
        self.stream_key = self.keys.stream_key
        self.read_id = OWN_PENDING  # first finish what an earlier run of this name left
        # Where the walk of the own pending list goes on: after the entries it read. Its
        # entries in hand stay pending (a batch's events waiting for the LLM); read from
        # the list's start each time, they would be delivered again and again, and every
        # delivery counts towards POMOCORE_MAX_DELIVERIES.
        self.pending_after = OWN_PENDING
        self.stats = ConsumerStats()
        self.draining = False
        self.observer = observer or Observer()
        self.reclaimer = Reclaimer(settings, redis, keys=self.keys)
        self.keeper = BatchKeeper(self.reclaimer)  # keeps the batch in hand fresh
        self.sizer = ReadSizer(settings)  # reads bounded in bytes (consumers/reads.py)
        self.guarded = GuardedReader(settings, redis, self.keys)
        self.reclaims = reclaims  # scan the group for stale entries (one lane per process)
        self.held: list[Entry] = []  # batches abandoned while a dependency was down
        self.held_dead: list[DeadLetter] = []  # ... and their extra dead letters
        self.held_tokens: list[int] = []  # ... and their keeper tokens (kept fresh)
        # Batches whose events wait for the LLM, finished in the background while the
        # lane reads on (issue #15 §6), within bounds shared by a process's lanes.
        self.waiting: set[asyncio.Task[None]] = set()
        self.waiting_slots = waiting_slots or WaitingSlots.from_settings(settings)
        self.defers = settings.llm_enabled and settings.llm_waiting_batches > 0
        self.failed: BaseException | None = None  # a background batch's fatal error
        # What this lane is waiting out (a Redis or sink error it retries), for /readyz;
        # cleared by the next batch committed or entries read.
        self.unavailable: str | None = None
        self.heart = heart or Heart(settings.consumer_name)  # liveness (core/liveness.py)
        self.command_s = command_timeout_s(settings)
        # One attempt at a batch: a MongoDB write and a commit, each allowed a Redis
        # command's timeout, and the LLM's own deadline when one is configured.
        llm_s = settings.llm_timeout_s + LLM_MARGIN_S if settings.llm_enabled else 0.0
        self.attempt_s = 2 * self.command_s + llm_s

    async def prepare(self, stop: asyncio.Event) -> None:
        """Create the group if missing, retrying while Redis is unreachable."""
        await self._with_redis_retry(
            lambda: ensure_group(self.redis, self.settings, self.keys), stop
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Read and process until `stop` is set; the batch in hand is always finished."""
        async with self.keeper.running():
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        try:
            await self.prepare(stop)
            while not stop.is_set():
                self.heart.beat()
                await self._step(stop)
                if self.failed is not None:
                    raise self.failed
        finally:
            self.draining = True
            await self._finish_waiting()
            self.heart.stop()

    async def _finish_waiting(self) -> None:
        """Let the batches waiting for the LLM finish (each is bounded: its LLM deadline,
        and its retries give up once stopping); a fatal error among them is raised."""
        if self.waiting:
            await asyncio.wait(set(self.waiting))
        if self.failed is not None:
            raise self.failed

    async def _step(self, stop: asyncio.Event) -> None:
        """One turn of the loop: the held batch, a reclaim, or a read and its batch."""
        if self.held:  # retry it before reading anything new (backpressure)
            await self._retry_held(stop)
            return
        if self.reclaims and self.reclaimer.due():
            claimed = await self._with_redis_retry(self.reclaimer.claim, stop)
            if claimed and claimed.ids:  # now in our pending list: read them guarded
                self._walk_own_pending()
                return
        # A read lasts up to BLOCK, plus the linger, plus a reply within the socket timeout.
        read_s = (self.settings.block_ms + self.settings.linger_ms) / 1000 + self.command_s
        entries = await self._with_redis_retry(
            lambda: self.read_batch(stop), stop, read_s, progress=True
        )
        if entries and self.read_id == OWN_PENDING:  # re-delivered: poison control
            split = await self._with_redis_retry(
                functools.partial(self.reclaimer.split_poison, entries), stop
            )
            if split:
                await self.process(split[0], stop, split[1])
        elif entries:
            await self.process(entries, stop)

    async def _retry_held(self, stop: asyncio.Event) -> None:
        held, self.held = self.held, []
        dead, self.held_dead = self.held_dead, []
        tokens, self.held_tokens = self.held_tokens, []
        ids = [i for i, _ in held] + [d.entry_id for d in dead]
        pending = await self._with_redis_retry(lambda: self.reclaimer.touch(ids), stop)
        if isinstance(pending, set):
            held = [e for e in held if e[0] in pending]
            dead = [d for d in dead if d.entry_id in pending]
        for token in tokens:  # `process` holds what is still pending anew
            self.keeper.release(token)
        if held or dead:
            await self.process(held, stop, dead)

    async def read_batch(self, stop: asyncio.Event) -> list[Entry]:
        """Up to batch_size entries, and batch_max_bytes of them; waits at most linger_ms
        to fill a partial batch. This consumer's own pending entries, and new ones after
        a reply was cut off, are read guarded (consumers/reads.py)."""
        while self.read_id == OWN_PENDING or self.sizer.guarded:
            entries = await self._read_guarded()
            if entries or stop.is_set():
                return entries
        return await self._read_plain(stop)

    def _walk_own_pending(self) -> None:
        """Read this consumer's pending list from its start, then new entries again."""
        self.read_id = self.pending_after = OWN_PENDING

    async def _read_guarded(self) -> list[Entry]:
        own = self.read_id == OWN_PENDING
        try:
            entries = await self.guarded.read(
                self.pending_after if own else self.read_id, self.settings.batch_size
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("consumer group missing; recreating it")
            await ensure_group(self.redis, self.settings, self.keys)
            return []
        if own:
            if not entries:
                self.read_id = NEW_ENTRIES  # own backlog done: switch to new entries
                return entries
            self.pending_after = entries[-1][0]
            in_hand = self.keeper.held_ids()  # (being finished: not a second time)
            return [e for e in entries if e[0] not in in_hand]
        if not any(isinstance(fields, Oversized) for _, fields in entries):
            self.sizer.guarded = False  # no more oversized entries: plain reads again
        return entries

    async def _read_plain(self, stop: asyncio.Event) -> list[Entry]:
        want = self.settings.batch_size
        entries: list[Entry] = []
        used_bytes = 0
        deadline: float | None = None
        while len(entries) < want and not stop.is_set():
            count = self.sizer.count(want - len(entries), used_bytes)
            if count == 0:  # the batch is full by bytes
                break
            block_ms = self.settings.block_ms
            if deadline is not None:
                block_ms = max(1, int((deadline - time.monotonic()) * 1000))
            REPLY_BYTES.set(-1)
            try:
                reply = await self._xreadgroup(count, block_ms)
            except ReplyTooLarge:
                self._cut_off(count)
                break
            reply_bytes = REPLY_BYTES.get()
            if reply is NO_GROUP:  # the stream or group vanished (restart, flush)
                await ensure_group(self.redis, self.settings, self.keys)
                continue
            got = stream_entries(reply)
            used_bytes += self.sizer.observe(reply_bytes, got)
            entries.extend(got)
            if not got or self.settings.linger_ms == 0:
                break
            if deadline is None:
                deadline = time.monotonic() + self.settings.linger_ms / 1000
            elif time.monotonic() >= deadline:
                break
        return entries

    def _cut_off(self, count: int) -> None:
        """A reply went past batch_max_bytes and was cut off: its entries are delivered
        to this consumer, unread; read them (and new ones) guarded from now on."""
        self.sizer.cut_off()
        self.stats.reads_cut_off += 1
        self._walk_own_pending()
        log.warning(
            "a read went past POMOCORE_BATCH_MAX_BYTES and was cut off; its entries are "
            "read again one by one, oversized ones dead-lettered unread",
            extra={"count": count, "batch_max_bytes": self.settings.batch_max_bytes},
        )

    async def _xreadgroup(self, count: int, block_ms: int) -> Any:
        block = None if self.read_id == OWN_PENDING else block_ms
        try:
            return await self.redis.xreadgroup(
                self.settings.group,
                self.settings.consumer_name,
                {self.stream_key: self.read_id},
                count=count,
                block=block,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                log.warning("consumer group missing; recreating it")
                return NO_GROUP
            raise

    async def process(
        self,
        entries: list[Entry],
        stop: asyncio.Event,
        extra_dead: Sequence[DeadLetter] = (),
        *,
        continuing: bool = False,
        overflow: bool = False,
    ) -> BatchOutcome | None:
        """Process one batch, retrying sinks with backoff; while failing, nothing is read.

        With the LLM on, events the patterns decide are committed now and the events
        waiting for the LLM are finished in the background (`_wait_for_llm`), which
        calls this again `continuing` them: no deferral, and not counted as read twice.
        With every waiting slot taken, nothing waits for one: the undecided keys are
        deferred instead (`overflow`, see `_attempt`).
        """
        batch_id = uuid.uuid4().hex[:12]
        data_error = False
        token = self.keeper.hold(entries, extra_dead)
        outcome: BatchOutcome
        later: list[Entry] = []
        for attempt in range(1, self.settings.mongo_retry_max + 2):
            started = time.perf_counter()
            try:
                with self.heart.waiting(self.attempt_s):
                    outcome, later = await _closed_is_transient(
                        self._attempt(entries, extra_dead, continuing, overflow)
                    )
            except Exception as exc:
                if _fatal_for_batch(exc, batch_id):
                    raise
                await self._note_failure(exc)
                data_error = isinstance(exc, MongoWriteError)
                retry_after = exc.retry_after_s if isinstance(exc, Backpressure) else None
                self.stats.sink_failures += 1
                delay = backoff_s(attempt, base_s=0.2, cap_s=10.0, retry_after_s=retry_after)
                log.warning(
                    "batch failed; will retry",
                    extra={
                        "batch_id": batch_id,
                        "attempt": attempt,
                        "error": str(exc)[:300],
                        "retry_in_s": round(delay, 2),
                    },
                )
                if stop.is_set() and attempt > 1:
                    break
                await self._sleep(delay)
                continue
            self.unavailable = None
            elapsed = time.perf_counter() - started
            if later:
                await self._wait_for_llm(later, stop)
            self.keeper.release(token)
            self.stats.add_batch(outcome, elapsed)  # the processor reported it to observers
            log.debug(
                "batch committed",
                extra={
                    "batch_id": batch_id,
                    "events": len(entries),
                    "elapsed_ms": round(elapsed * 1000, 2),
                },
            )
            return outcome
        # Give up on this batch for now: its entries stay pending (never acknowledged) and
        # are read again from this consumer's pending list, or reclaimed by another consumer.
        log.error(
            "batch abandoned after retries; entries stay pending",
            extra={"batch_id": batch_id, "events": len(entries)},
        )
        if data_error or stop.is_set():
            # MongoDB refused the data: re-read from the pending list, which counts a
            # delivery, so a poison entry ends in the dead-letter stream (max_deliveries).
            self._walk_own_pending()
            self.keeper.release(token)
        else:
            # The dependency is down: keep the batch and retry it without re-reading, so
            # an outage neither counts deliveries nor lets anything new in. The keeper
            # goes on refreshing it meanwhile (no other consumer takes it over).
            self.held.extend(entries)
            self.held_dead.extend(extra_dead)
            self.held_tokens.append(token)
        return None

    async def _attempt(
        self,
        entries: list[Entry],
        extra_dead: Sequence[DeadLetter],
        continuing: bool,
        overflow: bool,
    ) -> tuple[BatchOutcome, list[Entry]]:
        """One attempt at a batch: its outcome and the entries left for `_wait_for_llm`.

        A batch read with the LLM on commits its decided events and leaves the others for
        the background, if a waiting slot is free; with every slot taken it is one stage,
        its undecided keys deferred (issue #15 §6: no lane waits for a slot, so events
        the patterns decide never wait behind a saturated LLM)."""
        if self.defers and not continuing:
            if not self.waiting_slots.held.locked():
                return await self.processor.process_decided(entries, extra_dead)
            overflow = True
        outcome = await self.processor.process(
            entries, extra_dead, counted=continuing, overflow=overflow
        )
        return outcome, []

    async def _wait_for_llm(self, entries: list[Entry], stop: asyncio.Event) -> None:
        """Finish `entries` (their events wait for the LLM) in a task of their own, held
        fresh by the keeper meanwhile. With every held slot taken (by another lane since
        this batch began) they are finished now, deferred (`process` with `overflow`): the
        LLM's pace bounds how much a process holds, and no lane waits for it."""
        if self.waiting_slots.held.locked():
            await self.process(entries, stop, continuing=True, overflow=True)
            return
        await self.waiting_slots.held.acquire()  # free: returns at once
        token = self.keeper.hold(entries)  # fresh while queued for an asking slot too
        task = asyncio.create_task(self._finish(entries, stop, token))
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)

    async def _finish(self, entries: list[Entry], stop: asyncio.Event, token: int) -> None:
        try:
            async with self.waiting_slots.asking:
                if not stop.is_set():  # else left pending: read again after a restart
                    await self.process(entries, stop, continuing=True)
        except Exception as exc:  # fatal for the lane (see _fatal_for_batch): raised there
            self.failed = exc
        finally:
            self.keeper.release(token)
            self.waiting_slots.held.release()

    async def _with_redis_retry(
        self, op: Any, stop: asyncio.Event, bound_s: float | None = None, *, progress: bool = False
    ) -> Any:
        """`op()` until it succeeds, waiting out transient Redis errors (redis_fault) with
        backoff; a fatal one is raised. Once stopping, gives up after a few attempts ([]).

        `bound_s`: how long one attempt may take (liveness); one command's timeout unless
        given. `progress`: a success means this lane works again (/readyz).
        """
        attempt = 0
        while True:
            try:
                with self.heart.waiting(bound_s or self.command_s):
                    result = await _closed_is_transient(op())
            except Exception as exc:
                if not redis_fault(exc).retry:
                    raise
                attempt += 1
                self.stats.redis_failures += 1
                await self._note_failure(exc)
                if stop.is_set() and attempt > 3:
                    return []
                delay = backoff_s(min(attempt, 10), base_s=0.1, cap_s=5.0)
                log.warning(
                    "redis unavailable; retrying",
                    extra={
                        "attempt": attempt,
                        "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                        "retry_in_s": round(delay, 2),
                    },
                )
                await self._sleep(delay)
                continue
            if progress:
                self.unavailable = None
            return result

    async def _note_failure(self, exc: BaseException) -> None:
        """Report the lane not ready until it works again; after an error that means
        "this node is a replica now", drop the pooled connections (redis_errors.Fault)."""
        self.unavailable = f"{type(exc).__name__}: {str(exc)[:200]}"
        if redis_fault(exc) is Fault.RECONNECT:
            try:
                await drop_idle_connections(self.redis)
            except Exception as drop_error:  # closing sockets must not end the lane
                log.warning("dropping connections failed", extra={"error": str(drop_error)})

    async def _sleep(self, delay_s: float) -> None:
        """A backoff wait: bounded, so the lane stays alive through it (liveness)."""
        with self.heart.waiting(delay_s):
            await asyncio.sleep(delay_s)


def _fatal_for_batch(exc: Exception, batch_id: str) -> bool:
    """Whether a batch's error ends the lane: a sink error is retried (a MongoDB outage,
    or refused data that goes back to the pending list), a Redis error if redis_fault
    says so; anything else is a bug or a refusal that retrying cannot fix."""
    if isinstance(exc, SinkError) or redis_fault(exc).retry:
        return False
    if isinstance(exc, CommitError):
        log.exception("commit script rejected the batch", extra={"batch_id": batch_id})
    return True


async def _closed_is_transient(awaitable: Any) -> Any:
    """Connection errors that do not look like ones, translated where they cross into ours:

    - uvloop raises RuntimeError ("handler is closed") when redis-py writes to a socket the
      peer just reset (found by tests/chaos);
    - redis-py's cluster client can disconnect a node connection while another task is
      still connecting it (node rediscovery, e.g. after MOVED), which surfaces as an
      AttributeError on its missing stream writer (found by tests/ops/test_cluster.py).
    """
    try:
        return await awaitable
    except RuntimeError as exc:
        if "handler is closed" in str(exc) or "transport is closing" in str(exc).lower():
            raise RedisConnectionError(str(exc)) from exc
        raise
    except AttributeError as exc:
        if "'NoneType' object has no attribute" in str(exc) and "write" in str(exc):
            raise RedisConnectionError(f"connection torn down: {exc}") from exc
        raise


def raw_stream_reply(response: Any, **_options: Any) -> Any:
    """XREADGROUP's reply as Redis sent it: [[stream, [[id, [name, value, ...]], ...]]]
    (RESP2), or {stream: [[id, [name, value, ...]], ...]} (RESP3).

    The consumer's client (pomocore.consumers.app.redis_client) uses this in place of redis-py's
    parser, which builds a dict per entry; validation reads the flat field list in place
    (pomocore.core.events.parse_plain_flat) and builds a dict only for a rejected entry.
    """
    return response


def stream_entries(reply: Any) -> list[Entry]:
    """Flatten an XREADGROUP reply (see raw_stream_reply) to (id, fields | None), where the
    fields are a flat list (raw_stream_reply) or a dict (redis-py's parser)."""
    out: list[Entry] = []
    for _stream, messages in reply.items() if isinstance(reply, dict) else reply or ():
        for entry_id, fields in messages:
            out.append((entry_id.decode(), fields or None))
    return out
