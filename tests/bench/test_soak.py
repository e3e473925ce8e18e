"""`make soak` (benchmarks/soak.py): the growth check and quantiles as tables, and a run of
a few seconds against embedded servers (the real one is 10 minutes: benchmarks/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.soak import backlog, fit_slope, growth, histogram_quantile, main

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("ys", "allowed", "ok"),
    [
        ([100.0] * 20, 1.0, True),  # flat
        ([100.0 + (i % 2) * 5 for i in range(20)], 3.0, True),  # noise around a level
        ([100.0 + i for i in range(20)], 5.0, False),  # a steady rise: a leak
        ([100.0] * 10 + [100.0 + 2 * i for i in range(10)], 5.0, False),  # rising late
        ([100.0 + i for i in range(10)] + [110.0] * 10, 5.0, True),  # warm-up, then flat
        ([120.0 - i for i in range(20)], 0.0, True),  # falling
    ],
)
def test_growth_fits_the_second_half(ys: list[float], allowed: float, ok: bool) -> None:
    ts = [float(i) for i in range(len(ys))]
    assert growth("x", ts, ys, allowed).ok is ok


@pytest.mark.parametrize(
    ("lag", "ok"), [([0.0, 50.0, 10.0], True), ([0.0, 90_000.0, 60_000.0], False), ([], True)]
)
def test_a_standing_backlog_fails(lag: list[float], ok: bool) -> None:
    """Lag that stopped rising but stays at minutes of traffic is not a pass (seen in the
    first 10-minute soak: 130,000 entries behind, flat, at 3,083 events/s)."""
    assert backlog(lag, target=3000.0).ok is ok


def test_fit_slope() -> None:
    assert fit_slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    assert fit_slope([1, 1], [0, 5]) == 0.0 and fit_slope([1], [1]) == 0.0


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.05), (0.25, 0.025), (0.9, 0.09), (1.0, 0.1)],
)
def test_histogram_quantile_interpolates_like_prometheus(q: float, expected: float) -> None:
    buckets = {0.1: 100.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_of_nothing_is_zero() -> None:
    assert histogram_quantile(0.99, {}) == 0.0
    assert histogram_quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) == 0.0


def test_a_short_soak_reports_every_figure(tmp_path: Path) -> None:
    # a tenth of the maximum: the check is about growth, a short run at half load on a
    # shared machine can fall behind; the 10-minute one uses --fraction 0.5
    args = ["--duration-s", "6", "--readers", "4", "--calibrate-events", "2000",
            "--sample-s", "0.5", "--fraction", "0.1", "--out", str(tmp_path)]  # fmt: skip
    code = main(args)
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["max_events_per_s"] > 0 and doc["published"] > 0
    assert set(doc["e2e_s"]) == set(doc["reader_ms"]) == {"p50", "p95", "p99"}
    assert doc["reader_requests"] > 0 and doc["reader_errors"] == 0
    # top, rank and around-me, each timed by the clients and by the API's own histogram
    kinds = {"top", "rank", "around"}
    assert set(doc["reader_ms_by_kind"]) == set(doc["reader_server_ms_by_kind"]) == kinds
    assert set(doc["reader_requests_by_kind"]) == kinds
    assert all(n > 0 for n in doc["reader_requests_by_kind"].values())
    assert sum(doc["reader_requests_by_kind"].values()) == doc["reader_requests"]
    for kind in kinds:
        client, server = doc["reader_ms_by_kind"][kind], doc["reader_server_ms_by_kind"][kind]
        assert set(client) == set(server) == {"p50", "p95", "p99"}
        assert 0 < server["p50"] <= server["p99"], (kind, server)
    assert doc["e2e_s"]["p50"] > 0 and doc["rss_mb"]["max"] > 10
    assert {g["name"] for g in doc["growth"]} == {
        "final_backlog_entries",
        "rss_mb",
        "lag_entries",
        "e2e_p50_s",
        "reader_p99_s",
    }
    assert (tmp_path / "soak.png").stat().st_size > 1000
    assert code == (0 if doc["ok"] else 1)
