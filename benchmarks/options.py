"""What a benchmark session runs: the variants, the sweeps and the options of one session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VARIANTS: dict[str, tuple[str, str]] = {
    "a": ("ceiling", "XREADGROUP COUNT n + XACK, redis-py asyncio + hiredis + uvloop"),
    "b": ("pomocore", "pomocore, all sinks (MongoDB + leaderboard)"),
    "c": ("pomocore-lb", "pomocore, POMOCORE_SINKS=leaderboard"),
    "d": ("naive", "per message: lookup, insert, ZINCRBYs, XACK"),
    "e": ("celery", "Celery task per event, Redis broker, solo pool"),
    "f": ("plain", "read, dict classify, aggregate, 1 Lua ack+ZINCRBY"),
    "g": ("pomocore-derived", "c with POMOCORE_LEADERBOARD_MODE=derived (refresh every 1 s)"),
}
MONGO_VARIANTS = frozenset("bd")
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
    variants: str = "abcdefg"
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

    def events_for(self, variant: str) -> int:
        """Events per run of `variant`: the slow ones and the MongoDB one run fewer."""
        if variant in SLOW_VARIANTS:
            return min(self.slow_events, self.events)
        if variant == "b":
            return min(self.mongo_events, self.events)
        return self.events
