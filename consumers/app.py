"""Build a consumer from settings and run it until SIGTERM/SIGINT.

Connections are made here, at run time, never at import time. On a signal the consumer
stops reading, finishes and acknowledges the batch in hand, then exits within
`shutdown_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pymongo
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from pomocore.classifiers.cache import CachingClassifier
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import PatternSet, load_default_pattern_set
from pomocore.classifiers.reload import watch_patterns
from pomocore.classifiers.store import load_or_seed_patterns
from pomocore.consumers.batch import BatchProcessor
from pomocore.consumers.consumer import StreamConsumer, WaitingSlots, raw_stream_reply
from pomocore.consumers.indexes import ensure_indexes
from pomocore.consumers.trimming import StreamTrimmer, trimming_enabled
from pomocore.core.connect import (
    MONGO_START_TIMEOUT_S,
    async_redis,
    bound_replies,
    command_timeout_s,
    consumer_mongo,
)
from pomocore.core.expiry import expire_at_function
from pomocore.core.keys import KeySpace
from pomocore.core.liveness import Liveness
from pomocore.core.observer import Observer
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.sinks.commit import CommitGroup, Committer
from pomocore.sinks.derived import DerivedRefresher
from pomocore.sinks.mongo import MongoSink
from pomocore.sinks.plan import IncrementBuilder

log = logging.getLogger("pomocore.app")

Task = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    """Everything one consumer process holds; closed by `runtime()`."""

    settings: Settings
    redis: aioredis.Redis
    mongo_client: AsyncMongoClient[dict[str, Any]] | None
    db: AsyncDatabase[dict[str, Any]] | None
    patterns: PatternSet
    classifier: CachingClassifier
    consumer: StreamConsumer
    resolver: Any = None  # pomocore.classifiers.llm.resolver.LLMResolver when an LLM is configured
    lanes: list[StreamConsumer] = field(default_factory=list)  # `consumer` is lanes[0]
    background: list[Task] = field(default_factory=list)
    liveness: Liveness | None = None  # the event loop's and the lanes' hearts (/healthz)
    trimmers: list[StreamTrimmer] = field(default_factory=list)  # one per served shard

    def unavailable(self) -> str | None:
        """What a lane is waiting out (a Redis or sink error), for /readyz; None if none."""
        for lane in self.lanes or [self.consumer]:
            if lane.unavailable:
                return f"{lane.settings.consumer_name}: {lane.unavailable}"
        return None


SOCKET_BUFFER_BYTES = 1 << 20


async def _large_socket_buffers(conn: Any) -> None:
    """Let the kernel take a whole commit request (~200 bytes per event) in one write.

    With the default 16 KiB start, most of a batch's request waits in the transport for
    the event loop, which is busy with another lane's batch: the commit reaches Redis
    late and the lanes' work stops overlapping.
    """
    writer = getattr(conn, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is not None:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    await conn.on_connect()


def redis_client(settings: Settings) -> aioredis.Redis:
    client = async_redis(
        settings,
        decode_responses=False,  # bytes: one invalid entry must not poison a whole read
        socket_timeout=command_timeout_s(settings),
        socket_connect_timeout=5.0,
        health_check_interval=30,
        # (standalone only: the Cluster client manages its node connections itself)
        **({} if settings.redis_cluster else {"redis_connect_func": _large_socket_buffers}),
    )
    # Our read path takes the raw reply (RESP2 or RESP3); the Cluster client shares its
    # callbacks with every node, made before or after.
    client.set_response_callback("XREADGROUP", raw_stream_reply)
    # No reply larger than a batch's bytes: an XREADGROUP of huge entries is cut off
    # (consumers/reads.py), and no other command of the consumer replies with as much.
    bound_replies(client, settings.batch_max_bytes)
    return client


async def initial_patterns(db: AsyncDatabase[dict[str, Any]] | None) -> PatternSet:
    """The patterns a consumer starts with: MongoDB's when it writes MongoDB (live reload
    keeps them current), else the shipped default set."""
    return load_default_pattern_set() if db is None else await load_or_seed_patterns(db)


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings, observer: Observer | None = None
) -> AsyncIterator[Runtime]:
    """Connect and build one consumer process; `observer` sees every lane's batches and
    backend calls (metrics, the benchmark harness)."""
    redis = redis_client(settings)
    client = consumer_mongo(settings) if "mongo" in settings.sinks else None
    db = client[settings.mongo_db] if client is not None else None
    resolver = None
    classifier: CachingClassifier | None = None
    try:
        with pymongo.timeout(MONGO_START_TIMEOUT_S):
            patterns = await initial_patterns(db)
            if db is not None:  # what the code's queries need (consumers/indexes.py)
                await ensure_indexes(db)
        classifier = CachingClassifier(
            Classifier.from_patterns(patterns),
            settings.decision_cache_size,
            max_bytes=settings.decision_cache_bytes,
            pool_workers=settings.classifier_pool_workers,
            pool_threshold=settings.classifier_pool_threshold,
        )
        resolver, llm_tasks = _llm(settings, redis, db, classifier)
        liveness = Liveness(settings.liveness_timeout_s)
        shared = _Shared(
            settings,
            redis,
            db,
            classifier,
            resolver,
            PeriodCalculator(settings.timezone),
            expire_at_function(settings),
            asyncio.Lock(),
            WaitingSlots.from_settings(settings, lanes=len(lane_plan(settings))),
            liveness,
            observer,
        )
        shards = {shard: _shard_parts(shared, shard) for shard in settings.served_shards}
        lanes: list[StreamConsumer] = []
        reclaiming: set[int] = set()  # one lane per shard scans the group for stale entries
        for lane_settings, shard in zip(
            _lane_settings(settings), lane_plan(settings), strict=True
        ):
            first = shard not in reclaiming
            reclaiming.add(shard)
            lanes.append(_lane(shared, shards[shard], lane_settings, reclaims=first))
        for lane in lanes[1:]:  # one set of counters for the whole process
            lane.stats = lanes[0].stats
        rt = Runtime(settings, redis, client, db, patterns, classifier, lanes[0], resolver)
        rt.lanes = lanes
        rt.liveness = liveness
        rt.background.append(liveness.beat_loop)
        if db is not None:
            rt.background.append(_pattern_watcher(rt))
        rt.background.extend(llm_tasks)
        for part in shards.values():
            rt.background.extend(part.background)
        rt.trimmers = [p.trimmer for p in shards.values() if p.trimmer is not None]
        yield rt
    finally:
        if classifier is not None:
            classifier.close()  # stops the process pool, if any
        if resolver is not None:
            await resolver.close()
        await redis.aclose()
        if client is not None:
            await client.close()


def _lane_settings(settings: Settings) -> list[Settings]:
    """One consumer name per lane: lane 0 keeps the process's name, lane i appends `.i`.

    Lanes are concurrent read → process → commit loops in one process: while one waits
    for Redis (its read or its commit script), another does its Python work, so the
    client and Redis work overlap instead of adding up.
    """
    return [
        settings
        if i == 0
        else dataclasses.replace(settings, consumer_name=f"{settings.consumer_name}.{i}")
        for i in range(len(lane_plan(settings)))
    ]


def lane_plan(settings: Settings) -> list[int]:
    """The shard each lane reads: the served shards in turn, POMOCORE_LANES lanes, and
    at least one per served shard (a lane reads one stream: on a cluster the shards'
    streams are on different nodes, and one XREADGROUP reaches one node)."""
    served = settings.served_shards
    return [served[i % len(served)] for i in range(max(settings.lanes, len(served)))]


@dataclass(frozen=True, slots=True)
class _Shared:
    """What one process's shards and lanes share."""

    settings: Settings
    redis: aioredis.Redis
    db: AsyncDatabase[dict[str, Any]] | None
    classifier: CachingClassifier
    resolver: Any
    periods: PeriodCalculator
    expire_at: Callable[[str], int | None] | None
    compute_lock: asyncio.Lock
    waiting_slots: WaitingSlots
    liveness: Liveness
    observer: Observer | None


