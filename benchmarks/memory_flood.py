"""A million distinct events with maximal Hangul texts through a real consumer: its peak
RSS against the documented bound (issue #14 §3; docs/operations.md, "Memory").

    .venv/bin/python -m benchmarks.memory_flood [--events 1000000] [--ahead 2000]

`tests/reliability/test_memory_flood.py` stops once every bounded term is full (5,388
events); this runs the issue's million through `pomocore run` (leaderboard sink, no LLM,
default settings otherwise): every event a new decision-cache key of ~49 KB, 74 KB of
stream each, 74 GB in all. A publisher keeps at most `--ahead` events unread (Valkey holds
those and what trimming, POMOCORE_STREAM_MAXLEN=1000, has not removed yet).

Printed at every tenth of the flood: the rate so far, the consumer's RSS and peak RSS (VmHWM),
the decision cache's bytes. At the end: dead letters (must be 0) and the peak against the
bound; the exit code is 1 if either is wrong. One embedded Valkey; nothing else is
touched.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import redis

from benchmarks.trim_bound import has_group
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis, free_port
from tests.support.http_client import metric_value, scrape_metrics
from tests.support.memory import (
    MIB,
    documented_bound_bytes,
    maximal_event,
    peak_rss_bytes,
    rss_bytes,
)
from tests.support.processes import spawn_consumer

MARKS = 10  # reports along the way
PUBLISH_CHUNK = 200  # 15 MB of XADDs per pipeline
STREAM_MAXLEN = 1000


def acknowledged(client: redis.Redis, stream: str, group: str) -> tuple[int, int]:
    """(entries the group acknowledged, entries it has not read yet)."""
    for g in client.xinfo_groups(stream):
        if g["name"] == group.encode():
            read = int(g.get("entries-read") or 0)
            return read - int(g["pending"]), int(g.get("lag") or 0)
    return 0, 0


def run(events: int, ahead: int) -> int:
    with tempfile.TemporaryDirectory(prefix="memory-flood-") as tmp, EmbeddedRedis() as server:
        port = free_port()
        env = {
            "POMOCORE_REDIS_URL": server.url,
            "POMOCORE_SINKS": "leaderboard",
            "POMOCORE_STREAM_MAXLEN": str(STREAM_MAXLEN),
            "POMOCORE_METRICS_PORT": str(port),
            "POMOCORE_LOG_LEVEL": "WARNING",
        }
        settings = Settings.from_env(env)
        stream, group = settings.keys.stream_key, settings.group
        bound = documented_bound_bytes(settings)
        print(f"{events:,} events; documented bound {bound / MIB:.0f} MiB", flush=True)
        client = redis.Redis.from_url(server.url)
        with spawn_consumer(env, log=Path(tmp) / "run.log") as consumer:
            pid = consumer.proc.pid
            while not has_group(client, stream, group):  # the consumer is up
                assert consumer.poll() is None, consumer.output()[-3000:]
                time.sleep(0.05)
            published = 0
            started = time.perf_counter()
            every = max(1, events // MARKS)
            done, mark = 0, every
            while done < events:
                assert consumer.poll() is None, consumer.output()[-3000:]
                done, lag = acknowledged(client, stream, group)
                if published < events and lag < ahead:
                    pipe = client.pipeline(transaction=False)
                    for i in range(published, min(events, published + PUBLISH_CHUNK)):
                        pipe.xadd(stream, maximal_event(i))
                    published += len(pipe.execute())
                else:
                    time.sleep(0.05)
                if done >= mark:
                    _report(done, time.perf_counter() - started, pid, port)
                    mark += every
            peak = peak_rss_bytes(pid)
            code = consumer.stop()
            assert code == 0, consumer.output()[-3000:]
        dead = int(client.xlen(settings.keys.dead_letter_key))
        client.close()
    verdict = "under" if peak < bound else "OVER"
    print(
        f"done: {events:,} events, {dead} dead-lettered; peak RSS {peak / MIB:.0f} MiB, "
        f"{verdict} the documented {bound / MIB:.0f} MiB"
    )
    return 0 if peak < bound and dead == 0 else 1


def _report(done: int, elapsed_s: float, pid: int, port: int) -> None:
    cache = metric_value(scrape_metrics(port), "pomocore_classifier_cache_bytes")
    print(
        f"{done:>9,} events  {done / elapsed_s:6,.0f}/s  RSS {rss_bytes(pid) / MIB:5.0f} MiB  "
        f"peak {peak_rss_bytes(pid) / MIB:5.0f} MiB  decision cache {cache / MIB:5.1f} MiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ahead", type=int, default=2000, help="most events left unread")
    args = parser.parse_args()
    raise SystemExit(run(args.events, args.ahead))


if __name__ == "__main__":
    main()
