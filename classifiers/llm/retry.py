"""Retry policy: a pure function of the attempt number, the error and a random draw."""

from __future__ import annotations

from dataclasses import dataclass

from pomocore.classifiers.llm.errors import LLMError, LLMRetryable
from pomocore.core.retry import backoff_s


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # per model, first call included
    base_s: float = 0.25
    cap_s: float = 8.0
    # A server asking us to wait longer than this is treated as "down for now":
    # we stop, queue the keys and let the reclassifier try later.
    max_retry_after_s: float = 60.0


def should_retry(err: LLMError, attempt: int, policy: RetryPolicy) -> bool:
    """Only timeouts, unreachable endpoints, 429 and 5xx are retried; `attempt` counts from 1."""
    return isinstance(err, LLMRetryable) and attempt < policy.max_attempts


def backoff_delay(attempt: int, err: LLMError, policy: RetryPolicy, rand: float) -> float:
    """Delay before attempt `attempt + 1`: `backoff_s` with full jitter (uniform in
    [0, base * 2**(attempt-1)], capped), so that many consumers hitting the same outage do
    not retry in lockstep. `rand` is a draw from [0, 1).

    A Retry-After from the server is a floor, not capped: the caller gives up when the
    delay passes its deadline, rather than sleeping and finding the model still closed.
    """
    delay = backoff_s(attempt, base_s=policy.base_s, cap_s=policy.cap_s, jitter="full", draw=rand)
    retry_after = err.retry_after_s if isinstance(err, LLMRetryable) else None
    return delay if retry_after is None else max(delay, retry_after)
