"""Commit arguments per key, or once per group of keys sharing their users: Redis cost.

    .venv/bin/python benchmarks/grouped_args.py [--batches 100]

A prototype that was measured and not kept (benchmarks/README.md, session 2). Real
batches of the `pomocore demo` workload are applied by a script that gets (user, amount)
pairs per key (what sinks/commit.lua does) or once per group of keys (the keys of one
category and day), both with the same validation pass. Prints EVALSHA time, ZINCRBY calls,
arguments and Redis CPU per event, and checks that both end with the same scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from pomocore.bench import redis_cpu_s
from pomocore.classifiers import Classifier, load_default_pattern_set
from pomocore.consumers.batch import validate
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.core.settings import Settings
from pomocore.embedded import EmbeddedRedis
from pomocore.sinks.plan import IncrementBuilder
from pomocore.workload import Workload

# The validation pass both layouts share: n (user, amount) pairs from ARGV[pos], each amount
# a finite number.
CHECK_AMOUNTS = """  for i = pos + 1, pos + 2 * n - 1, 2 do
    local a = to_number(ARGV[i])
    if not a or a - a ~= 0 then return redis.error_reply('bad amount') end
  end
"""
PER_KEY = """
local pos, to_number = 1, tonumber
for k = 1, #KEYS do
  local n = to_number(ARGV[pos]); pos = pos + 1
""" + CHECK_AMOUNTS + """  pos = pos + 2 * n
end
pos = 1
for k = 1, #KEYS do
  local n = to_number(ARGV[pos]); pos = pos + 1
  for _ = 1, n do redis.call('ZINCRBY', KEYS[k], ARGV[pos + 1], ARGV[pos]); pos = pos + 2 end
end
return 1
"""
# ARGV: n_groups, then per group: n_keys, key indexes into KEYS, n_users, user, amount, ...
GROUPED = """
local pos, to_number = 2, tonumber
local n_groups = to_number(ARGV[1])
for _ = 1, n_groups do
  local n_keys = to_number(ARGV[pos]); pos = pos + 1
  for i = pos, pos + n_keys - 1 do
    if not KEYS[to_number(ARGV[i]) or 0] then return redis.error_reply('bad key') end
  end
  pos = pos + n_keys
  local n = to_number(ARGV[pos]); pos = pos + 1
""" + CHECK_AMOUNTS + """  pos = pos + 2 * n
end
pos = 2
for _ = 1, n_groups do
  local n_keys = to_number(ARGV[pos]); pos = pos + 1
  local n = to_number(ARGV[pos + n_keys])
  local first = pos + n_keys + 1
  for i = pos, pos + n_keys - 1 do
    local key = KEYS[to_number(ARGV[i])]
    for p = first, first + 2 * n - 1, 2 do redis.call('ZINCRBY', key, ARGV[p + 1], ARGV[p]) end
  end
  pos = first + 2 * n
end
return 1
"""
Groups = dict[tuple[str, ...], dict[str, float]]


def batches(count: int) -> list[Groups]:
    settings, builder = Settings(), IncrementBuilder(KeySpace(), PeriodCalculator("Asia/Seoul"))
    classifier = Classifier.from_patterns(load_default_pattern_set())
    fields = list(
        Workload(users=3000, distinct_variants=200, malformed_ratio=0).events(1000 * count)
    )
    out = []
    for b in range(count):
        entries = [
            (f"{b * 1000 + i + 1}-0", {k.encode(): v if isinstance(v, bytes) else v.encode()
                                       for k, v in f.items()})
            for i, f in enumerate(fields[b * 1000 : (b + 1) * 1000])
        ]  # fmt: skip
        groups: Groups = {}
        for e in validate(entries, settings, time.time()).accepted:
            category = classifier.classify(e.app, e.url, e.title).category
            users = groups.setdefault(builder.leaderboard_keys(category, e.timestamp_s), {})
            users[e.user_id] = users.get(e.user_id, 0.0) + e.duration_s
        out.append(groups)
    return out


def per_key_args(groups: Groups) -> tuple[list[str], list[Any]]:
    per_key: dict[str, dict[str, float]] = {}
    for keys, users in groups.items():
        for key in keys:
            target = per_key.setdefault(key, {})
            for user, amount in users.items():
                target[user] = target.get(user, 0.0) + amount
    argv: list[Any] = []
    for users in per_key.values():
        argv.append(len(users))
        for user, amount in users.items():
            argv += (user, repr(amount))
    return list(per_key), argv


def grouped_args(groups: Groups) -> tuple[list[str], list[Any]]:
    keys: list[str] = []
    index: dict[str, int] = {}
    argv: list[Any] = [len(groups)]
    for group_keys, users in groups.items():
        argv.append(len(group_keys))
        for key in group_keys:
            if key not in index:
                keys.append(key)
                index[key] = len(keys)
            argv.append(index[key])
        argv.append(len(users))
        for user, amount in users.items():
            argv += (user, repr(amount))
    return keys, argv


def run(
    client: redis.Redis,
    script: str,
    build: Callable[[Groups], tuple[list[str], list[Any]]],
    work: list[Groups],
) -> dict[str, Any]:
    client.flushall()
    sha = client.script_load(script)
    client.config_resetstat()
    cpu0, args = redis_cpu_s(client), 0
    for groups in work:
        keys, argv = build(groups)
        args += len(argv)
        client.evalsha(sha, len(keys), *keys, *argv)
    n = 1000 * len(work)
    stats = client.info("commandstats")
    print(
        f"  EVALSHA {stats['cmdstat_evalsha']['usec'] / n:.2f} µs/event, "
        f"ZINCRBY {stats['cmdstat_zincrby']['calls'] / n:.2f} calls/event, "
        f"{args / n:.2f} arguments/event, "
        f"Redis CPU {(redis_cpu_s(client) - cpu0) / n * 1e6:.2f} µs/event"
    )
    return {k: dict(client.zrange(k, 0, -1, withscores=True)) for k in client.keys("*")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=100)
    work = batches(parser.parse_args().batches)
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        for _ in range(2):
            print("per key:")
            reference = run(client, PER_KEY, per_key_args, work)
            print("per group of keys:")
            grouped = run(client, GROUPED, grouped_args, work)
            same = reference.keys() == grouped.keys() and all(
                abs(score - grouped[k][m]) <= 1e-6 * max(1.0, score)
                for k, members in reference.items()
                for m, score in members.items()
            )
            print(f"  same scores: {same}")


if __name__ == "__main__":
    main()
