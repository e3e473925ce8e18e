"""The variants (a–h): one consumer process each, run by `python -m benchmarks.child`.

    a  ceiling      XREADGROUP COUNT n + XACK through redis-py asyncio + hiredis + uvloop
    b  pomocore     the real consumer (consumers.app.runtime + run_until_stopped), all sinks
    c  pomocore-lb  the same with POMOCORE_SINKS=leaderboard (our cost without MongoDB's)
    d  naive        per message: categorized_data lookup, insert, ZINCRBYs, XACK (sync clients)
    e  celery       one Celery task per event (Redis broker, solo pool): classify + ZINCRBYs
    f  plain        read, classify by dict, aggregate per batch, one Lua script that acks
                    and increments; no validation, no MongoDB (the reference for the bound)
    g  pomocore-derived  c with POMOCORE_LEADERBOARD_MODE=derived
    h  pomocore-llm b with the LLM against the harness's scripted server, on a workload with
                    a share of unknown apps/hosts (its session flow: benchmarks/llm_path.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import io
import math
import os
import pstats
import signal
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from pymongo import ASCENDING, MongoClient

from benchmarks.measure import Recorder, cpu_s, install_counters, peak_rss_kb
from benchmarks.protocol import ChildReport, ChildSpec, on_stop, ready_and_wait_go, write_latencies
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.consumers.app import run_until_stopped, runtime
from pomocore.core.categories import WORK, WORK_CATEGORIES
from pomocore.core.logs import setup_logging
from pomocore.core.observer import BatchOutcome, Observer
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.run import run_event_loop

# Consumes until the event is set (the parent said STOP).
Run = Callable[[asyncio.Event], Awaitable[None]]


class ChildState:
    """Times a variant's consumer records for its report."""

    def __init__(self) -> None:
        self.t_go = 0.0
        self.cpu_s = 0.0
        self.cpu0 = 0.0  # Celery: CPU at its first task and at its last
        self.cpu1 = 0.0


def child_main(spec: ChildSpec) -> int:
    """Run one consumer process of `spec.variant` and write its report."""
    rec = Recorder(spec.latency)
    install_counters(rec)
    profiler = cProfile.Profile() if spec.profile == "cprofile" else None
    state = ChildState()
    if spec.variant == "e":
        _child_celery(spec, rec, state)
    elif spec.variant == "d":
        _child_naive(spec, rec, state, profiler)
    else:
        run_event_loop(_child_async(spec, rec, state, profiler))
    gc.collect()
    report = ChildReport(
        acked=rec.acked,
        last_ack=rec.last_ack,
        first_start=rec.first_start or state.t_go,
        cpu_s=state.cpu_s,
        redis_round_trips=rec.redis_round_trips,
        mongo_round_trips=rec.mongo_round_trips,
        max_rss_kb=peak_rss_kb(),
        cache_hits=rec.cache_hits,
        cache_misses=rec.cache_misses,
        extra=rec.extra,
    )
    report.write(Path(spec.result_file))
    if rec.latency:
        write_latencies(Path(spec.result_file), rec.lat, rec.lat_groups)
    if profiler is not None:
        _write_profile(profiler, Path(spec.profile_file))
    return 0


def _write_profile(profiler: cProfile.Profile, path: Path) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf).sort_stats("tottime")
    stats.print_stats(45)
    buf.write("\n\n==== by cumulative time ====\n")
    stats.sort_stats("cumulative").print_stats(45)
    path.write_text(buf.getvalue())


