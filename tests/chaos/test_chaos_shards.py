"""Sharded mode under chaos (issue #17): POMOCORE_SHARDS=6 on a local 3-node Redis Cluster
with AOF, two consumer processes, consumers and cluster nodes SIGKILLed while busy. A short
run in `make test`, longer ones with `make chaos` (POMOCORE_CHAOS_LONG=1)."""

from __future__ import annotations

import os

import pytest
import redis

from tests.chaos.harness import ChaosConfig
from tests.chaos.shard_run import SHARD_FAULTS, ShardChaosConfig, ShardChaosRun

LONG = os.environ.get("POMOCORE_CHAOS_LONG") == "1"

# docs/guarantees.md, "Shards": with redis-py 5.3 a restarted node served less than its
# AOF holds (open); sharded mode on a cluster is tested with the redis-py tested.txt pins.
OLD_CLIENT = int(redis.__version__.split(".")[0]) < 8
pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(1800 if LONG else 240),
    pytest.mark.skipif(OLD_CLIENT, reason="redis-py < 8: open problem, docs/guarantees.md"),
]

SPLIT = ("0-2", "3-5")  # each process serves three shards (on different nodes)
BOTH_ALL = ("", "")  # both processes serve every shard: lanes of two processes share groups


def _config(seed: int, events: int, publish_s: float, fault_every_s: float) -> ChaosConfig:
    return ChaosConfig(
        seed=seed, events=events, publish_s=publish_s, fault_every_s=fault_every_s,
        faults=SHARD_FAULTS, drain_timeout_s=120.0,
    )  # fmt: skip


# one short run in `make test` (about 50 s); seed 22 with BOTH_ALL passed as well (about
# 50 s) and the long runs cover both layouts
SHORT = [ShardChaosConfig(_config(21, 3000, 12.0, 2.0), SPLIT)]
LONG_RUNS = [
    ShardChaosConfig(_config(seed, 20_000, 75.0, 2.0), serves)
    for seed, serves in ((31, SPLIT), (32, BOTH_ALL), (33, SPLIT), (34, BOTH_ALL))
]


def _run(config: ShardChaosConfig) -> None:
    run = ShardChaosRun(config)
    report = run.run()
    print("\nshard chaos:", report.summary())
    for fault in report.faults:
        print("  fault", fault)
    for node, down_s, written in run.outage_progress:
        print(f"  node {node} down {down_s:.1f}s: other shards wrote {written} session scores")
    for exit_ in report.unexpected_exits:
        print("  exit", exit_)
    for violation in report.violations[:50]:
        print("  VIOLATION", violation)
    kinds = " ".join(report.faults)
    assert "kill_consumer" in kinds and "kill_node" in kinds
    assert report.violations == []
    assert report.unexpected_exits == []
    # a node down stops its own shards only: the others kept committing meanwhile (in at
    # least one outage: one that lands while consumers restart may see none, as they start)
    long_outages = [acked for _, down_s, acked in run.outage_progress if down_s >= 1.0]
    assert not long_outages or max(long_outages) > 0


def _id(config: ShardChaosConfig) -> str:
    return f"seed{config.base.seed}-{'split' if config.serves == SPLIT else 'both-all'}"


@pytest.mark.skipif(LONG, reason="the long runs replace the short ones")
@pytest.mark.parametrize("config", SHORT, ids=_id)
def test_shard_chaos_short(config: ShardChaosConfig) -> None:
    _run(config)


@pytest.mark.skipif(not LONG, reason="POMOCORE_CHAOS_LONG=1 (make chaos)")
@pytest.mark.parametrize("config", LONG_RUNS, ids=_id)
def test_shard_chaos_long(config: ShardChaosConfig) -> None:
    _run(config)
