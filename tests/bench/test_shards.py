"""`python -m benchmarks --shards`: a tiny session on its own local 3-node cluster drains
every shard exactly and reports Redis CPU per node; and the arithmetic of its summary
(per-node bound, CPU ceiling, the targets against N = 1, the capacity table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import build_parser, options_from_args
from benchmarks.options import BenchOptions
from benchmarks.shard_report import capacity, shard_ceiling, shard_summary
from benchmarks.shards import ShardRun, run_shard_bench
from pomocore.core.shards import shard_of
from pomocore.workload import Workload


@pytest.mark.timeout(240)
def test_a_tiny_session_drains_every_shard_and_reports_per_node_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = BenchOptions(events=3000, runs=1, shards=(1, 3), out=tmp_path, quiet=True)
    run_shard_bench(options)

    written = json.loads((tmp_path / "latest.json").read_text())
    rows = written["shards"]["rows"]
    assert rows.keys() == {"1", "3"}
    workload = Workload(users=3000, distinct_variants=200, seed=7)  # the session's
    users = [str(f["userId"]) for f in workload.events(3000)]
    for n, row in rows.items():
        assert row["drained_exactly"], n
        assert len(row["node_cpu_us_per_event"]) == 3
        assert all(x >= 0 for x in row["node_cpu_us_per_event"])
        assert row["redis_cpu_us_per_event"] == pytest.approx(sum(row["node_cpu_us_per_event"]))
        assert row["consumer_cpu_us_per_event"] > 0
        assert row["events_per_s_median"] > 0
        # the publisher routed by shard_of, as a producer in any language would
        expected = [sum(1 for u in users if shard_of(u, int(n)) == i) for i in range(int(n))]
        assert row["events_per_shard"] == expected
    for run in written["shard_runs"]["3"]:
        assert run["acked"] == run["events"] == 3000
    # N = 1: every key in one slot, so one node did (nearly) all the Redis work
    assert rows["1"]["busiest_node_share"] > 0.5
    assert written["shards"]["targets"]["3"]["total_target"] == 1.10
    assert [c["nodes"] for c in written["shards"]["capacity"]] == [1, 3, 6, 12, 24]
    printed = capsys.readouterr().out
    assert "| node 0 | node 1 | node 2 |" in printed
    assert "Capacity" in printed


def test_shards_option_parses_a_comma_list() -> None:
    args = build_parser().parse_args(["--shards", "1,3,6,3", "--events", "100"])
    assert options_from_args(args).shards == (1, 3, 6)
    assert options_from_args(build_parser().parse_args([])).shards == ()
    for bad in ("0", "x", "1,300"):
        with pytest.raises(SystemExit):
            options_from_args(build_parser().parse_args(["--shards", bad]))


@pytest.mark.parametrize(
    ("consumer_us", "busiest_us", "total_us", "processes", "cores", "events_per_s", "limit"),
    [
        # one consumer process at 20 µs/event: 50k, below a node's 1e6 / 10
        (20.0, 10.0, 12.0, 1, 2, 50_000, "consumers"),
        # everything on one node at 25 µs/event: 40k
        (10.0, 25.0, 26.0, 4, 8, 40_000, "busiest node"),
        # 2 cores shared by consumers (10) and all nodes (15): 2e6 / 25
        (10.0, 5.0, 15.0, 2, 2, 80_000, "cores"),
    ],
)
def test_shard_ceiling(
    consumer_us: float,
    busiest_us: float,
    total_us: float,
    processes: int,
    cores: int,
    events_per_s: int,
    limit: str,
) -> None:
    limits, limited_by = shard_ceiling(consumer_us, busiest_us, total_us, processes, cores)
    assert round(limits[limited_by]) == events_per_s
    assert limited_by == limit


def run(shards: int, nodes: list[float], consumer: float = 10.0, eps: float = 1000.0) -> ShardRun:
    total = sum(nodes)
    return ShardRun(
        shards=shards,
        events=1000,
        processes=1,
        elapsed_s=1000 / eps,
        events_per_s=eps,
        consumer_cpu_us_per_event=consumer,
        node_cpu_us_per_event=nodes,
        redis_cpu_us_per_event=total,
        busiest_node_share=max(nodes) / total,
        events_per_shard=[1000 // shards] * shards,
        acked=1000,
        drained_exactly=True,
    )


def test_summary_takes_medians_and_compares_with_one_shard() -> None:
    runs = {
        1: [run(1, [12.0, 0.1, 0.1]), run(1, [10.0, 0.1, 0.1]), run(1, [11.0, 0.1, 0.1])],
        3: [run(3, [4.0, 4.2, 4.0]), run(3, [4.4, 4.0, 4.1]), run(3, [3.8, 3.9, 4.0])],
    }
    s = shard_summary(runs, cores=2)
    one, three = s["rows"]["1"], s["rows"]["3"]
    assert one["node_cpu_us_per_event"] == [11.0, 0.1, 0.1]
    assert one["busiest_node_us_per_event"] == 11.0
    assert one["per_node_bound_events_per_s"] == pytest.approx(1e6 / 11.0)
    assert three["busiest_node_us_per_event"] == pytest.approx(4.2)  # median of 4.2, 4.4, 4.0
    t = s["targets"]["3"]
    assert t["busiest_node_ratio"] == pytest.approx(4.2 / 11.0)
    assert t["busiest_node_ideal"] == pytest.approx(1 / 3)
    assert t["total_ratio"] == pytest.approx(12.2 / 11.2)
    assert s["capacity"] == capacity(three)  # from the most shards measured


def test_capacity_spreads_the_total_over_the_masters() -> None:
    rows = capacity({"redis_cpu_us_per_event": 12.0, "consumer_cpu_us_per_event": 30.0})
    three = next(r for r in rows if r["nodes"] == 3)
    assert three["per_node_us_per_event"] == pytest.approx(4.0)
    assert three["redis_bound_events_per_s"] == pytest.approx(250_000)
    assert three["consumer_cores_at_bound"] == pytest.approx(7.5)