async def _child_async(
    spec: ChildSpec, rec: Recorder, state: ChildState, profiler: cProfile.Profile | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    runners = {"a": _ceiling_runner, "f": _plain_runner}
    runner = runners.get(spec.variant, _pomocore_runner)  # b, c, g, h
    async with runner(spec, rec) as run:
        state.t_go = await loop.run_in_executor(None, ready_and_wait_go)
        rec.reset_counters()

        def stop_soon() -> None:  # from the protocol's thread: hand over to the loop
            loop.call_soon_threadsafe(stop.set)

        on_stop(stop_soon)
        cpu0 = cpu_s()
        if profiler is not None:
            profiler.enable()
        await run(stop)
        if profiler is not None:
            profiler.disable()
        state.cpu_s = cpu_s() - cpu0


def _redis_async(spec: ChildSpec) -> aioredis.Redis:
    return aioredis.Redis.from_url(spec.redis_url, decode_responses=False)


def _read_args(spec: ChildSpec) -> tuple[str, str, str, int]:
    """(stream, group, consumer, COUNT) of a variant's consumer."""
    assert spec.stream is not None
    return spec.stream, spec.names.group, spec.consumer, spec.batch_size


# --- a: the ceiling ---


@contextlib.asynccontextmanager
async def _ceiling_runner(spec: ChildSpec, rec: Recorder) -> AsyncIterator[Run]:
    r = _redis_async(spec)
    await r.ping()
    stream, group, consumer, count = _read_args(spec)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply: Any = await r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=100)
            if not reply:
                continue
            ids = [entry_id for entry_id, _fields in reply[0][1]]
            await r.xack(stream, group, *ids)
            rec.acked_ids(ids)

    try:
        yield run
    finally:
        await r.aclose()


# --- f: plain ---

PLAIN_SCRIPT = """
local n = tonumber(ARGV[2])
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + n))
local pos = 3 + n
for k = 2, #KEYS do
  local pairs_n = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, pairs_n do
    redis.call('ZINCRBY', KEYS[k], ARGV[pos + 1], ARGV[pos])
    pos = pos + 2
  end
end
return acked
"""


class DictClassifier:
    """Classify by dict: (app, url, title) → category, the pattern engine on a miss."""

    def __init__(self, rec: Recorder) -> None:
        self.engine = Classifier.from_patterns(load_default_pattern_set())
        self.memo: dict[tuple[str, str, str], str] = {}
        self.rec = rec

    def __call__(self, app: str, url: str, title: str) -> str:
        key = (app, url, title)
        category = self.memo.get(key)
        if category is None:
            self.rec.cache_misses += 1
            category = self.memo[key] = self.engine.classify(app, url, title).category
        else:
            self.rec.cache_hits += 1
        return category


def _leaderboard_keys(spec: ChildSpec) -> Callable[[str, float], tuple[str, ...]]:
    """The leaderboard keys an event of `category` at `ts` adds to (memoised per day)."""
    periods = PeriodCalculator("Asia/Seoul")
    prefix = spec.names.leaderboard_prefix
    cache: dict[tuple[str, str], tuple[str, ...]] = {}

    def keys(category: str, ts: float) -> tuple[str, ...]:
        p = periods(ts)
        k = cache.get((category, p.daily))
        if k is None:
            cats = (category, WORK) if category in WORK_CATEGORIES else (category,)
            k = cache[(category, p.daily)] = tuple(
                f"{prefix}:{c}:{label}" for c in cats for label in p.labels()
            )
        return k

    return keys


PlainEvent = tuple[str, str, str, str, float, float]  # user, app, url, title, duration, ts


def _plain_event(fields: dict[bytes, bytes]) -> PlainEvent | None:
    """Minimal parse, no validation beyond what cannot be used at all."""
    try:
        ev = (
            fields[b"userId"].decode(),
            fields.get(b"app", b"").decode(),
            fields.get(b"url", b"").decode(),
            fields.get(b"title", b"").decode(),
            float(fields[b"duration"]),
            float(fields[b"timestamp"]),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    # what Redis itself would refuse (ZINCRBY nan) or the leaderboard must never get
    return ev if ev[0] and 0.0 < ev[4] < math.inf and math.isfinite(ev[5]) else None


def _plain_arguments(
    group: str, ids: list[bytes], sums: Mapping[str, Mapping[str, float]]
) -> list[Any]:
    """PLAIN_SCRIPT's ARGV: group, n, the ids, then per key its (user, amount) pairs."""
    argv: list[Any] = [group, len(ids), *ids]
    for users in sums.values():
        argv.append(len(users))
        for user, amount in users.items():
            argv.append(user)
            argv.append(repr(amount))
    return argv


@contextlib.asynccontextmanager
async def _plain_runner(spec: ChildSpec, rec: Recorder) -> AsyncIterator[Run]:
    r = _redis_async(spec)
    script = r.register_script(PLAIN_SCRIPT)
    await r.script_load(PLAIN_SCRIPT)
    classify = DictClassifier(rec)
    keys_of = _leaderboard_keys(spec)
    stream, group, consumer, count = _read_args(spec)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply: Any = await r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=100)
            if not reply:
                continue
            ids: list[bytes] = []
            sums: defaultdict[str, defaultdict[str, float]] = defaultdict(
                lambda: defaultdict(float)
            )
            for entry_id, fields in reply[0][1]:
                ids.append(entry_id)
                ev = _plain_event(fields)
                if ev is None:
                    continue
                user, app, url, title, duration, ts = ev
                for key in keys_of(classify(app, url, title), ts):
                    sums[key][user] += duration
            await script(keys=[stream, *sums], args=_plain_arguments(group, ids, sums))
            rec.acked_ids(ids)

    try:
        yield run
    finally:
        await r.aclose()


