"""`backoff_s`: capped exponential backoff, equal or full jitter, Retry-After as a floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomocore.core.retry import RETRY_AFTER_CAP_FACTOR, Jitter, backoff_s


@pytest.mark.parametrize(
    ("attempt", "jitter", "draw", "retry_after_s", "expected"),
    [
        # base 0.5, cap 4: ceilings 0.5, 1, 2, 4, 4 ...
        (1, "equal", 0.0, None, 0.25),
        (1, "equal", 1.0, None, 0.5),
        (2, "equal", 0.0, None, 0.5),
        (3, "equal", 0.5, None, 1.5),
        (4, "equal", 1.0, None, 4.0),
        (10, "equal", 0.0, None, 2.0),  # capped: never less than half the cap
        (1, "full", 0.0, None, 0.0),
        (2, "full", 0.5, None, 0.5),
        (3, "full", 1.0, None, 2.0),
        (10, "full", 0.999, None, 3.996),
        (1, "equal", 0.0, 3.0, 3.0),  # Retry-After is a floor ...
        (4, "equal", 1.0, 0.1, 4.0),  # ... never shortens the delay ...
        (1, "full", 0.0, 60.0, 16.0),  # ... and counts up to 4 x cap
    ],
)
def test_table(
    attempt: int, jitter: Jitter, draw: float, retry_after_s: float | None, expected: float
) -> None:
    got = backoff_s(
        attempt, base_s=0.5, cap_s=4.0, jitter=jitter, retry_after_s=retry_after_s, draw=draw
    )
    assert got == pytest.approx(expected)


attempts = st.integers(min_value=1, max_value=5000)
bases = st.floats(min_value=1e-3, max_value=10.0)
caps = st.floats(min_value=1e-3, max_value=3600.0)
draws = st.floats(min_value=0.0, max_value=1.0)
jitters = st.sampled_from(["equal", "full"])


@given(attempts, bases, caps, draws, jitters)
def test_bounds_and_cap(attempt: int, base: float, cap: float, draw: float, jitter: Jitter) -> None:
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 1000))
    delay = backoff_s(attempt, base_s=base, cap_s=cap, jitter=jitter, draw=draw)
    low = ceiling / 2 if jitter == "equal" else 0.0
    assert low - 1e-9 <= delay <= ceiling + 1e-9
    assert delay <= cap + 1e-9


@given(attempts, bases, caps, draws, jitters)
def test_growth_doubles_until_the_cap(
    attempt: int, base: float, cap: float, draw: float, jitter: Jitter
) -> None:
    now = backoff_s(attempt, base_s=base, cap_s=cap, jitter=jitter, draw=draw)
    later = backoff_s(attempt + 1, base_s=base, cap_s=cap, jitter=jitter, draw=draw)
    assert later >= now - 1e-9  # never shrinks
    if base * 2.0 ** min(attempt, 1000) <= cap:  # both ceilings below the cap: it doubles
        assert later == pytest.approx(2 * now)


@given(attempts, caps, draws, jitters, st.floats(min_value=0.0, max_value=1e6))
def test_retry_after_is_a_bounded_floor(
    attempt: int, cap: float, draw: float, jitter: Jitter, retry_after: float
) -> None:
    plain = backoff_s(attempt, base_s=0.1, cap_s=cap, jitter=jitter, draw=draw)
    delay = backoff_s(
        attempt, base_s=0.1, cap_s=cap, jitter=jitter, retry_after_s=retry_after, draw=draw
    )
    assert delay == max(plain, min(retry_after, RETRY_AFTER_CAP_FACTOR * cap))


def test_random_draws_stay_in_range() -> None:
    delays = [backoff_s(3, base_s=1.0, cap_s=10.0) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1


@pytest.mark.parametrize(("attempt", "draw"), [(0, 0.5), (1, -0.1), (1, 1.5)])
def test_rejects_what_has_no_meaning(attempt: int, draw: float) -> None:
    with pytest.raises(ValueError):
        backoff_s(attempt, base_s=1.0, cap_s=10.0, draw=draw)
