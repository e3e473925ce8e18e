"""Redis time per event of the real consumer (leaderboard sink), by command.

    .venv/bin/python -m benchmarks.redis_time [--events 200000]

Publishes the `pomocore demo` workload to an embedded Valkey, drains it with the real
consumer and prints INFO commandstats per event (commands called from the commit script
are counted inside EVALSHA as well as on their own line) and the Redis CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis

from benchmarks.measure import redis_cpu_s
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.workload import Workload
from tests.support.consumer import drain
from tests.support.streams import publish


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    n = parser.parse_args().events
    with EmbeddedRedis() as server:
        settings = Settings.from_dsn(
            server.url, consumer_name="rt", block_ms=100, sinks=("leaderboard",)
        )
        events = Workload(users=3000, distinct_variants=200).events(n)
        publish(server.url, settings.keys.stream_key, events)
        client = redis.Redis.from_url(server.url)
        client.config_resetstat()
        cpu0, started = redis_cpu_s(client), time.perf_counter()
        asyncio.run(drain(settings))
        elapsed, cpu = time.perf_counter() - started, redis_cpu_s(client) - cpu0
        print(f"{n / elapsed:,.0f} events/s with start-up; Redis CPU {cpu / n * 1e6:.2f} µs/event")
        stats = client.info("commandstats")
        for name, st in sorted(stats.items(), key=lambda kv: -kv[1]["usec"]):
            per_event = st["usec"] / n
            print(f"{name:28s} calls {st['calls']:>8}  µs/event {per_event:6.2f}")


if __name__ == "__main__":
    main()
