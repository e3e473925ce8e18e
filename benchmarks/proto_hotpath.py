"""Hot-path prototypes for the lead, measured on the real pomocore components.

Not shipped code: every mode below re-assembles the real pieces (consumers.batch.validate,
CachingClassifier, IncrementBuilder, Committer + sinks/commit.lua) in a small loop, with
one change each, so the effect of that change can be measured without touching
consumers/ or sinks/. Leaderboard sink only (variant c of `pomocore bench`).

    serial        read → validate → classify → plan → commit, one after the other
                  (what StreamConsumer does today; should match bench variant c)
    overlap       the next XREADGROUP is in flight while this batch is processed, and
                  this batch's commit runs in Redis while the next one is processed
                  (client CPU and Redis CPU overlap instead of adding up)
    overlap-fast  overlap + cheaper commit arguments (one bytes join per key instead of
                  redis-py encoding ~2 args per (key, user)) and a script without the
                  per-increment tonumber() validation pass (values are produced by us)
    script:*      serial, with one change to commit.lua, to isolate its Redis CPU:
                  no-validate (skip the tonumber() pass), no-xclaim (skip the
                  pending check), daily-only (daily keys only: what a derived
                  weekly/monthly mode would send per batch)

Usage:
    .venv/bin/python benchmarks/proto_hotpath.py [--events 100000] [--modes serial,overlap]

Reports events/s, client CPU µs/event, Redis CPU µs/event (INFO cpu) and the Redis time
of the commit script per event (INFO commandstats, evalsha usec).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aioredis

from classifiers.cache import CachingClassifier
from classifiers.engine import Classifier
from classifiers.patterns import load_default_pattern_set
from consumers.batch import validate
from pipeline.bench import redis_cpu_s
from pipeline.embedded import EmbeddedRedis
from pipeline.periods import PeriodCalculator
from pipeline.settings import Settings
from pipeline.workload import Workload
from sinks.leaderboard import (
    COMMIT_SCRIPT,
    CommitPlan,
    Committer,
    IncrementBuilder,
)

NO_VALIDATE = COMMIT_SCRIPT.replace(
    """  for i = pos + 1, pos + 2 * n_pairs - 1, 2 do
    local amount = to_number(ARGV[i])
    -- x - x is 0 for every finite number, NaN for NaN and for +-inf
    if not amount or amount - amount ~= 0 then
      return redis.error_reply('ERR pomocore: bad increment for ' .. KEYS[k])
    end
  end
""",
    "",
)
NO_XCLAIM = COMMIT_SCRIPT.replace(
    "local claimed = redis.call('XCLAIM', unpack(claim_args))", "local claimed = ids"
)
assert NO_VALIDATE != COMMIT_SCRIPT and NO_XCLAIM != COMMIT_SCRIPT

# overlap-fast: per leaderboard key ONE argument "user\x1famount\x1euser\x1famount..."
# parsed in Lua with string.find (no per-pair argument to encode on the client)
PACKED_SCRIPT = (
    NO_VALIDATE.split("local increments_at = pos")[0]
    + """
