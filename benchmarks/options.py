"""What a benchmark session runs: the variants, the sweeps and the options of one session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.protocol import ChildSpec

VARIANTS: dict[str, tuple[str, str]] = {
    "a": ("ceiling", "XREADGROUP COUNT n + XACK, redis-py asyncio + hiredis + uvloop"),
    "b": ("pomocore", "pomocore, all sinks (MongoDB + leaderboard)"),
    "c": ("pomocore-lb", "pomocore, POMOCORE_SINKS=leaderboard"),
    "d": ("naive", "per message: lookup, insert, ZINCRBYs, XACK"),
    "e": ("celery", "Celery task per event, Redis broker, solo pool"),
    "f": ("plain", "read, dict classify, aggregate, 1 Lua ack+ZINCRBY"),
    "g": ("pomocore-derived", "c with POMOCORE_LEADERBOARD_MODE=derived (refresh every 1 s)"),
    "h": ("pomocore-llm", "b with the LLM, scripted server, a share of unknown apps/hosts"),
}
MONGO_VARIANTS = frozenset("bdh")
# Variants with a session flow of their own (benchmarks/llm_path.py), not the main loop.
OWN_FLOW_VARIANTS = frozenset("h")
SLOW_VARIANTS = frozenset("de")
SWEEPS = ("batch", "processes", "users", "hit", "rss")
SWEEP_VALUES: dict[str, tuple[int, ...]] = {
    "batch": (10, 100, 500, 1000, 5000),
    "processes": (1, 2, 3, 4),
    "users": (50, 2_000, 20_000, 100_000),
    "hit": (1, 200, 5_000, 1_000_000),  # Workload.distinct_variants: {n} values per template
    "rss": (100_000, 1_000_000),  # events, with 1M distinct URLs
}
SWEEP_VARIANTS = {"batch": "acf", "processes": "acfg", "users": "cf", "hit": "cf", "rss": "c"}

# Where runs write by default: inside the checkout wherever the command starts, git-ignored
# (the figures worth keeping go into benchmarks/README.md, the plots it shows into results/).
RUNS_DIR = Path(__file__).resolve().parent / "runs"


@dataclass(frozen=True)
class BenchOptions:
    events: int = 200_000
    slow_events: int = 5_000  # for d and e (per-event figures are scaled, not the counts)
    mongo_events: int = 50_000  # for b: bounded by the MongoDB server (nx-27017 here)
    runs: int = 3
    variants: str = "abcdefgh"
    sweeps: tuple[str, ...] = ()
    sweep_events: int = 0  # 0 = events // 2
    batch_size: int = 1000
    processes: int = 1
    users: int = 3_000  # pomocore demo's default
    distinct_variants: int = 200  # pomocore demo's value
    latency: bool = True
    latency_seconds: float = 6.0
    out: Path = RUNS_DIR
    plots: bool = True
    quiet: bool = False
    profile: str = ""  # "", "cprofile" or "py-spy": profile the consumer of variant c
    # h: the LLM path (benchmarks/llm_path.py)
    llm_events: int = 20_000  # per throughput run, first sight and repeat each
    llm_latency_ms: float = 300.0  # the scripted server's time per call
    llm_error_rate: float = 0.05  # share of calls answered HTTP 500
    llm_unknown_share: float = 0.10  # events of apps/hosts no shipped pattern knows
    # shard scaling (benchmarks/shards.py): POMOCORE_SHARDS values on a local 3-node cluster
    shards: tuple[int, ...] = ()
    # with --shards: the Zipf exponent of user activity (Workload's 1.1; 0 = uniform users)
    zipf_s: float = 1.1

    def events_for(self, variant: str) -> int:
        """Events per run of `variant`: the slow ones and the MongoDB one run fewer."""
        if variant in SLOW_VARIANTS:
            return min(self.slow_events, self.events)
        if variant == "b":
            return min(self.mongo_events, self.events)
        if variant == "h":
            return min(self.llm_events, self.events)
        return self.events


@dataclass(frozen=True)
class RunShape:
    """What one run varies: sizes, the workload's shape, and the latency pass's rate."""

    events: int
    batch_size: int
    processes: int = 1
    users: int = 0  # 0: the session's option
    distinct_variants: int = 0  # 0: the session's option
    latency_rate: float | None = None  # None: the throughput pass
    profile: str = ""


@dataclass(frozen=True)
class SpecOverride:
    """What variant h's consumers run with on top of a run's spec: the scripted LLM server
    ("" = the same consumer without an LLM) and the {hash tag} of every key of the run."""

    llm_url: str
    key_hash_tag: str

    def apply(self, spec: ChildSpec) -> ChildSpec:
        return replace(spec, llm_url=self.llm_url, key_hash_tag=self.key_hash_tag)


@dataclass
class Feed:
    """What a run reads: its stream key (None for Celery) and how many entries it must
    drain; for variant h also the stream's name without the key's {hash tag}, what its
    consumers' specs get on top (`SpecOverride`), and in a latency pass the events to
    publish."""

    stream: str | None
    expected: int
    stream_name: str | None = None
    override: SpecOverride | None = None
    paced: Iterator[dict[str, str | bytes]] | None = None

    def specs(self, specs: list[ChildSpec]) -> list[ChildSpec]:
        """The run's specs with the override applied (as they are without one)."""
        override = self.override
        return specs if override is None else [override.apply(s) for s in specs]
