"""The shard scaling session's summary (benchmarks/shards.py): medians per N, the CPU
ceiling of each, the issue #17 targets, and the capacity table; printed as Markdown
tables (benchmarks/README.md and docs/operations.md quote them).

    .venv/bin/python -m benchmarks.shard_report RESULT.json [RESULT.json ...]

prints the tables again from sessions' JSON files, their runs pooled per N (medians and
ranges over every run of every session given).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.measure import median
from benchmarks.report import fmt

CAPACITY_NODES = (3, 6, 12, 24)  # one node: the N = 1 row, measured
TOTAL_GROWTH_TARGET = 1.10  # issue #17: total Redis CPU per event grows by at most 10 %


@dataclass
class ShardRun:
    """The figures of one run with `shards` shards."""

    shards: int
    events: int
    processes: int
    elapsed_s: float
    events_per_s: float
    consumer_cpu_us_per_event: float
    node_cpu_us_per_event: list[float]  # per cluster node, in slot order
    redis_cpu_us_per_event: float  # all nodes together
    busiest_node_share: float  # of the total Redis CPU
    events_per_shard: list[int]
    acked: int
    drained_exactly: bool
    extra: dict[str, Any] = field(default_factory=dict)


def shard_ceiling(
    consumer_us: float, busiest_node_us: float, total_us: float, processes: int, cores: int
) -> tuple[dict[str, float], str]:
    """The events/s each CPU limit allows and the one that sets the ceiling: "consumers"
    (each process is one Python thread), "busiest node" (a Redis node is one core: the
    per-node bound), "cores" (here the consumers and every node share `cores`)."""
    limits = {
        "consumers": _per_s(consumer_us, processes),
        "busiest node": _per_s(busiest_node_us, 1),
        "cores": _per_s(consumer_us + total_us, cores),
    }
    return limits, min(limits, key=lambda name: limits[name])


def _per_s(us_per_event: float, cores: int) -> float:
    return cores * 1e6 / us_per_event if us_per_event > 0 else math.inf


def _row(runs: Sequence[ShardRun], cores: int) -> dict[str, Any]:
    eps = [r.events_per_s for r in runs]
    nodes = len(runs[0].node_cpu_us_per_event)
    total = [r.redis_cpu_us_per_event for r in runs]
    busiest = [max(r.node_cpu_us_per_event) for r in runs]
    consumer = [r.consumer_cpu_us_per_event for r in runs]
    row: dict[str, Any] = {
        "events": runs[0].events,
        "runs": len(runs),
        "processes": runs[0].processes,
        "lanes_per_process": runs[0].extra.get("lanes"),
        "events_per_shard": runs[0].events_per_shard,
        "events_per_s_median": median(eps),
        "events_per_s_min": min(eps),
        "events_per_s_max": max(eps),
        "consumer_cpu_us_per_event": median(consumer),
        "consumer_cpu_us_per_event_range": [min(consumer), max(consumer)],
        # per node, busiest first in each run: which node a tag lands on is arbitrary (N = 1
        # sits on another node in another session), how unevenly the nodes work is not
        "nodes_busiest_first_us_per_event": [
            median([sorted(r.node_cpu_us_per_event, reverse=True)[i] for r in runs])
            for i in range(nodes)
        ],
        "redis_cpu_us_per_event": median(total),
        "redis_cpu_us_per_event_range": [min(total), max(total)],
        "busiest_node_us_per_event": median(busiest),
        "busiest_node_us_per_event_range": [min(busiest), max(busiest)],
        "busiest_node_share": median([r.busiest_node_share for r in runs]),
        "drained_exactly": all(r.drained_exactly for r in runs),
    }
    row["commands"] = _median_commands(runs)
    # CPU the run got: consumers and nodes together, in cores (the rest of the machine's
    # cores went to whatever else ran; far below `cores`, the ceiling is out of reach)
    row["busy_cores"] = median(
        [r.events_per_s * (r.consumer_cpu_us_per_event + r.redis_cpu_us_per_event) / 1e6
         for r in runs]
    )  # fmt: skip
    row["per_node_bound_events_per_s"] = _per_s(row["busiest_node_us_per_event"], 1)
    limits, limit = shard_ceiling(
        row["consumer_cpu_us_per_event"],
        row["busiest_node_us_per_event"],
        row["redis_cpu_us_per_event"],
        row["processes"],
        cores,
    )
    row["ceiling_limits"] = limits
    row["ceiling_events_per_s"] = limits[limit]
    row["ceiling_limited_by"] = limit
    return row


def _median_commands(runs: Sequence[ShardRun]) -> dict[str, dict[str, float]]:
    names = {name for r in runs for name in r.extra.get("commands", {})}
    out = {}
    for name in names:
        per_run = [r.extra.get("commands", {}).get(name, {}) for r in runs]
        out[name] = {
            k: median([c.get(k, 0.0) for c in per_run]) for k in ("calls_per_1k", "us_per_event")
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us_per_event"]))


def shard_summary(runs: Mapping[int, Sequence[ShardRun]], cores: int) -> dict[str, Any]:
    """Per N its medians and ceiling; the targets against N = 1; the capacity table."""
    rows = {n: _row(rs, cores) for n, rs in runs.items() if rs}
    return {
        "rows": {str(n): row for n, row in rows.items()},
        "targets": _targets(rows),
        "capacity": capacity(rows[max(rows)]) if rows else [],
    }


def _targets(rows: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Against N = 1 (one node does all the work): per N, the busiest node's Redis CPU per
    event (ideal: 1 / min(N, nodes)) and the total's (target: at most +10 %)."""
    one = rows.get(1)
    if one is None:
        return {}
    out = {}
    for n, row in rows.items():
        if n == 1:
            continue
        nodes = len(row["nodes_busiest_first_us_per_event"])
        out[str(n)] = {
            "busiest_node_ratio": row["busiest_node_us_per_event"]
            / one["busiest_node_us_per_event"],
            "busiest_node_ideal": 1 / min(n, nodes),
            "total_ratio": row["redis_cpu_us_per_event"] / one["redis_cpu_us_per_event"],
            "total_target": TOTAL_GROWTH_TARGET,
        }
    return out


