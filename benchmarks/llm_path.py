"""Variant h, the LLM path: the real consumer (all sinks) with the LLM configured against
a scripted OpenAI-compatible server the harness starts (tests/support/fake_llm.py), on
the demo workload plus a share of events of apps and hosts no shipped pattern knows.

Per round (`--runs`), two throughput runs share one MongoDB database and one set of
Redis keys: **first sight** (nothing known yet) and **repeat** (the same workload shape
with new seeds and new titles for the same unknown apps/hosts, read by a fresh consumer
process: what it still asks the LLM is what memory and learned patterns did not cover).
Then a latency pass at a fixed rate, first sight, splits per-event latency into events
whose key no shipped pattern decides ("llm": they wait for the resolver) and the others
("patterns"), and the same pass without an LLM says how much the latter wait behind the
former. LLM calls are counted by the scripted server (every attempt, retries included).
"""

from __future__ import annotations

import itertools
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo import MongoClient

from benchmarks import protocol
from benchmarks.measure import median, percentile
from benchmarks.options import BenchOptions, Feed, RunShape, SpecOverride
from benchmarks.report import LatencyResult, RunResult
from benchmarks.variants import BENCH_LLM_CALLS_PER_MIN
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.llm.learning import REVIEW_COLLECTION
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.classifiers.urls import split_url
from pomocore.core.keys import KeySpace
from pomocore.workload import Workload
from tests.support.fake_llm import Behaviour, FakeLLM, Item, Request

if TYPE_CHECKING:
    from benchmarks.protocol import RunNames
    from benchmarks.session import Bench

Fields = dict[str, str | bytes]

UNKNOWN_APPS = 24  # apps no shipped pattern knows (Windows/macOS/Linux-style names)
UNKNOWN_HOSTS = 24  # sites no shipped pattern knows, opened in a browser
TITLES_PER_SUBJECT = 40  # distinct titles per unknown app/host and pass
# The scripted model's verdicts: one per app/host (learning needs unanimous verdicts),
# spread over work and non-work categories; never Browsing (not learnable for an app).
VERDICTS = ("Development", "Education", "Finance", "Game", "Music", "Entertainment")
FIRST_SEED, REPEAT_SEED, LATENCY_SEED = 21, 22, 23


def subject_rule(item: Item) -> str:
    """The scripted model: a fixed category per host (browser URL) or app name."""
    url = item.get("url", "")
    subject = split_url(url)[1].removeprefix("www.") if url else item.get("app", "")
    return VERDICTS[zlib.crc32(subject.encode()) % len(VERDICTS)]


@dataclass
class LlmWorkload:
    """The demo workload, with `unknown_share` of its events replaced by events of the
    unknown apps/hosts; `title_base` picks which titles they carry (the repeat pass uses
    titles the first pass never sent)."""

    users: int
    distinct_variants: int
    unknown_share: float
    seed: int
    title_base: int = 0
    rng: random.Random = field(init=False)
    base: Workload = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed * 7919)
        self.base = Workload(
            users=self.users, distinct_variants=self.distinct_variants, seed=self.seed
        )

    def events(self, n: int) -> Iterator[Fields]:
        for _ in range(n):
            fields = self.base.event()
            if self.rng.random() < self.unknown_share and "userId" in fields:
                fields.update(self.unknown())
            yield fields

    def unknown(self) -> dict[str, str]:
        rng = self.rng
        n = self.title_base + rng.randrange(TITLES_PER_SUBJECT)
        i = rng.randrange(UNKNOWN_APPS + UNKNOWN_HOSTS)
        if i < UNKNOWN_APPS:
            return {"app": f"Quarkle{i:02d} Studio", "url": "", "title": f"Untitled {n}"}
        host = f"zentrovo{i:02d}.example"
        return {"app": "Google Chrome", "url": f"https://{host}/p/{n}", "title": f"Page {n}"}


class UnknownKeys:
    """Counts the distinct keys of a stream that no shipped pattern decides."""

    def __init__(self) -> None:
        self.engine = Classifier.from_patterns(load_default_pattern_set())
        self.seen: dict[tuple[str, str, str], bool] = {}

    def observe(self, fields: Fields) -> None:
        key = (_text(fields, "app"), _text(fields, "url"), _text(fields, "title"))
        if key not in self.seen:
            self.seen[key] = not self.engine.classify(*key).decided

    @property
    def count(self) -> int:
        return sum(self.seen.values())