local increments_at = pos
if pos + (#KEYS - 4) ~= #ARGV + 1 then
  return redis.error_reply('ERR pomocore: argument count mismatch')
end
"""
    + NO_VALIDATE.split(
        "if pos ~= #ARGV + 1 then return redis.error_reply("
        "'ERR pomocore: argument count mismatch') end"
    )[1].split("pos = increments_at")[0]
    + """
pos = increments_at
for k = 5, #KEYS do
  local key, packed, i = KEYS[k], ARGV[pos], 1
  pos = pos + 1
  while true do
    local us = string.find(packed, '\\31', i, true)
    if not us then break end
    local rs = string.find(packed, '\\30', us + 1, true) or (#packed + 1)
    redis.call('ZINCRBY', key, string.sub(packed, us + 1, rs - 1), string.sub(packed, i, us - 1))
    i = rs + 1
  end
end
return {1, acked}
"""
)


def packed_arguments(plan: CommitPlan, committer: Committer) -> tuple[list[str], list[Any]]:
    from sinks.leaderboard import _dead_letter_fields

    keys = committer.keys
    lb_keys = list(plan.increments)
    script_keys = [
        keys.stream_key, keys.dead_letter_key, keys.session_score_key, keys.derived_stale_key,
        *lb_keys,
    ]  # fmt: skip
    argv: list[Any] = [
        committer.group,
        committer.consumer,
        0,  # mark_derived
        len(plan.ids),
        *plan.ids,
        len(plan.dead_letters),
    ]
    for dead in plan.dead_letters:
        flat = _dead_letter_fields(dead, keys.stream_key, committer.consumer)
        argv.append(len(flat))
        argv.extend(flat)
    argv.append(len(plan.sessions))
    for user, date, session in plan.sessions:
        argv.extend((user, date, session))
    for key in lb_keys:
        argv.append("\x1e".join([f"{u}\x1f{a!r}" for u, a in plan.increments[key].items()]))
    return script_keys, argv


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def evalsha_usec(r: redis.Redis) -> float:
    stats = r.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0.0))


async def run_mode(
    mode: str, url: str, stream: str, group: str, n: int, batch: int
) -> dict[str, Any]:
    settings = Settings.from_dsn(
        url,
        stream=stream,
        group=group,
        consumer_name="proto",
        sinks=("leaderboard",),
        leaderboard_prefix=f"{group}:lb",
        dead_letter_stream=f"{group}:dlq",
        session_score_stream=f"{group}:ss",
        batch_size=batch,
    )
    keys = settings.keys
    r = aioredis.Redis.from_url(url, decode_responses=False)
    classifier = CachingClassifier(Classifier.from_patterns(load_default_pattern_set()), 200_000)
    daily_only = mode == "script:daily-only"  # what derived mode sends (sinks/derived.py)
    builder = IncrementBuilder(keys, PeriodCalculator(settings.timezone), derived=daily_only)
    committer = Committer(r, keys, group, "proto")
    script_text = {
        "script:no-validate": NO_VALIDATE,
        "script:no-xclaim": NO_XCLAIM,
        "overlap-fast": PACKED_SCRIPT,
    }.get(mode, COMMIT_SCRIPT)
    script = r.register_script(script_text)
    await r.script_load(script_text)
    fast_args = mode == "overlap-fast"

    async def read() -> list[tuple[str, dict[bytes, bytes] | None]]:
        reply = await r.xreadgroup(group, "proto", {stream: ">"}, count=batch, block=100)
        out = []
        for _s, messages in reply or ():
            for entry_id, fields in messages:
                out.append((entry_id.decode(), fields or None))
        return out

    def process(entries: list[Any]) -> CommitPlan:
        vb = validate(entries, settings, time.time())
        ev_keys = list(dict.fromkeys((e.app, e.url, e.title) for e in vb.accepted))
        by_key = dict(zip(ev_keys, classifier.classify_many(ev_keys), strict=True))
        accepted = [(e, by_key[(e.app, e.url, e.title)].category) for e in vb.accepted]
        plan = builder.plan(accepted, vb.dead_letters)
        return plan

    raw_resp = mode.endswith("-raw")
    sha = script.sha.encode() if isinstance(script.sha, str) else script.sha

    async def raw_evalsha(keys_: list[str], args_: list[Any]) -> Any:
        """EVALSHA with the RESP request built in one join (bypasses pack_command)."""
        parts = [b"EVALSHA", sha, b"%d" % len(keys_)]
        parts += [k.encode() for k in keys_]
        parts += [a if isinstance(a, bytes) else str(a).encode() for a in args_]
        buf = b"*%d\r\n" % len(parts) + b"".join([b"$%d\r\n%b\r\n" % (len(x), x) for x in parts])
        conn = await r.connection_pool.get_connection()
        try:
            await conn.send_packed_command(buf)
            return await conn.read_response()
        finally:
            await r.connection_pool.release(conn)

    async def commit(plan: CommitPlan) -> None:
        if raw_resp:
            from sinks.leaderboard import script_arguments

            k, a = script_arguments(plan, keys, group, "proto")
            reply = await raw_evalsha(k, a)
            assert reply[0] == 1, reply
            return
        if fast_args:
            k, a = packed_arguments(plan, committer)
        else:
            from sinks.leaderboard import script_arguments

            k, a = script_arguments(plan, keys, group, "proto")
        reply = await script(keys=k, args=a)
        assert reply[0] == 1, reply

    sync = redis.Redis.from_url(url)
    sync.xgroup_create(stream, group, id="0")
    done = 0
    rc0, c0, e0 = redis_cpu_s(sync), cpu(), evalsha_usec(sync)
    t0 = time.perf_counter()
    if mode.startswith("overlap"):
        # order on the wire: XREADGROUP(i+1), then EVALSHA(i); the client processes
        # batch i+1 while Redis runs the commit of batch i
        entries = await read()
        plan = process(entries)
        done += len(entries)
        while True:
            read_task = asyncio.create_task(read()) if done < n else None
            await asyncio.sleep(0)  # the read goes out first
            commit_task = asyncio.create_task(commit(plan))
            if read_task is None:
                await commit_task
                break
            entries = await read_task
            next_plan = process(entries)
            done += len(entries)
            await commit_task
            plan = next_plan
    else:
        while done < n:
            entries = await read()
            await commit(process(entries))
            done += len(entries)
    elapsed = time.perf_counter() - t0
    rc1, c1, e1 = redis_cpu_s(sync), cpu(), evalsha_usec(sync)
    pending = sync.xpending(stream, group)["pending"]
    sync.xgroup_destroy(stream, group)
    for k in sync.scan_iter(match=f"{group}:*", count=5000):
        sync.unlink(k)
    sync.close()
    await r.aclose()
    return {
        "mode": mode,
        "events": done,
        "events_per_s": done / elapsed,
        "client_cpu_us": (c1 - c0) / done * 1e6,
        "redis_cpu_us": (rc1 - rc0) / done * 1e6,
        "script_redis_us": (e1 - e0) / done,
        "pending_after": pending,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--modes",
        default=(
            "serial,serial-raw,overlap,overlap-raw,overlap-fast,"
            "script:no-validate,script:no-xclaim,script:daily-only"
        ),
    )
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    with EmbeddedRedis() as server:
        sync = redis.Redis.from_url(server.url)
        stream = "proto:stream"
        wl = Workload(users=args.users, distinct_variants=200)
        for start in range(0, args.events, 2000):
            pipe = sync.pipeline(transaction=False)
            for f in wl.events(min(2000, args.events - start)):
                pipe.xadd(stream, f)  # type: ignore[arg-type]
            pipe.execute()
        results: dict[str, list[dict[str, Any]]] = {}
        run_no = 0
        for _ in range(args.repeat):
            for mode in args.modes.split(","):
                run_no += 1
                coro = run_mode(mode, server.url, stream, f"g{run_no}", args.events, args.batch)
                res = uvloop.run(coro) if uvloop else asyncio.run(coro)
                results.setdefault(mode, []).append(res)
        print(
            f"{'mode':<20}{'events/s':>10}{'client µs/ev':>14}{'Redis µs/ev':>13}"
            f"{'script µs/ev':>14}{'pending':>9}"
        )
        for mode, runs in results.items():
            runs.sort(key=lambda x: x["events_per_s"])
            m = runs[len(runs) // 2]
            print(
                f"{mode:<20}{m['events_per_s']:>10,.0f}{m['client_cpu_us']:>14.1f}"
                f"{m['redis_cpu_us']:>13.1f}{m['script_redis_us']:>14.1f}{m['pending_after']:>9}"
                "   (runs: " + ", ".join(f"{x['events_per_s']:,.0f}" for x in runs) + ")"
            )


if __name__ == "__main__":
    main()