def capacity(row: Mapping[str, Any]) -> list[dict[str, float]]:
    """What M masters would bear with shards spread evenly (N a multiple of M), from the
    total Redis CPU per event measured with the most shards: each node takes 1/M of it."""
    total, consumer = row["redis_cpu_us_per_event"], row["consumer_cpu_us_per_event"]
    out = []
    for m in CAPACITY_NODES:
        per_node_us = total / m
        bound = _per_s(per_node_us, 1)
        out.append(
            {
                "nodes": m,
                "per_node_us_per_event": per_node_us,
                "redis_bound_events_per_s": bound,
                "consumer_cores_at_bound": bound * consumer / 1e6,
            }
        )
    return out


def print_shard_table(out: Mapping[str, Any]) -> None:
    """The session as Markdown tables: per N, targets, capacity."""
    s = out["shards"]
    rows: dict[str, dict[str, Any]] = s["rows"]
    if not rows:
        return
    m = out["machine"]
    print(f"\nMachine: {m['nproc']} CPUs, {m['cpu_model']}; {m['redis_server']}; {m['cluster']}")
    nodes = len(next(iter(rows.values()))["nodes_busiest_first_us_per_event"])
    node_heads = " busiest node |" + "".join(f" node {i + 1} |" for i in range(1, nodes))
    print(
        "\n| N | events/s, median (min–max) | consumer µs/ev |"
        + node_heads
        + " Redis total µs/ev (min–max) | busiest node share | per-node bound ev/s |"
        " CPU ceiling ev/s (set by) | busy cores | ZINCRBY /1k ev | exact |"
    )
    print("|---:|---:|---:|" + "---:|" * nodes + "---:|---:|---:|---|---:|---:|---|")
    for n, row in rows.items():
        print(_row_line(n, row))
    print(
        "\nRedis µs/ev per node (busiest first in each run, then medians): INFO cpu"
        " (user + sys) delta over the drain / events;"
        " per-node bound = 1e6 / busiest node's µs/ev; ceiling = min(consumers, busiest"
        f" node, {m['nproc']} shared cores); busy cores = events/s × (consumer + Redis"
        " total µs/ev): the CPU the run got."
    )
    lanes = ", ".join(f"N={n}: {row['lanes_per_process']}" for n, row in rows.items())
    first = next(iter(rows.values()))
    print(f"Consumers: {first['processes']} process(es); lanes per process {lanes}.")
    for n, t in s["targets"].items():
        print(
            f"  N={n} vs N=1: busiest node ×{t['busiest_node_ratio']:.2f} (ideal"
            f" ×{t['busiest_node_ideal']:.2f}), total ×{t['total_ratio']:.2f}"
            f" (target ≤ ×{t['total_target']:.2f})"
        )
    _print_commands(rows)
    _print_capacity(s["capacity"], max(rows, key=int))


