"""Prometheus metrics of pomocore.

Three kinds, recorded in three places:
- **Per-batch** counters and histograms (events read/processed/rejected, batch size and
  latency, end-to-end latency, classification sources, MongoDB/Redis operation latency):
  recorded by each consumer process through `MetricsObserver`, the `Observer` the runtime
  is built with (batches, MongoDB bulk writes, commit script calls). Never per event.
- **Per-process counters kept elsewhere** (classifier cache hits/misses, `LLMStats`,
  reclaimed entries, Redis reconnects): copied as deltas every `SYNC_INTERVAL_S` by a
  background task of the consumer.
- **Group-level gauges** (consumer-group lag, pending count, age of the oldest pending
  entry, stream and dead-letter stream length, lost-to-trim counter): sampled from Redis
  when `/metrics` is scraped, by `GroupSampler`, only in the process that serves HTTP
  (the supervisor parent with `--processes N`), so there is one copy, not N. A sample
  is bounded by SAMPLE_TIMEOUT_S (shell/bounded.py): while Redis is away or hangs,
  `/metrics` still answers on time, with the last sample and `pomocore_group_sample_up 0`.

With `--processes N` the children record into prometheus-client's multiprocess files
(`PROMETHEUS_MULTIPROC_DIR`, set by the parent before it spawns them) and the parent
serves `/metrics` by aggregating those files; a dead child's live gauges are removed with
`multiprocess.mark_process_dead`. A single process without that variable keeps its
metrics in memory. `metric_types()` lists every series with its type (the alert and
dashboard tests check their queries against it).

The leaderboard HTTP API (`pomocore leaderboard serve`) is a process of its own and serves
its own /metrics on its port: its request latency by route (`RequestLatency`), the build
info and its process metrics (`api_registry`).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import importlib.metadata
import itertools
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pomocore.bounded import SingleFlight
from pomocore.classifiers.llm.stats import LATENCY_BUCKETS as LLM_STATS_BUCKETS
from pomocore.classifiers.llm.stats import LLMStats
from pomocore.consumers.app import Runtime, Task
from pomocore.core.connect import sync_redis
from pomocore.core.keys import KeySpace
from pomocore.core.observer import BatchOutcome, Observer
from pomocore.core.settings import Settings

log = logging.getLogger("pomocore.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL_S = 5.0
SAMPLE_CACHE_S = 1.0
# The longest a scrape waits for the group sample: well under Prometheus's default scrape
# timeout (10 s), and the sampler client's socket timeout (a hung sample ends by itself).
SAMPLE_TIMEOUT_S = 3.0
E2E_SAMPLES_PER_BATCH = 32  # end-to-end latency: at most this many entries observed per batch

BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LLM_LATENCY_BUCKETS = LLM_STATS_BUCKETS  # the same bounds as LLMStats's own histogram
LLM_ITEMS_BUCKETS = (1, 2, 5, 10, 25, 50, 100)
LLM_SHARED_SAMPLE_S = 2.0  # bound on the Redis reads of the shared LLM gauges
GaugeMode = Literal["livemax", "livemin"]
CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
# `pomocore_llm_circuit_state{state=...}`: enum style, 1 for the current state, 0 for the others.
CIRCUIT_STATES = ("closed", "half_open", "open")
# The shared lost-to-trim count (a Redis key) as `GroupSampler.sample()` returns it for
# `pomocore status`; not exposed (pomocore_events_lost_to_trim_total is the metric).
LOST_TO_TRIM_SAMPLE = "lost_to_trim"

# Families whose values come from GroupSampler (scrape time) rather than recorders.
GROUP_GAUGES = {
    "pomocore_group_lag": "entries in the stream not yet delivered to the group (XINFO lag)",
    "pomocore_group_pending": "entries delivered but not acknowledged (PEL size)",
    "pomocore_group_consumers": "consumers registered in the group",
    "pomocore_oldest_pending_age_seconds": "age of the oldest unacknowledged entry (by its id)",
    "pomocore_oldest_pending_idle_seconds": "time since the oldest pending entry was delivered",
    "pomocore_stream_length": "entries in the input stream",
    "pomocore_dead_letter_length": "entries in the dead-letter stream",
    "pomocore_group_sample_up": "1 when the last group sample from Redis succeeded",
    "pomocore_derived_stale_days": "derived mode: daily keys whose weekly/monthly keys wait",
    "pomocore_derived_refresh_age_seconds": "derived mode: time since the last finished refresh",
}


class LLMMetrics:
    """The LLM fallback's families. Counters and histograms are copied from `LLMStats` by
    the periodic sync; the gauges of state shared by every process (queue, budget) are
    read from Redis by that same sync, so with N processes each reports the same value
    (livemax/livemin keep one, and a dead process's copy is dropped)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, mode: GaugeMode, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        self.calls = counter("pomocore_llm_calls", "LLM requests sent", ["model"])
        self.items = counter("pomocore_llm_items", "items sent to the LLM")
        self.request_seconds = Histogram(
            "pomocore_llm_request_duration_seconds",
            "duration of one LLM request (answered or failed)",
            ["model"],
            buckets=LLM_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_items = Histogram(
            "pomocore_llm_request_items",
            "items per LLM request",
            ["model"],
            buckets=LLM_ITEMS_BUCKETS,
            registry=registry,
        )
        self.tokens = counter("pomocore_llm_tokens", "LLM tokens used", ["model", "kind"])
        self.errors = counter("pomocore_llm_errors", "LLM failures by kind", ["kind"])
        self.keys = counter(
            "pomocore_llm_keys",
            "undecided keys by outcome: verdict, cache_hit, coalesced, invalid, queued",
            ["outcome"],
        )
        self.fallback_used = counter(
            "pomocore_llm_fallback_used", "requests answered by the fallback model"
        )
        self.reclassified = counter(
            "pomocore_llm_reclassified", "categorized_data documents corrected by the reclassifier"
        )
        self.learned_patterns = counter(
            "pomocore_llm_learned_patterns", "patterns learned from LLM verdicts"
        )
        self.throttled_items = counter(
            "pomocore_llm_throttled_items", "keys refused because their user spent its share"
        )
        self.overflow_keys = counter(
            "pomocore_llm_overflow_keys",
            "undecided keys given the no-LLM rule unasked and queued: every "
            "POMOCORE_LLM_WAITING_BATCHES slot was taken",
        )
        self.queue_dropped = counter(
            "pomocore_llm_queue_dropped",
            "keys the reclassifier's queue dropped: full, expired, too_large",
            ["reason"],
        )
        self.learning_capped = counter(
            "pomocore_llm_learning_capped",
            "subjects that qualified as a pattern while POMOCORE_LLM_LEARNED_MAX was reached",
        )
        self.circuit_opened = counter(
            "pomocore_llm_circuit_opened", "times an LLM circuit breaker opened"
        )
        self.circuit_state = gauge(
            "pomocore_llm_circuit_state",
            "primary-model circuit: 1 for its state (closed, half_open, open), 0 for the others",
            "livemax",
            ["state"],
        )
        set_circuit_state(self.circuit_state, "closed")  # every state's series from the start
        self.queue_depth = gauge(
            "pomocore_llm_queue_depth", "keys waiting for the reclassifier (shared)", "livemax"
        )
        self.queue_oldest_age = gauge(
            "pomocore_llm_queue_oldest_age_seconds",
            "time since the longest-waiting key was queued (shared)",
            "livemax",
        )
        self.budget_remaining = gauge(
            "pomocore_llm_budget_remaining",
            "calls or tokens left in this minute's shared budget",
            "livemin",
            ["resource"],
        )


class PipelineMetrics:
    """Every recorded (not sampled) metric family, created once per process."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def hist(
            name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()
        ) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.events_read = counter("pomocore_events_read", "stream entries read")
        self.events_processed = counter(
            "pomocore_events_processed", "valid events classified and committed"
        )
        self.events_rejected = counter(
            "pomocore_events_rejected", "events dead-lettered, by reason", ["reason"]
        )
        self.events_duplicate = counter(
            "pomocore_events_duplicate", "entries another consumer had already acknowledged"
        )
        self.events_lost_to_trim = counter(
            "pomocore_events_lost_to_trim", "entries trimmed from the stream before processing"
        )
        self.events_reclaimed = counter(
            "pomocore_events_reclaimed", "entries claimed from idle consumers"
        )
        self.stream_trimmed = counter(
            "pomocore_stream_trimmed",
            "entries trimmed: the input stream past POMOCORE_STREAM_MAXLEN (cap maxlen), "
            "dead letters and session scores dropped by their count or age cap",
            ["stream", "cap"],
        )
        self.batches = counter("pomocore_batches", "batches committed")
        self.commit_calls = counter(
            "pomocore_commit_calls", "commit script calls (group commit: one per merged set)"
        )
        self.commit_plans = counter(
            "pomocore_commit_plans", "batches committed by those calls (plans / calls: merging)"
        )
        self.batch_failures = counter("pomocore_batch_failures", "failed batch attempts (retried)")
        self.batch_size = hist("pomocore_batch_size", "entries per batch", BATCH_SIZE_BUCKETS)
        self.batch_seconds = hist(
            "pomocore_batch_duration_seconds", "validate → commit time of a batch", LATENCY_BUCKETS
        )
        self.e2e_seconds = hist(
            "pomocore_end_to_end_latency_seconds",
            "entry time (stream id) to acknowledgement; sampled entries of each batch",
            E2E_BUCKETS,
        )
        self.classified = counter(
            "pomocore_classifications", "classified events by decision source", ["source"]
        )
        self.categories = counter(
            "pomocore_events_categorized", "events committed, by category", ["category"]
        )
        self.cache_hits = counter("pomocore_classifier_cache_hits", "decision cache hits")
        self.cache_misses = counter("pomocore_classifier_cache_misses", "decision cache misses")
        self.cache_bytes = Gauge(
            "pomocore_classifier_cache_bytes",
            "bytes the decision cache holds (at most POMOCORE_DECISION_CACHE_BYTES)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.reads_cut_off = counter(
            "pomocore_reads_cut_off",
            "stream reads cut off at POMOCORE_BATCH_MAX_BYTES (their entries read again guarded)",
        )
        self.llm = LLMMetrics(registry)
        self.draining = Gauge(
            "pomocore_consumer_draining",
            "1 while a consumer process is finishing its last batch",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.op_seconds = hist(
            "pomocore_op_duration_seconds",
            "MongoDB and Redis operation latency",
            LATENCY_BUCKETS,
            ["backend", "op"],
        )
        self.op_errors = counter(
            "pomocore_op_errors", "MongoDB and Redis operation errors", ["backend", "op", "error"]
        )

        # kept as attributes: existing code and tests read them from here
        self.llm_calls = self.llm.calls
        self.llm_items = self.llm.items
        self.llm_tokens = self.llm.tokens
        self.llm_errors = self.llm.errors
        self.llm_circuit_opened = self.llm.circuit_opened
        self.llm_circuit_state = self.llm.circuit_state

    # --- recorders ---

    def observe_batch(
        self, outcome: Any, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        """One call per committed batch (through `MetricsObserver`)."""
        self.batches.inc()
        self.events_read.inc(outcome.read)
        self.events_processed.inc(outcome.accepted)
        if outcome.skipped_already_acked:
            self.events_duplicate.inc(outcome.skipped_already_acked)
        if outcome.trimmed:
            self.events_lost_to_trim.inc(outcome.trimmed)
        for reason, n in outcome.rejected_by_reason.items():
            self.events_rejected.labels(reason).inc(n)
        for source, n in outcome.sources.items():
            self.classified.labels(source).inc(n)
        for category, n in outcome.categories.items():
            self.categories.labels(category).inc(n)
        self.batch_size.observe(len(entries))
        self.batch_seconds.observe(elapsed_s)
        now_ms = time.time() * 1000
        for entry_id in sample_ids(entries, E2E_SAMPLES_PER_BATCH):
            self.e2e_seconds.observe(max(0.0, now_ms - entry_ms(entry_id)) / 1000)


def entry_ms(entry_id: str) -> int:
    """Milliseconds part of a stream id (`1700000000000-3` → 1700000000000)."""
    head, _, _ = entry_id.partition("-")
    return int(head)


def sample_ids(entries: Sequence[tuple[str, Any]], limit: int) -> list[str]:
    """At most `limit` ids spread evenly over the batch, first and last included."""
    n = len(entries)
    if n <= limit:
        return [e[0] for e in entries]
    step = (n - 1) / (limit - 1)
    return [entries[round(i * step)][0] for i in range(limit)]


_lock = threading.Lock()
_metrics: PipelineMetrics | None = None


def pipeline_metrics() -> PipelineMetrics:
    """The process's PipelineMetrics (created on first use, in the default registry)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = PipelineMetrics()
        return _metrics


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def recording_enabled(settings: Settings) -> bool:
    return settings.metrics_port > 0 or multiprocess_dir() is not None


def prepare_multiprocess(settings: Settings) -> str | None:
    """In the process that serves /metrics for N children, before they start: make sure
    `PROMETHEUS_MULTIPROC_DIR` is set (a fresh temporary directory unless the deployment
    set one) and holds no files from an earlier run."""
    path = multiprocess_dir()
    if path is None:
        if settings.processes <= 1 or settings.metrics_port == 0:
            return None
        path = tempfile.mkdtemp(prefix="pomocore-metrics-")
        os.environ[MULTIPROC_ENV] = path
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def mark_process_dead(pid: int | None) -> None:
    """A child exited: drop its live gauges (counters and histograms stay summed)."""
    path = multiprocess_dir()
    if pid and path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def cleanup_multiprocess(path: str | None) -> None:
    if path and path.startswith(tempfile.gettempdir()) and "pomocore-metrics-" in path:
        shutil.rmtree(path, ignore_errors=True)


class MetricsObserver(Observer):
    """The runtime's hooks recorded into Prometheus (handed to `runtime()` at build)."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self.metrics = metrics

    def batch_committed(
        self, outcome: BatchOutcome, elapsed_s: float, entries: Sequence[tuple[str, Any]]
    ) -> None:
        self.metrics.observe_batch(outcome, elapsed_s, entries)

    def operation_done(self, backend: str, operation: str, elapsed_s: float) -> None:
        self.metrics.op_seconds.labels(backend, operation).observe(elapsed_s)

    def operation_failed(self, backend: str, operation: str, error: BaseException) -> None:
        self.metrics.op_errors.labels(backend, operation, type(error).__name__).inc()


class CounterSync:
    """Copies counters kept by other objects into Prometheus counters as deltas."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], float] = {}

    def delta(self, key: tuple[str, ...], value: float) -> float:
        previous = self._last.get(key, 0.0)
        self._last[key] = value
        return value - previous if value >= previous else value


def sync_process_counters(rt: Runtime, metrics: PipelineMetrics, sync: CounterSync) -> None:
    """Cache, LLM, reclaim and reconnect counters of one consumer runtime."""
    cache = rt.classifier
    lanes = rt.lanes or [rt.consumer]
    # summed over the shards: one reclaiming lane and one commit group per served shard
    reclaims = [lane.reclaimer.stats for lane in lanes if lane.reclaims]
    commit_groups = list(
        {id(g): g for g in (lane.processor.committer.commit_group for lane in lanes)}.values()
    )
    for key, value, target in (
        (("cache", "hits"), cache.hits, metrics.cache_hits),
        (("cache", "misses"), cache.misses, metrics.cache_misses),
        (("reclaimed",), sum(r.reclaimed for r in reclaims), metrics.events_reclaimed),
        (("reclaim_lost",), sum(r.lost_to_trim for r in reclaims), metrics.events_lost_to_trim),
        (("sink_failures",), rt.consumer.stats.sink_failures, metrics.batch_failures),
        (("commit_calls",), sum(g.calls for g in commit_groups), metrics.commit_calls),
        (("commit_plans",), sum(g.plans for g in commit_groups), metrics.commit_plans),
        (("reads_cut_off",), rt.consumer.stats.reads_cut_off, metrics.reads_cut_off),
    ):
        if d := sync.delta(key, value):
            target.inc(d)
    if d := sync.delta(("redis_failures",), rt.consumer.stats.redis_failures):
        metrics.op_errors.labels("redis", "read", "ConnectionError").inc(d)
    dropped: collections.Counter[tuple[str, str]] = collections.Counter()
    for trimmer in rt.trimmers:
        dropped.update(trimmer.dropped)
    for (stream, cap), n in dropped.items():
        if d := sync.delta(("trimmed", stream, cap), n):
            metrics.stream_trimmed.labels(stream, cap).inc(d)
    metrics.draining.set(1 if rt.consumer.draining else 0)
    metrics.cache_bytes.set(cache.bytes)
    if rt.resolver is not None:
        sync_llm_stats(rt.resolver.refresh_stats(), metrics.llm, sync)


def sync_llm_stats(stats: LLMStats, llm: LLMMetrics, sync: CounterSync) -> None:
    """One process's LLMStats into the LLM families: counters as deltas, the calls since
    the last sync into the per-model histograms."""
    for model, n in stats.calls_by_model.items():
        if d := sync.delta(("llm_calls", model), n):
            llm.calls.labels(model).inc(d)
    for (model, kind), n in stats.tokens_by_model.items():
        if d := sync.delta(("llm_tokens", model, kind), n):
            llm.tokens.labels(model, kind).inc(d)
    for kind, n in stats.errors.items():
        if d := sync.delta(("llm_errors", kind), n):
            llm.errors.labels(kind).inc(d)
    for outcome, n in (
        ("verdict", stats.verdicts),
        ("cache_hit", stats.cache_hits),
        ("coalesced", stats.coalesced),
        ("invalid", stats.invalid_items),
        ("queued", stats.queued),
    ):
        if d := sync.delta(("llm_keys", outcome), n):
            llm.keys.labels(outcome).inc(d)
    for key, value, target in (
        ("llm_items", stats.items, llm.items),
        ("llm_fallback", stats.fallback_used, llm.fallback_used),
        ("llm_reclassified", stats.reclassified, llm.reclassified),
        ("llm_learned", stats.learned_patterns, llm.learned_patterns),
        ("llm_throttled", stats.throttled_items, llm.throttled_items),
        ("llm_overflow", stats.overflow_keys, llm.overflow_keys),
        ("llm_opened", stats.circuit_opened, llm.circuit_opened),
        ("llm_learning_capped", stats.learning_capped, llm.learning_capped),
    ):
        if d := sync.delta((key,), value):
            target.inc(d)
    for reason, n in stats.queue_dropped.items():
        if d := sync.delta(("llm_queue_dropped", reason), n):
            llm.queue_dropped.labels(reason).inc(d)
    for call in stats.drain_calls():
        llm.request_seconds.labels(call.model).observe(call.seconds)
        llm.request_items.labels(call.model).observe(call.items)
    set_circuit_state(llm.circuit_state, stats.circuit_state)


def set_circuit_state(gauge: Gauge, state: str) -> None:
    """Enum style: the current state's series is 1, the others 0 (an unknown state: closed).
    The new state is raised before the others are lowered: a scrape in between sees two
    states (`pomocore status` takes the worst), never none."""
    current = state.replace("-", "_") if state.replace("-", "_") in CIRCUIT_STATES else "closed"
    gauge.labels(current).set(1)
    for name in CIRCUIT_STATES:
        if name != current:
            gauge.labels(name).set(0)


async def sample_llm_shared(resolver: Any, llm: LLMMetrics) -> None:
    """Queue depth and age and the budget left, read from Redis (shared by all processes).
    Bounded by LLM_SHARED_SAMPLE_S; on failure the gauges keep their last values."""
    async with asyncio.timeout(LLM_SHARED_SAMPLE_S):
        depth = await resolver.queue.size()
        age = await resolver.queue.oldest_age()
        calls, tokens = await resolver.budget.remaining()
    llm.queue_depth.set(depth)
    if age is not None:
        llm.queue_oldest_age.set(age)
    llm.budget_remaining.labels("calls").set(calls)
    llm.budget_remaining.labels("tokens").set(tokens)


def counter_sync_task(rt: Runtime, metrics: PipelineMetrics) -> Task:
    """The background task that copies the runtime's own counters every SYNC_INTERVAL_S."""
    sync = CounterSync()

    async def sync_task(stop: asyncio.Event) -> None:
        while True:
            try:
                sync_process_counters(rt, metrics, sync)
            except Exception:  # metrics must never take the consumer down
                log.warning("metrics sync failed", exc_info=True)
            if rt.resolver is not None:
                try:
                    await sample_llm_shared(rt.resolver, metrics.llm)
                except Exception as exc:  # Redis down: the pipeline logs that already
                    log.debug("llm gauges not sampled: %s", type(exc).__name__)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SYNC_INTERVAL_S)

    return sync_task


# --- group-level gauges, sampled at scrape time by the serving process ---


# How the shards' samples add up to the group's (GroupSampler.sample, `pomocore status`):
# the oldest entry is the oldest of any shard, and a shard nobody reads is what matters.
_AGGREGATE: dict[str, Callable[[Iterable[float]], float]] = {
    "pomocore_oldest_pending_age_seconds": max,
    "pomocore_oldest_pending_idle_seconds": max,
    "pomocore_group_consumers": min,
    "pomocore_group_sample_up": min,
    "pomocore_derived_refresh_age_seconds": max,
}


def aggregate_shards(shards: dict[str, dict[str, float]]) -> dict[str, float]:
    """The shards' samples as one: summed, except the ages (max) and consumers (min). A
    value some shard lacks (its group does not exist yet) is left out."""
    samples = list(shards.values())
    names = set().union(*samples) if samples else set()
    return {
        name: _AGGREGATE.get(name, sum)([s[name] for s in samples])
        for name in names
        if all(name in s for s in samples)
    }


class GroupSampler(Collector):
    """XINFO GROUPS / XPENDING / XLEN of the consumer group, cached for SAMPLE_CACHE_S and
    waited for at most `timeout_s`; when a sample fails or is late, the last good one is
    served with `pomocore_group_sample_up 0`."""

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[], Any] | None = None,
        timeout_s: float = SAMPLE_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, dict[str, float]]] = (0.0, {})
        self._last_good: dict[str, dict[str, float]] = {}
        self._flight = SingleFlight(self._sample_or_reset, "pomocore-group-sampler")

    def _redis(self) -> Any:
        if self._client is None:
            if self._factory is not None:
                self._client = self._factory()
            else:
                self._client = sync_redis(self.settings, self.timeout_s)
        return self._client

    def _sample_or_reset(self) -> dict[str, dict[str, float]]:
        """`sample_shards()` in the sampler thread; a failed one drops its client."""
        try:
            return self.sample_shards()
        except Exception:
            self.close()
            raise

    def sample(self) -> dict[str, float]:
        """The group over every shard: counts summed, ages the oldest, consumers the
        fewest any shard has (a shard nobody reads is what an alert must see)."""
        return aggregate_shards(self.sample_shards())

    def sample_shards(self) -> dict[str, dict[str, float]]:
        """Each shard's stream key → its sample (one entry without shards)."""
        r = self._redis()
        return {k.stream_key: self._sample_shard(r, k) for k in self.settings.all_shard_keys}

    def _sample_shard(self, r: Any, keys: KeySpace) -> dict[str, float]:
        out: dict[str, float] = {"pomocore_group_sample_up": 1.0}
        groups = r.xinfo_groups(keys.stream_key) if r.exists(keys.stream_key) else []
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name != self.settings.group:
                continue
            if g.get("lag") is not None:
                out["pomocore_group_lag"] = float(g["lag"])
            out["pomocore_group_pending"] = float(g["pending"])
            out["pomocore_group_consumers"] = float(g["consumers"])
            if g["pending"]:
                oldest = r.xpending_range(
                    keys.stream_key, self.settings.group, min="-", max="+", count=1
                )
                if oldest:
                    first = oldest[0]
                    entry_id = first["message_id"]
                    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    out["pomocore_oldest_pending_age_seconds"] = max(
                        0.0, time.time() - entry_ms(entry_id) / 1000
                    )
                    out["pomocore_oldest_pending_idle_seconds"] = (
                        first["time_since_delivered"] / 1000
                    )
            else:
                out["pomocore_oldest_pending_age_seconds"] = 0.0
                out["pomocore_oldest_pending_idle_seconds"] = 0.0
        out["pomocore_stream_length"] = float(r.xlen(keys.stream_key))
        out["pomocore_dead_letter_length"] = float(r.xlen(keys.dead_letter_key))
        lost = r.get(keys.lost_to_trim_key)
        out[LOST_TO_TRIM_SAMPLE] = float(lost or 0)
        if self.settings.leaderboard_mode == "derived":
            stale = r.scard(keys.derived_stale_key) + r.scard(keys.derived_refreshing_key)
            out["pomocore_derived_stale_days"] = float(stale)
            last = r.get(keys.derived_last_refresh_key)
            if last is not None:
                out["pomocore_derived_refresh_age_seconds"] = max(0.0, time.time() - float(last))
        return out

    def values(self) -> dict[str, dict[str, float]]:
        """Each shard's stream key → its sample, as of at most SAMPLE_CACHE_S ago."""
        with self._lock:
            at, cached = self._cached
            if time.monotonic() - at < SAMPLE_CACHE_S:
                return cached
            try:
                values = self._flight.call(self.timeout_s)
            except Exception as exc:  # Redis away, hanging or failing: say so, on time
                log.warning("group sample failed", extra={"error": str(exc)[:200]})
                values = {
                    stream: {**last, "pomocore_group_sample_up": 0.0}
                    for stream, last in self._last_good.items()
                } or {self.settings.keys.stream_key: {"pomocore_group_sample_up": 0.0}}
            else:
                self._last_good = values
            self._cached = (time.monotonic(), values)
            return values

    def collect(self) -> Iterable[Metric]:
        """One series per shard's stream (`sum(pomocore_group_lag)` is the group's lag)."""
        shards = self.values()
        for name, doc in GROUP_GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=["stream", "group"])
            for stream, values in shards.items():
                if name in values:
                    family.add_metric([stream, self.settings.group], values[name])
            if family.samples:
                yield family

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class _Forward(Collector):
    """Exposes another registry's families (the in-memory default registry)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()


class BuildInfo(Collector):
    """`pomocore_build_info{version, python}` 1: which release each instance runs."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "pomocore_build_info", "the running pomocore release", labels=["version", "python"]
        )
        family.add_metric([package_version(), platform.python_version()], 1.0)
        yield family


