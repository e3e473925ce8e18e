"""A real consumer in the test's own event loop: drain the group once, or keep one
running while the test injects faults (with its /metrics, /healthz and /readyz server
when the test probes them)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from pomocore.consumers.app import Runtime, run_until_stopped, runtime
from pomocore.consumers.consumer import ConsumerStats
from pomocore.core.settings import Settings
from pomocore.embedded import free_port
from pomocore.health import consumer_observer, start_consumer_ops
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
async def serving_consumer(
    settings: Settings, setup: Callable[[Runtime], None] | None = None
) -> AsyncIterator[tuple[Runtime, int]]:
    """A consumer running in the background with its operations server, as `pomocore run
    --metrics-port` has it; yields the runtime and the server's port. `setup` may change
    the runtime (a lane's classifier, a background task) before anything runs."""
    settings = dataclasses.replace(settings, metrics_port=free_port())
    stop = asyncio.Event()
    observer = consumer_observer(settings)
    async with runtime(settings, observer) as rt:
        if setup is not None:
            setup(rt)
        ops = start_consumer_ops(rt, stop, observer)
        task = asyncio.create_task(run_until_stopped(rt, stop))
        try:
            yield rt, settings.metrics_port
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, STOP_TIMEOUT_S)
            finally:
                ops.close()


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
