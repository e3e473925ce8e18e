"""The chaos suite: a short seeded run in `make test`, a long one with `make chaos`."""

from __future__ import annotations

import os

import pytest

from tests.chaos.harness import FAULT_KINDS, STALL_MONGO, ChaosConfig, ChaosRun
from tests.chaos.route import CLUSTER_FAULTS, RouteChaosConfig, RouteChaosRun

LONG = os.environ.get("POMOCORE_CHAOS_LONG") == "1"

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1800 if LONG else 240)]

SHORT = ChaosConfig(seed=1, events=4000, publish_s=14.0, consumers=2, fault_every_s=1.8)
SHORT_DERIVED = ChaosConfig(
    seed=2, events=4000, publish_s=14.0, consumers=2, fault_every_s=1.8, leaderboard_mode="derived"
)
DELIVERY_NEUTRAL_FAULTS = tuple(kind for kind in FAULT_KINDS if kind != "kill_consumer")
LONG_RUNS = [
    ChaosConfig(seed=seed, events=30_000, publish_s=90.0, consumers=3, fault_every_s=1.5)
    for seed in (11, 12, 13)
] + [
    ChaosConfig(
        seed=14, events=30_000, publish_s=90.0, consumers=3, fault_every_s=1.5,
        leaderboard_mode="derived",
    ),
    # An LLM for what patterns leave undecided, late half the time: decisions change
    # between attempts and between consumers while the faults make batches retry.
    ChaosConfig(
        seed=15, events=30_000, publish_s=90.0, consumers=3, fault_every_s=1.5, llm=True,
        distinct_variants=200,
    ),
    # MongoDB stalls longer than the reclaim cycle (issue #13 §4), and at the end a burst
    # published while it is stopped for 4 reclaim idles, with MAX_DELIVERIES=2: a batch
    # that the group takes over twice while its lane waits out the stall is dead-lettered,
    # healthy. With the BatchKeeper's refresh off, two runs dead-lettered 100 and 150
    # events ("delivered 3 times"; 536 and 794 violations); with it, none. Consumer kills
    # count deliveries of their own (two consumers killed in turn with the same batch in
    # hand: dead-lettered, as documented), so they are left out of this run.
    ChaosConfig(
        seed=16, events=30_000, publish_s=90.0, consumers=3, fault_every_s=1.5,
        faults=(*DELIVERY_NEUTRAL_FAULTS, STALL_MONGO), max_deliveries=2, stall_burst=100,
    ),
]  # fmt: skip


def _run(config: ChaosConfig) -> None:
    report = ChaosRun(config).run()
    print("\nchaos:", report.summary())
    for fault in report.faults:
        print("  fault", fault)
    for exit_ in report.unexpected_exits:
        print("  exit", exit_)
    for violation in report.violations[:50]:
        print("  VIOLATION", violation)
    assert len(report.faults) >= 6
    assert report.violations == []
    assert report.unexpected_exits == []


@pytest.mark.skipif(LONG, reason="the long runs replace the short one")
def test_chaos_short() -> None:
    _run(SHORT)


@pytest.mark.skipif(LONG, reason="the long runs replace the short one")
def test_chaos_short_derived_mode() -> None:
    """Daily keys exact per event, weekly/monthly keys exact after a refresh, whatever fails."""
    _run(SHORT_DERIVED)


def _run_id(config: ChaosConfig) -> str:
    stall = STALL_MONGO in config.faults
    extra = ("-llm" if config.llm else "") + ("-mongo-stall" if stall else "")
    return f"seed{config.seed}-{config.leaderboard_mode}{extra}"


@pytest.mark.skipif(not LONG, reason="POMOCORE_CHAOS_LONG=1 (make chaos)")
@pytest.mark.parametrize("config", LONG_RUNS, ids=_run_id)
def test_chaos_long(config: ChaosConfig) -> None:
    _run(config)


# --- the forwarder (`pomocore route`): forwarders killed and stalled, Redis killed ---

ROUTE_SHORT = RouteChaosConfig(seed=21, events=2400, kit_events=480, publish_s=7.0)
ROUTE_SHORT_CLUSTER = RouteChaosConfig(
    seed=22, events=1200, kit_events=240, publish_s=4.0, fault_every_s=0.9, cluster=True,
    faults=CLUSTER_FAULTS,
)
ROUTE_LONG_RUNS = [
    RouteChaosConfig(seed=seed, events=20_000, kit_events=4_000, publish_s=60.0,
                     fault_every_s=1.0)
    for seed in (31, 32)
] + [
    RouteChaosConfig(seed=33, events=20_000, kit_events=4_000, publish_s=60.0,
                     fault_every_s=1.0, cluster=True, faults=CLUSTER_FAULTS),
]  # fmt: skip


def _route(config: RouteChaosConfig) -> None:
    report = RouteChaosRun(config).run()
    print("\nroute chaos:", report.summary())
    for fault in report.faults:
        print("  fault", fault)
    for exit_ in report.unexpected_exits:
        print("  exit", exit_)
    for violation in report.violations[:50]:
        print("  VIOLATION", violation)
    assert len(report.faults) >= 4
    assert report.takeovers >= 2  # the lease did change hands
    assert report.violations == []
    assert report.unexpected_exits == []


@pytest.mark.skipif(LONG, reason="the long runs replace the short one")
def test_route_chaos_short() -> None:
    """Every event published to the contract stream is in its shard exactly once, and the
    kit's events beside them, whatever happens to the forwarders and Redis."""
    _route(ROUTE_SHORT)


@pytest.mark.skipif(LONG, reason="the long runs replace the short one")
def test_route_chaos_short_cluster() -> None:
    _route(ROUTE_SHORT_CLUSTER)


@pytest.mark.skipif(not LONG, reason="POMOCORE_CHAOS_LONG=1 (make chaos)")
@pytest.mark.parametrize(
    "config", ROUTE_LONG_RUNS, ids=lambda c: f"seed{c.seed}{'-cluster' if c.cluster else ''}"
)
def test_route_chaos_long(config: RouteChaosConfig) -> None:
    _route(config)
