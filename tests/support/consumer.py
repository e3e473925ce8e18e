"""A real consumer in the test's own event loop: drain the group once, or keep one
running while the test injects faults."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from pomocore.consumers.app import Runtime, run_until_stopped, runtime
from pomocore.consumers.consumer import ConsumerStats
from pomocore.core.settings import Settings
from tests.support.streams import group_state

STOP_TIMEOUT_S = 90.0


@contextlib.asynccontextmanager
async def _consuming(settings: Settings) -> AsyncIterator[tuple[Runtime, asyncio.Task[None]]]:
    stop = asyncio.Event()
    async with runtime(settings) as rt:
        task = asyncio.create_task(run_until_stopped(rt, stop))
        try:
            yield rt, task
        finally:
            stop.set()
            await asyncio.wait_for(task, STOP_TIMEOUT_S)


@contextlib.asynccontextmanager
async def running_consumer(settings: Settings) -> AsyncIterator[Runtime]:
    """A consumer running in the background of the block; stopped (gracefully) at its end."""
    async with _consuming(settings) as (rt, _):
        yield rt


async def drain(
    settings: Settings,
    timeout_s: float = 60.0,
    state: Callable[[Settings], tuple[int, int]] = group_state,
) -> ConsumerStats:
    """Run one consumer until the group has nothing undelivered or pending, or until
    `timeout_s` (the caller's assertions then say what is missing).

    `state` reads (lag, pending); by default with plain redis-py from `settings.redis_url`
    (TLS or Cluster servers: `streams.connected_group_state`).
    """
    async with _consuming(settings) as (rt, task):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
            # a blocking read, off the loop the consumer runs on
            if await asyncio.to_thread(state, settings) == (0, 0):
                break
    return rt.consumer.stats
