"""core/logs.py: the once-per-interval gate of repeated warnings."""

from __future__ import annotations

import pytest

from pomocore.core.logs import Every


@pytest.mark.parametrize(
    ("times_s", "expected"),
    [
        ([0.0], [True]),  # the first is always due
        ([100.0, 100.0, 159.9, 160.0], [True, False, False, True]),
        ([5.0, 64.9, 65.0, 70.0, 125.0], [True, False, True, False, True]),
        ([-1000.0, -999.0], [True, False]),  # a monotonic clock may start anywhere
    ],
)
def test_every_lets_one_through_per_interval(times_s: list[float], expected: list[bool]) -> None:
    clock = iter(times_s)
    gate = Every(60.0, clock=lambda: next(clock))
    assert [gate.due() for _ in times_s] == expected