HTTP_REQUEST_SECONDS = "pomocore_http_request_duration_seconds"
OTHER_ROUTE = "other"  # the `route` of every path that is not a route: 404s, scanners


class RequestLatency(Collector):
    """`pomocore_http_request_duration_seconds{route}`: the leaderboard API's answer time
    per route (the route's path, never the raw one: a client cannot add series by asking
    for new paths).

    Counted in this process's memory, not by a prometheus_client Histogram: the image sets
    PROMETHEUS_MULTIPROC_DIR (for the consumers), under which such a histogram writes mmap
    files into that directory, which nothing creates in the API's pod, and which the
    consumers' supervisor would aggregate where both run in one container."""

    def __init__(self, routes: Collection[str], buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self._bounds = tuple(buckets)
        self._lock = threading.Lock()
        # Every route's series from the start: rate() needs a sample before the first request.
        self._counts = {r: [0] * (len(self._bounds) + 1) for r in (*routes, OTHER_ROUTE)}
        self._sums = dict.fromkeys(self._counts, 0.0)

    def route(self, path: str) -> str:
        """The `route` label of a request path (its query ignored)."""
        path = path.split("?", 1)[0]
        return path if path in self._counts else OTHER_ROUTE

    def observe(self, path: str, seconds: float) -> None:
        route = self.route(path)
        index = bisect.bisect_left(self._bounds, seconds)  # `le`: a bound counts its own value
        with self._lock:
            self._counts[route][index] += 1
            self._sums[route] += seconds

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            HTTP_REQUEST_SECONDS,
            "leaderboard API: time from a request's head read to its answer sent, by route",
            labels=["route"],
        )
        with self._lock:
            counts = {r: list(c) for r, c in self._counts.items()}
            sums = dict(self._sums)
        bounds = [*(repr(float(b)) for b in self._bounds), "+Inf"]  # as Histogram writes `le`
        for route in sorted(counts):
            cumulative = itertools.accumulate(counts[route])
            family.add_metric([route], list(zip(bounds, cumulative, strict=True)), sums[route])
        yield family