# --- b, c, g, h: pomocore ---

# h: the shared call budget of a deployment that pays for the LLM path (the default, 20 a
# minute, would make this a benchmark of the budget: keys over it get the no-LLM rule).
BENCH_LLM_CALLS_PER_MIN = 2000


def _llm_settings(spec: ChildSpec) -> dict[str, Any]:
    """Variant h's settings beyond b's: the scripted LLM."""
    settings: dict[str, Any] = {}
    if spec.variant == "h" and spec.llm_url:  # else: without an LLM (the latency baseline)
        settings["llm_base_url"] = spec.llm_url
        settings["llm_api_key"] = "bench"
        settings["llm_calls_per_min"] = BENCH_LLM_CALLS_PER_MIN
    return settings


def _pomocore_settings(spec: ChildSpec) -> Settings:
    sinks = ("mongo", "leaderboard") if spec.variant in "bh" else ("leaderboard",)
    names = spec.names
    return Settings.from_dsn(
        spec.redis_url,
        spec.mongo_uri or None,
        stream=spec.stream,
        group=names.group,
        consumer_name=spec.consumer,
        dead_letter_stream=names.dead_letter_stream,
        session_score_stream=names.session_score_stream,
        leaderboard_prefix=names.leaderboard_prefix,
        mongo_db=names.mongo_db,
        sinks=sinks,
        batch_size=spec.batch_size,
        block_ms=100,
        leaderboard_mode="derived" if spec.variant == "g" else "exact",
        derived_refresh_s=1.0,  # several refreshes inside a run: their Redis CPU is counted
        log_format="text",
        log_level="WARNING",
        # h and the shard scaling (benchmarks/shards.py): every key under a hash tag
        key_hash_tag=spec.key_hash_tag,
        redis_cluster=int(spec.redis_cluster),
        shards=spec.shards,
        **_llm_settings(spec),
    )


class AckRecorder(Observer):
    """Records the acknowledgement time of every entry of each committed batch."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        self.rec.acked_ids([entry_id for entry_id, _ in entries])


class GroupAckRecorder(AckRecorder):
    """h's latency pass: also files each entry's latency as "llm" (a key no shipped
    pattern decides: it waits for the resolver) or "patterns" (decided without it)."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__(rec)
        self.engine = Classifier.from_patterns(load_default_pattern_set())
        self.undecided: dict[tuple[str, str, str], bool] = {}

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        now_ms = time.time() * 1000.0
        for entry_id, fields in entries:
            group = "llm" if fields is not None and self._undecided(fields) else "patterns"
            self.rec.latency_group(group, entry_id, now_ms)
        super().batch_committed(outcome, elapsed_s, entries)

    def _undecided(self, fields: Mapping[bytes, bytes] | list[bytes]) -> bool:
        if isinstance(fields, list):  # the flat field list of a RESP reply
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        app, url, title = (
            fields.get(name, b"").decode("utf-8", "replace") for name in (b"app", b"url", b"title")
        )
        key = (app, url, title)
        known = self.undecided.get(key)
        if known is None:
            known = self.undecided[key] = not self.engine.classify(*key).decided
        return known


