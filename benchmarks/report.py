"""Results of a session: per-run and latency records, the summary with its ratios and
targets, the CPU ceiling of process scaling, the console table and the JSON files."""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measure import cdf, median, percentile
from benchmarks.options import VARIANTS
from pomocore.progress import Progress as TaskProgress


@dataclass
class RunResult:
    variant: str
    name: str
    events: int
    batch_size: int
    processes: int
    users: int
    distinct_variants: int
    elapsed_s: float
    events_per_s: float
    consumer_cpu_us_per_event: float
    redis_cpu_us_per_event: float
    redis_round_trips_per_1k: float
    mongo_round_trips_per_1k: float
    peak_rss_mb: float
    acked: int
    drained_exactly: bool
    cache_hit_ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LatencyResult:
    variant: str
    rate: float
    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cdf: list[tuple[float, float]]  # (latency ms, fraction)

    @classmethod
    def of(cls, variant: str, rate: float, sorted_ms: list[float]) -> LatencyResult:
        """The percentiles and CDF of latencies already sorted ascending."""
        return cls(
            variant=variant,
            rate=rate,
            events=len(sorted_ms),
            p50_ms=percentile(sorted_ms, 0.50),
            p95_ms=percentile(sorted_ms, 0.95),
            p99_ms=percentile(sorted_ms, 0.99),
            max_ms=sorted_ms[-1] if sorted_ms else math.nan,
            cdf=cdf(sorted_ms),
        )


class Progress:
    """One console line per run: its progress while it runs (a bar on a terminal, a plain
    line every few seconds elsewhere: pomocore.progress), its figures when done."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._run: TaskProgress | None = None
        self._label = ""

    def bar(self, label: str, done: int, total: int, started: float, force: bool = False) -> None:
        if self.quiet:
            return
        if self._run is None or label != self._label:
            self._close_run()
            self._run = TaskProgress(label, total, unit="events", stream=sys.stdout, leave=False)
            self._label = label
        self._run.update(done)

    def done(self, text: str) -> None:
        self._close_run()
        if not self.quiet:
            print(f"  {text}", flush=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _close_run(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None


def write_results(out: dict[str, Any], directory: Path) -> Path:
    """`bench-<time>.json` and `latest.json` (the same content) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1, default=str)
    path = directory / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def scaling_ceiling(
    consumer_us: float, redis_us: float, processes: int, cores: int
) -> tuple[float, str]:
    """The most events/s `processes` consumer processes can reach, from CPU per event alone
    (measured with one process), and what sets it: "consumers" (each process is one
    Python thread), "redis" (one core for Redis), or "cores" (consumers and Redis on the
    same `cores`). Latency-bound setups stay below it."""
    limits = {
        "consumers": processes * 1e6 / consumer_us if consumer_us > 0 else math.inf,
        "redis": 1e6 / redis_us if redis_us > 0 else math.inf,
        "cores": cores * 1e6 / (consumer_us + redis_us) if consumer_us + redis_us > 0 else math.inf,
    }
    limit = min(limits, key=lambda name: limits[name])
    return limits[limit], limit


def process_scaling(rows: Sequence[dict[str, Any]], cores: int) -> dict[str, dict[str, Any]]:
    """Per variant of a processes sweep: measured events/s with N processes over one
    process, beside the CPU ceiling of that ratio (scaling_ceiling of the one-process run)."""
    by_variant: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_variant[r["variant"]][int(r["extra"]["sweep"]["value"])] = r
    out: dict[str, dict[str, Any]] = {}
    for variant, runs in by_variant.items():
        one = runs.get(1)
        if one is None or one["events_per_s"] <= 0:
            continue
        cons, red = one["consumer_cpu_us_per_event"], one["redis_cpu_us_per_event"]
        points = {}
        for n, r in sorted(runs.items()):
            ceiling, limit = scaling_ceiling(cons, red, n, cores)
            points[n] = {
                "ratio": r["events_per_s"] / one["events_per_s"],
                "ceiling_ratio": ceiling / one["events_per_s"],
                "limited_by": limit,
            }
        out[variant] = {
            "redis_busy_one_process": one["events_per_s"] * red / 1e6,
            "points": points,
        }
    return out


MEDIAN_FIELDS = (
    "consumer_cpu_us_per_event",
    "redis_cpu_us_per_event",
    "redis_round_trips_per_1k",
    "mongo_round_trips_per_1k",
    "peak_rss_mb",
)


