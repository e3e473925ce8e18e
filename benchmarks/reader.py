"""The reader library against plain redis-py calls: requests/s of top-10, rank and
around-me on one 100k-member leaderboard, ours / plain as a ratio (target: <= 1.1).

    .venv/bin/python -m benchmarks.reader [--members 100000] [--calls 2000] [--rounds 7]
        [--servers valkey,redis-7.0] [--shards 1] [--json]

Each server (the embedded Valkey, which has ZREVRANK ... WITHSCORE; `redis-server` from
PATH when it is older than 7.2, which has not) gets one board of `--members` users.
"Plain" is what a caller writes by hand with the same client (bytes replies, hiredis):
`zrevrange(key, 0, 9, withscores=True)`; `zrevrank(key, user, withscore=True)` (or a
ZREVRANK+ZSCORE pipeline where WITHSCORE is missing); `zrevrank` then `zrevrange(r-5,
r+5)`. Ours is LeaderboardReader with date None (today's key: the label is computed on
every call, as in the HTTP API), returning Rows. Both use one blocking connection each.

The machine may be shared: each round runs every query `--calls` times on each side,
call by call alternating (the same user on both sides, the side going first
alternating), so a busy phase hits both. Per round: requests/s of each side, and three
ratios ours/plain: of total time (the cost in requests/s), of the median call (robust to
calls preempted by other processes) and of the client's CPU time (what the library adds,
whatever the server and the scheduler do). The report gives the medians over rounds.

With `--shards N` (N > 1) ours reads the same members split over N shard keys by
shard_of (POMOCORE_SHARDS=N, all on the one server) while plain still reads the one
key: the ratios are then what reading over shards costs against one sorted set.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from pomocore.core.shards import shard_of
from pomocore.embedded import EmbeddedRedis
from pomocore.reader import LeaderboardReader
from tests.support.servers import redis_70_binary

QUERIES = ("top-10", "rank", "around-me")
AROUND_N = 5


class PathRedis(EmbeddedRedis):
    """EmbeddedRedis running another binary (redis-server 7.0 from PATH)."""

    def __init__(self, binary: str) -> None:
        super().__init__()
        self.binary = binary

    def command(self) -> Sequence[str]:
        return [self.binary, *list(super().command())[1:]]


def fill(client: redis.Redis, key: str, members: int, shard_keys: Sequence[str] = ()) -> list[str]:
    """`members` users with random scores in `key`, and split over `shard_keys` (by
    shard_of) when there are more than one."""
    users = [f"user-{i:06d}" for i in range(members)]
    rng = random.Random(7)
    for start in range(0, members, 10_000):
        scores = {u: float(rng.randrange(1, 10**6)) for u in users[start : start + 10_000]}
        client.zadd(key, scores)
        if len(shard_keys) > 1:
            pipe = client.pipeline(transaction=False)
            for user, score in scores.items():
                pipe.zadd(shard_keys[shard_of(user, len(shard_keys))], {user: score})
            pipe.execute()
    return users


def plain_queries(
    client: redis.Redis, key: str, withscore: bool
) -> dict[str, Callable[[str], Any]]:
    def rank(user: str) -> Any:
        if withscore:
            return client.zrevrank(key, user, withscore=True)
        pipe = client.pipeline(transaction=False)
        pipe.zrevrank(key, user)
        pipe.zscore(key, user)
        return pipe.execute()

    def around(user: str) -> Any:
        r: Any = client.zrevrank(key, user)
        return client.zrevrange(key, max(0, r - AROUND_N), r + AROUND_N, withscores=True)

    return {
        "top-10": lambda user: client.zrevrange(key, 0, 9, withscores=True),
        "rank": rank,
        "around-me": around,
    }


def our_queries(reader: LeaderboardReader) -> dict[str, Callable[[str], Any]]:
    return {
        "top-10": lambda user: reader.top("work", "daily", None, limit=10),
        "rank": lambda user: reader.rank(user, "work", "daily"),
        "around-me": lambda user: reader.around(user, "work", "daily", n=AROUND_N),
    }


def interleaved(
    ours: Callable[[str], Any], plain: Callable[[str], Any], users: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """Per-call wall and client-CPU seconds of ours and plain, call by call alternating
    (the side going first alternating too): a busy phase of a shared machine falls on
    both sides alike, and medians of per-call times ignore the calls it preempted."""
    wall, cpu = time.perf_counter, time.thread_time
    out: dict[str, dict[str, list[float]]] = {
        side: {"wall": [], "cpu": []} for side in ("ours", "plain")
    }
    for i, user in enumerate(users):
        for side in ("ours", "plain") if i % 2 == 0 else ("plain", "ours"):
            query = ours if side == "ours" else plain
            w0, c0 = wall(), cpu()
            query(user)
            c1, w1 = cpu(), wall()
            out[side]["wall"].append(w1 - w0)
            out[side]["cpu"].append(c1 - c0)
    return out


def bench_server(
    url: str, members: int, calls: int, rounds: int, shards: int = 1
) -> dict[str, Any]:
    reader = LeaderboardReader(redis.Redis.from_url(url), shards=shards)
    key = reader.key("work", "daily", None)
    shard_keys = reader.naming.shard_keys("work", "daily", None) if shards > 1 else ()
    plain_client = redis.Redis.from_url(url)
    plain_client.delete(key, *shard_keys)
    users = fill(plain_client, key, members, shard_keys)
    with LeaderboardReader(redis.Redis.from_url(url)) as probe:
        probe.rank(users[0], "work", "daily")  # finds out about WITHSCORE, as any first call
        withscore = bool(probe._withscore)
        reader._withscore = probe._withscore
    ours, plain = our_queries(reader), plain_queries(plain_client, key, withscore)
    rng = random.Random(11)
    results: dict[str, dict[str, list[float]]] = {
        q: {"ours": [], "plain": [], "ratio": [], "median_ratio": [], "cpu_ratio": []}
        for q in QUERIES
    }
    for query in QUERIES:  # warm both up (connections, caches)
        interleaved(ours[query], plain[query], users[:200])
    for _ in range(rounds):
        for query in QUERIES:
            sample = [rng.choice(users) for _ in range(calls)]
            t = interleaved(ours[query], plain[query], sample)
            o, p = t["ours"], t["plain"]
            r = results[query]
            r["ours"].append(calls / sum(o["wall"]))
            r["plain"].append(calls / sum(p["wall"]))
            r["ratio"].append(sum(o["wall"]) / sum(p["wall"]))  # cost: time ratio
            r["median_ratio"].append(statistics.median(o["wall"]) / statistics.median(p["wall"]))
            r["cpu_ratio"].append(sum(o["cpu"]) / sum(p["cpu"]))
    plain_client.delete(key, *shard_keys)
    plain_client.close()
    reader.close()
    return {
        "withscore": withscore,
        "shards": shards,
        "queries": {
            q: {
                "ours_rps": statistics.median(r["ours"]),
                "plain_rps": statistics.median(r["plain"]),
                "cost_ratio": statistics.median(r["ratio"]),
                "cost_ratio_min": min(r["ratio"]),
                "cost_ratio_max": max(r["ratio"]),
                "median_call_ratio": statistics.median(r["median_ratio"]),
                "client_cpu_ratio": statistics.median(r["cpu_ratio"]),
            }
            for q, r in results.items()
        },
    }


def servers(names: Sequence[str]) -> Iterator[tuple[str, EmbeddedRedis]]:
    for name in names:
        if name == "valkey":
            yield name, EmbeddedRedis()
        elif name == "redis-7.0":
            binary = redis_70_binary()
            if binary is None:
                print("redis-7.0: no redis-server older than 7.2 on PATH, skipped")
                continue
            yield name, PathRedis(binary)
        else:
            raise SystemExit(f"unknown server {name!r}: valkey or redis-7.0")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reader", description=__doc__)
    p.add_argument("--members", type=int, default=100_000, help="users on the board")
    p.add_argument("--calls", type=int, default=2000, help="requests per query, side and round")
    p.add_argument("--rounds", type=int, default=7, help="rounds (median of the ratios)")
    p.add_argument("--servers", default="valkey,redis-7.0", help="comma list")
    p.add_argument("--shards", type=int, default=1, help="ours reads N shard keys (plain: one)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    report: dict[str, Any] = {"members": args.members, "calls": args.calls,
                              "rounds": args.rounds, "shards": args.shards,
                              "servers": {}}  # fmt: skip
    with ExitStack() as stack:
        for name, server in servers(args.servers.split(",")):
            stack.enter_context(server)
            found = bench_server(server.url, args.members, args.calls, args.rounds, args.shards)
            report["servers"][name] = found
            path = "ZREVRANK WITHSCORE" if found["withscore"] else "ZREVRANK+ZSCORE pipeline"
            shards = f", ours over {args.shards} shards" if args.shards > 1 else ""
            print(f"{name} ({path}), {args.members:,} members{shards}, {args.rounds} rounds "
                  f"x {args.calls} calls")  # fmt: skip
            header = ("query", "ours req/s", "plain req/s", "time ratio (range)", "median call",
                      "client CPU")  # fmt: skip
            print("  {:10s} {:>11s} {:>12s} {:>20s} {:>12s} {:>11s}".format(*header))
            for query, q in found["queries"].items():
                print(f"  {query:10s} {q['ours_rps']:>11,.0f} {q['plain_rps']:>12,.0f} "
                      f"{q['cost_ratio']:>8.3f} ({q['cost_ratio_min']:.2f}-"
                      f"{q['cost_ratio_max']:.2f}) {q['median_call_ratio']:>12.3f} "
                      f"{q['client_cpu_ratio']:>11.3f}")  # fmt: skip
            server.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
