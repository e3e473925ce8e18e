"""Retry delays as one pure function (no sleeping, no I/O): easy to test, easy to reason about."""

from __future__ import annotations

import random
from typing import Literal

# "equal": uniform in [ceiling/2, ceiling], never less than half (reconnects and process
# restarts: a crash loop always waits). "full": uniform in [0, ceiling], the widest spread
# (many consumers calling one shared endpoint do not come back in lockstep).
Jitter = Literal["equal", "full"]

# A server's Retry-After is honoured up to this many times `cap_s`: past that, a caller
# without a deadline of its own would wait on a misconfigured server for too long.
RETRY_AFTER_CAP_FACTOR = 4.0

# 2.0 ** 1024 overflows a float; every attempt past this one has reached any cap anyway.
_MAX_DOUBLINGS = 1000


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: Jitter = "equal",
    retry_after_s: float | None = None,
    draw: float | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (1-based): capped exponential backoff
    with jitter.

    The ceiling is `base_s * 2 ** (attempt - 1)`, at most `cap_s`; the delay is the point
    `draw` (in [0, 1]) of the jitter's range below it (see `Jitter`). `draw=None` draws from
    `random`; given a draw, the result depends on the arguments only. A server's
    `retry_after_s` is a floor (a server that asks us to wait knows more than our schedule
    does), honoured up to RETRY_AFTER_CAP_FACTOR * `cap_s`.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if draw is None:
        draw = random.random()
    if not 0.0 <= draw <= 1.0:
        raise ValueError(f"draw must be in [0, 1], got {draw}")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    floor = ceiling / 2 if jitter == "equal" else 0.0
    delay = floor + (ceiling - floor) * draw
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_FACTOR * cap_s))
    return delay
