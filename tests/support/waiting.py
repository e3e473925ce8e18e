"""Waiting for a condition with a deadline, in plain and in async tests.

Both check first, then poll; both fail the test with AssertionError when the deadline
passes, and return how long the condition took (some tests assert on that).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import redis

# A condition read from a server that a test has just killed raises these until the
# server is back; that is "not yet", not a failure.
NOT_YET = (redis.ConnectionError, redis.TimeoutError)

Describe = str | Callable[[], str]


def _holds(predicate: Callable[[], bool]) -> bool:
    try:
        return predicate()
    except NOT_YET:
        return False


def _polls(predicate: Callable[[], bool], timeout_s: float, describe: Describe) -> Iterator[None]:
    """One step a poll, until `predicate()` holds; AssertionError after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not _holds(predicate):
        if time.monotonic() >= deadline:
            raise AssertionError(describe if isinstance(describe, str) else describe())
        yield


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float = 60.0,
    describe: Describe = "condition not reached in time",
    poll_s: float = 0.05,
) -> float:
    """Block until `predicate()` holds; `describe` says what failed (called at the end)."""
    start = time.monotonic()
    for _ in _polls(predicate, timeout_s, describe):
        time.sleep(poll_s)
    return time.monotonic() - start


async def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float = 60.0,
    describe: Describe = "condition not reached in time",
) -> float:
    """`wait_for` that lets the event loop (a consumer under test) run between checks."""
    start = time.monotonic()
    for _ in _polls(predicate, timeout_s, describe):
        await asyncio.sleep(0.05)
    return time.monotonic() - start
