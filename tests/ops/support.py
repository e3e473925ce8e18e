"""Helpers of the operations tests: drain a consumer when the plain test helpers cannot
reach the server (TLS, Cluster), using pomocore's own connection settings."""

from __future__ import annotations

import asyncio
import time

from consumers.app import run_until_stopped, runtime
from consumers.consumer import ConsumerStats
from pipeline.connect import sync_redis
from pipeline.settings import Settings


def group_state(settings: Settings) -> tuple[int, int]:
    client = sync_redis(settings)
    try:
        for g in client.xinfo_groups(settings.keys.stream_key):
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == settings.group:
                return int(g.get("lag") or 0), int(g["pending"])
    except Exception:
        pass
    finally:
        client.close()
    return -1, -1


async def drain(settings: Settings, timeout_s: float = 60.0) -> ConsumerStats:
    stop = asyncio.Event()
    async with runtime(settings) as rt:
        task = asyncio.create_task(run_until_stopped(rt, stop))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
            if await asyncio.to_thread(group_state, settings) == (0, 0):
                break
        stop.set()
        await task
        return rt.consumer.stats
