"""The shard scaling session's summary (benchmarks/shards.py): medians per N, the CPU
ceiling of each, the issue #17 targets, and the capacity table; printed as Markdown
tables (benchmarks/README.md and docs/operations.md quote them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.measure import median
from benchmarks.report import fmt

if TYPE_CHECKING:
    from benchmarks.shards import ShardRun

CAPACITY_NODES = (1, 3, 6, 12, 24)
TOTAL_GROWTH_TARGET = 1.10  # issue #17: total Redis CPU per event grows by at most 10 %


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
        "events_per_shard": runs[0].events_per_shard,
        "events_per_s_median": median(eps),
        "events_per_s_min": min(eps),
        "events_per_s_max": max(eps),
        "consumer_cpu_us_per_event": median(consumer),
        "consumer_cpu_us_per_event_range": [min(consumer), max(consumer)],
        "node_cpu_us_per_event": [
            median([r.node_cpu_us_per_event[i] for r in runs]) for i in range(nodes)
        ],
        "redis_cpu_us_per_event": median(total),
        "redis_cpu_us_per_event_range": [min(total), max(total)],
        "busiest_node_us_per_event": median(busiest),
        "busiest_node_us_per_event_range": [min(busiest), max(busiest)],
        "busiest_node_share": median([r.busiest_node_share for r in runs]),
        "drained_exactly": all(r.drained_exactly for r in runs),
    }
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
        nodes = len(row["node_cpu_us_per_event"])
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
    nodes = len(next(iter(rows.values()))["node_cpu_us_per_event"])
    node_heads = "".join(f" node {i} |" for i in range(nodes))
    print(
        "\n| N | events/s, median (min–max) | consumer µs/ev |"
        + node_heads
        + " Redis total µs/ev (min–max) | busiest node share | per-node bound ev/s |"
        " CPU ceiling ev/s (set by) | exact |"
    )
    print("|---:|---:|---:|" + "---:|" * nodes + "---:|---:|---:|---|---|")
    for n, row in rows.items():
        print(_row_line(n, row))
    print(
        "\nRedis µs/ev per node: INFO cpu (user + sys) delta over the drain / events;"
        " per-node bound = 1e6 / busiest node's µs/ev; ceiling = min(consumers, busiest"
        f" node, {m['nproc']} shared cores)."
    )
    for n, t in s["targets"].items():
        print(
            f"  N={n} vs N=1: busiest node ×{t['busiest_node_ratio']:.2f} (ideal"
            f" ×{t['busiest_node_ideal']:.2f}), total ×{t['total_ratio']:.2f}"
            f" (target ≤ ×{t['total_target']:.2f})"
        )
    _print_capacity(s["capacity"], max(rows, key=int))


def _row_line(n: str, row: Mapping[str, Any]) -> str:
    lo, hi = row["redis_cpu_us_per_event_range"]
    limits = row["ceiling_limits"]
    by = row["ceiling_limited_by"]
    return (
        f"| {n} | {fmt(row['events_per_s_median'])} ({fmt(row['events_per_s_min'])}–"
        f"{fmt(row['events_per_s_max'])}) | {fmt(row['consumer_cpu_us_per_event'], '.1f')} |"
        + "".join(f" {fmt(x, '.1f')} |" for x in row["node_cpu_us_per_event"])
        + f" {fmt(row['redis_cpu_us_per_event'], '.1f')} ({fmt(lo, '.1f')}–{fmt(hi, '.1f')}) |"
        f" {row['busiest_node_share']:.0%} | {fmt(row['per_node_bound_events_per_s'])} |"
        f" {fmt(limits[by])} ({by}) | {'yes' if row['drained_exactly'] else 'NO'} |"
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
