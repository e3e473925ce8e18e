"""Drain N events with the real consumer (leaderboard sink; --mongo adds MongoDB), report events/s,
consumer CPU µs/event and Redis CPU µs/event. Used to compare lanes and hot-path changes:

    .venv/bin/python -m benchmarks.drain_ab --lanes 1 --lanes 2 --repeat 3 [--mongo]
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis
import uvloop

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedMongo, EmbeddedRedis
from pomocore.workload import Workload
from tests.support.consumer import drain
from tests.support.streams import publish


def run_once(lanes: int, events: int, batch_size: int, mongo: bool) -> tuple[float, float, float]:
    with EmbeddedRedis() as server, EmbeddedMongo() as mongo_server:
        settings = Settings.from_dsn(
            server.url,
            mongo_server.url,
            consumer_name="ab",
            sinks=("mongo", "leaderboard") if mongo else ("leaderboard",),
            block_ms=100,
            lanes=lanes,
            batch_size=batch_size,
        )
        publish(
            server.url,
            settings.keys.stream_key,
            Workload(users=3000, distinct_variants=200).events(events),
        )
        client = redis.Redis.from_url(server.url)
        before = client.info("cpu")
        wall, cpu = time.perf_counter(), time.process_time()
        uvloop.run(drain(settings, timeout_s=600))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = client.info("cpu")
        redis_s = sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys"))
        return events / wall, cpu / events * 1e6, redis_s / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lanes", type=int, action="append")
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mongo", action="store_true", help="also the MongoDB sink (nx-27017)")
    args = parser.parse_args()
    results: dict[int, list[tuple[float, float, float]]] = {
        lanes: [] for lanes in args.lanes or [1, 2]
    }
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
        for lanes in results:
            results[lanes].append(run_once(lanes, args.events, args.batch_size, args.mongo))
            rate, client, server = results[lanes][-1]
            print(
                f"lanes={lanes} {rate:9,.0f} events/s  client {client:5.1f} µs/ev  "
                f"Redis {server:5.1f} µs/ev",
                flush=True,
            )
    for lanes, runs in results.items():
        rates = [r[0] for r in runs]
        print(
            f"lanes={lanes}: median {statistics.median(rates):,.0f} events/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rates)} runs)"
        )


if __name__ == "__main__":
    main()
