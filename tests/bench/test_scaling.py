"""The CPU ceiling of process scaling that `python -m benchmarks --sweep processes` prints."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.report import process_scaling, scaling_ceiling


@pytest.mark.parametrize(
    ("consumer_us", "redis_us", "processes", "cores", "events_per_s", "limit"),
    [
        # one process: the consumer thread (10 µs/event) is the limit
        (10.0, 5.0, 1, 2, 100_000, "consumers"),
        # two processes on 2 cores: 15 µs of CPU per event in all -> 2 / 15 µs
        (10.0, 5.0, 2, 2, 133_333, "cores"),
        # the same on 8 cores: two consumer threads
        (10.0, 5.0, 2, 8, 200_000, "consumers"),
        # Redis at 8 µs/event: one Redis core caps everything at 125k
        (4.0, 8.0, 4, 8, 125_000, "redis"),
    ],
)
def test_scaling_ceiling(
    consumer_us: float, redis_us: float, processes: int, cores: int, events_per_s: int, limit: str
) -> None:
    ceiling, limited_by = scaling_ceiling(consumer_us, redis_us, processes, cores)
    assert round(ceiling) == events_per_s
    assert limited_by == limit


def row(variant: str, processes: int, eps: float, cons: float, red: float) -> dict[str, Any]:
    return {
        "variant": variant,
        "events_per_s": eps,
        "consumer_cpu_us_per_event": cons,
        "redis_cpu_us_per_event": red,
        "extra": {"sweep": {"name": "processes", "value": processes}},
    }


def test_process_scaling_compares_with_the_one_process_run() -> None:
    rows = [row("c", 1, 50_000, 18.0, 19.0), row("c", 2, 48_000, 19.0, 19.5)]
    rows += [row("f", 2, 30_000, 20.0, 10.0), row("f", 1, 20_000, 20.0, 10.0)]
    out = process_scaling(rows, cores=2)
    c = out["c"]
    assert c["redis_busy_one_process"] == pytest.approx(0.95)
    assert c["points"][2]["ratio"] == pytest.approx(0.96)
    # Redis at 19 µs/event: 52.6k events/s, below 2 cores / 37 µs = 54k
    assert c["points"][2]["ceiling_ratio"] == pytest.approx(1e6 / 19 / 50_000)
    assert c["points"][2]["limited_by"] == "redis"
    f = out["f"]
    assert f["points"][1]["ratio"] == 1.0
    assert f["points"][2]["ratio"] == pytest.approx(1.5)
    assert f["points"][2]["limited_by"] == "cores"  # 2e6/30 = 66.7k < 100k Redis, 100k threads


def test_process_scaling_skips_a_variant_without_its_one_process_run() -> None:
    assert process_scaling([row("c", 2, 1.0, 1.0, 1.0)], cores=2) == {}
