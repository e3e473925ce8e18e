"""`python -m benchmarks`: pomocore side by side with the Redis ceiling, a naive pipeline,
Celery and a plain exact implementation, on the same servers, in one session.

Variants a–h (benchmarks/variants.py lists them) each run as their own consumer process,
so CPU and RSS are per process.

Throughput = N / (last acknowledgement − GO). Latency is measured in a second pass at
half of the variant's median throughput: the parent publishes at that rate while the
consumers run, and each consumer records, per event, acknowledgement time − the
millisecond part of the stream entry id (for Celery: − the time the task was sent).

`--shards 1,3,6` runs instead the leaderboard-only pomocore (c) on a local 3-node Redis
Cluster with POMOCORE_SHARDS = each N, and reports Redis CPU per event per node
(benchmarks/shards.py).

Run from the repository root of a checkout, with the benchmark tools installed
(`make bench`, or `.venv/bin/python -m benchmarks --quick`). Results go to
benchmarks/runs/ (git-ignored) unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks.options import RUNS_DIR, SWEEPS, VARIANTS, BenchOptions
from benchmarks.session import run_bench
from benchmarks.shards import run_shard_bench
from pomocore.core.shards import MAX_SHARDS

SIZES = ("events", "slow_events", "mongo_events", "llm_events", "runs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes, one run (about a minute)")
    p.add_argument("--events", type=int, help="events per run for a, b, c, f (default 200000)")
    p.add_argument("--slow-events", type=int, help="events per run for d, e (default 5000)")
    p.add_argument(
        "--mongo-events", type=int, help="events per run for b, bounded by MongoDB (default 50000)"
    )
    p.add_argument("--runs", type=int, help="runs per variant (median, min, max; default 3)")
    p.add_argument(
        "--variants", default="a,b,c,d,e,f,g,h", help="comma list from a,b,c,d,e,f,g,h"
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        help=f"repeatable/comma list: {','.join(SWEEPS)} or all",
    )
    p.add_argument("--sweep-events", type=int, default=0, help="events per sweep run")
    p.add_argument("--batch-size", type=int, default=1000, help="COUNT / POMOCORE_BATCH_SIZE")
    p.add_argument("--processes", type=int, default=1, help="consumer processes per variant")
    p.add_argument("--users", type=int, default=3000, help="distinct users in the workload")
    p.add_argument(
        "--keys-per-template",
        type=int,
        default=200,
        help="workload distinct_variants (distinct (app,url,title) per template)",
    )
    p.add_argument("--llm-events", type=int, help="h: events per run (default 20000)")
    p.add_argument(
        "--llm-latency-ms", type=float, default=300.0, help="h: scripted LLM time per call"
    )
    p.add_argument(
        "--llm-error-rate", type=float, default=0.05, help="h: share of LLM calls answered 500"
    )
    p.add_argument(
        "--llm-unknown-share",
        type=float,
        default=0.10,
        help="h: share of events from apps/hosts no shipped pattern knows",
    )
    p.add_argument(
        "--shards",
        help="instead of the variants: (c) on a local 3-node Redis Cluster with"
        " POMOCORE_SHARDS = each of this comma list (e.g. 1,3,6); per-node Redis CPU",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the latency pass")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--profile",
        choices=("cprofile", "py-spy"),
        default="",
        help="also run variant c once under a profiler (output in --out)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=RUNS_DIR,
        help="directory for JSON, PNGs and profiles (default benchmarks/runs, git-ignored)",
    )


def _variants(text: str) -> str:
    variants = "".join(v.strip() for v in text.split(",") if v.strip())
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {','.join(sorted(unknown))}")
    return variants


def _sweeps(values: Sequence[str]) -> tuple[str, ...]:
    sweeps: list[str] = []
    for s in values:
        for name in (n.strip() for n in s.split(",")):
            if name == "all":
                sweeps.extend(x for x in SWEEPS if x != "rss")
            elif name in SWEEPS:
                sweeps.append(name)
            elif name:
                raise SystemExit(f"unknown sweep {name!r}: choose from {','.join(SWEEPS)}")
    return tuple(dict.fromkeys(sweeps))


def _shards(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        shards = tuple(dict.fromkeys(int(n) for n in text.split(",") if n.strip()))
    except ValueError:
        raise SystemExit(f"--shards: expected numbers like 1,3,6, got {text!r}") from None
    if not shards or not all(1 <= n <= MAX_SHARDS for n in shards):
        raise SystemExit(f"--shards: each between 1 and {MAX_SHARDS}, got {text!r}")
    return shards


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    o = BenchOptions(
        variants=_variants(args.variants),
        shards=_shards(args.shards),
        sweeps=_sweeps(args.sweep),
        batch_size=args.batch_size,
        processes=args.processes,
        users=args.users,
        distinct_variants=args.keys_per_template,
        latency=not args.no_latency,
        out=args.out,
        plots=not args.no_plots,
        sweep_events=args.sweep_events,
        profile=args.profile,
        llm_latency_ms=args.llm_latency_ms,
        llm_error_rate=args.llm_error_rate,
        llm_unknown_share=args.llm_unknown_share,
    )
    if args.quick:
        o = replace(o, events=20_000, slow_events=1_000, mongo_events=5_000, runs=1)
        o = replace(o, llm_events=5_000)
        o = replace(o, latency_seconds=3.0)
    given = {name: getattr(args, name) for name in SIZES if getattr(args, name) is not None}
    return replace(o, **given)  # sizes given on the command line win over --quick


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = options_from_args(build_parser().parse_args(argv))
    command = " ".join(["python -m benchmarks", *argv])
    if options.shards:
        run_shard_bench(options, command=command)
    else:
        run_bench(options, command=command)
    return 0
