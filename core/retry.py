"""Retry policy as pure functions (no sleeping, no I/O): easy to test, easy to reason about."""

from __future__ import annotations

import random


def backoff_s(
    attempt: int,
    *,
    base_s: float = 0.1,
    cap_s: float = 30.0,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1-based): "full jitter" exponential backoff.

    A server's Retry-After wins when it is longer than the computed delay (never shorter:
    a server that asks us to wait knows more than our schedule does).
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(cap_s, base_s * (2 ** (attempt - 1)))
    delay = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after_s is not None and retry_after_s > delay:
        return min(retry_after_s, cap_s * 4)
    return delay
