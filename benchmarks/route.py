"""How fast one forwarder (`pomocore route`) moves a backlog of the contract stream to the
shards, and what the producer kit costs per event with and without shards.

    .venv/bin/python -m benchmarks.route [--events 200000] [--shards 6] [--batch 1000]

On an embedded Valkey: publishes the `pomocore demo` workload to the contract stream,
drains it with one in-process Forwarder (the lease held by it alone) and prints events/s,
the forwarder's and Redis's CPU per event. Then `publish_many` of the same events,
POMOCORE_SHARDS=1 against the given number of shards, client CPU per event (min of 3).
One forwarder at a time works (the lease), so its rate bounds what the contract stream
can take; the producer kit's direct path has no such bound.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import redis
import redis.asyncio as aioredis

import pomocore
from benchmarks.measure import redis_cpu_s
from pomocore.core.errors import PomocoreError
from pomocore.core.keys import ROUTE_GROUP
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.producer import prepare
from pomocore.route import Forwarder
from pomocore.workload import Workload
from tests.support.streams import publish


async def drain(settings: Settings, client: redis.Redis) -> tuple[float, float]:
    """(wall seconds, forwarder CPU seconds) to move the whole backlog."""
    aclient = aioredis.Redis.from_url(settings.redis_url)
    forwarder = Forwarder(settings, aclient, lease_s=30)
    stop = asyncio.Event()
    cpu0, started = time.process_time(), time.perf_counter()
    task = asyncio.create_task(forwarder.run(stop))
    while True:
        await asyncio.sleep(0.02)
        (group,) = [
            g for g in client.xinfo_groups(settings.keys.stream_key)
            if g["name"] == ROUTE_GROUP.encode()
        ]  # fmt: skip
        if group["lag"] == 0 and group["pending"] == 0:
            break
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    stop.set()
    await task
    await aclient.aclose()
    return wall, cpu


def kit_cpu_us(client: redis.Redis, events: list[dict[str, Any]], settings: Settings) -> float:
    """Client CPU per event of `publish_many` (min of 3 runs; the stream keys flushed)."""
    best = float("inf")
    for _ in range(3):
        client.flushall()
        cpu0 = time.process_time()
        pomocore.publish_many(client, events, settings=settings)
        best = min(best, (time.process_time() - cpu0) / len(events) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    n = args.events
    with EmbeddedRedis() as server:
        settings = Settings.from_dsn(
            server.url, shards=args.shards, batch_size=args.batch, block_ms=100
        )
        client = redis.Redis.from_url(server.url)
        events = list(Workload(users=3000, distinct_variants=200).events(n))
        publish(server.url, settings.keys.stream_key, events)
        cpu0 = redis_cpu_s(client)
        wall, cpu = asyncio.run(drain(settings, client))
        redis_cpu = redis_cpu_s(client) - cpu0
        moved = sum(client.xlen(settings.shard_keys(i).stream_key) for i in range(args.shards))
        assert moved == n, (moved, n)
        print(
            f"route: {n / wall:,.0f} events/s ({n} events, {args.shards} shards, batch "
            f"{args.batch}); forwarder CPU {cpu / n * 1e6:.2f} µs/event, Redis CPU "
            f"{redis_cpu / n * 1e6:.2f} µs/event"
        )
        typed = [t for t in map(_typed, events[: min(n, 50_000)]) if t is not None]
        one = kit_cpu_us(client, typed, Settings.from_dsn(server.url))
        many = kit_cpu_us(client, typed, settings)
        print(
            f"publish_many client CPU: {one:.2f} µs/event with 1 shard, {many:.2f} µs/event "
            f"with {args.shards} ({len(typed)} events)"
        )
        client.close()


def _typed(fields: Any) -> dict[str, Any] | None:
    """A workload entry (strings) as a producer holds the event (numbers as numbers);
    None for the workload's invalid events, which the kit would refuse."""
    out: dict[str, Any] = {}
    try:
        for k, v in dict(fields).items():
            name = k.decode() if isinstance(k, bytes) else str(k)
            text = v.decode() if isinstance(v, bytes) else str(v)
            out[name] = float(text) if name in ("duration", "timestamp") else text
        prepare([out])
    except (ValueError, TypeError, PomocoreError):  # (UnicodeDecodeError is a ValueError)
        return None
    return out


if __name__ == "__main__":
    main()