def _text(fields: Fields, name: str) -> str:
    value = fields.get(name, "")
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def scripted_server(o: BenchOptions) -> FakeLLM:
    """The scripted model: `llm_latency_ms` per call, `llm_error_rate` of calls HTTP 500."""
    fake = FakeLLM(rule=subject_rule)
    rng = random.Random(5)
    ok = FakeLLM.slow(o.llm_latency_ms / 1000)
    error = FakeLLM.error(500)

    def choose(_req: Request) -> Behaviour:  # under the server's lock
        return error if rng.random() < o.llm_error_rate else ok

    fake.choose = choose
    return fake


@dataclass
class Phase:
    """One throughput run of h and what the LLM cost in it."""

    name: str  # "first" or "repeat"
    result: RunResult
    llm_calls: int
    distinct_unknown_keys: int
    learned_total: int  # patterns learned in the run's database by the end of this phase

    def figures(self) -> dict[str, Any]:
        r = self.result
        llm = r.extra.get("llm_stats", {})
        return {
            "events": r.events,
            "events_per_s": r.events_per_s,
            "drained_exactly": r.drained_exactly,
            "llm_calls": self.llm_calls,
            "calls_per_1k_events": self.llm_calls / r.events * 1000 if r.events else math.nan,
            "distinct_unknown_keys": self.distinct_unknown_keys,
            "calls_per_unknown_key": (
                self.llm_calls / self.distinct_unknown_keys
                if self.distinct_unknown_keys
                else math.nan
            ),
            "learned_patterns": self.learned_total,
            "resolver": llm,
        }


class LlmPath:
    """Variant h's runs in one session (`bench` owns the servers and the run protocol)."""

    def __init__(self, bench: Bench, o: BenchOptions, fake: FakeLLM) -> None:
        self.bench = bench
        self.o = o
        self.fake = fake
        self.latency_resolver: dict[str, Any] = {}  # the latency pass with the LLM

    def _workload(self, seed: int, title_base: int = 0) -> LlmWorkload:
        o = self.o
        return LlmWorkload(o.users, o.distinct_variants, o.llm_unknown_share, seed, title_base)

    def _tag(self, names: RunNames) -> str:
        return f"{self.bench.prefix}r{names.run}"

    def _stream(self, names: RunNames, name: str) -> tuple[str, str]:
        """(stream name, its key under the run's hash tag)."""
        stream = f"{self.bench.prefix}r{names.run}:{name}"
        return stream, KeySpace(stream=stream, hash_tag=self._tag(names)).stream_key

    def _feed(self, names: RunNames, name: str, expected: int, llm: bool) -> Feed:
        stream, key = self._stream(names, name)
        self.bench.r.xgroup_create(key, names.group, id="0", mkstream=True)
        override = SpecOverride(llm_url=self.fake.url if llm else "", key_hash_tag=self._tag(names))
        return Feed(key, expected, stream, override)

    def _publish(self, key: str, workload: LlmWorkload, n: int) -> int:
        """Publish `n` events; returns the distinct keys among them no pattern decides."""
        unknown = UnknownKeys()
        events = workload.events(n)
        published = 0
        while published < n:
            pipe = self.bench.r.pipeline(transaction=False)
            for fields in itertools.islice(events, 2000):
                unknown.observe(fields)
                flat = [x for kv in fields.items() for x in kv]
                pipe.execute_command("XADD", key, "*", *flat)  # type: ignore[no-untyped-call]
                published += 1
            pipe.execute()
        return unknown.count

    def _cleanup(self, names: RunNames, streams: list[str]) -> None:
        for key in streams:
            self.bench.cleanup(names, key)
        self.bench.unlink_matching(f"{{{self._tag(names)}}}*")

    # --- throughput: first sight, then repeat ---

    def round(self, i: int) -> tuple[Phase, Phase]:
        names = self.bench.new_names("h")
        keys: list[str] = []
        try:
            first = self._phase(names, keys, "first", self._workload(FIRST_SEED + 10 * i), i)
            later = self._workload(REPEAT_SEED + 10 * i, title_base=TITLES_PER_SUBJECT)
            repeat = self._phase(names, keys, "repeat", later, i)
        finally:
            self._cleanup(names, keys)
        return first, repeat

    def _phase(
        self, names: RunNames, keys: list[str], name: str, workload: LlmWorkload, i: int
    ) -> Phase:
        n = self.o.events_for("h")
        feed = self._feed(names, name, n, llm=True)
        assert feed.stream is not None
        keys.append(feed.stream)
        unknown = self._publish(feed.stream, workload, n)
        calls0 = self.fake.calls
        shape = RunShape(n, self.o.batch_size, self.o.processes)
        title = f"h pomocore-llm {name} run {i + 1}/{self.o.runs}"
        result, _specs = self.bench.run_on("h", shape, names, feed, title)
        return Phase(name, result, self.fake.calls - calls0, unknown, self._learned(names))

    def _learned(self, names: RunNames) -> int:
        """Patterns learned so far in the run's database (the review log of learning)."""
        client: MongoClient[dict[str, Any]] = MongoClient(self.bench.mongo_uri)
        try:
            return client[names.mongo_db][REVIEW_COLLECTION].count_documents({})
        finally:
            client.close()

    # --- latency: first sight at a fixed rate, with and without the LLM ---

    def latency(self, rate: float, llm: bool) -> dict[str, list[float]]:
        """Sorted per-event latencies (ms): "all", "llm" and "patterns". The resolver's
        counters of the pass with the LLM go to `latency_resolver` (how many keys were
        deferred because every waiting slot was taken, issue #15 §6)."""
        names = self.bench.new_names("h")
        expected = max(1000, int(rate * self.o.latency_seconds))
        feed = self._feed(names, "live", expected, llm)
        assert feed.stream is not None
        feed.paced = self._workload(LATENCY_SEED).events(expected)
        shape = RunShape(expected, self.o.batch_size, self.o.processes, latency_rate=rate)
        title = f"h pomocore-llm latency{'' if llm else ' (no LLM)'}"
        try:
            result, specs = self.bench.run_on("h", shape, names, feed, title)
        finally:
            self._cleanup(names, [feed.stream])
        if llm:
            self.latency_resolver = result.extra.get("llm_stats", {})
        files = [Path(s.result_file) for s in specs]
        return {
            group: sorted(x for f in files for x in protocol.read_latencies(f, group))
            for group in ("", "llm", "patterns")
        }


