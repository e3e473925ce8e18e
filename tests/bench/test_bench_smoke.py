"""Smoke test of the benchmark harness (`python -m benchmarks`): tiny event counts, every variant
(the LLM path, h, in a test of its own).

Checks the JSON result schema, that every variant drained exactly (the group read all
entries and nothing is pending; the consumers acknowledged exactly N), and that a run
against servers it did not start leaves nothing behind but what was there before.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import redis

from benchmarks.options import VARIANTS, BenchOptions
from benchmarks.session import run_bench
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis

pytestmark = pytest.mark.timeout(120)

SUMMARY_KEYS = {
    "name",
    "events",
    "runs",
    "events_per_s_median",
    "events_per_s_min",
    "events_per_s_max",
    "consumer_cpu_us_per_event",
    "redis_cpu_us_per_event",
    "redis_bound_events_per_s",
    "redis_round_trips_per_1k",
    "mongo_round_trips_per_1k",
    "peak_rss_mb",
    "drained_exactly",
    "ratio_to_a",
    "ratio_to_f_bound",
    "p50_ms",
    "p95_ms",
    "p99_ms",
}


def test_every_variant_drains_exactly_and_reports(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: EmbeddedRedis,
    mongo_server: EmbeddedMongo,
) -> None:
    # the session's servers are "not ours" for the harness: it must prefix and clean up
    monkeypatch.setenv("POMOCORE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("POMOCORE_MONGO_URI", mongo_server.url)
    client = redis.Redis.from_url(redis_server.url)
    client.set("someone-elses-key", "keep me")
    before = {k for k in client.scan_iter(count=1000)}

    options = BenchOptions(
        events=400,
        slow_events=60,
        mongo_events=200,
        runs=1,
        variants="abcdefg",
        sweeps=("batch",),
        sweep_events=200,
        latency=True,
        latency_seconds=0.3,
        out=tmp_path,
        plots=True,
        quiet=True,
    )
    out = run_bench(options)

    written = json.loads((tmp_path / "latest.json").read_text())
    assert written["summary"].keys() == set(VARIANTS) - {"h"}
    for variant, row in written["summary"].items():
        assert row.keys() >= SUMMARY_KEYS, (variant, SUMMARY_KEYS - row.keys())
        assert row["drained_exactly"], variant
        assert row["events_per_s_median"] > 0
        assert row["consumer_cpu_us_per_event"] > 0
        assert row["peak_rss_mb"] > 0
        assert row["p99_ms"] >= row["p50_ms"] >= 0
    for variant, runs in written["runs"].items():
        for run in runs:
            assert run["acked"] == run["events"], variant
    assert written["summary"]["a"]["ratio_to_a"] == pytest.approx(1.0)
    assert written["summary"]["b"]["mongo_round_trips_per_1k"] > 0
    assert written["summary"]["a"]["mongo_round_trips_per_1k"] == 0
    assert math.isfinite(written["summary"]["c"]["targets"]["c / f >= 1.5"])
    sweep = written["sweeps"]["batch"]
    assert {r["batch_size"] for r in sweep} == {10, 100, 500, 1000, 5000}
    assert all(r["drained_exactly"] for r in sweep)
    assert (tmp_path / "throughput_vs_batch.png").stat().st_size > 0
    assert (tmp_path / "latency_cdf.png").stat().st_size > 0
    assert out["machine"]["nproc"] >= 1

    after = {k for k in client.scan_iter(count=1000)}
    assert after == before, after ^ before
    assert client.get("someone-elses-key") == b"keep me"
    client.delete("someone-elses-key")
    client.close()


@pytest.mark.timeout(240)
def test_llm_variant_counts_calls_and_splits_latency_by_whether_events_wait_for_the_llm(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: EmbeddedRedis,
    mongo_server: EmbeddedMongo,
) -> None:
    monkeypatch.setenv("POMOCORE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("POMOCORE_MONGO_URI", mongo_server.url)
    client = redis.Redis.from_url(redis_server.url)
    before = {k for k in client.scan_iter(count=1000)}
    options = BenchOptions(
        llm_events=600,
        runs=1,
        variants="h",
        latency=True,
        latency_seconds=0.3,
        llm_latency_ms=100,
        llm_unknown_share=0.3,
        out=tmp_path,
        plots=False,
        quiet=True,
    )
    run_bench(options)

    written = json.loads((tmp_path / "latest.json").read_text())
    assert written["summary"]["h"]["drained_exactly"]
    llm = written["llm"]
    for phase in ("first", "repeat"):
        assert llm[phase]["drained_exactly"], phase
        assert llm[phase]["distinct_unknown_keys"] > 0, phase
    assert llm["first"]["llm_calls"] > 0  # the scripted server answered the consumer
    assert llm["first"]["calls_per_1k_events"] == pytest.approx(
        llm["first"]["llm_calls"] / 600 * 1000
    )
    latency = llm["latency"]
    for label in ("with_llm", "without_llm"):
        groups = latency[label]
        # every acknowledged event is in exactly one group
        assert groups["llm"]["events"] > 0, label
        assert groups["patterns"]["events"] > 0, label
        assert groups["llm"]["events"] + groups["patterns"]["events"] == groups["all"]["events"]
    # events waiting for a 100 ms model take longer than with no model at all
    assert latency["with_llm"]["llm"]["p50_ms"] > latency["without_llm"]["llm"]["p50_ms"]
    assert math.isfinite(latency["patterns_p99_added_ms"])

    after = {k for k in client.scan_iter(count=1000)}
    assert after == before, after ^ before  # the run's tagged keys are gone too
    client.close()
