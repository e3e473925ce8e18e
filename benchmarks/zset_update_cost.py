"""Redis CPU per (key, user) increment for ways of applying a batch's leaderboard sums.

    .venv/bin/python benchmarks/zset_update_cost.py [--batches 60] [--users 3000]

Real batches (pomocore demo workload, IncrementBuilder), applied one after the other to
one Valkey, per mode; Redis CPU is the `INFO cpu` delta (user + sys) over all batches.
Every mode must end with the same sorted sets, compared exactly.

- lua-zincrby: one script per batch, one ZINCRBY per (key, user) (what commit.lua does);
- native-multi: MULTI, one ZINCRBY per (key, user), EXEC, as one pipeline;
- lua-cas: the client reads the current scores (one ZMSCORE per key, pipelined), sends
  old and new scores; the script re-reads them per key and, where they are unchanged,
  writes the key with one multi-member ZADD; a changed score falls back to ZINCRBY.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from pomocore.bench import redis_cpu_s
from pomocore.classifiers import Classifier, load_default_pattern_set
from pomocore.core.events import parse_entry
from pomocore.core.keys import KeySpace
from pomocore.core.periods import PeriodCalculator
from pomocore.embedded import EmbeddedRedis
from pomocore.sinks.plan import IncrementBuilder
from pomocore.workload import Workload

ZINCRBY_LUA = """
local pos = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local n = tonumber(ARGV[pos]); pos = pos + 1
  for _ = 1, n do
    redis.call('ZINCRBY', key, ARGV[pos + 1], ARGV[pos])
    pos = pos + 2
  end
end
return 1
"""

# Per key: n, members (n), then n (new score, member) pairs, then n expected old scores
# ('' = absent), then n increments.
CAS_LUA = """
local pos = 1
for k = 1, #KEYS do
  local key = KEYS[k]
  local n = tonumber(ARGV[pos])
  local m0, p0, e0, d0 = pos + 1, pos + 1 + n, pos + 1 + 3 * n, pos + 1 + 4 * n
  local cur = redis.call('ZMSCORE', key, unpack(ARGV, m0, m0 + n - 1))
  local same = true
  for i = 1, n do
    if (cur[i] or '') ~= ARGV[e0 + i - 1] then same = false; break end
  end
  if same then
    redis.call('ZADD', key, unpack(ARGV, p0, p0 + 2 * n - 1))
  else
    for i = 1, n do
      if (cur[i] or '') == ARGV[e0 + i - 1] then
        redis.call('ZADD', key, ARGV[p0 + 2 * i - 2], ARGV[m0 + i - 1])
      else
        redis.call('ZINCRBY', key, ARGV[d0 + i - 1], ARGV[m0 + i - 1])
      end
    end
  end
  pos = d0 + n
end
return 1
"""


def batches(n_batches: int, users: int) -> list[dict[str, dict[str, float]]]:
    ks = KeySpace()
    builder = IncrementBuilder(ks, PeriodCalculator("Asia/Seoul"))
    clf = Classifier.from_patterns(load_default_pattern_set())
    w = Workload(users=users, distinct_variants=200, malformed_ratio=0)
    fields = list(w.events(1000 * n_batches))
    out = []
    for b in range(n_batches):
        evs = []
        for i, f in enumerate(fields[b * 1000 : (b + 1) * 1000]):
            raw = {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in f.items()}
            e = parse_entry(f"{b * 1000 + i + 1}-0", raw, now_s=time.time())
            if not hasattr(e, "user_id"):
                continue
            evs.append((e, clf.classify(e.app, e.url, e.title).category))
        out.append(builder.plan(evs, []).increments)
    return out


def run_zincrby(c: redis.Redis, incs: dict[str, dict[str, float]], sha: str) -> None:
    keys = list(incs)
    argv: list[Any] = []
    for k in keys:
        argv.append(len(incs[k]))
        for user, amount in incs[k].items():
            argv += (user, repr(amount))
    c.evalsha(sha, len(keys), *keys, *argv)


def run_multi(c: redis.Redis, incs: dict[str, dict[str, float]], _sha: str) -> None:
    p = c.pipeline(transaction=True)
    for k, users in incs.items():
        for user, amount in users.items():
            p.zincrby(k, amount, user)
    p.execute()


def run_cas(c: redis.Redis, incs: dict[str, dict[str, float]], sha: str) -> None:
    keys = list(incs)
    p = c.pipeline(transaction=False)
    for k in keys:
        p.execute_command("ZMSCORE", k, *incs[k])
    olds = p.execute()
    argv: list[Any] = []
    for k, old in zip(keys, olds, strict=True):
        users = incs[k]
        argv.append(len(users))
        argv += users
        expected: list[Any] = []
        for (user, amount), o in zip(users.items(), old, strict=True):
            argv += (repr(amount if o is None else float(o) + amount), user)
            expected.append(b"" if o is None else o)
        argv += expected
        argv += [repr(a) for a in users.values()]
    c.evalsha(sha, len(keys), *keys, *argv)


MODES = {"lua-zincrby": (run_zincrby, ZINCRBY_LUA), "native-multi": (run_multi, ""),
         "lua-cas": (run_cas, CAS_LUA)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    plans = batches(args.batches, args.users)
    pairs = sum(len(u) for inc in plans for u in inc.values())
    print(f"{args.batches} batches, {pairs / args.batches:.0f} (key, user) pairs per batch")
    results: dict[str, list[float]] = {}
    final: dict[str, Any] = {}
    with EmbeddedRedis() as server:
        c = redis.Redis.from_url(server.url)
        for _ in range(args.repeat):
            for mode in args.modes.split(","):
                fn, script = MODES[mode]
                c.flushall()
                sha = c.script_load(script) if script else ""
                c.config_resetstat()
                before = redis_cpu_s(c)
                for inc in plans:
                    fn(c, inc, sha)
                used = redis_cpu_s(c) - before
                results.setdefault(mode, []).append(used / pairs * 1e6)
                final[mode] = {k.decode(): c.zrange(k, 0, -1, withscores=True)
                               for k in c.keys("*")}  # fmt: skip
    reference = next(iter(final.values()))
    for mode, us in results.items():
        same = "exact" if final[mode] == reference else "DIFFERENT"
        print(f"{mode:14s} Redis CPU {sorted(us)[len(us) // 2]:.2f} µs per (key, user) "
              f"(runs {', '.join(f'{u:.2f}' for u in us)}) {same}")  # fmt: skip


if __name__ == "__main__":
    main()