def summary(
    main: dict[str, list[RunResult]], latencies: dict[str, LatencyResult]
) -> dict[str, dict[str, Any]]:
    """Per variant: medians over its runs, latency percentiles, ratios; targets under c."""
    out = {v: _summary_row(v, runs, latencies.get(v)) for v, runs in main.items()}
    a = out.get("a", {}).get("events_per_s_median")
    f = out.get("f", {})
    for row in out.values():
        row["ratio_to_a"] = row["events_per_s_median"] / a if a else None
        row["ratio_to_f_bound"] = (
            row["events_per_s_median"] / f["redis_bound_events_per_s"] if f else None
        )
        row["ratio_to_f"] = row["events_per_s_median"] / f["events_per_s_median"] if f else None
    if "c" in out:
        out["c"]["targets"] = _targets(out)
    return out


def _summary_row(v: str, runs: list[RunResult], lat: LatencyResult | None) -> dict[str, Any]:
    eps = [r.events_per_s for r in runs]
    row: dict[str, Any] = {
        "name": VARIANTS[v][0],
        "description": VARIANTS[v][1],
        "events": runs[0].events,
        "runs": len(runs),
        "events_per_s_median": median(eps),
        "events_per_s_min": min(eps),
        "events_per_s_max": max(eps),
    }
    for attr in MEDIAN_FIELDS:
        row[attr] = median([getattr(r, attr) for r in runs])
    hit = [r.cache_hit_ratio for r in runs if r.cache_hit_ratio is not None]
    row["cache_hit_ratio"] = median(hit) if hit else None
    row["drained_exactly"] = all(r.drained_exactly for r in runs)
    redis_us = row["redis_cpu_us_per_event"]
    row["redis_bound_events_per_s"] = 1e6 / redis_us if redis_us > 0 else math.inf
    if lat:
        row.update(
            {
                "latency_rate": lat.rate,
                "p50_ms": lat.p50_ms,
                "p95_ms": lat.p95_ms,
                "p99_ms": lat.p99_ms,
            }
        )
    return row


