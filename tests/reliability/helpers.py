"""Run an in-process consumer in the background while a test injects faults."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import redis

from pomocore.consumers.app import Runtime, run_until_stopped, runtime
from pomocore.core.settings import Settings
from tests.support.pipeline import group_state


@contextlib.asynccontextmanager
async def running_consumer(settings: Settings) -> AsyncIterator[Runtime]:
    stop = asyncio.Event()
    async with runtime(settings) as rt:
        task = asyncio.create_task(run_until_stopped(rt, stop))
        try:
            yield rt
        finally:
            stop.set()
            await asyncio.wait_for(task, 90)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def drained(settings: Settings) -> Callable[[], bool]:
    return lambda: (
        group_state(settings.redis_url, settings.keys.stream_key, settings.group)
        == (
            0,
            0,
        )
    )


def dead_letters(settings: Settings) -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return [f for _, f in client.xrange(settings.keys.dead_letter_key)]
    finally:
        client.close()