# h: how long a stopping consumer may finish its in-flight LLM requests and learning.
SETTLE_S = 60.0


async def _settle_learning(resolver: Any) -> None:
    """Let in-flight LLM requests and their learning steps finish before the runtime
    closes (which cancels them): a consumer that keeps running would finish them, and the
    repeat pass must read what first sight learned. After the drain, so outside the
    measured time. (`_tasks`: the resolver has no public way to wait for them.)"""
    if resolver._tasks:
        await asyncio.wait(set(resolver._tasks), timeout=SETTLE_S)


def _llm_stats(resolver: Any) -> dict[str, Any]:
    stats = resolver.refresh_stats()
    return {
        "calls": stats.calls,
        "items": stats.items,
        "verdicts": stats.verdicts,
        "cache_hits": stats.cache_hits,
        "coalesced": stats.coalesced,
        "queued": stats.queued,
        "overflow_keys": stats.overflow_keys,  # deferred: every waiting slot taken
        "reclassified": stats.reclassified,
        "learned_patterns": stats.learned_patterns,
        "errors": dict(stats.errors),
    }


@contextlib.asynccontextmanager
async def _pomocore_runner(spec: ChildSpec, rec: Recorder) -> AsyncIterator[Run]:
    settings = _pomocore_settings(spec)
    setup_logging(settings.log_format, settings.log_level)
    grouped = spec.variant == "h" and spec.latency
    observer = GroupAckRecorder(rec) if grouped else AckRecorder(rec)
    async with runtime(settings, observer) as rt:
        await rt.redis.ping()

        async def run(stop: asyncio.Event) -> None:
            await run_until_stopped(rt, stop)
            if rt.resolver is not None:
                await _settle_learning(rt.resolver)
            stats = rt.consumer.stats
            # acknowledged by this consumer = committed + already acknowledged by another
            rec.extra["pomocore_stats"] = {
                "committed": stats.committed,
                "skipped_already_acked": stats.skipped_already_acked,
                "batches": stats.batches,
                "rejected": sum(stats.rejected_by_reason.values()),
                "sink_failures": stats.sink_failures,
            }
            rec.acked = stats.committed + stats.skipped_already_acked
            rec.extra["lanes"] = len(rt.lanes or [rt.consumer])
            rec.cache_hits = getattr(rt.classifier, "hits", 0)
            rec.cache_misses = getattr(rt.classifier, "misses", 0)
            mongo = getattr(rt.consumer.processor, "mongo", None)
            if mongo is not None:
                rec.extra["mongo_sink_round_trips"] = mongo.round_trips
            if rt.resolver is not None:
                rec.extra["llm_stats"] = _llm_stats(rt.resolver)

        yield run


# --- d: naive ---


class NaiveStore:
    """The old service's per-message MongoDB work: categorized_data lookup (insert on a
    miss), one usage-log insert."""

    def __init__(self, spec: ChildSpec, rec: Recorder) -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(
            spec.mongo_uri, serverSelectionTimeoutMS=5000
        )
        self.db = self.client[spec.names.mongo_db]
        with contextlib.suppress(Exception):
            self.db["categorized_data"].create_index(
                [("app", ASCENDING), ("url", ASCENDING), ("title", ASCENDING)]
            )
        self.engine = Classifier.from_patterns(load_default_pattern_set())
        self.rec = rec

    def category(self, app: str, url: str, title: str) -> tuple[str, Any]:
        """(category, categorized_data id) of a key, classified and inserted on a miss."""
        doc = self.db["categorized_data"].find_one({"app": app, "url": url, "title": title})
        if doc is not None:
            self.rec.cache_hits += 1
            return doc["category"], doc["_id"]
        self.rec.cache_misses += 1
        category = self.engine.classify(app, url, title).category
        res = self.db["categorized_data"].insert_one(
            {"app": app, "url": url, "title": title, "category": category, "isLLMBased": False}
        )
        return category, res.inserted_id

    def log_usage(self, event: PlainEvent, category: str, cat_id: Any) -> None:
        user, _app, _url, _title, duration, ts = event
        self.db["pomodoro_usage_log"].insert_one(
            {
                "userId": user,
                "categorizedDataId": cat_id,
                "category": category,
                "timestamp": ts,
                "duration": duration,
            }
        )