def _targets(out: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The targets of issue #6 that this session's variants measure, named by their bar."""
    c, f = out["c"], out.get("f")
    targets = {}
    if f:
        targets["c / bound(f) >= 0.9"] = c["ratio_to_f_bound"]
        targets["c / f >= 1.5"] = c["ratio_to_f"]
    for v, need in (("d", 50), ("e", 30)):
        if v in out:
            targets[f"c / {v} >= {need}"] = c["events_per_s_median"] / out[v]["events_per_s_median"]
    if "b" in out:
        targets["b mongo round trips / 1k <= 3"] = out["b"]["mongo_round_trips_per_1k"]
    if "p99_ms" in c:
        targets["c p99 ms at half max <= 250"] = c["p99_ms"]
    return targets


def fmt(x: Any, spec: str = ",.0f") -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "–"
    return format(x, spec)


TABLE_HEAD = (
    f"{'variant':<15}{'events':>8}{'events/s (min–max)':>28}{'×a':>6}{'×bnd(f)':>8}"
    f"{'cons µs/ev':>11}{'Redis µs/ev':>12}{'bound/s':>9}{'p50':>7}{'p95':>7}{'p99':>7}"
    f"{'Redis rt/1k':>12}{'Mongo rt/1k':>12}{'RSS MB':>8}{'hit':>6}{'exact':>6}"
)


def print_table(out: dict[str, Any]) -> None:
    """The session on the console: main table, targets, sweeps, process scaling."""
    rows = out.get("summary", {})
    if not rows:
        return
    m = out["machine"]
    print(
        f"\nMachine: {m['nproc']} CPUs, {m['cpu_model']}; {m['redis_server']}; Python {m['python']}"
    )
    print(TABLE_HEAD)
    print("─" * len(TABLE_HEAD))
    for v, row in rows.items():
        print(_table_line(v, row))
    print("latency p50/p95/p99 in ms, measured at half of each variant's median throughput")
    for name, value in rows.get("c", {}).get("targets", {}).items():
        print(f"  target {name:<36} {fmt(value, '.2f')}")
    for sweep, sweep_rows in out.get("sweeps", {}).items():
        print(f"\nsweep {sweep}")
        for r in sweep_rows:
            print(_sweep_line(sweep, r))
    _print_scaling(out.get("process_scaling", {}))
    _print_llm(out.get("llm") or {})


def _table_line(v: str, row: dict[str, Any]) -> str:
    lo, hi = fmt(row["events_per_s_min"]), fmt(row["events_per_s_max"])
    rng = f"{fmt(row['events_per_s_median'])} ({lo}–{hi})"
    return (
        f"{v + ' ' + row['name']:<15}{row['events']:>8,}{rng:>28}"
        f"{fmt(row['ratio_to_a'], '.3f'):>6}{fmt(row['ratio_to_f_bound'], '.2f'):>8}"
        f"{fmt(row['consumer_cpu_us_per_event'], '.1f'):>11}"
        f"{fmt(row['redis_cpu_us_per_event'], '.1f'):>12}"
        f"{fmt(row['redis_bound_events_per_s']):>9}"
        f"{fmt(row.get('p50_ms'), '.1f'):>7}{fmt(row.get('p95_ms'), '.1f'):>7}"
        f"{fmt(row.get('p99_ms'), '.1f'):>7}"
        f"{fmt(row['redis_round_trips_per_1k'], '.1f'):>12}"
        f"{fmt(row['mongo_round_trips_per_1k'], '.2f'):>12}"
        f"{fmt(row['peak_rss_mb'], '.0f'):>8}{fmt(row['cache_hit_ratio'], '.2f'):>6}"
        f"{'yes' if row['drained_exactly'] else 'NO':>6}"
    )


def _sweep_line(sweep: str, r: dict[str, Any]) -> str:
    value = r["extra"]["sweep"]["value"]
    hit = r.get("cache_hit_ratio")
    return (
        f"  {sweep}={value:>9,} {r['variant']} {r['name']:<12} {r['events_per_s']:>9,.0f}/s"
        f"  cons {r['consumer_cpu_us_per_event']:6.1f} µs/ev  Redis"
        f" {r['redis_cpu_us_per_event']:6.1f} µs/ev  RSS {r['peak_rss_mb']:6.0f} MB"
        + (f"  hit {hit:.2f}" if hit is not None else "")
        + ("" if r["drained_exactly"] else "  NOT EXACT")
    )


def _print_scaling(scaling_by_variant: dict[str, dict[str, Any]]) -> None:
    for variant, scaling in scaling_by_variant.items():
        busy = scaling["redis_busy_one_process"]
        print(f"  processes, {variant}: Redis {busy:.0%} busy with one process")
        for n, point in scaling["points"].items():
            print(
                f"    {n} vs 1: {point['ratio']:.2f}x measured, CPU ceiling"
                f" {point['ceiling_ratio']:.2f}x (set by {point['limited_by']})"
            )


def _print_llm(llm: dict[str, Any]) -> None:
    """Variant h: what the LLM path costs (benchmarks/llm_path.py)."""
    if not llm:
        return
    st = llm["settings"]
    print(
        f"\nLLM path (h): scripted server {st['llm_latency_ms']:.0f} ms/call,"
        f" {st['llm_error_rate']:.0%} HTTP 500;"
        f" {st['unknown_share']:.0%} of events from unknown apps/hosts"
    )
    for name in ("first", "repeat"):
        p = llm[name]
        print(
            f"  {name:<7} {fmt(p['events_per_s']):>8} events/s  LLM calls {fmt(p['llm_calls'])}"
            f" = {fmt(p['calls_per_1k_events'], '.2f')} /1k events,"
            f" {fmt(p['calls_per_unknown_key'], '.3f')} per distinct unknown key"
            f" ({fmt(p['distinct_unknown_keys'])}); learned patterns {fmt(p['learned_patterns'])}"
        )
    lat = llm.get("latency")
    if not lat:
        return
    print(f"  latency at {fmt(lat['rate'])} events/s, p50 / p99 ms:")
    for label in ("with_llm", "without_llm"):
        groups = lat[label]
        print(
            f"    {label:<12}"
            + "".join(
                f"  {g} {fmt(groups[g]['p50_ms'], '.0f')} / {fmt(groups[g]['p99_ms'], '.0f')}"
                f" ({groups[g]['events']:,} ev)"
                for g in ("llm", "patterns")
            )
        )
    added = fmt(lat["patterns_p99_added_ms"], "+.0f")
    print(f"  events the patterns decide: p99 {added} ms with the LLM than without")
    resolver = lat.get("resolver", {})
    if "overflow_keys" in resolver:
        print(
            f"  with the LLM: {fmt(resolver['verdicts'])} LLM verdicts,"
            f" {fmt(resolver['overflow_keys'])} keys deferred (every waiting slot taken),"
            f" {fmt(resolver['queued'])} queued in all"
        )