def run_llm_path(
    bench: Bench, o: BenchOptions
) -> tuple[list[RunResult], LatencyResult | None, dict[str, Any]]:
    """Variant h: its first-sight runs (for the main table), the latency of all its events
    (the latency CDF) and the LLM section of the session's JSON."""
    with scripted_server(o) as fake:
        path = LlmPath(bench, o, fake)
        rounds = [path.round(i) for i in range(o.runs)]
        section: dict[str, Any] = {
            "settings": _settings(o),
            "rounds": [{p.name: p.figures() for p in r} for r in rounds],
        }
        for k, name in enumerate(("first", "repeat")):
            section[name] = _medians([r[k].figures() for r in rounds])
        firsts = [r[0].result for r in rounds]
        latency = None
        if o.latency:
            rate = 0.5 * median([r.events_per_s for r in firsts])
            with_llm, without = path.latency(rate, True), path.latency(rate, False)
            section["latency"] = _latency_section(rate, with_llm, without)
            section["latency"]["resolver"] = path.latency_resolver
            latency = _latency_result(rate, with_llm[""])
    return firsts, latency, section


def _settings(o: BenchOptions) -> dict[str, Any]:
    return {
        "llm_latency_ms": o.llm_latency_ms,
        "llm_error_rate": o.llm_error_rate,
        "unknown_share": o.llm_unknown_share,
        "unknown_apps": UNKNOWN_APPS,
        "unknown_hosts": UNKNOWN_HOSTS,
        "titles_per_subject_and_pass": TITLES_PER_SUBJECT,
        "calls_per_min": BENCH_LLM_CALLS_PER_MIN,
    }


def _medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    names = (
        "events_per_s",
        "llm_calls",
        "calls_per_1k_events",
        "distinct_unknown_keys",
        "calls_per_unknown_key",
        "learned_patterns",
    )
    out: dict[str, Any] = {name: median([r[name] for r in rows]) for name in names}
    out["drained_exactly"] = all(r["drained_exactly"] for r in rows)
    return out


def _percentiles(lat: list[float]) -> dict[str, float]:
    return {
        "events": len(lat),
        "p50_ms": percentile(lat, 0.50),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": lat[-1] if lat else math.nan,
    }


def _latency_section(
    rate: float, with_llm: dict[str, list[float]], without: dict[str, list[float]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": rate}
    for label, groups in (("with_llm", with_llm), ("without_llm", without)):
        out[label] = {group or "all": _percentiles(lat) for group, lat in groups.items()}
    # what events the patterns decide lose by sharing batches with events that wait
    out["patterns_p99_added_ms"] = (
        out["with_llm"]["patterns"]["p99_ms"] - out["without_llm"]["patterns"]["p99_ms"]
    )
    return out


def _latency_result(rate: float, lat: list[float]) -> LatencyResult:
    return LatencyResult.of("h", rate, lat)