@dataclass
class _ShardParts:
    """One served shard's keys, sinks and background tasks."""

    keys: KeySpace
    mongo: MongoSink | None
    builder: IncrementBuilder
    commit_group: CommitGroup
    observer: Observer | None
    trimmer: StreamTrimmer | None
    background: list[Task]


def _shard_parts(shared: _Shared, shard: int) -> _ShardParts:
    settings = shared.settings
    keys = settings.shard_keys(shard)
    # usage-log ids carry the shard's stream (core/ids.py): two shards never collide
    mongo = (
        MongoSink(
            shared.db,
            keys.stream_key,
            shared.classifier.current_category_ids(),  # follows a pattern reload
            settings.decision_cache_size,
            timeout_s=settings.mongo_timeout_ms / 1000,
        )
        if shared.db is not None
        else None
    )
    derived = settings.leaderboard_mode == "derived"
    background: list[Task] = []
    observer = shared.observer
    # never past an entry a group still needs; woken by this shard's commits
    trimmer = (
        StreamTrimmer(settings, shared.redis, keys=keys) if trimming_enabled(settings) else None
    )
    if trimmer is not None:
        observer = trimmer.observing(observer)
        background.append(trimmer.run)
    if derived:  # weekly/monthly keys rebuilt from daily ones (sinks/derived.py)
        refresher = DerivedRefresher(
            shared.redis, keys, settings.derived_refresh_s, shared.expire_at
        )
        background.append(refresher.run)
    return _ShardParts(
        keys,
        mongo,
        IncrementBuilder(keys, shared.periods, derived=derived),
        # At most two commit script calls in flight per shard; the lanes' plans that
        # queue up behind them go out merged (group commit, sinks/commit.py).
        CommitGroup(shared.redis, keys, settings.group, shared.expire_at, mark_derived=derived),
        observer,
        trimmer,
        background,
    )


