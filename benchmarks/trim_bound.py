"""Does stream trimming keep up? The real consumer (`pomocore run`, leaderboard sink, as
variant c) with POMOCORE_STREAM_MAXLEN, at full rate; the stream sampled every 20 ms.

    .venv/bin/python -m benchmarks.trim_bound [--mode backlog|live] [--events 500000]
        [--maxlen 100000] [--processes 1]

- backlog: publish `--events` first, then start the consumer: it drains at its full rate
  and trimming must follow it.
- live: a publisher process XADDs as fast as it can while the consumer runs.

Trimming may only remove entries no group needs (acknowledged, delivered): what it
controls is `kept` = XLEN - lag - pending, the acknowledged entries still in the stream,
which it keeps near the bound (the newest ~maxlen entries are kept whatever their state).
Reported: the drain rate, max and median `kept` against the bound, the max XLEN, and the
XLEN once drained. One embedded Valkey; nothing else is touched.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import redis

from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.workload import Workload
from tests.support.processes import spawn_consumer

PUBLISH_CHUNK = 2000
SAMPLE_S = 0.02


def publish(url: str, stream: str, events: int, seed: int = 7) -> None:
    """XADD `events` workload events in pipelined chunks, as fast as one client can."""
    client = redis.Redis.from_url(url)
    workload = Workload(users=3000, distinct_variants=200, seed=seed)
    done = 0
    while done < events:
        pipe = client.pipeline(transaction=False)
        for fields in workload.events(min(PUBLISH_CHUNK, events - done)):
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        done += len(pipe.execute())
    client.close()


def group_state(client: redis.Redis, stream: str, group: str) -> tuple[int, int, int]:
    """(XLEN, lag, pending); lag and pending 0 before the group exists."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xinfo_groups(stream)
    try:
        xlen, groups = pipe.execute()
    except redis.ResponseError:
        return 0, 0, 0
    for g in groups:
        if g["name"] == group.encode():
            return int(xlen), int(g.get("lag") or 0), int(g["pending"])
    return int(xlen), int(xlen), 0


def run(mode: str, events: int, maxlen: int, processes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="trim-bound-") as tmp, EmbeddedRedis() as server:
        settings = Settings.from_dsn(server.url)
        stream, group = settings.keys.stream_key, settings.group
        client = redis.Redis.from_url(server.url)
        publisher = None
        if mode == "backlog":
            publish(server.url, stream, events)
        env = {
            "POMOCORE_REDIS_URL": server.url,
            "POMOCORE_SINKS": "leaderboard",
            "POMOCORE_STREAM_MAXLEN": str(maxlen),
            "POMOCORE_BATCH_SIZE": "1000",
            "POMOCORE_LOG_LEVEL": "WARNING",
        }
        log = Path(tmp) / "run.log"
        with spawn_consumer(env, "--processes", str(processes), log=log) as consumer:
            while not has_group(client, stream, group):  # the consumer is up
                time.sleep(0.01)
            if mode == "live":
                publisher = multiprocessing.Process(
                    target=publish, args=(server.url, stream, events)
                )
                publisher.start()
            started = time.perf_counter()
            kept: list[int] = []
            xlens: list[int] = []
            acked = 0
            while acked < events:
                xlen, lag, pending = group_state(client, stream, group)
                kept.append(xlen - lag - pending)
                xlens.append(xlen)
                acked = _acknowledged(client, stream, group)
                time.sleep(SAMPLE_S)
            elapsed_s = time.perf_counter() - started
            if publisher is not None:
                publisher.join()
            time.sleep(1.5)  # the trimmer's last passes (at most 1 s apart when idle)
            final = int(client.xlen(stream))
            code = consumer.stop()
            assert code == 0, consumer.output()[-2000:]
        client.close()
    return {
        "events_per_s": events / elapsed_s,
        "kept_max": max(kept),
        "kept_median": statistics.median(kept),
        "xlen_max": max(xlens),
        "xlen_final": final,
        "samples": len(kept),
    }


def has_group(client: redis.Redis, stream: str, group: str) -> bool:
    """Whether `group` exists on `stream` (the consumer is up): False before the stream."""
    try:
        return any(g["name"] == group.encode() for g in client.xinfo_groups(stream))
    except redis.ResponseError:
        return False


def _acknowledged(client: redis.Redis, stream: str, group: str) -> int:
    for g in client.xinfo_groups(stream):
        if g["name"] == group.encode():
            return int(g.get("entries-read") or 0) - int(g["pending"])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("backlog", "live"), default="backlog")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--maxlen", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    r = run(args.mode, args.events, args.maxlen, args.processes)
    bound = args.maxlen
    print(
        f"mode {args.mode}, {args.events:,} events, POMOCORE_STREAM_MAXLEN {bound:,}, "
        f"{args.processes} consumer process(es)\n"
        f"  drain rate                 {r['events_per_s']:>12,.0f} events/s\n"
        f"  kept (XLEN-lag-pending)    max {r['kept_max']:>10,.0f} ({r['kept_max'] / bound:.2f} "
        f"x bound), median {r['kept_median']:,.0f} ({r['samples']} samples, 20 ms apart)\n"
        f"  XLEN                       max {r['xlen_max']:>10,.0f}, "
        f"after the drain {r['xlen_final']:,.0f}"
    )


if __name__ == "__main__":
    main()