def _row_line(n: str, row: Mapping[str, Any]) -> str:
    lo, hi = row["redis_cpu_us_per_event_range"]
    limits = row["ceiling_limits"]
    by = row["ceiling_limited_by"]
    zincrby = row.get("commands", {}).get("zincrby", {}).get("calls_per_1k")
    return (
        f"| {n} | {fmt(row['events_per_s_median'])} ({fmt(row['events_per_s_min'])}–"
        f"{fmt(row['events_per_s_max'])}) | {fmt(row['consumer_cpu_us_per_event'], '.1f')} |"
        + "".join(f" {fmt(x, '.1f')} |" for x in row["nodes_busiest_first_us_per_event"])
        + f" {fmt(row['redis_cpu_us_per_event'], '.1f')} ({fmt(lo, '.1f')}–{fmt(hi, '.1f')}) |"
        f" {row['busiest_node_share']:.0%} | {fmt(row['per_node_bound_events_per_s'])} |"
        f" {fmt(limits[by])} ({by}) | {fmt(row['busy_cores'], '.2f')} |"
        f" {fmt(zincrby, ',.0f')} |"
        f" {'yes' if row['drained_exactly'] else 'NO'} |"
    )


def _print_capacity(capacity_rows: Sequence[Mapping[str, float]], from_n: str) -> None:
    print(
        f"\nCapacity (total Redis µs/ev of N={from_n}, spread evenly over M masters):\n"
        "| masters M | Redis µs/ev per node | Redis bound events/s | consumer cores at it |\n"
        "|---:|---:|---:|---:|"
    )
    for c in capacity_rows:
        print(
            f"| {c['nodes']} | {fmt(c['per_node_us_per_event'], '.2f')} |"
            f" {fmt(c['redis_bound_events_per_s'])} | {fmt(c['consumer_cores_at_bound'], '.1f')} |"
        )


def _print_commands(rows: Mapping[str, Mapping[str, Any]], top: int = 6) -> None:
    """Per N, the costliest commands (all nodes): µs per event and calls per 1k events."""
    print(
        "\nINFO commandstats, all nodes, median over runs: µs/ev (wall time inside the"
        " command: a shared machine inflates it; a script's commands count inside evalsha"
        " too) and (calls/1k ev, exact):"
    )
    for n, row in rows.items():
        commands = list(row.get("commands", {}).items())[:top]
        text = ", ".join(
            f"{name} {fmt(c['us_per_event'], '.2f')} ({fmt(c['calls_per_1k'], '.1f')})"
            for name, c in commands
        )
        print(f"  N={n}: {text}")


def pooled(paths: Sequence[Path]) -> dict[str, Any]:
    """The sessions in `paths` as one: every run per N, the first session's machine."""
    runs: dict[int, list[ShardRun]] = {}
    sessions = [json.loads(p.read_text()) for p in paths]
    for session in sessions:
        for n, rs in session["shard_runs"].items():
            runs.setdefault(int(n), []).extend(ShardRun(**r) for r in rs)
    machine = sessions[0]["machine"]
    return {
        "machine": machine,
        "sessions": [s["session"] for s in sessions],
        "shards": shard_summary(dict(sorted(runs.items())), machine["nproc"] or 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    print_shard_table(pooled(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