def _lane(
    shared: _Shared, part: _ShardParts, lane_settings: Settings, *, reclaims: bool
) -> StreamConsumer:
    committer = Committer(
        shared.redis,
        part.keys,
        lane_settings.group,
        lane_settings.consumer_name,
        commit_group=part.commit_group,
        observer=part.observer,
    )
    processor = BatchProcessor(
        lane_settings,
        shared.classifier,
        part.builder,
        committer,
        mongo=part.mongo,
        resolver=shared.resolver,
        compute_lock=shared.compute_lock,
        observer=part.observer,
    )
    return StreamConsumer(
        lane_settings,
        shared.redis,
        processor,
        reclaims=reclaims,
        observer=part.observer,
        heart=shared.liveness.heart(f"lane {lane_settings.consumer_name}"),
        waiting_slots=shared.waiting_slots,
        keys=part.keys,
    )


def _llm(
    settings: Settings, redis: aioredis.Redis, db: Any, classifier: CachingClassifier
) -> tuple[Any, list[Task]]:
    """The LLM resolver, and the reclassifier task that resolves keys queued while the LLM
    was down, open or over budget (None and no task when no LLM is configured)."""
    if not settings.llm_enabled:
        return None, []
    # The one import made at run time: the LLM fallback is optional, and loading it (the
    # openai client) costs each consumer process 0.4 s and 25 MB of RSS (measured with
    # `python -c "import resource, openai; print(resource.getrusage(0).ru_maxrss)"`).
    from pomocore.classifiers.llm import reclassifier, resolver


    llm = resolver.LLMResolver.from_settings(settings, redis, db)
    if llm is None or db is None:
        return llm, []
    if llm.learner is not None:
        llm.learner.is_browser = classifier.is_browser
    task = reclassifier.Reclassifier(llm, db, lambda c: classifier.category_ids.get(c))
    return llm, [task.run]


def _pattern_watcher(rt: Runtime) -> Task:
    async def watch(stop: asyncio.Event) -> None:
        assert rt.db is not None
        await watch_patterns(
            rt.redis, rt.db, rt.classifier, rt.settings.keys, rt.settings.pattern_poll_s, stop
        )

    return watch


async def _run_lanes(rt: Runtime, stop: asyncio.Event) -> None:
    """All lanes; a lane that fails cancels the others (the process then exits non-zero).

    The lanes create their shards' groups one after the other (and the first, for Redis
    Cluster, makes the client discover its nodes) before any starts: redis-py's cluster
    client replaces its node connections on discovery, and lanes connecting at that
    moment found them torn down.
    """
    lanes = rt.lanes or [rt.consumer]
    prepared: set[str] = set()
    for lane in lanes:
        if lane.stream_key not in prepared:
            await lane.prepare(stop)
            prepared.add(lane.stream_key)
    async with asyncio.TaskGroup() as group:
        for lane in lanes:
            group.create_task(lane.run(stop))


GC_YOUNG_THRESHOLD = 100_000


def settle_heap() -> None:
    """Move what start-up built (modules, compiled patterns, indexes) out of the garbage
    collector's sight, so that later collections scan only the batches' objects, and let
    the young generation grow to 100,000 objects (default 700) before a collection: a
    batch allocates tens of thousands of short-lived containers that reference counting
    frees anyway. Measured on the leaderboard path (benchmarks/README.md): freeze +3 %, a
    threshold of 10,000 about +3 % more; 100,000 took young collections from ~0.6 to
    ~0.15 µs an event (gc.callbacks, 100,000 events of variant c); memory unchanged."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


def unsettle_heap(thresholds: tuple[int, int, int]) -> None:
    """Undo settle_heap (the process goes on after the consumer: tests, `pomocore demo`)."""
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def run_until_stopped(rt: Runtime, stop: asyncio.Event) -> None:
    """Run the consumer and its background tasks; on stop, drain within the timeout."""
    thresholds = gc.get_threshold()
    settle_heap()
    tasks = [asyncio.create_task(t(stop)) for t in rt.background]
    main = asyncio.create_task(_run_lanes(rt, stop))
    try:
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({main, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if main in done:
            main.result()
            return
        try:
            await asyncio.wait_for(asyncio.shield(main), rt.settings.shutdown_timeout_s)
        except TimeoutError:
            log.error("shutdown timeout: abandoning the batch in hand (it stays pending)")
            main.cancel()
    finally:
        await _stop_background(tasks, stop)
        unsettle_heap(thresholds)


# How long background tasks get to end once cancelled.
BACKGROUND_STOP_S = 5.0


async def _stop_background(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Stop the background tasks, whatever ended the lanes, within BACKGROUND_STOP_S.

    `stop` is set too: a lane that failed (a fatal error) must end the process, and a
    task whose cancellation was swallowed (redis-py's pubsub read under Python 3.11's
    asyncio.timeout can lose one) still leaves its `while not stop.is_set()` loop. One
    that does neither is abandoned, so the process exits rather than hang.
    """
    stop.set()
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=BACKGROUND_STOP_S)
    for task in pending:
        log.error("background task did not stop; abandoning it", extra={"task": repr(task)})


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