def api_registry(latency: RequestLatency) -> CollectorRegistry:
    """What the leaderboard API's /metrics exposes: its request latency, the build info
    and its process's `process_*` metrics."""
    registry = CollectorRegistry()
    registry.register(latency)
    registry.register(BuildInfo())
    ProcessCollector(registry=registry)
    return registry


def package_version() -> str:
    try:
        return importlib.metadata.version("pomocore")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def serving_registry(sampler: GroupSampler | None) -> CollectorRegistry:
    """What /metrics exposes: the recorded metrics (aggregated over every process's files
    in multiprocess mode) plus the group gauges, the build info and the serving process's
    `process_*` metrics. The default registry carries a ProcessCollector of its own, but
    in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set: always in the image and in
    Kubernetes) only the files are read, so the collector is registered here."""
    registry = CollectorRegistry()
    if multiprocess_dir() is not None:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        ProcessCollector(registry=registry)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(BuildInfo())
    if sampler is not None:
        registry.register(sampler)
    return registry


# What `ProcessCollector` exposes on Linux (its families exist only where /proc does).
PROCESS_METRICS = {
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}


def metric_types() -> dict[str, str]:
    """Every series name pomocore exposes, as written in PromQL (`_total`, `_bucket`...),
    with its type: `counter` (counters and the parts of histograms, where rate() belongs)
    or `gauge`. The alert and dashboard tests check their queries against it."""
    types = dict.fromkeys(GROUP_GAUGES, "gauge")
    types["pomocore_build_info"] = "gauge"
    types.update(PROCESS_METRICS)
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    registry.register(RequestLatency(()))
    for family in registry.collect():
        if family.type == "counter":
            types[family.name + "_total"] = "counter"
        elif family.type == "histogram":
            types.update({family.name + s: "counter" for s in ("_bucket", "_sum", "_count")})
        else:
            types[family.name] = family.type
    return types


def metric_names() -> set[str]:
    """Every series name pomocore exposes (see `metric_types`)."""
    return set(metric_types())