def _child_naive(
    spec: ChildSpec, rec: Recorder, state: ChildState, profiler: cProfile.Profile | None
) -> None:
    """The per-message pipeline the old service started from (sync clients: the faster
    stack for one-command-at-a-time work, so this baseline is not a straw man)."""
    r = redis.Redis.from_url(spec.redis_url)
    store = NaiveStore(spec, rec)
    keys_of = _leaderboard_keys(spec)
    stream, group, consumer, count = _read_args(spec)
    r.ping()
    stop = threading.Event()
    state.t_go = ready_and_wait_go()
    rec.reset_counters()
    on_stop(stop.set)
    cpu0 = cpu_s()
    if profiler is not None:
        profiler.enable()
    while not stop.is_set():
        reply: Any = r.xreadgroup(group, consumer, {stream: ">"}, count=min(count, 100), block=100)
        if not reply:
            continue
        for entry_id, fields in reply[0][1]:
            ev = _plain_event(fields)
            if ev is not None:
                category, cat_id = store.category(ev[1], ev[2], ev[3])
                store.log_usage(ev, category, cat_id)
                for key in keys_of(category, ev[5]):
                    r.zincrby(key, ev[4], ev[0])
            r.xack(stream, group, entry_id)
            rec.acked_ids([entry_id])
    if profiler is not None:
        profiler.disable()
    state.cpu_s = cpu_s() - cpu0
    store.client.close()
    r.close()


# --- e: Celery ---


def celery_app(redis_url: str, queue: str) -> Any:
    """The Celery app of a run (the parent publishes with it, the child works with it)."""
    # celery is a bench tool, not a pomocore dependency: loaded only where variant e runs
    from celery import Celery  # type: ignore[import-untyped]

    app = Celery("pomobench", broker=redis_url)
    app.conf.update(
        # every kombu key (queue, bindings, unacked sets) under the run's prefix
        broker_transport_options={"global_keyprefix": queue + ":"},
        worker_enable_remote_control=False,
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def _child_celery(spec: ChildSpec, rec: Recorder, state: ChildState) -> None:
    warnings.filterwarnings("ignore", message=".*superuser privileges.*")
    app = celery_app(spec.redis_url, spec.names.celery_queue)
    r = redis.Redis.from_url(spec.redis_url)
    classify = DictClassifier(rec)
    keys_of = _leaderboard_keys(spec)
    done_key = spec.names.celery_done
    latency = spec.latency

    @app.task(name="pomobench.process_event", ignore_result=True)  # type: ignore[untyped-decorator]
    def process_event(fields: dict[str, str], enqueued_ms: float) -> None:
        if not rec.first_start:
            rec.first_start = time.time()
            state.cpu0 = cpu_s()
        pipe = r.pipeline(transaction=False)
        try:
            user = fields["userId"]
            duration, ts = float(fields["duration"]), float(fields["timestamp"])
            if user and math.isfinite(duration) and 0 < duration <= 86400 and math.isfinite(ts):
                category = classify(
                    fields.get("app", ""), fields.get("url", ""), fields.get("title", "")
                )
                for key in keys_of(category, ts):
                    pipe.zincrby(key, duration, user)
        except (KeyError, ValueError):
            pass
        pipe.incr(done_key)
        pipe.execute()
        now = time.time()
        rec.acked += 1
        rec.last_ack = now
        state.cpu1 = cpu_s()
        if latency:
            rec.lat.append(now * 1000 - enqueued_ms)

    r.ping()
    state.t_go = ready_and_wait_go()
    rec.reset_counters()
    on_stop(lambda: os.kill(os.getpid(), signal.SIGTERM))
    worker = app.Worker(
        pool_cls="solo",
        concurrency=1,
        loglevel="WARNING",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
        queues=[spec.names.celery_queue],
    )
    with contextlib.suppress(SystemExit):
        worker.start()
    state.cpu_s = state.cpu1 - state.cpu0
    r.close()
